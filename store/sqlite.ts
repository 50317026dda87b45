// The local store: one SQLite file (better-sqlite3) holding the applied
// resources, with the same model as the CRDs, and the functions' logs.
import { existsSync, mkdirSync, statSync } from 'node:fs';
import { dirname } from 'node:path';
import { EventEmitter } from 'node:events';
import Database from 'better-sqlite3';
import type { KubeObject } from '../api/index.js';
import { bodyOf, canonical } from './canonical.js';
import { SqliteInvocations } from './invocations.js';
import { SqliteWorkflowRuns } from './workflow-runs.js';
import {
  refOf,
  type ApplyOptions,
  type ApplyResult,
  type Condition,
  type ListFilter,
  type LogEntry,
  type LogQuery,
  type LogStore,
  type ObjectRef,
  type ResourceStore,
  type StoredObject,
  type SyncHistory,
  type SyncRecord,
  type WatchEvent,
} from './types.js';

const SCHEMA = `
CREATE TABLE IF NOT EXISTS objects (
  api_version TEXT NOT NULL,
  kind TEXT NOT NULL,
  namespace TEXT NOT NULL,
  name TEXT NOT NULL,
  body TEXT NOT NULL,            -- the object without status and server-set metadata
  status TEXT,
  labels TEXT NOT NULL,
  generation INTEGER NOT NULL,
  resource_version INTEGER NOT NULL,
  created_at TEXT NOT NULL,
  PRIMARY KEY (api_version, kind, namespace, name)
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS logs (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  time INTEGER NOT NULL,
  namespace TEXT NOT NULL,
  function TEXT NOT NULL,
  instance TEXT NOT NULL,
  request_id TEXT,
  stream TEXT NOT NULL,
  line TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS logs_by_function ON logs (namespace, function, id);
CREATE TABLE IF NOT EXISTS syncs (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  stage TEXT NOT NULL,
  revision TEXT NOT NULL,
  result TEXT NOT NULL,
  record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS syncs_by_stage ON syncs (stage, id);
`;

interface Row {
  api_version: string;
  kind: string;
  namespace: string;
  name: string;
  body: string;
  status: string | null;
  labels: string;
  generation: number;
  resource_version: number;
  created_at: string;
}

function toObject(row: Row): StoredObject {
  const o = JSON.parse(row.body) as StoredObject;
  o.metadata = { ...o.metadata, namespace: row.namespace, generation: row.generation, resourceVersion: String(row.resource_version), creationTimestamp: row.created_at };
  if (row.status) o.status = JSON.parse(row.status);
  return o;
}

export interface SqliteStoreOptions {
  /** Log lines kept per function; the oldest are dropped first. @default 10000 */
  logsPerFunction?: number;
  /** Bytes of log lines kept per function; the oldest lines are dropped first. @default 8 MiB */
  logBytesPerFunction?: number;
  /** Clock for timestamps (tests). */
  now?: () => Date;
}

export class SqliteStore implements ResourceStore, LogStore, SyncHistory {
  private readonly db: Database.Database;
  private readonly events = new EventEmitter();
  private readonly logsPerFunction: number;
  private readonly logBytesPerFunction: number;
  private readonly now: () => Date;
  /** The asynchronous calls (invocations.ts), in the same file. */
  readonly invocations: SqliteInvocations;
  /** Workflow runs and their tasks (workflow-runs.ts), in the same file. */
  readonly workflowRuns: SqliteWorkflowRuns;

