// One workflow run, executed: the graph's tasks start when what they require
// has succeeded (independent ones at once; function calls bounded by the
// workflow's parallelism), control-flow tasks run their actions, and every
// task is written to the run store when it starts and when it ends. Resumed
// after a stop, a task that had succeeded is not run again (its stored output
// stands) and the one that was in flight runs again: at least once.
//
// A task's path names it in the store and in its calls' request ids: its id;
// a task of a sub-workflow `sub.inner`; an action the engine runs for a task
// `cond:then`, `each:3`, `t:catch` (`:` is in no task id, so the two never meet).
import { createHash } from 'node:crypto';
import { isDeepStrictEqual } from 'node:util';
import parseDuration from 'parse-duration';
import { actionOf, CONTROL_FLOW, expressionOf, HTTP_METHODS, taskInputs, type SubWorkflow, type Task, type WorkflowSpec } from '../../api/index.js';
import type { RunError, TaskRecord, WorkflowRun, WorkflowRunStore } from '../../store/index.js';
import type { Invocation, InvokeResult } from '../router/router.js';
import { evaluate, evaluateInputs, type Scope } from './expressions.js';

/** A task failed (after its retries), and nothing caught it. */
export class TaskFailed extends Error {
  constructor(readonly error: RunError) {
    super(error.message);
  }
}

/** Why a run stops without an end of its own: Spore stops (the run resumes at the next start), or its time is up. */
export class Interrupted extends Error {
  constructor(readonly reason: 'stopped' | 'timeout', message: string) {
    super(message);
  }
}

export interface RunDeps {
  /** Where tasks are written; tasksOf: those the run had kept when it (re)started. */
  store: Pick<WorkflowRunStore, 'putTask'> & { tasksOf(runId: string): TaskRecord[] };
  invoke(call: Invocation): Promise<InvokeResult>;
  /** A Workflow of the namespace, for a task that runs one. */
  workflow(namespace: string, name: string): WorkflowSpec | undefined;
  /** Called as each task ends (metrics). */
  onTask?(path: string, state: 'succeeded' | 'failed', seconds: number): void;
}

const BODY_KEPT = 4096;
const MAX_BACKOFF_MS = 60_000;
const WHILE_LIMIT = 100;
const REQUEST_ID_MAX = 128;
/** Workflows running workflows, at most this deep (synth refuses cycles; this bounds what it cannot see). */
export const MAX_DEPTH = 16;
/** Headers a task may not set on its call: they are the router's (x-spore-async would make the call a 202). */
const ROUTER_HEADERS = /^x-spore-/i;

const ms = (text: string, what: string): number => {
  const n = parseDuration(text);
  if (n == null || !Number.isFinite(n) || n < 0) throw new Error(`${what} must be a duration such as 500ms, 5s or 1m (got ${JSON.stringify(text)})`);
  return n;
};

/** Rejects with the signal's reason as soon as it aborts. */
function raced<T>(work: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener('abort', onAbort, { once: true });
    work.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
  });
}

const sleep = (delayMs: number, signal: AbortSignal) => raced(new Promise<void>((r) => setTimeout(r, delayMs).unref()), signal);

/** Function calls of one run at once: at most `size`. */
class Slots {
  private free: number;
  private readonly waiting: (() => void)[] = [];
  constructor(size: number) {
    this.free = size;
  }
  async take(signal: AbortSignal): Promise<void> {
    if (this.free > 0) {
      this.free--;
      return;
    }
    let wake!: () => void;
    const got = new Promise<void>((r) => (wake = r));
    this.waiting.push(wake);
    try {
      await raced(got, signal);
    } catch (err) {
      const i = this.waiting.indexOf(wake);
      if (i >= 0) this.waiting.splice(i, 1);
      else this.give(); // woken as it gave up: pass the slot on
      throw err;
    }
  }
  give(): void {
    const next = this.waiting.shift();
    if (next) next();
    else this.free++;
  }
}

const truthy = (v: unknown) => Boolean(v) && !(Array.isArray(v) && v.length === 0);

export class RunExecution {
  private readonly done: Map<string, TaskRecord>;
  private readonly slots: Slots;
  private readonly spec: WorkflowSpec;

  constructor(
    private readonly run: WorkflowRun,
    private readonly deps: RunDeps,
  ) {
    this.spec = run.spec as WorkflowSpec;
    this.done = new Map(deps.store.tasksOf(run.id).map((t) => [t.path, t]));
    this.slots = new Slots(this.spec.parallelism ?? 10);
  }

