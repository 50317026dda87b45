// Asynchronous calls, kept from the moment they are accepted until they are
// done: queued → running → succeeded, or back to queued (a retry, at a later
// time), or failed — the dead letter, kept until retried by hand. A call that
// was running when Spore stopped runs again (at least once). Locally in the
// store's SQLite file.
import { randomUUID } from 'node:crypto';
import type Database from 'better-sqlite3';

export type InvocationState = 'queued' | 'running' | 'succeeded' | 'failed';

export interface Invocation {
  id: string;
  namespace: string;
  function: string;
  method: string;
  /** Path under the function, with its query. */
  path: string;
  headers: Record<string, string>;
  /** The route's parameters, passed to the function as a route passes them. */
  params: Record<string, string>;
  body: Buffer;
  state: InvocationState;
  attempts: number;
  /** The last attempt's status (0: no answer). */
  status?: number;
  error?: string;
  /** The start of the last answer's body (at most 4 KiB). */
  response?: string;
  /** Epoch milliseconds. */
  created: number;
  updated: number;
  /** When a queued call is due. */
  nextAt: number;
  /** The body's size, where the body itself is no longer kept (on a cluster, once the call succeeded). */
  bodyBytes?: number;
}

export type NewInvocation = Pick<Invocation, 'namespace' | 'function' | 'method' | 'path' | 'headers' | 'params' | 'body'>;

/** Locally (SQLite) each method answers at once; on a cluster (kube-invocations.ts) after the API server did. */
export interface InvocationStore {
  /** Keeps a new call, queued; durable once this returns. */
  enqueue(call: NewInvocation): Invocation | Promise<Invocation>;
  /** The next due queued call, now running (one more attempt), if any. */
  claim(now: number): Invocation | undefined | Promise<Invocation | undefined>;
  /** Records an attempt's end: done (succeeded or failed), or queued again for `nextAt`. */
  finish(id: string, result: { state: 'succeeded' | 'failed' | 'queued'; status: number; error?: string; response?: string; nextAt?: number }): void | Promise<void>;
  getInvocation(id: string): Invocation | undefined | Promise<Invocation | undefined>;
  listInvocations(query: { state?: InvocationState; limit?: number }): Invocation[] | Promise<Invocation[]>;
  /** A failed call queued again, its attempts from zero; false if there is no failed call by that id. */
  retryInvocation(id: string): boolean | Promise<boolean>;
  /**
   * The calls a stopped Spore left: queued again (those that were running, to
   * run again). Locally at a start; on a cluster, the calls of a router that
   * stopped heartbeating, taken over. Returns how many.
   */
  requeueRunning(): number | Promise<number>;
  /** The earliest time a queued call is due, if any. */
  nextDue(): number | undefined;
}

const SCHEMA = `
CREATE TABLE IF NOT EXISTS invocations (
  id TEXT PRIMARY KEY,
  namespace TEXT NOT NULL,
  function TEXT NOT NULL,
  method TEXT NOT NULL,
  path TEXT NOT NULL,
  headers TEXT NOT NULL,
  params TEXT NOT NULL,
  body BLOB NOT NULL,
  state TEXT NOT NULL,
  attempts INTEGER NOT NULL,
  status INTEGER,
  error TEXT,
  response TEXT,
  created INTEGER NOT NULL,
  updated INTEGER NOT NULL,
  next_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS invocations_due ON invocations (state, next_at);
`;

/** Succeeded calls kept (the oldest go first), and failed ones. */
export const KEEP_SUCCEEDED = 1000;
export const KEEP_FAILED = 10_000;

export class SqliteInvocations implements InvocationStore {
  constructor(private readonly db: Database.Database) {
    db.exec(SCHEMA);
  }