  constructor(
    readonly file: string,
    options: SqliteStoreOptions = {},
  ) {
    if (file !== ':memory:') mkdirSync(dirname(file), { recursive: true });
    // an empty file is not an empty store: something truncated it, and starting afresh would prune and forget silently
    if (file !== ':memory:' && existsSync(file) && statSync(file).size === 0) {
      throw new Error(`${file} is empty (0 bytes), not a Spore store: restore it from a backup, or delete it (and ${file}-wal, ${file}-shm) to start with an empty store`);
    }
    try {
      this.db = new Database(file);
      this.db.pragma('journal_mode = WAL');
      this.db.pragma('synchronous = NORMAL');
      this.db.pragma('busy_timeout = 5000');
      this.db.exec(SCHEMA);
    } catch (err) {
      const code = (err as { code?: string }).code ?? '';
      if (!/^SQLITE_(CORRUPT|NOTADB)/.test(code)) throw err;
      throw new Error(`${file} is damaged (${(err as Error).message}): restore it from a backup, or delete it (and ${file}-wal, ${file}-shm) to start with an empty store; what it held is then re-applied from the app or the repository`);
    }
    this.invocations = new SqliteInvocations(this.db);
    this.workflowRuns = new SqliteWorkflowRuns(this.db);
    this.events.setMaxListeners(0);
    this.logsPerFunction = options.logsPerFunction ?? 10_000;
    this.logBytesPerFunction = options.logBytesPerFunction ?? 8 * 1024 * 1024;
    this.now = options.now ?? (() => new Date());
  }

  private nextVersion(): number {
    const row = this.db.prepare(`INSERT INTO meta (key, value) VALUES ('resourceVersion', '1') ON CONFLICT(key) DO UPDATE SET value = CAST(value AS INTEGER) + 1 RETURNING value`).get() as { value: string };
    return Number(row.value);
  }

  private row(ref: ObjectRef): Row | undefined {
    const r = refOf(ref);
    return this.db.prepare('SELECT * FROM objects WHERE api_version = ? AND kind = ? AND namespace = ? AND name = ?').get(r.apiVersion, r.kind, r.namespace, r.name) as Row | undefined;
  }

  async apply(objects: readonly KubeObject[], options: ApplyOptions = {}): Promise<ApplyResult> {
    if (options.prune && Object.keys(options.prune.labels).length === 0) throw new Error('prune needs at least one label: pruning by no label would delete everything');
    const events: WatchEvent[] = [];
    const result: ApplyResult = { created: [], updated: [], unchanged: [], pruned: [] };
    const run = this.db.transaction(() => {
      const keep = new Set<string>();
      for (const o of objects) {
        const ref = refOf(o);
        keep.add(JSON.stringify([ref.apiVersion, ref.kind, ref.namespace, ref.name]));
        const { body, labels } = bodyOf(o);
        const old = this.row(ref);
        if (old && old.body === body) {
          result.unchanged.push(ref);
          continue;
        }
        const version = this.nextVersion();
        if (old) {
          this.db.prepare('UPDATE objects SET body = ?, labels = ?, generation = generation + 1, resource_version = ? WHERE api_version = ? AND kind = ? AND namespace = ? AND name = ?')
            .run(body, labels, version, ref.apiVersion, ref.kind, ref.namespace, ref.name);
          result.updated.push(ref);
        } else {
          this.db.prepare('INSERT INTO objects (api_version, kind, namespace, name, body, status, labels, generation, resource_version, created_at) VALUES (?, ?, ?, ?, ?, NULL, ?, 1, ?, ?)')
            .run(ref.apiVersion, ref.kind, ref.namespace, ref.name, body, labels, version, this.now().toISOString());
          result.created.push(ref);
        }
        events.push({ type: old ? 'MODIFIED' : 'ADDED', object: toObject(this.row(ref)!) });
      }
      if (options.prune) {
        for (const row of this.selectRows({ labels: options.prune.labels })) {
          if (keep.has(JSON.stringify([row.api_version, row.kind, row.namespace, row.name]))) continue;
          this.db.prepare('DELETE FROM objects WHERE api_version = ? AND kind = ? AND namespace = ? AND name = ?').run(row.api_version, row.kind, row.namespace, row.name);
          result.pruned.push({ apiVersion: row.api_version, kind: row.kind, namespace: row.namespace, name: row.name });
          events.push({ type: 'DELETED', object: toObject(row) });
        }
      }
    });
    run.immediate();
    for (const e of events) this.events.emit('change', e);
    return result;
  }

