// The validator: schema (ajv over the same TypeBox schemas the CRDs come from),
// then each kind's rules, then rules across a set of objects (references,
// duplicates, route conflicts). Every error carries its field path.
import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv';
import { Type, type TSchema } from '@sinclair/typebox';
import { joinPath, ValidationError, type FieldError, type ObjectError } from './errors.js';
import { API_VERSION, KINDS, KIND_NAMES, isKindName, type KindName, type KubeObject, type SporeObject } from './kinds.js';
import { graphErrors, RULES, taskErrors } from './rules.js';
import { DNS_LABEL, MapOf, Name, StringEnum } from './schema-kit.js';
import { ROUTE_PATH } from './triggers.js';
import jsonata from 'jsonata';
import { actionOf, actionsOf, CONTROL_FLOW, DURATION, expressionOf, Task, WorkflowSpec } from './workflow.js';

const Metadata = Type.Object(
  {
    name: Name('object name'),
    namespace: Type.Optional(Name('namespace')),
    labels: Type.Optional(MapOf(Type.String())),
    annotations: Type.Optional(MapOf(Type.String())),
  },
  { additionalProperties: true },
);

/** The JSON Schema of a whole object of a kind (what a manifest document must be). */
export function objectSchema(kind: KindName): TSchema {
  const info = KINDS[kind];
  return Type.Object({
    apiVersion: StringEnum([API_VERSION] as const),
    kind: StringEnum([kind] as const),
    metadata: Metadata,
    spec: info.spec,
    status: Type.Optional(info.status),
  });
}

const ajv = new Ajv({ allErrors: true, useDefaults: true, verbose: true, strict: true });
// the API server's own keywords: rules.ts checks what they say, with field paths
for (const keyword of ['x-kubernetes-preserve-unknown-fields', 'x-kubernetes-validations', 'x-kubernetes-list-type', 'x-kubernetes-list-map-keys']) ajv.addKeyword({ keyword });
const validators = new Map<KindName, ValidateFunction>(KIND_NAMES.map((k) => [k, ajv.compile(objectSchema(k))]));

// what an action inside a workflow task holds (then, do, catch …): a task, or a graph of tasks
const taskValidator = ajv.compile(Task);
const subWorkflowValidator = ajv.compile(Type.Pick(WorkflowSpec, ['tasks', 'output', 'outputHeaders'], { additionalProperties: false }));

const schemaErrors = (validate: ValidateFunction, value: unknown, path: string): FieldError[] =>
  validate(value) ? [] : (validate.errors ?? []).map(describe).map((e) => ({ ...e, path: e.path ? `${path}${e.path.startsWith('[') ? '' : '.'}${e.path}` : path }));

/** Errors in the actions a task holds, at any depth (the schema sees them as free-form JSON). */
function actionErrors(task: Task, at: string): FieldError[] {
  const errors: FieldError[] = [];
  for (const { path, value } of actionsOf(task, at)) {
    const action = actionOf(value);
    if (action.kind === 'task') {
      const own = schemaErrors(taskValidator, action.task, path);
      errors.push(...(own.length ? own : [...taskErrors(action.task, path), ...actionErrors(action.task, path)]));
    } else if (action.kind === 'workflow') {
      const own = schemaErrors(subWorkflowValidator, action.workflow, path);
      const inner = Object.entries(action.workflow.tasks).flatMap(([id, t]) => actionErrors(t, `${path}.tasks.${id}`));
      errors.push(...(own.length ? own : [...graphErrors(action.workflow, path), ...inner]));
    }
  }
  return errors;
}

/** Every expression (`{…}`) in a workflow that JSONata cannot read, with where it is: found at synth, not mid-run. */
function expressionErrors(value: unknown, path: string): FieldError[] {
  const text = expressionOf(value);
  if (text !== undefined) {
    try {
      jsonata(text);
      return [];
    } catch (err) {
      return [{ path, message: `{${text}} is not a valid JSONata expression: ${(err as Error).message}` }];
    }
  }
  if (Array.isArray(value)) return value.flatMap((v, i) => expressionErrors(v, `${path}[${i}]`));
  if (typeof value === 'object' && value !== null) return Object.entries(value).flatMap(([k, v]) => expressionErrors(v, `${path}.${k}`));
  return [];
}

/** A task and every task its actions hold, at any depth, with where each is (for references). */
function* tasksWithin(task: Task, at: string): Generator<{ path: string; task: Task }> {
  yield { path: at, task };
  for (const { path, value } of actionsOf(task, at)) {
    const action = actionOf(value);
    if (action.kind === 'task') yield* tasksWithin(action.task, path);
    if (action.kind === 'workflow') for (const [id, t] of Object.entries(action.workflow.tasks)) yield* tasksWithin(t, `${path}.tasks.${id}`);
  }
}

const PATTERN_HINTS: Record<string, string> = {
  [DNS_LABEL]: "must be a DNS-1123 label: lowercase letters, digits and '-', starting and ending with a letter or digit",
  [ROUTE_PATH]: 'must be a URL path such as /hello or /users/:id',
  [DURATION]: 'must be a duration such as 500ms, 5s, 1m or 1h30m',
};