  enqueue(call: NewInvocation): Invocation {
    const now = Date.now();
    const inv: Invocation = { ...call, id: randomUUID(), state: 'queued', attempts: 0, created: now, updated: now, nextAt: now };
    this.db
      .prepare('INSERT INTO invocations (id, namespace, function, method, path, headers, params, body, state, attempts, created, updated, next_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?, ?)')
      .run(inv.id, inv.namespace, inv.function, inv.method, inv.path, JSON.stringify(inv.headers), JSON.stringify(inv.params), inv.body, inv.state, now, now, now);
    return inv;
  }

  claim(now: number): Invocation | undefined {
    const row = this.db
      .prepare(`UPDATE invocations SET state = 'running', attempts = attempts + 1, updated = ? WHERE id = (SELECT id FROM invocations WHERE state = 'queued' AND next_at <= ? ORDER BY next_at, created LIMIT 1) RETURNING *`)
      .get(now, now) as Row | undefined;
    return row && toInvocation(row);
  }

  finish(id: string, r: { state: 'succeeded' | 'failed' | 'queued'; status: number; error?: string; response?: string; nextAt?: number }): void {
    const now = Date.now();
    this.db.transaction(() => {
      this.db.prepare('UPDATE invocations SET state = ?, status = ?, error = ?, response = ?, updated = ?, next_at = ? WHERE id = ?').run(r.state, r.status, r.error ?? null, r.response ?? null, now, r.nextAt ?? now, id);
      // bounded: the oldest finished calls go
      if (r.state !== 'queued') {
        const keep = r.state === 'succeeded' ? KEEP_SUCCEEDED : KEEP_FAILED;
        this.db.prepare(`DELETE FROM invocations WHERE state = ? AND id IN (SELECT id FROM invocations WHERE state = ? ORDER BY updated DESC LIMIT -1 OFFSET ?)`).run(r.state, r.state, keep);
      }
    })();
  }

  getInvocation(id: string): Invocation | undefined {
    const row = this.db.prepare('SELECT * FROM invocations WHERE id = ?').get(id) as Row | undefined;
    return row && toInvocation(row);
  }

  listInvocations(q: { state?: InvocationState; limit?: number }): Invocation[] {
    const rows = (q.state ? this.db.prepare('SELECT * FROM invocations WHERE state = ? ORDER BY created DESC LIMIT ?').all(q.state, q.limit ?? 100) : this.db.prepare('SELECT * FROM invocations ORDER BY created DESC LIMIT ?').all(q.limit ?? 100)) as Row[];
    return rows.map(toInvocation);
  }

  retryInvocation(id: string): boolean {
    const now = Date.now();
    return this.db.prepare(`UPDATE invocations SET state = 'queued', attempts = 0, next_at = ?, updated = ? WHERE id = ? AND state = 'failed'`).run(now, now, id).changes === 1;
  }

  requeueRunning(): number {
    return this.db.prepare(`UPDATE invocations SET state = 'queued', next_at = ? WHERE state = 'running'`).run(Date.now()).changes;
  }

  nextDue(): number | undefined {
    const row = this.db.prepare(`SELECT MIN(next_at) AS at FROM invocations WHERE state = 'queued'`).get() as { at: number | null };
    return row.at ?? undefined;
  }
}

interface Row {
  id: string;
  namespace: string;
  function: string;
  method: string;
  path: string;
  headers: string;
  params: string;
  body: Buffer;
  state: InvocationState;
  attempts: number;
  status: number | null;
  error: string | null;
  response: string | null;
  created: number;
  updated: number;
  next_at: number;
}

function toInvocation(r: Row): Invocation {
  return {
    id: r.id,
    namespace: r.namespace,
    function: r.function,
    method: r.method,
    path: r.path,
    headers: JSON.parse(r.headers),
    params: JSON.parse(r.params),
    body: r.body,
    state: r.state,
    attempts: r.attempts,
    ...(r.status !== null ? { status: r.status } : {}),
    ...(r.error !== null ? { error: r.error } : {}),
    ...(r.response !== null ? { response: r.response } : {}),
    created: r.created,
    updated: r.updated,
    nextAt: r.next_at,
  };
}
