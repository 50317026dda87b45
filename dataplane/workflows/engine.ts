// The workflow engine: follows the store's Workflows, starts runs (called
// like a function: /_fn/<namespace>/<workflow>, a route, a timer or a queue),
// keeps each in the run store as it goes, and at its start resumes the runs a
// stop left under way. A run's function calls go through the router's
// invoke(): counted once each, with request ids `<run>:<task>:<attempt>`.
import { randomUUID } from 'node:crypto';
import parseDuration from 'parse-duration';
import { API_VERSION, type WorkflowSpec } from '../../api/index.js';
import type { ResourceStore, RunError, RunState, StoredObject, TaskRecord, WorkflowRun, WorkflowRunStore } from '../../store/index.js';
import type { Invocation, InvokeResult } from '../router/router.js';
import type { WorkflowMetrics } from './metrics.js';
import { Interrupted, RunExecution, TaskFailed } from './run.js';

export interface WorkflowsOptions {
  store: ResourceStore;
  runs: WorkflowRunStore;
  invoke(call: Invocation): Promise<InvokeResult>;
  metrics?: WorkflowMetrics;
  report?: (message: string) => void;
}

/** How a run ended. */
export type RunResult = { state: 'succeeded'; output: unknown; headers: Record<string, string> } | { state: 'failed'; error: RunError & { timedOut?: boolean } } | { state: 'stopped' };

export class Workflows {
  /** Workflows by namespace, then name: the router asks on every call, so no key is built per lookup. */
  private readonly specs = new Map<string, Map<string, WorkflowSpec>>();
  private readonly active = new Map<string, { controller: AbortController; done: Promise<RunResult> }>();
  private unwatch?: () => void;
  private closing = false;

  constructor(private readonly o: WorkflowsOptions) {
    // on a cluster another router may take a run over (its heartbeat stale): this one stops executing it
    o.runs.onLost?.((id) => this.active.get(id)?.controller.abort(new Interrupted('stopped', `workflow run ${id} was taken over by another router`)));
  }

  /** Follows the store's Workflows, then resumes the runs left under way. */
  async start(): Promise<void> {
    this.unwatch = this.o.store.watch((e) => {
      if (e.object.apiVersion === API_VERSION && e.object.kind === 'Workflow') this.follow(e.type, e.object);
    });
    for (const w of await this.o.store.list({ apiVersion: API_VERSION, kind: 'Workflow' })) this.follow('ADDED', w);
    await this.resume();
  }

  /** Resumes the runs the store says are left under way (and not executing here). On a cluster the router asks again from time to time. */
  async resume(): Promise<void> {
    if (this.closing) return;
    const left = (await this.o.runs.runningRuns()).filter((r) => !this.active.has(r.id));
    if (left.length) this.report(`resuming ${left.length} workflow run${left.length > 1 ? 's' : ''} left under way: ${left.map((r) => `${r.namespace}/${r.workflow} ${r.id}`).join(', ')}`);
    for (const run of left) void this.execute(run);
  }

  private follow(type: string, o: StoredObject): void {
    const namespace = o.metadata.namespace ?? 'default';
    let names = this.specs.get(namespace);
    if (!names) this.specs.set(namespace, (names = new Map()));
    if (type === 'DELETED') names.delete(o.metadata.name);
    else names.set(o.metadata.name, (o as unknown as { spec: WorkflowSpec }).spec);
  }

  /** Whether a Workflow goes by this name (the router asks before it looks for a function). */
  has(namespace: string, name: string): boolean {
    return this.specs.get(namespace)?.has(name) ?? false;
  }

  /** Starts a run: kept before this returns (an accepted run is not lost), then executed. */
  async run(namespace: string, workflow: string, input: unknown, requestId: string): Promise<{ id: string; done: Promise<RunResult> }> {
    const spec = this.specs.get(namespace)?.get(workflow);
    if (!spec) throw new Error(`workflow ${namespace}/${workflow} does not exist`);
    if (this.closing) throw new Error('Spore is stopping');
    const run = await this.o.runs.createRun({ id: randomUUID(), namespace, workflow, input, spec, requestId });
    return { id: run.id, done: this.execute(run, []) };
  }

