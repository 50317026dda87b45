// Workflow runs on a cluster: one WorkflowRun object per run, in the
// workflow's namespace, named by the run id (spec: the workflow's spec as the
// run started, and its input; status: state, output or error, each task).
//
// The router that executes a run owns it (status.owner) and is its only
// writer: it keeps the run in memory and writes the whole object, guarded by
// the resourceVersion it last wrote, one write at a time (task changes made
// meanwhile go in the next: batched), and every `heartbeatMs` it refreshes
// status.heartbeat. A run still running whose heartbeat is older than
// `staleMs` lost its router: runningRuns() takes such runs over, each with a
// resourceVersion-guarded write, so that of two replicas trying one wins. An
// owner whose write finds another owner stops executing the run (onLost).
// Finished runs beyond the newest KEEP_RUNS of a namespace, or older than
// KEEP_MS, are deleted (at most once a minute per namespace).
import { API_VERSION, GROUP, KINDS } from '../api/index.js';
import { KubeError, type KubeClient } from './kube-client.js';
import { KEEP_MS, KEEP_RUNS, type RunError, type RunState, type TaskRecord, type WorkflowRun, type WorkflowRunStore } from './workflow-runs.js';

export const WORKFLOW_LABEL = `${GROUP}/workflow`;
export const RUN_STATE_LABEL = `${GROUP}/run-state`;
const PRUNE_EVERY_MS = 60_000;

export interface KubeWorkflowRunsOptions {
  client: KubeClient;
  /** This router replica (unique per process): the owner of the runs it executes. */
  identity: string;
  /** The namespaces served (runs are looked for there only). @default every namespace */
  namespaces?: string[];
  /** @default 10000 */
  heartbeatMs?: number;
  /** A running run whose heartbeat is older is taken over. @default 30000 */
  staleMs?: number;
  report?: (message: string) => void;
}

interface RunObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace: string; resourceVersion?: string; labels?: Record<string, string>; creationTimestamp?: string };
  spec: { workflow: string; input?: unknown; workflowSpec?: unknown; requestId?: string };
  status?: { state?: RunState; output?: unknown; error?: RunError; tasks?: TaskRecord[]; created?: number; updated?: number; owner?: string; heartbeat?: number };
}

/** A run executing here: what is written, and how far writing got. */
interface Owned {
  run: WorkflowRun;
  tasks: Map<string, TaskRecord>;
  resourceVersion: string;
  dirty: boolean;
  flushing?: Promise<void>;
  /** Stopping: the heartbeat written is 0, so that another router takes the run over at once. */
  released?: boolean;
}

const plural = KINDS.WorkflowRun.plural;

function toRun(o: RunObject): WorkflowRun {
  const s = o.status ?? {};
  const created = s.created ?? (Date.parse(o.metadata.creationTimestamp ?? '') || 0);
  return { id: o.metadata.name, namespace: o.metadata.namespace, workflow: o.spec.workflow, state: s.state ?? 'running', input: o.spec.input, spec: o.spec.workflowSpec, output: s.output, error: s.error, requestId: o.spec.requestId ?? '', created, updated: s.updated ?? created };
}

export class KubeWorkflowRuns implements WorkflowRunStore {
  private readonly owned = new Map<string, Owned>();
  private readonly lostListeners: ((id: string) => void)[] = [];
  private readonly pruned = new Map<string, number>();
  private readonly heartbeat: NodeJS.Timeout;
  private readonly failing = new Map<string, string>();

  constructor(private readonly o: KubeWorkflowRunsOptions) {
    this.heartbeat = setInterval(() => {
      for (const [id, run] of this.owned) {
        run.dirty = true;
        void this.flush(id);
      }
    }, o.heartbeatMs ?? 10_000);
    this.heartbeat.unref();
  }

  private collection(namespace?: string): string {
    return namespace ? `/apis/${API_VERSION}/namespaces/${namespace}/${plural}` : `/apis/${API_VERSION}/${plural}`;
  }

  private serves(namespace: string): boolean {
    return !this.o.namespaces || this.o.namespaces.includes(namespace);
  }

  /** The objects matching, in the namespace given or in every namespace served. */
  private async list(namespace: string | undefined, query: Record<string, string | undefined>): Promise<RunObject[]> {
    const where = namespace ? [namespace] : (this.o.namespaces ?? [undefined]);
    const lists = await Promise.all(where.map((ns) => this.o.client.request<{ items: RunObject[] }>('GET', this.collection(ns), { query })));
    return lists.flatMap((l) => l.items).filter((o) => this.serves(o.metadata.namespace));
  }

