import type { Construct } from 'constructs';
import type { HttpMethod, HttpTriggerSpec } from '../api/index.js';
import { calleeRefs, functionName, type FunctionRef, type WorkflowRef } from './function-ref.js';
import { SporeObject, type SporeObjectOptions } from './spore-object.js';

export interface RouteOptions extends SporeObjectOptions {
  /** Serve only requests for this Host (e.g. api.example.com). @default any host */
  readonly host?: string;
  /** Treat the path as a prefix: every path under it is served. @default false */
  readonly prefix?: boolean;
  /** With `prefix`: pass the full path on instead of trimming the prefix. @default false */
  readonly keepPrefix?: boolean;
}

export interface WeightedFunction {
  readonly function: FunctionRef;
  /** Percent of calls (all weights sum to 100). */
  readonly weight: number;
}

export interface HttpTriggerProps extends SporeObjectOptions {
  /** Methods served. @default ['GET'] */
  readonly methods?: HttpMethod[];
  /** Exact path; `:name` segments reach the function as `X-Spore-Param-<name>` headers. Give this or `prefix`. */
  readonly path?: string;
  /** Serve every path under this prefix. Give this or `path`. */
  readonly prefix?: string;
  /** With `prefix`: pass the full path on instead of trimming the prefix. @default false */
  readonly keepPrefix?: boolean;
  /** Serve only this Host. @default any host */
  readonly host?: string;
  /** The function called. Give this or `functions`. */
  readonly function?: FunctionRef;
  /** A canary split: functions with weights summing to 100. */
  readonly functions?: WeightedFunction[];
  /** A Workflow called instead of a function: the response is its output. */
  readonly workflow?: WorkflowRef;
}

/**
 * Routes HTTP requests to a function, or splits them by weight between
 * functions (a canary). `fn.addRoute('GET', '/hello/:name')` is the short form.
 */
export class HttpTrigger extends SporeObject {
  constructor(
    scope: Construct,
    id: string,
    private readonly config: HttpTriggerProps,
  ) {
    super(scope, id, 'HttpTrigger', config);
  }

  protected renderSpec(): HttpTriggerSpec {
    const c = this.config;
    return {
      methods: c.methods ?? ['GET'],
      path: c.path,
      prefix: c.prefix,
      keepPrefix: c.keepPrefix ?? false,
      host: c.host,
      ...calleeRefs(c),
      functions: c.functions?.map((f) => ({ name: functionName(f.function), weight: f.weight })),
    };
  }
}