  /** The run, with its tasks. */
  async get(id: string) {
    const run = await this.o.runs.getRun(id);
    return run && { ...run, tasks: await this.o.runs.tasksOf(id) };
  }

  async list(query: { namespace?: string; workflow?: string; state?: RunState; limit?: number }): Promise<WorkflowRun[]> {
    return this.o.runs.listRuns(query);
  }

  /** Executes a run: `tasks` are those it has kept (a resumed run's), read when not given. */
  private async execute(run: WorkflowRun, tasks?: TaskRecord[]): Promise<RunResult> {
    const controller = new AbortController();
    // known as active at once, so that a resume does not start it twice
    let settle!: (r: RunResult) => void;
    this.active.set(run.id, { controller, done: new Promise((r) => (settle = r)) });
    let kept: TaskRecord[];
    try {
      kept = tasks ?? (await this.o.runs.tasksOf(run.id));
    } catch (err) {
      this.active.delete(run.id);
      this.report(`workflow run ${run.id} (${run.namespace}/${run.workflow}): its tasks could not be read, it is resumed later: ${(err as Error).message}`);
      settle({ state: 'stopped' });
      return { state: 'stopped' };
    }
    const timeoutMs = run.spec && (run.spec as WorkflowSpec).timeout ? parseDuration((run.spec as WorkflowSpec).timeout!) : undefined;
    let timer: NodeJS.Timeout | undefined;
    if (timeoutMs != null) {
      // from the run's creation: a run resumed after its time is up ends at once
      const left = Math.max(0, run.created + timeoutMs - Date.now());
      timer = setTimeout(() => controller.abort(new Interrupted('timeout', `the workflow ran out of time (timeout ${(run.spec as WorkflowSpec).timeout})`)), left);
    }
    const started = performance.now();
    const m = this.o.metrics;
    const execution = new RunExecution(run, {
      store: { tasksOf: () => kept, putTask: (id, task) => this.o.runs.putTask(id, task) },
      invoke: this.o.invoke,
      workflow: (ns, name) => this.specs.get(ns)?.get(name),
      // the top-level task's id: `each:3` and `sub.inner` count under `each` and `sub` (bounded labels)
      onTask: (path, state, seconds) => m?.task(run.namespace, run.workflow, path.split(/[.:]/)[0], state, seconds),
    });
    const done = execution.execute(controller.signal).then(
      (r): RunResult => ({ state: 'succeeded', ...r }),
      (err): RunResult => {
        if (err instanceof Interrupted && err.reason === 'stopped') return { state: 'stopped' };
        if (err instanceof Interrupted) return { state: 'failed', error: { message: err.message, timedOut: true } };
        if (err instanceof TaskFailed) return { state: 'failed', error: err.error };
        this.report(`workflow run ${run.id} (${run.namespace}/${run.workflow}) failed in the engine: ${(err as Error).stack ?? err}`);
        return { state: 'failed', error: { message: `the engine failed: ${(err as Error).message}` } };
      },
    ).then(async (result) => {
      clearTimeout(timer);
      // a stop leaves the run under way in the store: it resumes at the next start
      if (result.state !== 'stopped') {
        const { timedOut: _, ...error } = result.state === 'failed' ? result.error : { timedOut: undefined };
        await Promise.resolve(this.o.runs.finishRun(run.id, result.state === 'succeeded' ? { state: 'succeeded', output: result.output } : { state: 'failed', error: error as RunError })).catch((err: Error) =>
          this.report(`workflow run ${run.id} (${run.namespace}/${run.workflow}) ended ${result.state} but could not be kept so: ${err.message}`),
        );
        m?.run(run.namespace, run.workflow, result.state, (performance.now() - started) / 1000);
      }
      this.active.delete(run.id);
      return result;
    });
    this.active.set(run.id, { controller, done });
    void done.then(settle);
    return done;
  }

  /** Stops: runs under way stop taking steps and stay 'running' in the store, to resume at the next start. */
  async close(): Promise<void> {
    this.closing = true;
    this.unwatch?.();
    const under = [...this.active.values()];
    for (const a of under) a.controller.abort(new Interrupted('stopped', 'Spore is stopping'));
    await Promise.all(under.map((a) => a.done));
  }

  private report(message: string): void {
    (this.o.report ?? ((m) => process.stderr.write(`spore: ${m}\n`)))(message);
  }
}