  /** Runs (or resumes) the workflow: its output and response headers, or throws TaskFailed / Interrupted. */
  async execute(signal: AbortSignal): Promise<{ output: unknown; headers: Record<string, string> }> {
    const scope = { Invocation: { Inputs: (this.run.input ?? {}) as Record<string, unknown> } };
    const { output, tasks } = await this.graph(this.spec, scope, '', signal);
    const headers: Record<string, string> = {};
    for (const [name, v] of Object.entries(this.spec.outputHeaders ?? {})) {
      const value = await evaluate(v, { ...scope, Tasks: tasks });
      if (value !== undefined && value !== null) headers[name] = typeof value === 'string' ? value : JSON.stringify(value);
    }
    return { output, headers };
  }

  /** A graph of tasks: each starts once the tasks it requires succeeded; its output is the output task's, or the last to finish. */
  private graph(g: SubWorkflow, outer: Omit<Scope, 'Tasks'>, prefix: string, parent: AbortSignal): Promise<{ output: unknown; tasks: Scope['Tasks'] }> {
    // the first failure stops the graph's other tasks (they take no next step)
    const failed = new AbortController();
    const signal = AbortSignal.any([parent, failed.signal]);
    const tasks: Scope['Tasks'] = {};
    const ids = Object.keys(g.tasks);
    const started = new Set<string>();
    let running = 0;
    let last: { id: string; at: number } | undefined;
    return new Promise((resolve, reject) => {
      const launch = () => {
        for (const id of ids) {
          if (signal.aborted || started.has(id) || !(g.tasks[id].requires ?? []).every((d) => tasks[d]?.Status === 'succeeded')) continue;
          started.add(id);
          running++;
          this.task(g.tasks[id], `${prefix}${id}`, { ...outer, Tasks: tasks }, signal).then(
            (r) => {
              running--;
              tasks[id] = { Inputs: r.inputs, Output: r.output, Status: 'succeeded' };
              if (!last || r.finished >= last.at) last = { id, at: r.finished };
              if (started.size < ids.length) return launch();
              if (running === 0) resolve({ output: tasks[g.output ?? last.id].Output, tasks });
            },
            (err) => {
              if (!failed.signal.aborted) failed.abort(err);
              reject(err);
            },
          );
        }
      };
      launch();
    });
  }

  /** One task: its inputs evaluated, then its attempts; a failure goes to its catch, when it has one. */
  private async task(task: Task, path: string, scope: Scope, signal: AbortSignal): Promise<{ output: unknown; inputs: unknown; finished: number }> {
    const flow = CONTROL_FLOW[task.run];
    const lazy = [...(flow?.actions ?? []), ...(flow?.lazy ?? [])];
    const prior = this.done.get(path);
    // done before (this run resumed): its output stands; its inputs, from the same scope, are evaluated again for $.Tasks
    if (prior?.state === 'succeeded') return { output: prior.output, inputs: await evaluateInputs(taskInputs(task), scope, lazy).catch(() => undefined), finished: prior.finished ?? prior.started };
    // a task failed before runs afresh (its parent is retried); one cut short by a stop goes on counting its attempts
    const record: TaskRecord = { path, state: 'running', attempts: prior?.state === 'running' ? prior.attempts : 0, started: Date.now() };
    let inputs: Record<string, unknown> = {};
    let error: RunError;
    try {
      inputs = await evaluateInputs(taskInputs(task), scope, lazy);
      const output = await this.attempts(task, path, scope, inputs, record, signal);
      this.settle(record, 'succeeded', { output });
      return { output, inputs, finished: record.finished! };
    } catch (err) {
      if (signal.aborted) throw signal.reason;
      error = err instanceof TaskFailed ? err.error : { message: `task ${path}: ${(err as Error).message}`, task: path };
      this.settle(record, 'failed', { error });
    }
    if (task.catch === undefined) throw new TaskFailed(error);
    const output = await this.action(task.catch, { ...scope, Error: error }, `${path}:catch`, signal);
    return { output, inputs, finished: Date.now() };
  }

  private settle(record: TaskRecord, state: 'succeeded' | 'failed', r: { output?: unknown; error?: RunError }): void {
    Object.assign(record, { state, finished: Date.now(), ...r });
    this.deps.store.putTask(this.run.id, record);
    this.done.set(record.path, record);
    this.deps.onTask?.(record.path, state, (record.finished! - record.started) / 1000);
  }

