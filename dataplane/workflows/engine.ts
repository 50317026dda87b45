// The workflow engine: follows the store's Workflows, starts runs (called
// like a function: /_fn/<namespace>/<workflow>, a route, a timer or a queue),
// keeps each in the run store as it goes, and at its start resumes the runs a
// stop left under way. A run's function calls go through the router's
// invoke(): counted once each, with request ids `<run>:<task>:<attempt>`.
import { randomUUID } from 'node:crypto';
import parseDuration from 'parse-duration';
import { API_VERSION, type WorkflowSpec } from '../../api/index.js';
import type { ResourceStore, RunError, RunState, StoredObject, WorkflowRun, WorkflowRunStore } from '../../store/index.js';
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
  private readonly specs = new Map<string, WorkflowSpec>();
  private readonly active = new Map<string, { controller: AbortController; done: Promise<RunResult> }>();
  private unwatch?: () => void;
  private closing = false;

  constructor(private readonly o: WorkflowsOptions) {}

  /** Follows the store's Workflows, then resumes the runs left under way. */
  async start(): Promise<void> {
    this.unwatch = this.o.store.watch((e) => {
      if (e.object.apiVersion === API_VERSION && e.object.kind === 'Workflow') this.follow(e.type, e.object);
    });
    for (const w of await this.o.store.list({ apiVersion: API_VERSION, kind: 'Workflow' })) this.follow('ADDED', w);
    const left = this.o.runs.runningRuns();
    if (left.length) this.report(`resuming ${left.length} workflow run${left.length > 1 ? 's' : ''} left under way: ${left.map((r) => `${r.namespace}/${r.workflow} ${r.id}`).join(', ')}`);
    for (const run of left) this.execute(run);
  }

  private follow(type: string, o: StoredObject): void {
    const key = `${o.metadata.namespace ?? 'default'}/${o.metadata.name}`;
    if (type === 'DELETED') this.specs.delete(key);
    else this.specs.set(key, (o as unknown as { spec: WorkflowSpec }).spec);
  }

  /** Whether a Workflow goes by this name (the router asks before it looks for a function). */
  has(namespace: string, name: string): boolean {
    return this.specs.has(`${namespace}/${name}`);
  }

  /** Starts a run: kept before this returns (an accepted run is not lost), then executed. */
  run(namespace: string, workflow: string, input: unknown, requestId: string): { id: string; done: Promise<RunResult> } {
    const spec = this.specs.get(`${namespace}/${workflow}`);
    if (!spec) throw new Error(`workflow ${namespace}/${workflow} does not exist`);
    if (this.closing) throw new Error('Spore is stopping');
    const run = this.o.runs.createRun({ id: randomUUID(), namespace, workflow, input, spec, requestId });
    return { id: run.id, done: this.execute(run) };
  }

  /** The run, with its tasks. */
  get(id: string) {
    const run = this.o.runs.getRun(id);
    return run && { ...run, tasks: this.o.runs.tasksOf(id) };
  }

  list(query: { namespace?: string; workflow?: string; state?: RunState; limit?: number }): WorkflowRun[] {
    return this.o.runs.listRuns(query);
  }

  private execute(run: WorkflowRun): Promise<RunResult> {
    const controller = new AbortController();
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
      store: this.o.runs,
      invoke: this.o.invoke,
      workflow: (ns, name) => this.specs.get(`${ns}/${name}`),
      onTask: (path, state, seconds) => m?.task(run.namespace, run.workflow, path.split('.')[0], state, seconds),
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
    ).then((result) => {
      clearTimeout(timer);
      this.active.delete(run.id);
      // a stop leaves the run under way in the store: it resumes at the next start
      if (result.state === 'stopped') return result;
      const { timedOut: _, ...error } = result.state === 'failed' ? result.error : { timedOut: undefined };
      this.o.runs.finishRun(run.id, result.state === 'succeeded' ? { state: 'succeeded', output: result.output } : { state: 'failed', error: error as RunError });
      m?.run(run.namespace, run.workflow, result.state, (performance.now() - started) / 1000);
      return result;
    });
    this.active.set(run.id, { controller, done });
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