  private objectOf(r: Owned): RunObject {
    const { run } = r;
    return {
      apiVersion: API_VERSION,
      kind: 'WorkflowRun',
      metadata: { name: run.id, namespace: run.namespace, resourceVersion: r.resourceVersion || undefined, labels: { [WORKFLOW_LABEL]: run.workflow, [RUN_STATE_LABEL]: run.state } },
      spec: { workflow: run.workflow, input: run.input, workflowSpec: run.spec, requestId: run.requestId },
      status: { state: run.state, output: run.output, error: run.error, tasks: [...r.tasks.values()], created: run.created, updated: run.updated, owner: this.o.identity, heartbeat: r.released ? 0 : Date.now() },
    };
  }

  async createRun(r: Omit<WorkflowRun, 'state' | 'created' | 'updated'>): Promise<WorkflowRun> {
    const now = Date.now();
    const run: WorkflowRun = { ...r, state: 'running', created: now, updated: now };
    const owned: Owned = { run, tasks: new Map(), resourceVersion: '', dirty: false };
    const written = await this.o.client.request<RunObject>('POST', this.collection(run.namespace), { body: this.objectOf(owned) });
    owned.resourceVersion = written.metadata.resourceVersion ?? '';
    this.owned.set(run.id, owned);
    return run;
  }

  /** A run by id: this router's own from memory, else looked for in the namespaces served. */
  private async find(id: string): Promise<RunObject | undefined> {
    const found = await this.list(undefined, { fieldSelector: `metadata.name=${id}` });
    return found[0];
  }

  async getRun(id: string): Promise<WorkflowRun | undefined> {
    const mine = this.owned.get(id);
    if (mine) return { ...mine.run };
    const o = await this.find(id);
    return o && toRun(o);
  }

  async listRuns(q: { namespace?: string; workflow?: string; state?: RunState; limit?: number }): Promise<WorkflowRun[]> {
    const selector = [q.workflow && `${WORKFLOW_LABEL}=${q.workflow}`, q.state && `${RUN_STATE_LABEL}=${q.state}`].filter(Boolean).join(',');
    const runs = (await this.list(q.namespace, { labelSelector: selector || undefined })).map(toRun);
    return runs.sort((a, b) => b.created - a.created).slice(0, q.limit ?? 100);
  }

  async tasksOf(runId: string): Promise<TaskRecord[]> {
    const mine = this.owned.get(runId);
    const tasks = mine ? [...mine.tasks.values()] : ((await this.find(runId))?.status?.tasks ?? []);
    return [...tasks].sort((a, b) => a.started - b.started || a.path.localeCompare(b.path));
  }

  putTask(runId: string, task: TaskRecord): void {
    const r = this.owned.get(runId);
    if (!r) return; // taken over by another router: not ours to write
    r.tasks.set(task.path, { ...task });
    r.run.updated = Date.now();
    r.dirty = true;
    void this.flush(runId);
  }

  async finishRun(id: string, result: { state: 'succeeded' | 'failed'; output?: unknown; error?: RunError }): Promise<void> {
    const r = this.owned.get(id);
    if (!r) return;
    Object.assign(r.run, { state: result.state, output: result.output, error: result.error, updated: Date.now() });
    r.dirty = true;
    await this.flush(id);
    void this.prune(r.run.namespace);
    if (r.dirty) throw new Error(`its object could not be written yet (tried again every heartbeat): ${this.failing.get(id) ?? 'unknown error'}`);
  }

  /**
   * Runs whose router stopped heartbeating, taken over by this one: each with
   * a write guarded by the version read, so only one router takes a run.
   */
  async runningRuns(): Promise<WorkflowRun[]> {
    const stale = Date.now() - (this.o.staleMs ?? 30_000);
    let listed: RunObject[];
    try {
      listed = await this.list(undefined, { labelSelector: `${RUN_STATE_LABEL}=running` });
    } catch (err) {
      // not fatal: the router holding the Lease looks again (every 10 s)
      this.say(`could not look for workflow runs to resume: ${(err as Error).message}`);
      return [];
    }
    const running = listed.filter((o) => !this.owned.has(o.metadata.name) && (o.status?.heartbeat ?? 0) < stale);
    const taken: WorkflowRun[] = [];
    for (const o of running) {
      const run = toRun(o);
      const owned: Owned = { run, tasks: new Map((o.status?.tasks ?? []).map((t) => [t.path, t])), resourceVersion: o.metadata.resourceVersion ?? '', dirty: false };
      try {
        const written = await this.o.client.request<RunObject>('PUT', `${this.collection(run.namespace)}/${run.id}`, { body: this.objectOf(owned) });
        owned.resourceVersion = written.metadata.resourceVersion ?? '';
      } catch (err) {
        if (err instanceof KubeError && (err.status === 409 || err.status === 404)) continue; // another router took it first, or it is gone
        this.say(`workflow run ${run.namespace}/${run.id}: could not take it over: ${(err as Error).message}`);
        continue;
      }
      this.say(`took over workflow run ${run.namespace}/${run.id} (its router ${o.status?.owner ?? '?'} stopped heartbeating)`);
      this.owned.set(run.id, owned);
      taken.push(run);
    }
    return taken;
  }