  /** The task's attempts: as many as its retry allows, each bounded by its timeout. */
  private async attempts(task: Task, path: string, scope: Scope, inputs: Record<string, unknown>, record: TaskRecord, signal: AbortSignal): Promise<unknown> {
    // a resumed task's interrupted attempt counts, and runs again
    const max = Math.max(task.retry?.attempts ?? 1, record.attempts + 1);
    const backoff = task.retry?.backoff ? ms(task.retry.backoff, 'retry.backoff') : 1000;
    const timeout = task.timeout ? ms(task.timeout, 'timeout') : undefined;
    for (;;) {
      record.attempts++;
      this.deps.store.putTask(this.run.id, record);
      const bounded = timeout === undefined ? signal : AbortSignal.any([signal, AbortSignal.timeout(timeout)]);
      try {
        return await raced(this.perform(task, path, scope, inputs, record.attempts, bounded), bounded);
      } catch (err) {
        if (signal.aborted) throw signal.reason;
        const timedOut = bounded !== signal && bounded.aborted;
        const failure = timedOut ? new TaskFailed({ message: `task ${path} timed out after ${task.timeout}`, task: path }) : err;
        if (record.attempts >= max) throw failure;
        await sleep(Math.min(backoff * 2 ** (record.attempts - 1), MAX_BACKOFF_MS), signal);
      }
    }
  }

  private perform(task: Task, path: string, scope: Scope, inputs: Record<string, unknown>, attempt: number, signal: AbortSignal): Promise<unknown> {
    if (CONTROL_FLOW[task.run]) return this.controlFlow(task.run, inputs, path, scope, signal);
    const sub = this.deps.workflow(this.run.namespace, task.run);
    if (sub) {
      if (path.split('.').length > MAX_DEPTH) throw new TaskFailed({ message: `task ${path}: workflows run workflows more than ${MAX_DEPTH} deep (does ${task.run} run itself through another?)`, task: path });
      return this.graph(sub, { Invocation: { Inputs: inputs } }, `${path}.`, signal).then((r) => r.output);
    }
    return this.call(task.run, inputs, path, attempt, signal);
  }

  /** An action (then, else, do, a case, catch): a task, a sub-workflow, or a value. */
  private async action(value: unknown, scope: Scope, path: string, signal: AbortSignal): Promise<unknown> {
    const a = actionOf(value);
    if (a.kind === 'task') return (await this.task(a.task, path, scope, signal)).output;
    if (a.kind === 'workflow') return (await this.graph(a.workflow, scope, `${path}.`, signal)).output;
    return evaluate(a.value, scope);
  }

  private async controlFlow(kind: string, inputs: Record<string, unknown>, path: string, scope: Scope, signal: AbortSignal): Promise<unknown> {
    const fail = (message: string): never => {
      throw new TaskFailed({ message: `task ${path}: ${message}`, task: path });
    };
    const count = (name: string, dflt: number, min: number): number => {
      const v = inputs[name] ?? dflt;
      return Number.isInteger(v) && (v as number) >= min ? (v as number) : fail(`${kind}: input "${name}" must be a whole number of at least ${min} (got ${JSON.stringify(v)})`);
    };
    switch (kind) {
      case 'noop':
        return inputs.default;
      case 'fail':
        return fail(typeof inputs.default === 'string' ? inputs.default : typeof inputs.message === 'string' ? inputs.message : 'failed (a fail task)');
      case 'sleep': {
        // Fission's sleep takes its duration as the default input (text, or milliseconds); `duration` says the same
        const d = inputs.duration ?? inputs.default;
        const wait = typeof d === 'string' ? ms(d, 'sleep: its duration') : typeof d === 'number' && d >= 0 ? d : fail(`sleep: its duration must be such as 2s, or milliseconds (got ${JSON.stringify(d)})`);
        await sleep(wait, signal);
        return 'duration' in inputs ? inputs.default : undefined;
      }
      case 'compose':
        return 'default' in inputs ? inputs.default : inputs;
      case 'if':
        if (truthy(inputs.if)) return this.action(inputs.then, scope, `${path}:then`, signal);
        return inputs.else === undefined ? undefined : this.action(inputs.else, scope, `${path}:else`, signal);
      case 'switch': {
        // cases are lazy: only the matching one's action runs (an expression for the whole list is evaluated here)
        const cases = expressionOf(inputs.cases) === undefined ? inputs.cases : await evaluate(inputs.cases, scope);
        if (!Array.isArray(cases)) return fail(`switch: input "cases" must be a list of { case, action } (got ${JSON.stringify(cases)})`);
        for (const [i, c] of cases.entries()) {
          if (isDeepStrictEqual(await evaluate((c as { case?: unknown }).case, scope), inputs.switch)) return this.action((c as { action?: unknown }).action, scope, `${path}:case${i}`, signal);
        }
        return inputs.default === undefined ? undefined : this.action(inputs.default, scope, `${path}:default`, signal);
      }
      case 'foreach': {
        const items = inputs.foreach;
        if (!Array.isArray(items)) return fail(`foreach: input "foreach" must be a list (got ${JSON.stringify(items)})`);
        const width = inputs.sequential === true ? 1 : count('parallelism', this.spec.parallelism ?? 10, 1);
        const outputs: unknown[] = new Array(items.length);
        // the first failure stops the others from starting (those under way finish)
        let next = 0;
        let failed = false;
        const worker = async () => {
          while (next < items.length && !failed && !signal.aborted) {
            const i = next++;
            outputs[i] = await this.action(inputs.do, { ...scope, Item: items[i], Index: i }, `${path}:${i}`, signal).catch((err) => {
              failed = true;
              throw err;
            });
          }
        };
        await Promise.all(Array.from({ length: Math.min(width, items.length) }, worker));
        return inputs.collect === false ? undefined : outputs;
      }
      case 'while': {
        const limit = count('limit', WHILE_LIMIT, 1);
        const delay = typeof inputs.delay === 'string' ? ms(inputs.delay, 'while: input "delay"') : 0;
        let prev: unknown;
        for (let i = 0; ; i++) {
          if (!truthy(await evaluate(inputs.expr, { ...scope, Prev: prev, Index: i }))) return prev;
          if (i >= limit) return fail(`while: the condition still holds after ${limit} iterations (input "limit")`);
          if (i > 0 && delay) await sleep(delay, signal);
          prev = await this.action(inputs.do, { ...scope, Prev: prev, Index: i }, `${path}:${i}`, signal);
        }
      }
      case 'repeat': {
        const times = count('times', 0, 0);
        let prev: unknown;
        for (let i = 0; i < times; i++) prev = await this.action(inputs.do, { ...scope, Prev: prev, Index: i }, `${path}:${i}`, signal);
        return prev;
      }
      default:
        return fail(`unknown control-flow task ${kind}`);
    }
  }

