// Rules a schema cannot express (one-of fields, sums, graphs, cron syntax),
// per kind. Each takes an object whose defaults are already applied.
import { createHash } from 'node:crypto';
import type { FieldError } from './errors.js';
import type { KindName, SporeObject } from './kinds.js';
import { parseSchedule } from './schedule.js';
import { CONTROL_FLOW, DURATION, TASK_ID, expressionOf, taskInputs, type Task } from './workflow.js';

/** Paths the router answers itself. */
export const RESERVED_PATHS = ['/_fn', '/_spore', '/_stage', '/metrics', '/healthz'];

/**
 * Why an archive URL may not be fetched, or undefined. Absolute URLs are
 * http(s) only: file:// would read the host's files. A relative URL names a
 * file beside the manifests (archives/<sha256>.tgz): plain segments, no `..`,
 * `.` or empty ones, no backslashes, so it cannot leave the manifests' folder.
 */
export function archiveUrlProblem(url: string): string | undefined {
  const scheme = /^([A-Za-z][A-Za-z0-9+.-]*):/.exec(url)?.[1].toLowerCase();
  if (scheme === 'http' || scheme === 'https') return /^https?:\/\/[^/?#]+/i.test(url) ? undefined : `"${url}" has no host`;
  if (scheme) return `"${url}": archive URLs are https://, http:// or a path beside the manifests (archives/<sha256>.tgz); ${scheme}: is not allowed`;
  if (url.includes('\\') || url.startsWith('/') || url.split('/').some((s) => s === '' || s === '.' || s === '..')) {
    return `"${url}" must be a plain relative path inside the manifests' folder (archives/<sha256>.tgz): not absolute, no "..", "." or empty segments, no backslashes`;
  }
  return undefined;
}

type Rule<K extends KindName> = (obj: SporeObject<K>) => FieldError[];

function exactlyOne(where: string, spec: object, a: string, b: string): FieldError[] {
  const has = (k: string) => (spec as Record<string, unknown>)[k] !== undefined;
  if (has(a) === has(b)) return [{ path: where, message: `set exactly one of ${a} or ${b}` }];
  return [];
}

export const RULES: { [K in KindName]: Rule<K> } = {
  Environment: ({ spec }) =>
    spec.runtime.name || spec.runtime.image || spec.runtime.command
      ? []
      : [{ path: 'spec.runtime', message: 'set name (node or python), or an image and/or a command' }],

  Package: ({ spec }) => {
    const errors = exactlyOne('spec.archive', spec.archive, 'inline', 'url');
    if (spec.archive.inline !== undefined) {
      const bytes = Buffer.from(spec.archive.inline, 'base64');
      if (bytes.length !== spec.archive.size) {
        errors.push({ path: 'spec.archive.size', message: `is ${spec.archive.size} but the inline archive has ${bytes.length} bytes` });
      } else if (createHash('sha256').update(bytes).digest('hex') !== spec.archive.sha256) {
        errors.push({ path: 'spec.archive.sha256', message: 'does not match the inline archive' });
      }
    }
    const urlProblem = spec.archive.url === undefined ? undefined : archiveUrlProblem(spec.archive.url);
    if (urlProblem) errors.push({ path: 'spec.archive.url', message: urlProblem });
    return errors;
  },

  Function: ({ spec }) => {
    const { minScale, maxScale } = spec.executor ?? {};
    return minScale !== undefined && maxScale !== undefined && minScale > maxScale
      ? [{ path: 'spec.executor.minScale', message: `is ${minScale}, more than maxScale (${maxScale})` }]
      : [];
  },

  HttpTrigger: ({ spec }) => {
    const errors = [...exactlyOne('spec', spec, 'path', 'prefix')];
    const targets = (['function', 'functions', 'workflow'] as const).filter((k) => spec[k] !== undefined);
    if (targets.length !== 1) errors.push({ path: 'spec', message: `set exactly one of function, functions or workflow${targets.length ? ` (got ${targets.join(' and ')})` : ''}` });
    if (spec.keepPrefix && spec.prefix === undefined) errors.push({ path: 'spec.keepPrefix', message: 'only applies with prefix' });
    if (spec.functions) {
      const sum = spec.functions.reduce((s, f) => s + f.weight, 0);
      if (sum !== 100) errors.push({ path: 'spec.functions', message: `weights sum to ${sum}; they must sum to 100` });
      const names = spec.functions.map((f) => f.name);
      const dup = names.find((n, i) => names.indexOf(n) !== i);
      if (dup) errors.push({ path: 'spec.functions', message: `function "${dup}" is listed twice` });
    }
    const route = spec.path ?? spec.prefix ?? '';
    const reserved = RESERVED_PATHS.find((r) => route === r || route.startsWith(`${r}/`));
    if (reserved) errors.push({ path: spec.path !== undefined ? 'spec.path' : 'spec.prefix', message: `${reserved} is the router's own (reserved: ${RESERVED_PATHS.join(', ')})` });
    const params = route.split('/').filter((s) => s.startsWith(':'));
    const dupParam = params.find((p, i) => params.indexOf(p) !== i);
    if (dupParam) errors.push({ path: spec.path ? 'spec.path' : 'spec.prefix', message: `parameter ${dupParam} appears twice` });
    return errors;
  },

  TimerTrigger: ({ spec }) => {
    const errors = exactlyOne('spec', spec, 'function', 'workflow');
    try {
      parseSchedule(spec.cron, spec.timeZone);
    } catch (err) {
      const msg = (err as Error).message;
      errors.push({ path: msg.includes('time zone') ? 'spec.timeZone' : 'spec.cron', message: msg });
    }
    return errors;
  },

  QueueTrigger: ({ spec }) => {
    const errors = [...exactlyOne('spec', spec, 'function', 'workflow'), ...exactlyOne('spec.broker.connection', spec.broker.connection, 'url', 'secretRef')];
    for (const key of ['responseTopic', 'errorTopic'] as const) {
      if (spec[key] === spec.topic) errors.push({ path: `spec.${key}`, message: `is the consumed topic "${spec.topic}": every reply would be consumed again` });
    }
    return errors;
  },

  WatchTrigger: ({ spec }) => exactlyOne('spec', spec, 'function', 'workflow'),

  Workflow: ({ spec }) => graphErrors(spec, 'spec'),
  Stage: () => [],
  WorkflowRun: () => [{ path: 'kind', message: 'WorkflowRun objects are written by Spore\'s router as workflows run; an app declares the Workflow, not its runs' }],
  Invocation: () => [{ path: 'kind', message: 'Invocation objects are written by Spore\'s router for asynchronous calls (X-Spore-Async); an app declares the Function, not its calls' }],
};

/** The rules of one graph of tasks: a workflow's, or a sub-workflow's inside an action. */
export function graphErrors(graph: { tasks: Record<string, Task>; output?: string }, at: string): FieldError[] {
  const errors: FieldError[] = [];
  for (const [id, task] of Object.entries(graph.tasks)) {
    const path = `${at}.tasks.${id}`;
    if (!new RegExp(TASK_ID).test(id)) errors.push({ path, message: 'task id must start with a letter or _ and hold only letters, digits, _ and -' });
    for (const dep of task.requires ?? []) {
      if (!Object.hasOwn(graph.tasks, dep)) errors.push({ path: `${path}.requires`, message: `unknown task "${dep}"` });
    }
    errors.push(...taskErrors(task, path));
  }
  if (graph.output !== undefined && !Object.hasOwn(graph.tasks, graph.output)) errors.push({ path: `${at}.output`, message: `unknown task "${graph.output}"` });
  const cycle = findCycle(graph.tasks);
  if (cycle) errors.push({ path: `${at}.tasks`, message: `tasks depend on each other in a cycle: ${cycle.join(' → ')}` });
  return errors;
}

/** The rules of one task: the inputs its control flow needs, and their shapes where they are literals. */
export function taskErrors(task: Task, path: string): FieldError[] {
  const errors: FieldError[] = [];
  const inputs = taskInputs(task);
  const literal = (v: unknown) => expressionOf(v) === undefined;
  for (const input of CONTROL_FLOW[task.run]?.required ?? []) {
    if (inputs[input] === undefined) errors.push({ path: `${path}.inputs`, message: `"${task.run}" needs input "${input}"` });
  }
  if (task.run === 'switch' && inputs.cases !== undefined && literal(inputs.cases)) {
    const ok = Array.isArray(inputs.cases) && inputs.cases.every((c) => typeof c === 'object' && c !== null && 'case' in c && 'action' in c);
    if (!ok) errors.push({ path: `${path}.inputs.cases`, message: 'must be a list of { case, action }' });
  }
  if (task.run === 'sleep') {
    const [name, d] = inputs.duration !== undefined ? ['duration', inputs.duration] : ['default', inputs.default];
    const ok = (typeof d === 'string' && new RegExp(DURATION).test(d)) || (typeof d === 'number' && d >= 0);
    if (literal(d) && !ok) errors.push({ path: `${path}.inputs${task.inputs === d ? '' : `.${name}`}`, message: `"sleep" needs a duration such as 500ms, 5s or 1m, or milliseconds (got ${JSON.stringify(d)})` });
  }
  for (const key of ['times', 'limit', 'parallelism'] as const) {
    const v = inputs[key];
    if (v !== undefined && literal(v) && !(Number.isInteger(v) && (v as number) >= (key === 'times' ? 0 : 1))) {
      errors.push({ path: `${path}.inputs.${key}`, message: `must be a whole number${key === 'times' ? '' : ' of at least 1'} (got ${JSON.stringify(v)})` });
    }
  }
  return errors;
}

/** A dependency cycle among tasks, as the list of ids around it, or undefined. */
function findCycle(tasks: Record<string, { requires?: string[] }>): string[] | undefined {
  const state = new Map<string, 'open' | 'done'>();
  const stack: string[] = [];
  const visit = (id: string): string[] | undefined => {
    if (state.get(id) === 'done' || !Object.hasOwn(tasks, id)) return undefined;
    if (state.get(id) === 'open') return [...stack.slice(stack.indexOf(id)), id];
    state.set(id, 'open');
    stack.push(id);
    for (const dep of tasks[id].requires ?? []) {
      const found = visit(dep);
      if (found) return found;
    }
    stack.pop();
    state.set(id, 'done');
    return undefined;
  };
  for (const id of Object.keys(tasks).sort()) {
    const found = visit(id);
    if (found) return found;
  }
  return undefined;
}
