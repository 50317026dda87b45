// The resource store: where the reconciler writes and the dataplane reads.
// One interface, two implementations (SQLite locally, the Kubernetes API later).
import type { Static } from '@sinclair/typebox';
import type { Condition as ConditionSchema, KubeObject, ObjectMeta } from '../api/index.js';

export type Condition = Static<typeof ConditionSchema>;

export interface StoredMeta extends ObjectMeta {
  namespace: string;
  /** Bumped on every write; compares writes across all objects. */
  resourceVersion: string;
  /** Bumped when the spec (or anything but status) changes. */
  generation: number;
  creationTimestamp: string;
}

export interface StoredObject extends KubeObject {
  metadata: StoredMeta;
  status?: Record<string, unknown>;
}

export interface ObjectRef {
  apiVersion: string;
  kind: string;
  namespace?: string;
  name: string;
}

export type WatchEvent = { type: 'ADDED' | 'MODIFIED' | 'DELETED'; object: StoredObject };

export interface ListFilter {
  apiVersion?: string;
  kind?: string;
  namespace?: string;
  /** Every label given must match. */
  labels?: Record<string, string>;
}

export interface ApplyOptions {
  /**
   * Delete the stage's objects that are not in the applied set; only objects
   * still carrying all of these labels are ever pruned. Locally the stage's
   * objects are found by the labels; on a cluster by the inventory kept on the
   * Stage of the labels' app and stage (which must both be given).
   */
  prune?: { labels: Record<string, string> };
}

/**
 * What an apply did. An apply is validated whole before anything is written
 * (locally by the transaction; on a cluster by a server-side dry run of every
 * changed object) and then written in waves; a failure part-way on a cluster
 * (the API server went away) leaves what was written, and the next apply of the
 * same set converges.
 */
export interface ApplyResult {
  created: ObjectRef[];
  updated: ObjectRef[];
  unchanged: ObjectRef[];
  pruned: ObjectRef[];
}

export interface ResourceStore {
  /** Creates or updates every object, and prunes what the prune labels' stage held and the set no longer has. See ApplyResult. */
  apply(objects: readonly KubeObject[], options?: ApplyOptions): Promise<ApplyResult>;
  get(ref: ObjectRef): Promise<StoredObject | undefined>;
  /**
   * What a stage holds: the objects an apply with these prune labels may
   * prune (locally those carrying the labels; on a cluster those of the
   * stage's inventory that still carry them, so another app's objects with
   * look-alike labels are never counted).
   */
  held(prune: { labels: Record<string, string> }): Promise<StoredObject[]>;
  list(filter?: ListFilter): Promise<StoredObject[]>;
  delete(ref: ObjectRef): Promise<boolean>;
  /**
   * Replaces the status the reconciler writes on an object (not its spec,
   * generation unchanged); conditions of types it leaves out, which the
   * dataplane wrote (setCondition), stay.
   */
  setStatus(ref: ObjectRef, status: Record<string, unknown>): Promise<void>;
  /** Sets one condition of an object's status, by its type, leaving the rest: the dataplane's word beside the reconciler's. */
  setCondition(ref: ObjectRef, condition: Condition): Promise<void>;
  /**
   * The part of a stored object that apply wrote, which is what a plan compares
   * with the desired object: on a cluster, the fields Spore owns, without what
   * the API server and others added (defaults, their own fields).
   */
  applied(o: StoredObject): KubeObject;
  /** Whether applying `desired` would change nothing apply wrote of `live` (what a plan and apply compare). */
  inSync(desired: KubeObject, live: StoredObject): boolean;
  /**
   * Calls `listener` for every change after this call, in commit order (on a
   * cluster, in order per kind: each kind has its own watch); returns the
   * unsubscribe function.
   */
  watch(listener: (event: WatchEvent) => void): () => void;
  close(): Promise<void>;
}

export interface LogEntry {
  id?: number;
  /** Epoch milliseconds. */
  time: number;
  namespace: string;
  function: string;
  instance: string;
  requestId?: string;
  stream: 'stdout' | 'stderr';
  line: string;
}

export interface LogQuery {
  namespace?: string;
  function: string;
  /** Epoch milliseconds. */
  since?: number;
  /** Only entries with a larger id (for following). */
  afterId?: number;
  limit?: number;
}

export interface LogStore {
  appendLogs(entries: readonly LogEntry[]): void;
  queryLogs(query: LogQuery): LogEntry[];
}

export function refOf(o: KubeObject | ObjectRef): ObjectRef {
  const r = o as Partial<KubeObject> & Partial<ObjectRef>;
  return r.metadata
    ? { apiVersion: r.apiVersion!, kind: r.kind!, namespace: r.metadata.namespace ?? 'default', name: r.metadata.name }
    : { apiVersion: r.apiVersion!, kind: r.kind!, namespace: r.namespace ?? 'default', name: r.name! };
}

export function formatRef(r: ObjectRef): string {
  return `${r.kind}/${r.namespace ?? 'default'}/${r.name}`;
}

/** One sync of a revision to a stage, as the reconciler records it. */
export interface SyncRecord {
  id?: number;
  stage: string;
  revision: string;
  ref?: string;
  author?: string;
  message?: string;
  /** Epoch milliseconds. */
  startedAt: number;
  durationMs: number;
  result: 'succeeded' | 'failed';
  /** Why it ran: start, poll, webhook, sync, rollback, `…: drift`, `teardown: …`. */
  trigger: string;
  counts?: { create: number; update: number; unchanged: number; prune: number };
  /** Milliseconds per step: fetch, checkout, install, render, validate, apply. */
  timings?: Record<string, number>;
  /** Objects put back after an out-of-band change. */
  healed?: string[];
  /** The failed step (checkout, install, render, validate, apply), the object if one is to blame, and the message. */
  error?: { step: string; object?: string; message: string; retryAt?: number; attempts?: number };
  /** The stage was torn down (its ref went away or its pull request closed). */
  teardown?: boolean;
  /** The rendered objects of a good sync (what a rollback re-applies). */
  objects?: KubeObject[];
  /** Canonical digest of each applied object by `Kind/namespace/name`, to tell drift from change. */
  applied?: Record<string, string>;
}

/** What a sync record was: a new revision, a heal of drift, a rollback or a teardown. */
export function syncKind(r: SyncRecord): 'revision' | 'drift' | 'rollback' | 'teardown' {
  if (r.teardown) return 'teardown';
  if (r.trigger.endsWith('drift')) return 'drift';
  return r.trigger === 'rollback' ? 'rollback' : 'revision';
}

export interface SyncHistory {
  recordSync(record: SyncRecord): number;
  listSyncs(query: { stage?: string; limit?: number; result?: SyncRecord['result'] }): SyncRecord[];
  getSync(query: { stage: string; revision: string; result?: SyncRecord['result'] }): SyncRecord | undefined;
  /** The reconciler's small state that must outlive the process (its stages, rollback pins, closed pull requests), by key. */
  readState<T>(key: string): T | undefined;
  /** Stores `value` as JSON under `key`; undefined removes it. */
  writeState(key: string, value: unknown): void;
}