  /**
   * A function call through the invocation core, the way Fission Workflows
   * makes it: the default input (or `body`) is the body — text as text, any
   * other value as JSON — and `headers`, `query`, `method` shape the request.
   * The output is the answer: JSON when it says so, text otherwise.
   */
  private async call(name: string, inputs: Record<string, unknown>, path: string, attempt: number, signal: AbortSignal): Promise<unknown> {
    const fail = (message: string, more: Partial<RunError> = {}): never => {
      throw new TaskFailed({ message: `task ${path}: ${message}`, task: path, ...more });
    };
    const body = inputs.default !== undefined ? inputs.default : inputs.body;
    const method = String(inputs.method ?? (body === undefined ? 'GET' : 'POST')).toUpperCase();
    if (!(HTTP_METHODS as readonly string[]).includes(method)) fail(`input "method" must be one of ${HTTP_METHODS.join(', ')} (got ${JSON.stringify(inputs.method)})`);
    const headers: Record<string, string> = {};
    for (const [k, v] of Object.entries((inputs.headers ?? {}) as Record<string, unknown>)) {
      if (!ROUTER_HEADERS.test(k)) headers[k.toLowerCase()] = typeof v === 'string' ? v : JSON.stringify(v);
    }
    let payload: string | undefined;
    if (body !== undefined && method !== 'GET' && method !== 'HEAD') {
      payload = typeof body === 'string' ? body : JSON.stringify(body);
      headers['content-type'] ??= typeof body === 'string' ? 'text/plain; charset=utf-8' : 'application/json';
    }
    const query = inputs.query && typeof inputs.query === 'object' ? new URLSearchParams(Object.entries(inputs.query).map(([k, v]): [string, string] => [k, typeof v === 'string' ? v : JSON.stringify(v)])).toString() : '';
    let requestId = `${this.run.id}:${path}:${attempt}`;
    if (requestId.length > REQUEST_ID_MAX) requestId = `${this.run.id}:${createHash('sha256').update(path).digest('hex').slice(0, 32)}:${attempt}`;
    await this.slots.take(signal);
    // the slot is the call's until it ends, even when the task gives up on it first (a timeout): parallelism holds
    const call = this.deps.invoke({ namespace: this.run.namespace, name, method, path: query ? `/?${query}` : '/', headers, body: payload, requestId });
    void call.then(
      () => this.slots.give(),
      () => this.slots.give(),
    );
    const res = await raced(call, signal);
    if (res.status < 200 || res.status > 299) return fail(`function ${name} answered ${res.status}`, { status: res.status, body: res.body.slice(0, BODY_KEPT) });
    const type = String(res.headers['content-type'] ?? '');
    if (/[/+]json\b/i.test(type) && res.body !== '') {
      try {
        return JSON.parse(res.body);
      } catch {
        return res.body; // said JSON, was not: kept as text
      }
    }
    return res.body;
  }
}