  private selectRows(filter: ListFilter = {}): Row[] {
    const where: string[] = [];
    const args: unknown[] = [];
    if (filter.apiVersion) (where.push('api_version = ?'), args.push(filter.apiVersion));
    if (filter.kind) (where.push('kind = ?'), args.push(filter.kind));
    if (filter.namespace) (where.push('namespace = ?'), args.push(filter.namespace));
    for (const [k, v] of Object.entries(filter.labels ?? {})) (where.push('json_extract(labels, ?) = ?'), args.push(`$."${k.replace(/"/g, '')}"`, v));
    const sql = `SELECT * FROM objects${where.length ? ` WHERE ${where.join(' AND ')}` : ''} ORDER BY kind, namespace, name`;
    return this.db.prepare(sql).all(...args) as Row[];
  }

  async get(ref: ObjectRef): Promise<StoredObject | undefined> {
    const row = this.row(ref);
    return row && toObject(row);
  }

  async held(prune: { labels: Record<string, string> }): Promise<StoredObject[]> {
    return this.list({ labels: prune.labels });
  }

  async list(filter: ListFilter = {}): Promise<StoredObject[]> {
    return this.selectRows(filter).map(toObject);
  }

  async delete(ref: ObjectRef): Promise<boolean> {
    const row = this.row(ref);
    if (!row) return false;
    const r = refOf(ref);
    this.db.prepare('DELETE FROM objects WHERE api_version = ? AND kind = ? AND namespace = ? AND name = ?').run(r.apiVersion, r.kind, r.namespace, r.name);
    this.events.emit('change', { type: 'DELETED', object: toObject(row) } satisfies WatchEvent);
    return true;
  }

  async setStatus(ref: ObjectRef, status: Record<string, unknown>): Promise<void> {
    // conditions are kept by type, as server-side apply keeps another writer's on a cluster
    this.writeStatus(ref, (old) => {
      const mine = (status.conditions as Condition[] | undefined) ?? [];
      const others = ((old.conditions as Condition[] | undefined) ?? []).filter((c) => !mine.some((m) => m.type === c.type));
      return { ...status, ...(mine.length || others.length ? { conditions: [...mine, ...others] } : {}) };
    });
  }

  async setCondition(ref: ObjectRef, condition: Condition): Promise<void> {
    this.writeStatus(ref, (old) => ({ ...old, conditions: [...((old.conditions as Condition[] | undefined) ?? []).filter((c) => c.type !== condition.type), condition] }));
  }

  /** The object's status made anew from its old one, in one transaction. */
  private writeStatus(ref: ObjectRef, make: (old: Record<string, unknown>) => Record<string, unknown>): void {
    const r = refOf(ref);
    this.db.transaction(() => {
      const row = this.row(r);
      if (!row) throw new Error(`cannot set status: ${r.kind}/${r.namespace}/${r.name} not found`);
      const status = make((toObject(row).status as Record<string, unknown> | undefined) ?? {});
      this.db.prepare('UPDATE objects SET status = ?, resource_version = ? WHERE api_version = ? AND kind = ? AND namespace = ? AND name = ?')
        .run(JSON.stringify(status), this.nextVersion(), r.apiVersion, r.kind, r.namespace, r.name);
    })();
    this.events.emit('change', { type: 'MODIFIED', object: toObject(this.row(r)!) } satisfies WatchEvent);
  }

  inSync(desired: KubeObject, live: StoredObject): boolean {
    return canonical(desired) === canonical(live);
  }

  /** Everything stored is what apply wrote (canonical() leaves out the server-set metadata). */
  applied(o: StoredObject): KubeObject {
    return o;
  }

  watch(listener: (event: WatchEvent) => void): () => void {
    this.events.on('change', listener);
    return () => this.events.off('change', listener);
  }

