// Workflow runs and their tasks, kept as they change: a run is written when it
// starts, each task when it starts and when it ends, the run when it ends. A
// run still 'running' when Spore stopped is resumed at the next start: tasks
// already done are not run again. Locally in the store's SQLite file.
import type Database from 'better-sqlite3';

export type RunState = 'running' | 'succeeded' | 'failed';
export type TaskState = 'running' | 'succeeded' | 'failed';

/** Why a task or a run failed. */
export interface RunError {
  message: string;
  /** The task that failed (its path: `a`, `loop.2`, `sub.inner`). */
  task?: string;
  /** The function's status, when a function call failed. */
  status?: number;
  /** The start of the function's answer (at most 4 KiB). */
  body?: string;
}

export interface WorkflowRun {
  id: string;
  namespace: string;
  workflow: string;
  state: RunState;
  /** `$.Invocation.Inputs`: the caller's body (default), headers, query, method. */
  input: unknown;
  /** The workflow's spec as the run started (a change of the Workflow does not change a run under way). */
  spec: unknown;
  output?: unknown;
  error?: RunError;
  /** The caller's request id; the run's function calls carry `<run id>:<task>:<attempt>`. */
  requestId: string;
  /** Epoch milliseconds. */
  created: number;
  updated: number;
}

export interface TaskRecord {
  /** The task's path: its id, or for tasks inside control flow `parent.then`, `parent.3`, `parent.inner`. */
  path: string;
  state: TaskState;
  attempts: number;
  started: number;
  finished?: number;
  output?: unknown;
  error?: RunError;
}

/**
 * Where runs are kept: SQLite here (answers at once), Kubernetes objects on a
 * cluster (kube-workflow-runs.ts, answers as promises). putTask may write
 * later (batched); the store reports its own write failures.
 */
export interface WorkflowRunStore {
  /** Keeps a new run, running; durable once this returns (resolves). */
  createRun(run: Omit<WorkflowRun, 'state' | 'created' | 'updated'>): WorkflowRun | Promise<WorkflowRun>;
  getRun(id: string): WorkflowRun | undefined | Promise<WorkflowRun | undefined>;
  listRuns(query: { namespace?: string; workflow?: string; state?: RunState; limit?: number }): WorkflowRun[] | Promise<WorkflowRun[]>;
  tasksOf(runId: string): TaskRecord[] | Promise<TaskRecord[]>;
  putTask(runId: string, task: TaskRecord): void;
  finishRun(id: string, result: { state: 'succeeded' | 'failed'; output?: unknown; error?: RunError }): void | Promise<void>;
  /** Runs left running by a stop (on a cluster: by a router that stopped heartbeating), now this process's to resume. */
  runningRuns(): WorkflowRun[] | Promise<WorkflowRun[]>;
  /** Tells the engine of a run another process took over (its execution here stops). */
  onLost?(listener: (id: string) => void): void;
}

const SCHEMA = `
CREATE TABLE IF NOT EXISTS workflow_runs (
  id TEXT PRIMARY KEY,
  namespace TEXT NOT NULL,
  workflow TEXT NOT NULL,
  state TEXT NOT NULL,
  input TEXT NOT NULL,
  spec TEXT NOT NULL,
  output TEXT,
  error TEXT,
  request_id TEXT NOT NULL,
  created INTEGER NOT NULL,
  updated INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS workflow_runs_by_workflow ON workflow_runs (namespace, workflow, created);
CREATE INDEX IF NOT EXISTS workflow_runs_by_state ON workflow_runs (state, updated);
CREATE TABLE IF NOT EXISTS workflow_tasks (
  run_id TEXT NOT NULL,
  path TEXT NOT NULL,
  state TEXT NOT NULL,
  attempts INTEGER NOT NULL,
  started INTEGER NOT NULL,
  finished INTEGER,
  output TEXT,
  error TEXT,
  PRIMARY KEY (run_id, path)
);
`;

/** Finished runs kept: the newest this many (PRUNE_EVERY more between prunes), none older than KEEP_MS. */
export const KEEP_RUNS = 1000;
export const KEEP_MS = 7 * 24 * 3600_000;
const PRUNE_EVERY = 100;

const json = (v: unknown) => (v === undefined ? null : JSON.stringify(v));
const parse = (s: string | null) => (s === null ? undefined : JSON.parse(s));

export class SqliteWorkflowRuns implements WorkflowRunStore {
  private ended = 0;

  constructor(private readonly db: Database.Database) {
    db.exec(SCHEMA);
  }

