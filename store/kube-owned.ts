// Objects a router replica executes on a cluster — a WorkflowRun, an
// Invocation (an asynchronous call) — kept as it goes, one object each.
//
// The replica that executes one owns it (status.owner) and is its only
// writer: it keeps the item in memory and writes the whole object, guarded by
// the resourceVersion it last wrote, one write at a time (changes made
// meanwhile go in the next: batched), and every `heartbeatMs` it refreshes
// status.heartbeat. A live object whose heartbeat is older than `staleMs` lost
// its replica: takeOver() adopts such objects, each with a guarded write, so
// that of two replicas trying one wins. An owner whose write finds another
// owner stops executing the item (onLost). Once done and written, an item is
// no longer owned. prune() deletes the oldest done objects.
import { API_VERSION, GROUP } from '../api/index.js';
import { KubeError, PARTIAL_METADATA, type KubeClient } from './kube-client.js';

export interface OwnedObjectsOptions {
  client: KubeClient;
  /** This router replica (unique per process): the owner of what it executes. */
  identity: string;
  /** The namespaces served (objects are looked for there only). @default every namespace */
  namespaces?: string[];
  /** @default 10000 */
  heartbeatMs?: number;
  /** A live object whose heartbeat is older is taken over. @default 30000 */
  staleMs?: number;
  report?: (message: string) => void;
}

export interface OwnedObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace: string; resourceVersion?: string; labels?: Record<string, string>; annotations?: Record<string, string>; creationTimestamp?: string };
  spec: Record<string, unknown>;
  status?: Record<string, unknown> & { owner?: string; heartbeat?: number };
}

/** What is kept of one kind: its plural, and an item's object (owner and heartbeat are added here). */
export interface OwnedKind<T> {
  plural: string;
  /** For messages: "workflow run", "asynchronous call". */
  noun: string;
  objectOf(item: T): OwnedObject;
  namespaceOf(item: T): string;
  /** When the item last changed (epoch ms): written as an annotation, by which prune() orders objects it lists by metadata alone. */
  updatedOf(item: T): number;
  /** Done: once written, it is no longer this replica's to heartbeat. */
  done(item: T): boolean;
}

/** An item executing here: what is written, and how far writing got. */
interface Owned<T> {
  item: T;
  resourceVersion: string;
  dirty: boolean;
  flushing?: Promise<void>;
  /** Stopping: the heartbeat written is 0, so that another replica takes the item over at once. */
  released?: boolean;
}

const PRUNE_EVERY_MS = 60_000;
/** The annotation holding when an object's item last changed (epoch ms). */
export const UPDATED = `${GROUP}/updated`;

export class OwnedObjects<T> {
  private readonly owned = new Map<string, Owned<T>>();
  private readonly lostListeners: ((id: string) => void)[] = [];
  private readonly pruned = new Map<string, number>();
  private readonly failing = new Map<string, string>();
  private readonly heartbeat: NodeJS.Timeout;
  private closed = false;
  /** The last failure to look for objects to take over, said once until it changes. */
  private lookFailure?: string;

  constructor(
    private readonly kind: OwnedKind<T>,
    private readonly o: OwnedObjectsOptions,
  ) {
    this.heartbeat = setInterval(() => {
      for (const [id, r] of this.owned) {
        r.dirty = true;
        void this.flush(id);
      }
    }, o.heartbeatMs ?? 10_000);
    this.heartbeat.unref();
  }

  private collection(namespace?: string): string {
    return namespace ? `/apis/${API_VERSION}/namespaces/${namespace}/${this.kind.plural}` : `/apis/${API_VERSION}/${this.kind.plural}`;
  }

  private serves(namespace: string): boolean {
    return !this.o.namespaces || this.o.namespaces.includes(namespace);
  }

  /** The item's whole object; with no owner (''), any replica may take it over at once. */
  private objectOf(r: Owned<T>, owner = this.o.identity): OwnedObject {
    const obj = this.kind.objectOf(r.item);
    const annotations = { ...obj.metadata.annotations, [UPDATED]: String(this.kind.updatedOf(r.item)) };
    return { ...obj, metadata: { ...obj.metadata, annotations, resourceVersion: r.resourceVersion || undefined }, status: { ...obj.status, owner, heartbeat: r.released || !owner ? 0 : Date.now() } };
  }

  /** Writes a new object, owned here from now on. */
  async create(id: string, item: T): Promise<void> {
    const r: Owned<T> = { item, resourceVersion: '', dirty: false };
    const written = await this.o.client.request<OwnedObject>('POST', this.collection(this.kind.namespaceOf(item)), { body: this.objectOf(r) });
    r.resourceVersion = written.metadata.resourceVersion ?? '';
    this.owned.set(id, r);
  }

