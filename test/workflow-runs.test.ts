// The local run store (SQLite): runs and tasks as written, and the bound on
// what is kept — on a real database file.
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { describe, expect, it } from 'vitest';
import { KEEP_RUNS, SqliteWorkflowRuns } from '../store/index.js';
import { tempDir } from './helpers.js';

const open = () => {
  const db = new Database(join(tempDir('spore-runs-'), 'spore.db'));
  db.pragma('journal_mode = WAL'); // as SqliteStore opens it
  db.pragma('synchronous = NORMAL');
  return { db, runs: new SqliteWorkflowRuns(db) };
};
const start = (runs: SqliteWorkflowRuns, id: string) => runs.createRun({ id, namespace: 'default', workflow: 'wf', input: { default: id }, spec: { tasks: {} }, requestId: id });

describe('the SQLite workflow run store', () => {
  it('keeps a run, its tasks as they change, and its end', () => {
    const { runs } = open();
    start(runs, 'r1');
    runs.putTask('r1', { path: 'a', state: 'running', attempts: 1, started: 1 });
    runs.putTask('r1', { path: 'a', state: 'succeeded', attempts: 1, started: 1, finished: 2, output: { n: 1 } });
    runs.putTask('r1', { path: 'b', state: 'running', attempts: 2, started: 3 });
    expect(runs.runningRuns().map((r) => r.id)).toEqual(['r1']);
    expect(runs.tasksOf('r1')).toEqual([
      { path: 'a', state: 'succeeded', attempts: 1, started: 1, finished: 2, output: { n: 1 }, error: undefined },
      { path: 'b', state: 'running', attempts: 2, started: 3, finished: undefined, output: undefined, error: undefined },
    ]);
    runs.finishRun('r1', { state: 'failed', error: { message: 'task b: function f answered 500', task: 'b', status: 500, body: 'no' } });
    expect(runs.getRun('r1')).toMatchObject({ state: 'failed', input: { default: 'r1' }, error: { task: 'b', status: 500 } });
    expect(runs.runningRuns()).toEqual([]);
  });

  it(`keeps the newest ${KEEP_RUNS} finished runs and none older than 7 days, with their tasks; a running run stays`, () => {
    const { db, runs } = open();
    start(runs, 'still-running');
    for (let i = 0; i < KEEP_RUNS + 101; i++) {
      start(runs, `r${i}`);
      runs.putTask(`r${i}`, { path: 'a', state: 'succeeded', attempts: 1, started: i });
      // each a millisecond apart: "newest" is well defined
      db.prepare('UPDATE workflow_runs SET updated = ? WHERE id = ?').run(Date.now() - 10_000 + i, `r${i}`);
      runs.finishRun(`r${i}`, { state: 'succeeded', output: i });
      db.prepare('UPDATE workflow_runs SET updated = ? WHERE id = ?').run(Date.now() - 10_000 + i, `r${i}`);
    }
    const finished = runs.listRuns({ state: 'succeeded', limit: 10_000 });
    expect(finished.length).toBeLessThanOrEqual(KEEP_RUNS + 100);
    expect(runs.getRun('r0')).toBeUndefined();
    expect(runs.tasksOf('r0')).toEqual([]);
    expect(runs.getRun(`r${KEEP_RUNS + 100}`)).toBeDefined();
    expect(runs.getRun('still-running')).toMatchObject({ state: 'running' });
    // a week old: gone at the next prune, however few runs there are
    const { db: db2, runs: fresh } = open();
    start(fresh, 'old');
    fresh.finishRun('old', { state: 'succeeded' });
    db2.prepare('UPDATE workflow_runs SET updated = ? WHERE id = ?').run(Date.now() - 8 * 24 * 3600_000, 'old');
    const again = new SqliteWorkflowRuns(db2); // a restart: its first end prunes
    start(again, 'new');
    again.finishRun('new', { state: 'succeeded' });
    expect(again.getRun('old')).toBeUndefined();
    expect(again.getRun('new')).toBeDefined();
  });
});
