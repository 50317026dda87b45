import { Type, type Static } from '@sinclair/typebox';
import { Cel, Closed, exactlyOneOf, HTTP_METHODS, LocalRef, MapOf, Name, StringEnum, commonStatus } from './schema-kit.js';

const FunctionRef = LocalRef('Function');
const WorkflowRef = LocalRef('Workflow');

/** What a timer, queue or watch trigger calls: a function, or a workflow (called by name the same way). */
export function calleeOf(spec: { function?: { name: string }; workflow?: { name: string } }): string {
  return (spec.function ?? spec.workflow)!.name;
}

/** `/users/:id/orders`: segments of literals and `:params`. */
export const ROUTE_PATH = '^/([A-Za-z0-9._~!$&\'()*+,;=@%-]+|:[A-Za-z_][A-Za-z0-9_]*)?(/([A-Za-z0-9._~!$&\'()*+,;=@%-]+|:[A-Za-z_][A-Za-z0-9_]*))*/?$';

export const HttpTriggerSpec = Closed(
  {
    methods: Type.Array(StringEnum(HTTP_METHODS), { minItems: 1, uniqueItems: true, default: ['GET'], description: 'HTTP methods served' }),
    path: Type.Optional(Type.String({ pattern: ROUTE_PATH, maxLength: 1024, description: 'exact path; `:name` segments become X-Spore-Param-<name> headers' })),
    prefix: Type.Optional(Type.String({ pattern: ROUTE_PATH, maxLength: 1024, description: 'serve every path under this prefix (instead of path)' })),
    keepPrefix: Type.Boolean({ default: false, description: 'with prefix: pass the full path on instead of trimming the prefix' }),
    host: Type.Optional(
      Type.String({ pattern: '^(\\*\\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$', maxLength: 253, description: 'serve only this Host' }),
    ),
    function: Type.Optional(FunctionRef),
    workflow: Type.Optional(WorkflowRef),
    functions: Type.Optional(
      Type.Array(Closed({ name: Name('Function name'), weight: Type.Integer({ minimum: 0, maximum: 100, description: 'percent of calls' }) }), {
        minItems: 2,
        maxItems: 10,
        description: 'canary: weighted functions; weights sum to 100',
        // each function once: the API server keeps the list keyed by name
        'x-kubernetes-list-type': 'map',
        'x-kubernetes-list-map-keys': ['name'],
        ...Cel({ rule: 'self.map(f, f.weight).sum() == 100', message: 'weights must sum to 100' }),
      }),
    ),
  },
  {
    description: 'routes HTTP requests to a function or a workflow (exactly one of path/prefix, and of function/functions/workflow)',
    ...Cel(exactlyOneOf('path', 'prefix'), { rule: '[has(self.function), has(self.functions), has(self.workflow)].filter(x, x).size() == 1', message: 'set exactly one of function, functions or workflow' }, {
      rule: '!self.keepPrefix || has(self.prefix)',
      message: 'keepPrefix only applies with prefix',
      fieldPath: '.keepPrefix',
    }),
  },
);
export type HttpTriggerSpec = Static<typeof HttpTriggerSpec>;

export const TimerTriggerSpec = Closed(
  {
    cron: Type.String({ minLength: 1, description: 'cron with optional seconds field, a descriptor (@hourly) or @every <duration> (e.g. @every 5m)' }),
    timeZone: Type.Optional(Type.String({ minLength: 1, description: 'IANA time zone of the cron (default UTC)' })),
    function: Type.Optional(FunctionRef),
    workflow: Type.Optional(WorkflowRef),
    method: StringEnum(HTTP_METHODS, { default: 'POST', description: 'method of the call' }),
    path: Type.String({ pattern: '^/', default: '/', description: 'path of the call' }),
    headers: Type.Optional(MapOf(Type.String(), { description: 'headers of the call' })),
    body: Type.Optional(Type.String({ description: 'body of the call' })),
    catchUp: Type.Optional(Type.Boolean({ description: 'a run missed while the dataplane was down fires once when it starts again (default: missed runs are not replayed)' })),
  },
  { description: 'invokes a function or a workflow on a schedule (exactly one of function/workflow)', ...Cel(exactlyOneOf('function', 'workflow')) },
);
export type TimerTriggerSpec = Static<typeof TimerTriggerSpec>;

export const BROKER_KINDS = ['nats', 'kafka'] as const;

export const QueueTriggerSpec = Closed(
  {
    broker: Closed({
      kind: StringEnum(BROKER_KINDS, { description: 'message broker' }),
      connection: Closed(
        {
          url: Type.Optional(Type.String({ minLength: 1, description: 'broker address, e.g. nats://nats:4222' })),
          secretRef: Type.Optional(Closed({ name: Name('Secret name'), key: Type.String({ minLength: 1 }) }, { description: 'Secret key holding the address' })),
        },
        { description: 'exactly one of url or secretRef', ...Cel(exactlyOneOf('url', 'secretRef')) },
      ),
    }),
    topic: Type.String({ minLength: 1, maxLength: 255, description: 'NATS subject or Kafka topic consumed' }),
    responseTopic: Type.Optional(Type.String({ minLength: 1, maxLength: 255, description: 'where successful responses are published' })),
    errorTopic: Type.Optional(Type.String({ minLength: 1, maxLength: 255, description: 'where failures are published after the last retry' })),
    maxRetries: Type.Integer({ minimum: 0, maximum: 100, default: 0, description: 'retries of a failed call' }),
    contentType: Type.String({ minLength: 1, default: 'application/json', description: 'Content-Type of the call' }),
    concurrency: Type.Integer({ minimum: 1, maximum: 1_000, default: 1, description: 'messages processed at once' }),
    function: Type.Optional(FunctionRef),
    workflow: Type.Optional(WorkflowRef),
  },
  { description: 'invokes a function or a workflow for each message on a topic (exactly one of function/workflow)', ...Cel(exactlyOneOf('function', 'workflow')) },
);
export type QueueTriggerSpec = Static<typeof QueueTriggerSpec>;

export const WatchTriggerSpec = Closed(
  {
    resource: Closed({
      apiVersion: Type.String({ minLength: 1, default: 'v1', description: 'e.g. v1, apps/v1' }),
      kind: Type.String({ pattern: '^[A-Z][A-Za-z0-9]*$', description: 'e.g. Pod, ConfigMap' }),
    }),
    namespace: Type.Optional(Name('namespace watched (default: all the function may see)')),
    labelSelector: Type.Optional(MapOf(Type.String(), { description: 'labels the watched objects must carry' })),
    function: Type.Optional(FunctionRef),
    workflow: Type.Optional(WorkflowRef),
  },
  { description: 'invokes a function or a workflow for each change of watched Kubernetes objects (exactly one of function/workflow)', ...Cel(exactlyOneOf('function', 'workflow')) },
);
export type WatchTriggerSpec = Static<typeof WatchTriggerSpec>;

export const TriggerStatus = Closed({ ...commonStatus });
