import { Type, type Static } from '@sinclair/typebox';
import { Closed, Json, MapOf, StringEnum, commonStatus } from './schema-kit.js';

/**
 * Control-flow tasks built into the engine (Fission Workflows' set). Their
 * inputs hold expressions and nested actions; `required` lists the inputs
 * each needs, `actions` those holding an action (a task `{ run, inputs }`, a
 * workflow `{ tasks, output }`, or a plain value), and `lazy` those the engine
 * evaluates only when it gets to them (actions, a loop's condition).
 */
export const CONTROL_FLOW: Record<string, { required: readonly string[]; actions?: readonly string[]; lazy?: readonly string[] }> = {
  noop: { required: [] },
  fail: { required: [] },
  sleep: { required: [] }, // its duration: input duration, or the default input (Fission's)
  compose: { required: [] },
  if: { required: ['if', 'then'], actions: ['then', 'else'] },
  switch: { required: ['switch', 'cases'], actions: ['default'], lazy: ['cases'] },
  foreach: { required: ['foreach', 'do'], actions: ['do'] },
  while: { required: ['expr', 'do'], actions: ['do'], lazy: ['expr'] },
  repeat: { required: ['times', 'do'], actions: ['do'] },
};

export const TASK_ID = '^[A-Za-z_][A-Za-z0-9_-]*$';

/** `500ms`, `5s`, `1m30s`: what retry backoffs and timeouts are written in. */
export const DURATION = '^([0-9]+(\\.[0-9]+)?(ms|s|m|h))+$';
const Duration = (description: string) => Type.String({ pattern: DURATION, description: `${description} (e.g. 500ms, 5s, 1m)` });

export const TaskRetry = Closed(
  {
    attempts: Type.Integer({ minimum: 1, maximum: 100, description: 'attempts in all, the first included' }),
    backoff: Type.Optional(Duration('wait before the second attempt, doubled before each next one, at most 1m (default 1s)')),
  },
  { description: 'a failed task is run again' },
);

export const Task = Closed({
  run: Type.String({ minLength: 1, description: 'a Function or Workflow name in this namespace, or a control-flow task: ' + Object.keys(CONTROL_FLOW).join(', ') }),
  inputs: Type.Optional(
    Json({ description: 'inputs by name, each a literal or an expression "{…}" (JSONata over $.Invocation, $.Tasks); or one value, the default input (Fission: inputs: "{$.Tasks.a.Output}")' }),
  ),
  requires: Type.Optional(Type.Array(Type.String({ pattern: TASK_ID }), { uniqueItems: true, description: 'tasks that must finish first' })),
  retry: Type.Optional(TaskRetry),
  timeout: Type.Optional(Duration('bound on each attempt')),
  catch: Type.Optional(Json({ description: 'an action run when the task failed (after its retries): its output becomes the task\'s; $.Error holds the failure' })),
  description: Type.Optional(Type.String()),
});
export type Task = Static<typeof Task>;

export const WorkflowSpec = Closed(
  {
    output: Type.Optional(Type.String({ pattern: TASK_ID, description: "the task whose output is the workflow's (default: the last to finish)" })),
    outputHeaders: Type.Optional(MapOf(Type.String(), { description: 'response headers; values may be expressions' })),
    tasks: MapOf(Task, { minProperties: 1, description: 'tasks by id' }),
    timeout: Type.Optional(Duration('bound on a whole run')),
    parallelism: Type.Integer({ minimum: 1, maximum: 100, default: 10, description: 'function calls one run makes at once' }),
    description: Type.Optional(Type.String()),
  },
  { description: 'functions composed into a graph of tasks' },
);
export type WorkflowSpec = Static<typeof WorkflowSpec>;

export const WorkflowStatus = Closed({
  ...commonStatus,
  phase: Type.Optional(StringEnum(['Pending', 'Ready', 'Failed'] as const)),
});

/** The expression a value holds (Fission's form: the whole string is `{…}`), or undefined for a literal. */
export function expressionOf(value: unknown): string | undefined {
  if (typeof value !== 'string') return undefined;
  const m = /^\s*\{([\s\S]*)\}\s*$/.exec(value);
  return m ? m[1] : undefined;
}

const isPlainObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** A task's inputs by name: a map as written, or one value as the default input (Fission's short form). */
export function taskInputs(task: { inputs?: unknown }): Record<string, unknown> {
  if (task.inputs === undefined) return {};
  return isPlainObject(task.inputs) ? task.inputs : { default: task.inputs };
}

/** What an action (then, else, do, a case, catch) holds: a task, a whole workflow, or a plain value. */
export type SubWorkflow = Pick<WorkflowSpec, 'tasks' | 'output' | 'outputHeaders'>;
export type Action = { kind: 'task'; task: Task } | { kind: 'workflow'; workflow: SubWorkflow } | { kind: 'value'; value: unknown };

export function actionOf(value: unknown): Action {
  if (isPlainObject(value) && 'run' in value) return { kind: 'task', task: value as Task };
  if (isPlainObject(value) && isPlainObject(value.tasks)) return { kind: 'workflow', workflow: value as SubWorkflow };
  return { kind: 'value', value };
}

/** The actions a task holds (its control flow's, its catch), with where they are. */
export function actionsOf(task: Task, at: string): { path: string; value: unknown }[] {
  const found: { path: string; value: unknown }[] = [];
  const inputs = taskInputs(task);
  for (const name of CONTROL_FLOW[task.run]?.actions ?? []) {
    if (inputs[name] !== undefined) found.push({ path: `${at}.inputs.${name}`, value: inputs[name] });
  }
  if (task.run === 'switch' && Array.isArray(inputs.cases)) {
    inputs.cases.forEach((c, i) => isPlainObject(c) && c.action !== undefined && found.push({ path: `${at}.inputs.cases[${i}].action`, value: c.action }));
  }
  if (task.catch !== undefined) found.push({ path: `${at}.catch`, value: task.catch });
  return found;
}