  appendLogs(entries: readonly LogEntry[]): void {
    if (!entries.length) return;
    const insert = this.db.prepare('INSERT INTO logs (time, namespace, function, instance, request_id, stream, line) VALUES (?, ?, ?, ?, ?, ?, ?)');
    const trim = this.db.prepare(
      'DELETE FROM logs WHERE namespace = ? AND function = ? AND id <= (SELECT id FROM logs WHERE namespace = ? AND function = ? ORDER BY id DESC LIMIT 1 OFFSET ?)',
    );
    // the newest line past the budget, counting bytes from the newest down
    const trimBytes = this.db.prepare(
      `DELETE FROM logs WHERE namespace = ? AND function = ? AND id <= (SELECT id FROM (SELECT id, SUM(length(CAST(line AS BLOB))) OVER (ORDER BY id DESC) AS total FROM logs WHERE namespace = ? AND function = ?) WHERE total > ? ORDER BY id DESC LIMIT 1)`,
    );
    this.db.transaction(() => {
      const touched = new Set<string>();
      for (const e of entries) {
        insert.run(e.time, e.namespace, e.function, e.instance, e.requestId ?? null, e.stream, e.line);
        touched.add(JSON.stringify([e.namespace, e.function]));
      }
      for (const key of touched) {
        const [ns, fn] = JSON.parse(key) as [string, string];
        trim.run(ns, fn, ns, fn, this.logsPerFunction);
        trimBytes.run(ns, fn, ns, fn, this.logBytesPerFunction);
      }
    })();
  }

  queryLogs(q: LogQuery): LogEntry[] {
    const rows = this.db
      .prepare(
        `SELECT * FROM (SELECT * FROM logs WHERE namespace = ? AND function = ? AND time >= ? AND id > ? ORDER BY id DESC LIMIT ?) ORDER BY id`,
      )
      .all(q.namespace ?? 'default', q.function, q.since ?? 0, q.afterId ?? 0, q.limit ?? 1000) as Array<Record<string, any>>;
    return rows.map((r) => ({ id: r.id, time: r.time, namespace: r.namespace, function: r.function, instance: r.instance, requestId: r.request_id ?? undefined, stream: r.stream, line: r.line }));
  }

  recordSync(record: SyncRecord): number {
    const r = this.db.prepare('INSERT INTO syncs (stage, revision, result, record) VALUES (?, ?, ?, ?)').run(record.stage, record.revision, record.result, JSON.stringify(record));
    return Number(r.lastInsertRowid);
  }

  listSyncs(q: { stage?: string; limit?: number; result?: SyncRecord['result'] }): SyncRecord[] {
    const where: string[] = [];
    const args: unknown[] = [];
    if (q.stage) (where.push('stage = ?'), args.push(q.stage));
    if (q.result) (where.push('result = ?'), args.push(q.result));
    const rows = this.db.prepare(`SELECT id, record FROM syncs${where.length ? ` WHERE ${where.join(' AND ')}` : ''} ORDER BY id DESC LIMIT ?`).all(...args, q.limit ?? 50) as { id: number; record: string }[];
    return rows.map((r) => ({ ...JSON.parse(r.record), id: r.id }));
  }

  getSync(q: { stage: string; revision: string; result?: SyncRecord['result'] }): SyncRecord | undefined {
    const row = this.db
      .prepare(`SELECT id, record FROM syncs WHERE stage = ? AND (revision = ? OR revision LIKE ? || '%')${q.result ? ' AND result = ?' : ''} ORDER BY id DESC LIMIT 1`)
      .get(q.stage, q.revision, q.revision, ...(q.result ? [q.result] : [])) as { id: number; record: string } | undefined;
    return row && { ...JSON.parse(row.record), id: row.id };
  }

  readState<T>(key: string): T | undefined {
    const row = this.db.prepare('SELECT value FROM meta WHERE key = ?').get(`state:${key}`) as { value: string } | undefined;
    return row && (JSON.parse(row.value) as T);
  }

  writeState(key: string, value: unknown): void {
    if (value === undefined) this.db.prepare('DELETE FROM meta WHERE key = ?').run(`state:${key}`);
    else this.db.prepare('INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value').run(`state:${key}`, JSON.stringify(value));
  }

  async close(): Promise<void> {
    this.events.removeAllListeners();
    if (this.db.open) this.db.close();
  }
}
