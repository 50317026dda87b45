// Workflow runs on a cluster: one WorkflowRun object per run, in the
// workflow's namespace, named by the run id (spec: the workflow's spec as the
// run started, and its input; status: state, output or error, each task).
// The router that executes a run owns it, heartbeats it, and a run whose
// router stopped is taken over (kube-owned.ts). Finished runs beyond the
// newest KEEP_RUNS of a namespace, or older than KEEP_MS, are deleted.
import { API_VERSION, GROUP, KINDS } from '../api/index.js';
import { OwnedObjects, type OwnedObject, type OwnedObjectsOptions } from './kube-owned.js';
import { KEEP_MS, KEEP_RUNS, type RunError, type RunState, type TaskRecord, type WorkflowRun, type WorkflowRunStore } from './workflow-runs.js';

export const WORKFLOW_LABEL = `${GROUP}/workflow`;
export const RUN_STATE_LABEL = `${GROUP}/run-state`;

export type KubeWorkflowRunsOptions = OwnedObjectsOptions;

interface RunSpec {
  workflow: string;
  input?: unknown;
  workflowSpec?: unknown;
  requestId?: string;
}
interface RunStatus {
  state?: RunState;
  output?: unknown;
  error?: RunError;
  tasks?: TaskRecord[];
  created?: number;
  updated?: number;
}

/** A run executing here, and its tasks by path. */
interface Item {
  run: WorkflowRun;
  tasks: Map<string, TaskRecord>;
}

function toRun(o: OwnedObject): WorkflowRun {
  const spec = o.spec as unknown as RunSpec;
  const s = (o.status ?? {}) as RunStatus;
  const created = s.created ?? (Date.parse(o.metadata.creationTimestamp ?? '') || 0);
  return { id: o.metadata.name, namespace: o.metadata.namespace, workflow: spec.workflow, state: s.state ?? 'running', input: spec.input, spec: spec.workflowSpec, output: s.output, error: s.error, requestId: spec.requestId ?? '', created, updated: s.updated ?? created };
}

const tasksIn = (o: OwnedObject) => ((o.status ?? {}) as RunStatus).tasks ?? [];

export class KubeWorkflowRuns implements WorkflowRunStore {
  private readonly objects: OwnedObjects<Item>;

  constructor(o: KubeWorkflowRunsOptions) {
    this.objects = new OwnedObjects<Item>(
      {
        plural: KINDS.WorkflowRun.plural,
        noun: 'workflow run',
        namespaceOf: (i) => i.run.namespace,
        updatedOf: (i) => i.run.updated,
        done: (i) => i.run.state !== 'running',
        objectOf: ({ run, tasks }) => ({
          apiVersion: API_VERSION,
          kind: 'WorkflowRun',
          metadata: { name: run.id, namespace: run.namespace, labels: { [WORKFLOW_LABEL]: run.workflow, [RUN_STATE_LABEL]: run.state } },
          spec: { workflow: run.workflow, input: run.input, workflowSpec: run.spec, requestId: run.requestId },
          status: { state: run.state, output: run.output, error: run.error, tasks: [...tasks.values()], created: run.created, updated: run.updated },
        }),
      },
      o,
    );
  }

  async createRun(r: Omit<WorkflowRun, 'state' | 'created' | 'updated'>): Promise<WorkflowRun> {
    const now = Date.now();
    const run: WorkflowRun = { ...r, state: 'running', created: now, updated: now };
    await this.objects.create(run.id, { run, tasks: new Map() });
    return run;
  }

  /** A run by id: this router's own from memory, else looked for in the namespaces served. */
  async getRun(id: string): Promise<WorkflowRun | undefined> {
    const mine = this.objects.mine(id);
    if (mine) return { ...mine.run };
    const o = await this.objects.find(id);
    return o && toRun(o);
  }

  async listRuns(q: { namespace?: string; workflow?: string; state?: RunState; limit?: number }): Promise<WorkflowRun[]> {
    const selector = [q.workflow && `${WORKFLOW_LABEL}=${q.workflow}`, q.state && `${RUN_STATE_LABEL}=${q.state}`].filter(Boolean).join(',');
    const runs = (await this.objects.list(q.namespace, { labelSelector: selector || undefined })).map(toRun);
    return runs.sort((a, b) => b.created - a.created).slice(0, q.limit ?? 100);
  }

  async tasksOf(runId: string): Promise<TaskRecord[]> {
    const mine = this.objects.mine(runId);
    const tasks = mine ? [...mine.tasks.values()] : tasksIn((await this.objects.find(runId)) ?? ({} as OwnedObject));
    return [...tasks].sort((a, b) => a.started - b.started || a.path.localeCompare(b.path));
  }

  putTask(runId: string, task: TaskRecord): void {
    const r = this.objects.mine(runId);
    if (!r) return; // taken over by another router: not ours to write
    r.tasks.set(task.path, { ...task });
    r.run.updated = Date.now();
    this.objects.save(runId).catch(() => {}); // said by the store; written at the next heartbeat
  }

  async finishRun(id: string, result: { state: 'succeeded' | 'failed'; output?: unknown; error?: RunError }): Promise<void> {
    const r = this.objects.mine(id);
    if (!r) return;
    Object.assign(r.run, { state: result.state, output: result.output, error: result.error, updated: Date.now() });
    const saved = this.objects.save(id);
    void this.objects.prune(r.run.namespace, `${RUN_STATE_LABEL} in (succeeded,failed)`, KEEP_RUNS, KEEP_MS);
    await saved;
  }

  /** Runs whose router stopped heartbeating, taken over by this one (each by one router). */
  async runningRuns(): Promise<WorkflowRun[]> {
    const taken = await this.objects.takeOver(`${RUN_STATE_LABEL}=running`, (o) => ({ run: toRun(o), tasks: new Map(tasksIn(o).map((t) => [t.path, t])) }));
    return taken.map((i) => i.run);
  }

  onLost(listener: (id: string) => void): void {
    this.objects.onLost(listener);
  }

  /** Stops heartbeating; runs still running here are written with heartbeat 0, for another router to take over at once. */
  close(): Promise<void> {
    return this.objects.close();
  }
}