  /** The item executing here by that id, if any (the live one: change it, then save()). */
  mine(id: string): T | undefined {
    return this.owned.get(id)?.item;
  }

  /** The items executing here. */
  items(): T[] {
    return [...this.owned.values()].map((r) => r.item);
  }

  /** The objects matching, in the namespace given or in every namespace served. */
  async list(namespace: string | undefined, query: Record<string, string | undefined>): Promise<OwnedObject[]> {
    const where = namespace ? [namespace] : (this.o.namespaces ?? [undefined]);
    const lists = await Promise.all(where.map((ns) => this.o.client.request<{ items: OwnedObject[] }>('GET', this.collection(ns), { query })));
    return lists.flatMap((l) => l.items).filter((o) => this.serves(o.metadata.namespace));
  }

  /** An object by name, looked for in the namespaces served. */
  async find(id: string): Promise<OwnedObject | undefined> {
    // an id that is no object name names none (in a field selector it would be refused, or read as more than a name)
    if (!/^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/.test(id)) return undefined;
    return (await this.list(undefined, { fieldSelector: `metadata.name=${id}` }))[0];
  }

  /**
   * Writes the item's changes: resolves once written (or once the item is
   * lost to another replica); rejects when it could not be written yet — it
   * is tried again at every heartbeat.
   */
  async save(id: string): Promise<void> {
    const r = this.owned.get(id);
    if (!r) return;
    r.dirty = true;
    await this.flush(id);
    if (r.dirty) throw new Error(`its object could not be written yet (tried again every heartbeat): ${this.failing.get(id) ?? 'unknown error'}`);
  }

  /**
   * Adopts `obj` as `item`, with a write guarded by the version read: false
   * when another replica changed it first, or it is gone.
   */
  async adopt(obj: OwnedObject, item: T): Promise<boolean> {
    const r: Owned<T> = { item, resourceVersion: obj.metadata.resourceVersion ?? '', dirty: false };
    if (this.closed || !(await this.guarded(obj, r, this.o.identity))) return false;
    if (this.closed) {
      // closed while adopting: handed over at once, not held for a heartbeat to go stale
      await this.guarded({ ...obj, metadata: { ...obj.metadata, resourceVersion: r.resourceVersion } }, r, '').catch(() => false);
      return false;
    }
    this.owned.set(obj.metadata.name, r);
    return true;
  }

  /**
   * Writes `obj` as `item` with no owner, for the replica holding the Lease
   * to take over (within its next look, 10 s): guarded like adopt().
   */
  handOver(obj: OwnedObject, item: T): Promise<boolean> {
    return this.guarded(obj, { item, resourceVersion: obj.metadata.resourceVersion ?? '', dirty: false }, '');
  }

  /** A write of `r` guarded by the version read: false when the object changed meanwhile, or is gone. */
  private async guarded(obj: OwnedObject, r: Owned<T>, owner: string): Promise<boolean> {
    const { name, namespace } = obj.metadata;
    try {
      const written = await this.o.client.request<OwnedObject>('PUT', `${this.collection(namespace)}/${name}`, { body: this.objectOf(r, owner) });
      r.resourceVersion = written.metadata.resourceVersion ?? '';
      return true;
    } catch (err) {
      if (err instanceof KubeError && (err.status === 409 || err.status === 404)) return false;
      throw err;
    }
  }

  /**
   * The live objects (`labelSelector`) whose replica stopped heartbeating,
   * adopted here as `itemOf` makes them: each by one replica only.
   */
  async takeOver(labelSelector: string, itemOf: (obj: OwnedObject) => T): Promise<T[]> {
    const stale = Date.now() - (this.o.staleMs ?? 30_000);
    let listed: OwnedObject[];
    try {
      listed = await this.list(undefined, { labelSelector });
    } catch (err) {
      // not fatal: the replica holding the Lease looks again (every 10 s); said once until it changes
      if (this.lookFailure !== (err as Error).message) this.say(`could not look for ${this.kind.noun}s to resume (trying again every 10 s): ${(err as Error).message}`);
      this.lookFailure = (err as Error).message;
      return [];
    }
    this.lookFailure = undefined;
    const taken: T[] = [];
    for (const obj of listed.filter((o) => !this.owned.has(o.metadata.name) && (o.status?.heartbeat ?? 0) < stale)) {
      const { name, namespace } = obj.metadata;
      const item = itemOf(obj);
      const adopted = await this.adopt(obj, item).catch((err: Error) => {
        this.say(`${this.kind.noun} ${namespace}/${name}: could not take it over: ${err.message}`);
        return false;
      });
      if (!adopted) continue;
      this.say(`took over ${this.kind.noun} ${namespace}/${name} (${obj.status?.owner ? `its router ${obj.status.owner} stopped heartbeating` : 'it had no router'})`);
      taken.push(item);
    }
    return taken;
  }