  createRun(r: Omit<WorkflowRun, 'state' | 'created' | 'updated'>): WorkflowRun {
    const now = Date.now();
    this.db
      .prepare(`INSERT INTO workflow_runs (id, namespace, workflow, state, input, spec, request_id, created, updated) VALUES (?, ?, ?, 'running', ?, ?, ?, ?, ?)`)
      .run(r.id, r.namespace, r.workflow, JSON.stringify(r.input ?? null), JSON.stringify(r.spec), r.requestId, now, now);
    return { ...r, state: 'running', created: now, updated: now };
  }

  getRun(id: string): WorkflowRun | undefined {
    const row = this.db.prepare('SELECT * FROM workflow_runs WHERE id = ?').get(id) as RunRow | undefined;
    return row && toRun(row);
  }

  listRuns(q: { namespace?: string; workflow?: string; state?: RunState; limit?: number }): WorkflowRun[] {
    const where: string[] = [];
    const args: unknown[] = [];
    for (const [column, value] of [['namespace', q.namespace], ['workflow', q.workflow], ['state', q.state]] as const) {
      if (value !== undefined) {
        where.push(`${column} = ?`);
        args.push(value);
      }
    }
    const sql = `SELECT * FROM workflow_runs ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY created DESC LIMIT ?`;
    return (this.db.prepare(sql).all(...args, q.limit ?? 100) as RunRow[]).map(toRun);
  }

  tasksOf(runId: string): TaskRecord[] {
    const rows = this.db.prepare('SELECT * FROM workflow_tasks WHERE run_id = ? ORDER BY started, path').all(runId) as TaskRow[];
    return rows.map((t) => ({ path: t.path, state: t.state, attempts: t.attempts, started: t.started, finished: t.finished ?? undefined, output: parse(t.output), error: parse(t.error) }));
  }

  putTask(runId: string, t: TaskRecord): void {
    this.db.transaction(() => {
      this.db
        .prepare('INSERT OR REPLACE INTO workflow_tasks (run_id, path, state, attempts, started, finished, output, error) VALUES (?, ?, ?, ?, ?, ?, ?, ?)')
        .run(runId, t.path, t.state, t.attempts, t.started, t.finished ?? null, json(t.output), json(t.error));
      this.db.prepare('UPDATE workflow_runs SET updated = ? WHERE id = ?').run(Date.now(), runId);
    })();
  }

  finishRun(id: string, r: { state: 'succeeded' | 'failed'; output?: unknown; error?: RunError }): void {
    const now = Date.now();
    this.db.transaction(() => {
      this.db.prepare('UPDATE workflow_runs SET state = ?, output = ?, error = ?, updated = ? WHERE id = ?').run(r.state, json(r.output), json(r.error), now, id);
      // bounded: finished runs past the newest KEEP_RUNS, or older than KEEP_MS, go (their tasks with them);
      // looked for at the first end after a start and every PRUNE_EVERY ends after, not at each (it reads every finished run)
      if (this.ended++ % PRUNE_EVERY !== 0) return;
      const gone = this.db
        .prepare(`SELECT id FROM workflow_runs WHERE state != 'running' AND (updated < ? OR id IN (SELECT id FROM workflow_runs WHERE state != 'running' ORDER BY updated DESC LIMIT -1 OFFSET ?))`)
        .pluck()
        .all(now - KEEP_MS, KEEP_RUNS) as string[];
      for (const old of gone) {
        this.db.prepare('DELETE FROM workflow_tasks WHERE run_id = ?').run(old);
        this.db.prepare('DELETE FROM workflow_runs WHERE id = ?').run(old);
      }
    })();
  }

  runningRuns(): WorkflowRun[] {
    return (this.db.prepare(`SELECT * FROM workflow_runs WHERE state = 'running' ORDER BY created`).all() as RunRow[]).map(toRun);
  }
}

interface RunRow {
  id: string;
  namespace: string;
  workflow: string;
  state: RunState;
  input: string;
  spec: string;
  output: string | null;
  error: string | null;
  request_id: string;
  created: number;
  updated: number;
}

interface TaskRow {
  path: string;
  state: TaskState;
  attempts: number;
  started: number;
  finished: number | null;
  output: string | null;
  error: string | null;
}

function toRun(r: RunRow): WorkflowRun {
  return { id: r.id, namespace: r.namespace, workflow: r.workflow, state: r.state, input: JSON.parse(r.input), spec: JSON.parse(r.spec), output: parse(r.output), error: parse(r.error), requestId: r.request_id, created: r.created, updated: r.updated };
}