  onLost(listener: (id: string) => void): void {
    this.lostListeners.push(listener);
  }

  /** Writes the run while it has changes not yet written, one write at a time. */
  private flush(id: string): Promise<void> {
    const r = this.owned.get(id);
    if (!r) return Promise.resolve();
    r.flushing ??= (async () => {
      while (r.dirty && this.owned.get(id) === r) {
        r.dirty = false;
        if (!(await this.write(r))) {
          r.dirty = true;
          return;
        }
      }
    })().finally(() => {
      r.flushing = undefined;
      // a finished run, written: no longer this router's to heartbeat
      if (!r.dirty && r.run.state !== 'running' && this.owned.get(id) === r) this.owned.delete(id);
    });
    return r.flushing;
  }

  /** One guarded write of the whole object: false when it failed (tried again at the next heartbeat). */
  private async write(r: Owned): Promise<boolean> {
    const { id, namespace } = r.run;
    const path = `${this.collection(namespace)}/${id}`;
    try {
      const written = await this.o.client.request<RunObject>('PUT', path, { body: this.objectOf(r) });
      r.resourceVersion = written.metadata.resourceVersion ?? '';
      this.failing.delete(id);
      return true;
    } catch (err) {
      if (err instanceof KubeError && (err.status === 409 || err.status === 404)) {
        const now = err.status === 404 ? undefined : await this.o.client.request<RunObject>('GET', path).catch(() => undefined);
        if (now && (now.status?.owner ?? this.o.identity) === this.o.identity) {
          r.resourceVersion = now.metadata.resourceVersion ?? ''; // changed by someone else, still ours: written again
          r.dirty = true;
          return true;
        }
        if (err.status === 409 && !now) return false;
        this.owned.delete(id);
        this.say(`workflow run ${namespace}/${id} ${now ? `was taken over by ${now.status?.owner}` : 'was deleted'}: no longer executed here`);
        for (const l of this.lostListeners) l(id);
        return true;
      }
      const message = (err as Error).message;
      if (this.failing.get(id) !== message) this.say(`workflow run ${namespace}/${id} could not be written (tried again): ${message}`);
      this.failing.set(id, message);
      return false;
    }
  }

  /** Finished runs past the newest KEEP_RUNS of the namespace, or older than KEEP_MS, deleted. */
  private async prune(namespace: string): Promise<void> {
    const now = Date.now();
    if ((this.pruned.get(namespace) ?? 0) > now - PRUNE_EVERY_MS) return;
    this.pruned.set(namespace, now);
    try {
      const finished = (await this.list(namespace, { labelSelector: `${RUN_STATE_LABEL} in (succeeded,failed)` })).map(toRun).sort((a, b) => b.updated - a.updated);
      const gone = finished.filter((run, i) => i >= KEEP_RUNS || run.updated < now - KEEP_MS);
      for (const run of gone) await this.o.client.request('DELETE', `${this.collection(namespace)}/${run.id}`).catch((err: KubeError) => err.status === 404 || Promise.reject(err));
    } catch (err) {
      this.say(`old workflow runs of ${namespace} could not be deleted (tried again later): ${(err as Error).message}`);
    }
  }

  /** Stops heartbeating; runs still running here are written with heartbeat 0, for another router to take over at once. */
  async close(): Promise<void> {
    clearInterval(this.heartbeat);
    await Promise.all([...this.owned.values()].map((r) => r.flushing));
    await Promise.all(
      [...this.owned.entries()].map(([id, r]) => {
        r.released = true;
        r.dirty = true;
        return this.flush(id);
      }),
    );
    this.owned.clear();
  }

  private say(message: string): void {
    (this.o.report ?? ((m) => process.stderr.write(`spore: ${m}\n`)))(message);
  }
}