  onLost(listener: (id: string) => void): void {
    this.lostListeners.push(listener);
  }

  /** Writes the item while it has changes not yet written, one write at a time. */
  private flush(id: string): Promise<void> {
    const r = this.owned.get(id);
    if (!r) return Promise.resolve();
    r.flushing ??= (async () => {
      while (r.dirty && this.owned.get(id) === r) {
        r.dirty = false;
        if (!(await this.write(id, r))) {
          r.dirty = true;
          return;
        }
      }
    })().finally(() => {
      r.flushing = undefined;
      if (!r.dirty && this.kind.done(r.item) && this.owned.get(id) === r) this.owned.delete(id);
    });
    return r.flushing;
  }

  /** One guarded write of the whole object: false when it failed (tried again at the next heartbeat). */
  private async write(id: string, r: Owned<T>): Promise<boolean> {
    const namespace = this.kind.namespaceOf(r.item);
    const path = `${this.collection(namespace)}/${id}`;
    try {
      const written = await this.o.client.request<OwnedObject>('PUT', path, { body: this.objectOf(r) });
      r.resourceVersion = written.metadata.resourceVersion ?? '';
      this.failing.delete(id);
      return true;
    } catch (err) {
      if (err instanceof KubeError && (err.status === 409 || err.status === 404)) {
        const now = err.status === 404 ? undefined : await this.o.client.request<OwnedObject>('GET', path).catch(() => undefined);
        if (now && (now.status?.owner ?? this.o.identity) === this.o.identity) {
          r.resourceVersion = now.metadata.resourceVersion ?? ''; // changed by someone else, still ours: written again
          r.dirty = true;
          return true;
        }
        if (err.status === 409 && !now) return false;
        this.owned.delete(id);
        this.say(`${this.kind.noun} ${namespace}/${id} ${now ? `was taken over by ${now.status?.owner || 'someone else'}` : 'was deleted'}: no longer executed here`);
        for (const l of this.lostListeners) l(id);
        return true;
      }
      const message = (err as Error).message;
      if (this.failing.get(id) !== message) this.say(`${this.kind.noun} ${namespace}/${id} could not be written (tried again): ${message}`);
      this.failing.set(id, message);
      return false;
    }
  }

  /**
   * The done objects of `labelSelector` in a namespace past the newest
   * `keep`, or updated longer than `keepMs` ago, deleted (at most once a
   * minute per namespace and selector).
   */
  async prune(namespace: string, labelSelector: string, keep: number, keepMs = Infinity): Promise<void> {
    const now = Date.now();
    const key = `${namespace} ${labelSelector}`;
    if ((this.pruned.get(key) ?? 0) > now - PRUNE_EVERY_MS) return;
    this.pruned.set(key, now);
    try {
      // metadata alone: a kept call's body may be a megabyte, and there may be thousands
      type Meta = Pick<OwnedObject, 'metadata'>;
      const list = await this.o.client.request<{ items: Meta[] }>('GET', this.collection(namespace), { query: { labelSelector }, accept: PARTIAL_METADATA });
      const updatedOf = (o: Meta) => Number(o.metadata.annotations?.[UPDATED]) || Date.parse(o.metadata.creationTimestamp ?? '') || 0;
      const done = list.items.sort((a, b) => updatedOf(b) - updatedOf(a));
      const gone = done.filter((obj, i) => i >= keep || updatedOf(obj) < now - keepMs);
      // guarded by the version listed: one changed meanwhile (a failed call retried) is no longer done, and stays
      const unchanged = (obj: Meta) => ({ apiVersion: 'v1', kind: 'DeleteOptions', preconditions: { resourceVersion: obj.metadata.resourceVersion } });
      for (const obj of gone) await this.o.client.request('DELETE', `${this.collection(namespace)}/${obj.metadata.name}`, { body: unchanged(obj) }).catch((err: KubeError) => err.status === 404 || err.status === 409 || Promise.reject(err));
    } catch (err) {
      this.say(`old ${this.kind.noun}s of ${namespace} could not be deleted (tried again later): ${(err as Error).message}`);
    }
  }

  /** Stops heartbeating; what is still executing here is written with heartbeat 0, for another replica to take over at once. */
  async close(): Promise<void> {
    this.closed = true;
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