function describe(e: ErrorObject): FieldError {
  const parts = e.instancePath.split('/').slice(1).map((p) => p.replace(/~1/g, '/').replace(/~0/g, '~'));
  const got = e.data === undefined ? '' : ` (got ${JSON.stringify(e.data)})`;
  switch (e.keyword) {
    case 'required':
      return { path: joinPath([...parts, e.params.missingProperty]), message: 'is required' };
    case 'additionalProperties': {
      const known = Object.keys((e.parentSchema as { properties?: object })?.properties ?? {});
      return { path: joinPath([...parts, e.params.additionalProperty]), message: `is not a known field${known.length ? ` (known: ${known.join(', ')})` : ''}` };
    }
    case 'enum':
      return { path: joinPath(parts), message: `must be one of: ${e.params.allowedValues.join(', ')}${got}` };
    case 'pattern':
      return { path: joinPath(parts), message: `${PATTERN_HINTS[e.params.pattern] ?? `must match ${e.params.pattern}`}${got}` };
    case 'maxLength':
      return { path: joinPath(parts), message: `must be at most ${e.params.limit} characters long` };
    default:
      return { path: joinPath(parts), message: `${e.message}${typeof e.data === 'object' ? '' : got}` };
  }
}

function dedupe<T extends FieldError>(errors: T[]): T[] {
  const seen = new Set<string>();
  return errors.filter((e) => {
    const key = `${(e as Partial<ObjectError>).object ?? ''}|${e.path}|${e.message}`;
    return seen.has(key) ? false : (seen.add(key), true);
  });
}

/** Validates one spore.dev object; returns every error, or [] (never throws). Objects of other kinds need only a kind and a name. */
export function validateObject(input: unknown): FieldError[] {
  return check(input).errors;
}

/** Returns a copy of a valid spore.dev object with every default applied, or throws a ValidationError listing all errors. */
export function normalize<K extends KindName>(input: unknown): SporeObject<K> {
  const { errors, value } = check(input);
  if (errors.length) throw new ValidationError(errors, `invalid ${describeObject(input)}`);
  return value as SporeObject<K>;
}

function check(input: unknown): { errors: FieldError[]; value?: unknown } {
  if (typeof input !== 'object' || input === null || Array.isArray(input)) return { errors: [{ path: '', message: 'must be an object' }] };
  const obj = input as Partial<KubeObject>;
  if (typeof obj.apiVersion !== 'string' || !obj.apiVersion) return { errors: [{ path: 'apiVersion', message: 'is required' }] };
  if (typeof obj.kind !== 'string' || !obj.kind) return { errors: [{ path: 'kind', message: 'is required' }] };
  if (typeof obj.metadata?.name !== 'string' || !obj.metadata.name) return { errors: [{ path: 'metadata.name', message: 'is required' }] };
  if (!obj.apiVersion.startsWith('spore.dev/')) return { errors: [], value: input };
  if (obj.apiVersion !== API_VERSION) return { errors: [{ path: 'apiVersion', message: `must be ${API_VERSION} (got "${obj.apiVersion}")` }] };
  if (!isKindName(obj.kind)) return { errors: [{ path: 'kind', message: `must be one of: ${KIND_NAMES.join(', ')} (got "${obj.kind}")` }] };
  const value = structuredClone(input);
  const validate = validators.get(obj.kind)!;
  if (!validate(value)) return { errors: dedupe((validate.errors ?? []).map(describe)) };
  const rule = RULES[obj.kind] as (o: unknown) => FieldError[];
  const errors = rule(value);
  if (obj.kind === 'Workflow') {
    const spec = (value as SporeObject<'Workflow'>).spec;
    for (const [id, t] of Object.entries(spec.tasks)) errors.push(...actionErrors(t, `spec.tasks.${id}`));
    errors.push(...expressionErrors(spec.tasks, 'spec.tasks'), ...expressionErrors(spec.outputHeaders, 'spec.outputHeaders'));
  }
  return errors.length ? { errors } : { errors: [], value };
}

/** `Kind/namespace/name`, the way errors and plans name an object. */
export function describeObject(input: unknown): string {
  const o = (input ?? {}) as Partial<KubeObject>;
  return `${o.kind ?? '?'}/${o.metadata?.namespace ?? 'default'}/${o.metadata?.name ?? '?'}`;
}

/** The part of a route two triggers must not share: host, method and path shape (`:params` are wildcards). */
function routeKeys(spec: SporeObject<'HttpTrigger'>['spec']): string[] {
  const shape = spec.path !== undefined ? spec.path.replace(/:[^/]+/g, ':').replace(/(.)\/$/, '$1') : `${spec.prefix}/**`;
  return (spec.methods ?? ['GET']).map((m) => `${spec.host ?? '*'} ${m} ${shape}`);
}

/**
 * Validates a set of objects that are applied together: each object, then
 * names unique per kind and namespace, references resolving inside the set,
 * and no two HttpTriggers claiming the same host + method + path.
 */
export function validateSet(objects: readonly unknown[]): ObjectError[] {
  const errors: ObjectError[] = [];
  const checked: KubeObject[] = [];
  for (const obj of objects) {
    const { errors: own, value } = check(obj);
    errors.push(...own.map((e) => ({ object: describeObject(obj), ...e })));
    if (value) checked.push(value as KubeObject);
  }
  return dedupe([...errors, ...crossCheck(checked)]);
}

/**
 * Checks across objects that are each valid on their own: names unique per
 * kind and namespace, references resolving inside the set, and no two
 * HttpTriggers claiming the same host + method + path.
 */
export function crossCheck(objects: readonly KubeObject[]): ObjectError[] {
  const errors: ObjectError[] = [];
  const seen = new Set<string>();
  for (const o of objects) {
    const key = `${o.apiVersion}|${describeObject(o)}`;
    if (seen.has(key)) errors.push({ object: describeObject(o), path: 'metadata.name', message: 'is defined twice' });
    seen.add(key);
  }
  const valid = objects.filter((o) => o.apiVersion === API_VERSION && isKindName(o.kind)) as unknown as SporeObject[];
  const ns = (o: SporeObject) => o.metadata.namespace ?? 'default';
  const names = new Set(valid.map((o) => `${o.kind}/${ns(o)}/${o.metadata.name}`));
  const known = (kind: KindName, o: SporeObject) => valid.filter((x) => x.kind === kind && ns(x) === ns(o)).map((x) => x.metadata.name);
  const ref = (o: SporeObject, kind: KindName, name: string, path: string) => {
    if (names.has(`${kind}/${ns(o)}/${name}`)) return;
    const list = known(kind, o);
    errors.push({ object: describeObject(o), path, message: `unknown ${kind} "${name}"${list.length ? ` (known: ${list.join(', ')})` : ` (no ${kind} in namespace ${ns(o)})`}` });
  };
  const routes = new Map<string, string>();
  /** Workflows each workflow runs (`namespace/name` → names): one may not come back to itself. */
  const runs = new Map<string, Set<string>>();
  for (const o of valid) {
    const spec = o.spec as Record<string, any>;
    if (o.kind === 'Function') {
      ref(o, 'Environment', spec.environment.name, 'spec.environment.name');
      ref(o, 'Package', spec.package.name, 'spec.package.name');
    }
    if (spec.function) ref(o, 'Function', spec.function.name, 'spec.function.name');
    if (o.kind === 'HttpTrigger') {
      (spec.functions ?? []).forEach((f: { name: string }, i: number) => ref(o, 'Function', f.name, `spec.functions[${i}].name`));
      for (const key of routeKeys(spec as SporeObject<'HttpTrigger'>['spec'])) {
        const other = routes.get(key);
        if (other) {
          const [host, method, shape] = key.split(' ');
          const what = `${method} ${spec.path ?? `${spec.prefix} (prefix)`}${host === '*' ? '' : ` on host ${host}`}`;
          errors.push({ object: describeObject(o), path: spec.path ? 'spec.path' : 'spec.prefix', message: `${what} is already routed by ${other}${shape.includes(':') ? ' (parameter names do not tell routes apart)' : ''}` });
        } else routes.set(key, describeObject(o));
      }
    }
    if (spec.workflow) ref(o, 'Workflow', spec.workflow.name, 'spec.workflow.name');
    if (o.kind === 'Workflow') {
      for (const [id, top] of Object.entries(spec.tasks as Record<string, Task>)) {
        for (const { path, task } of tasksWithin(top, `spec.tasks.${id}`)) {
          // a task runs a Function or, by the same name, a Workflow (they share the /_fn/ names)
          if (!Object.hasOwn(CONTROL_FLOW, task.run) && !names.has(`Workflow/${ns(o)}/${task.run}`)) ref(o, 'Function', task.run, `${path}.run`);
          const key = `${ns(o)}/${o.metadata.name}`;
          if (names.has(`Workflow/${ns(o)}/${task.run}`)) runs.set(key, (runs.get(key) ?? new Set<string>()).add(task.run));
        }
      }
      // /_fn/<namespace>/<name> calls either: one name, one meaning
      if (names.has(`Function/${ns(o)}/${o.metadata.name}`)) errors.push({ object: describeObject(o), path: 'metadata.name', message: `Function ${o.metadata.name} has the same name: functions and workflows share the names they are called by (/_fn/${ns(o)}/${o.metadata.name})` });
    }
  }
  // the way from a workflow back to `target` through the workflows it runs, if there is one
  const loop = (namespace: string, from: string, target: string, seen = new Set<string>()): string[] | undefined => {
    for (const next of runs.get(`${namespace}/${from}`) ?? []) {
      if (next === target) return [from, next];
      if (seen.has(next)) continue;
      seen.add(next);
      const rest = loop(namespace, next, target, seen);
      if (rest) return [from, ...rest];
    }
    return undefined;
  };
  for (const key of runs.keys()) {
    const [namespace, name] = key.split('/');
    const cycle = loop(namespace, name, name);
    if (cycle) errors.push({ object: `Workflow/${namespace}/${name}`, path: 'spec.tasks', message: `workflows run each other in a cycle: ${cycle.join(' → ')} (a run would never end)` });
  }
  return dedupe(errors);
}
