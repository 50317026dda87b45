// The store on a cluster: objects are written to the Kubernetes API by
// server-side apply (field manager `spore`) and read from informers. What an
// app and stage applied is kept on its Stage object (the inventory), so prune
// deletes exactly what left it and never lists every kind of the cluster.
import { KubeConfig } from '@kubernetes/client-node';
import { API_VERSION, APP_LABEL, CLUSTER_SCOPED_KINDS, KINDS, STAGE_LABEL, WAVE_FOUNDATION, stageObjectName, waveOf, type KubeObject } from '../api/index.js';
import { canonical, digest } from './canonical.js';
import { KindCache, type CacheEvent } from './kind-cache.js';
import { INSTALL_CRDS, KubeClient, KubeError } from './kube-client.js';
import { ownedBy } from './owned-fields.js';
import { formatRef, refOf, type ApplyOptions, type ApplyResult, type Condition, type ListFilter, type ObjectRef, type ResourceStore, type StoredObject, type WatchEvent } from './types.js';

export const FIELD_MANAGER = 'spore';

export interface KubeStoreOptions {
  kubeconfig: KubeConfig;
  /** Namespace of Spore's own objects: the Stages (inventories) and the reconciler's history. @default 'spore-system' */
  namespace?: string;
  /** Kinds watched from the start, for the dataplane's reads. @default every spore.dev kind */
  kinds?: { apiVersion: string; kind: string }[];
  /** Only objects of these namespaces are seen (and cluster-scoped ones): a dataplane serving part of a cluster. @default every namespace */
  watchNamespaces?: string[];
  /** Read the Stages' inventories (what the reconciler applied, and its baselines). The dataplane, which only reads, does not. @default true */
  stages?: boolean;
  report?: (line: string) => void;
}

/** A failed apply: which objects the API server refused and why, and what was written before it stopped. */
export class ApplyError extends Error {
  constructor(
    message: string,
    readonly object: string | undefined,
    readonly applied: ObjectRef[],
    /** The API server was unreachable, busy or in conflict: the same apply may pass on a later try. */
    readonly transient = false,
  ) {
    super(message);
    this.name = 'ApplyError';
  }
}

/** Errors worth another try: unreachable, a conflict, too many requests, the server's own failures. */
const passing = (err: unknown) => err instanceof KubeError && (err.status === 0 || err.status === 409 || err.status === 429 || err.status >= 500);

const kindKey = (apiVersion: string, kind: string) => `${apiVersion}|${kind}`;
const refKey = (r: ObjectRef) => `${r.apiVersion}|${r.kind}|${r.namespace ?? ''}|${r.name}`;

/** Runs `work` over `items`, `limit` at a time. */
async function bounded<T>(items: readonly T[], limit: number, work: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, async () => {
    while (next < items.length) await work(items[next++]);
  }));
}

export class KubeStore implements ResourceStore {
  readonly client: KubeClient;
  readonly namespace: string;
  private readonly caches = new Map<string, Promise<KindCache>>();
  private readonly listeners = new Set<(e: WatchEvent) => void>();
  /** Per object: the digest of what Spore last applied and of what the API server made of it (see inSync). Kept in the inventories. */
  private readonly baseline = new Map<string, { desired: string; owned: string }>();
  private closed = false;

  private constructor(private readonly o: KubeStoreOptions) {
    this.client = new KubeClient(o.kubeconfig);
    this.namespace = o.namespace ?? 'spore-system';
  }

  /** Connects, checks that the spore.dev CRDs are installed, and fills the caches of the watched kinds. */
  static async open(o: KubeStoreOptions): Promise<KubeStore> {
    const store = new KubeStore(o);
    try {
      await store.client.kind(API_VERSION, 'Stage').catch((err: KubeError) => {
        throw new Error(err.status === 404 ? `the spore.dev CRDs are not installed on ${store.client.server}: install them first (${INSTALL_CRDS})` : err.message);
      });
      // runs the router writes (WorkflowRun) are not an app's: not watched unless asked for
      const kinds = o.kinds ?? Object.values(KINDS).filter((k) => !('runtime' in k)).map((k) => ({ apiVersion: API_VERSION, kind: k.kind }));
      await Promise.all(kinds.map((k) => store.cache(k.apiVersion, k.kind)));
      // what the stages applied: their kinds watched from the start, their baselines known
      if (o.stages === false) return store;
      const stages = (await store.cache(API_VERSION, 'Stage')).list() as { status?: { inventory?: (ObjectRef & { digest?: string; owned?: string })[] } }[];
      for (const e of stages.flatMap((st) => st.status?.inventory ?? [])) {
        if (e.digest && e.owned) store.baseline.set(refKey({ ...e, namespace: e.namespace ?? 'default' }), { desired: e.digest, owned: e.owned });
        await store.cache(e.apiVersion, e.kind).catch(() => undefined);
      }
      return store;
    } catch (err) {
      await store.close();
      throw err;
    }
  }

  private say(line: string): void {
    (this.o.report ?? ((l) => process.stderr.write(`${l}\n`)))(line);
  }

  /** The informer-backed cache of a kind, started on first use. */
  private cache(apiVersion: string, kind: string): Promise<KindCache> {
    const key = kindKey(apiVersion, kind);
    let c = this.caches.get(key);
    if (!c) {
      c = (async () => {
        const collection = await this.client.collection(apiVersion, kind);
        // other kinds than Spore's (ConfigMaps, Secrets, Namespaces…): only what Spore labelled is watched, not every Secret of the cluster
        const selector = apiVersion === API_VERSION ? undefined : APP_LABEL;
        const cache = new KindCache(this.o.kubeconfig, this.client, apiVersion, kind, collection, (e) => this.emit(e), (m) => this.closed || this.say(`store: ${m}`), selector);
        await cache.ready;
        return cache;
      })();
      this.caches.set(key, c);
      c.catch(() => this.caches.get(key) === c && this.caches.delete(key));
    }
    return c;
  }

  private emit(e: CacheEvent): void {
    const event = { type: e.type, object: stored(e.object) };
    if (!this.visible(event.object)) return;
    for (const l of this.listeners) l(event);
  }

  /** Outside the namespaces the store watches, an object is not there. */
  private visible(o: { metadata: { namespace?: string } }): boolean {
    const only = this.o.watchNamespaces;
    return !only || !o.metadata.namespace || only.includes(o.metadata.namespace);
  }

  /** Whether a kind lives outside namespaces (from discovery; Spore's list for kinds the cluster does not serve yet). */
  private async clusterScoped(apiVersion: string, kind: string): Promise<boolean> {
    return this.client.kind(apiVersion, kind).then((k) => !k.namespaced, () => CLUSTER_SCOPED_KINDS.has(kind));
  }

  /** The object as it is sent: a cluster-scoped one without the namespace the store's model gives every object. */
  private async wire(o: KubeObject): Promise<KubeObject> {
    const { status: _status, ...rest } = o as KubeObject & { status?: unknown };
    const metadata = { ...rest.metadata };
    if (await this.clusterScoped(o.apiVersion, o.kind)) delete metadata.namespace;
    else metadata.namespace ??= 'default';
    return { ...rest, metadata };
  }

  /**
   * Whether applying `desired` would change nothing Spore owns of `live`: its
   * owned fields equal the desired ones, or equal what the API server made of
   * this same desired object when Spore last applied it (the server rewrites
   * some values: `stringData` into `data`, quantities, empty maps dropped), so
   * such an object does not look changed at every poll.
   */
  inSync(desired: KubeObject, live: StoredObject): boolean {
    const owned = this.applied(live);
    if (canonical(owned) === canonical(desired)) return true;
    const b = this.baseline.get(refKey(refOf(desired)));
    return Boolean(b && b.desired === digest(desired) && b.owned === digest(owned));
  }

  /** The part of a stored object that Spore applied (identity and the fields its managedFields entry names). */
  applied(o: StoredObject): KubeObject {
    return ownedBy(o, FIELD_MANAGER) ?? { apiVersion: o.apiVersion, kind: o.kind, metadata: { name: o.metadata.name, namespace: o.metadata.namespace } };
  }

  /** The object as the cache has it; undefined also when the cluster does not serve its kind (yet: its CRD may come in the same apply). */
  private async live(ref: ObjectRef): Promise<KubeObject | undefined> {
    let cache: KindCache;
    try {
      cache = await this.cache(ref.apiVersion, ref.kind);
    } catch (err) {
      if (err instanceof KubeError && err.status === 404) return undefined;
      throw err;
    }
    const namespaced = !(await this.clusterScoped(ref.apiVersion, ref.kind));
    const found = cache.get(namespaced ? (ref.namespace ?? 'default') : undefined, ref.name);
    if (found || !cache.labelSelector) return found;
    // not among what the cache watches: an object Spore did not label may still be there (made by hand): asked for
    try {
      const o = await this.client.request<KubeObject>('GET', await this.client.path({ ...ref, namespace: namespaced ? (ref.namespace ?? 'default') : undefined }));
      return { ...o, apiVersion: ref.apiVersion, kind: ref.kind };
    } catch (err) {
      if (err instanceof KubeError && err.status === 404) return undefined;
      throw err;
    }
  }

  /** Server-side apply of one object (or its dry run); returns the object the server answered with. */
  private async ssa(o: KubeObject, dryRun = false): Promise<KubeObject> {
    const body = await this.wire(o);
    return this.client.request('PATCH', await this.client.path(refOf(body)), {
      query: { fieldManager: FIELD_MANAGER, force: 'true', ...(dryRun ? { dryRun: 'All' } : {}) },
      body,
      contentType: 'application/apply-patch+yaml', // JSON is YAML
    });
  }

  /**
   * Validated whole, then applied in waves: the CRDs and Namespaces first
   * (the rest needs them to be validated), then a server-side dry run of every
   * other changed object — any refusal fails the apply before the rest is
   * written — then each wave in order. An object whose applied part already
   * equals the desired one is not written. A failure part-way (the API server
   * went away) is reported with what was applied; the next apply converges.
   * Prune deletes what the stage's inventory held and the new set does not,
   * only when it still carries the prune labels.
   */
  async apply(objects: readonly KubeObject[], options: ApplyOptions = {}): Promise<ApplyResult> {
    const result: ApplyResult = { created: [], updated: [], unchanged: [], pruned: [] };
    const stage = options.prune ? stageOf(options.prune.labels) : undefined;
    const before = stage ? await this.inventory(stage) : [];
    const wanted = objects.map(refOf);
    // written ahead: a crash after some creates leaves them in the inventory, so a later apply can still prune them
    if (stage) await this.writeInventory(stage, union(before, wanted));
    const changed: KubeObject[] = [];
    const existing = new Set<string>(); // looked up once: an unlabelled object costs a GET
    for (const o of objects) {
      const live = await this.live(refOf(o)).catch(() => undefined);
      if (live) existing.add(refKey(refOf(o)));
      if (live && this.inSync(o, stored(live))) result.unchanged.push(refOf(o));
      else changed.push(o);
    }
    const write = async (o: KubeObject) => {
      const ref = refOf(o);
      const existed = existing.has(refKey(ref));
      let answer: KubeObject;
      try {
        answer = await this.ssa(o);
      } catch (err) {
        throw new ApplyError(`${formatRef(ref)}: ${(err as Error).message}`, formatRef(ref), [...result.created, ...result.updated], passing(err));
      }
      (await this.cache(ref.apiVersion, ref.kind)).wrote(answer.metadata.namespace, answer.metadata.name, answer);
      this.baseline.set(refKey(ref), { desired: digest(o), owned: digest(this.applied(stored(answer))) });
      (existed ? result.updated : result.created).push(ref);
    };
    const foundation = changed.filter((o) => waveOf(o) === WAVE_FOUNDATION);
    for (const o of foundation) await write(o);
    await this.established(foundation.filter((o) => o.kind === 'CustomResourceDefinition').map((o) => o.metadata.name));
    const rest = changed.filter((o) => waveOf(o) !== WAVE_FOUNDATION);
    const refused: string[] = [];
    let transient = false;
    await bounded(rest, 8, async (o) => {
      await this.ssa(o, true).catch((err: Error) => {
        transient ||= passing(err);
        refused.push(`${formatRef(refOf(o))}: ${err.message}`);
      });
    });
    refused.sort();
    if (refused.length) {
      throw new ApplyError(`the API server refused ${refused.length} object(s), nothing of them was applied:\n  ${refused.join('\n  ')}`, refused[0].split(': ')[0], [...result.created, ...result.updated], transient);
    }
    const waves = [...new Set(rest.map(waveOf))].sort((a, b) => a - b);
    for (const wave of waves) await bounded(rest.filter((o) => waveOf(o) === wave), 8, write);
    if (stage) {
      const keep = new Set(wanted.map(refKey));
      const gone = before.filter((r) => !keep.has(refKey(r))).sort((a, b) => waveOf(b) - waveOf(a));
      for (const ref of gone) {
        const live = await this.live(ref).catch(() => undefined);
        // only what still carries the stage's labels: an object someone else took over is left alone
        if (!live || Object.entries(options.prune!.labels).some(([k, v]) => live.metadata.labels?.[k] !== v)) continue;
        if (await this.delete(ref)) result.pruned.push(ref);
      }
      await this.writeInventory(stage, wanted);
    }
    return result;
  }

  /** Waits until the API server serves each CRD (Established), as the objects of its kind need it. */
  private async established(names: string[]): Promise<void> {
    for (const name of names) {
      for (let i = 0; ; i++) {
        const crd = await this.client.request('GET', `/apis/apiextensions.k8s.io/v1/customresourcedefinitions/${name}`);
        if (crd.status?.conditions?.some((c: { type: string; status: string }) => c.type === 'Established' && c.status === 'True')) break;
        if (i === 300) throw new ApplyError(`CustomResourceDefinition ${name} is not Established after 30 s: ${JSON.stringify(crd.status?.conditions ?? [])}`, `CustomResourceDefinition/${name}`, []);
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  }

  /** The Stage object that keeps an app's and stage's inventory. */
  private stageRef(stage: { app: string; stage: string }): ObjectRef {
    return { apiVersion: API_VERSION, kind: 'Stage', namespace: this.namespace, name: stageObjectName(stage.app, stage.stage) };
  }

  async inventory(stage: { app: string; stage: string }): Promise<ObjectRef[]> {
    const s = (await this.live(this.stageRef(stage))) as { status?: { inventory?: ObjectRef[] } } | undefined;
    return (s?.status?.inventory ?? []).map((r) => ({ apiVersion: r.apiVersion, kind: r.kind, namespace: r.namespace ?? 'default', name: r.name }));
  }

  /** The Stage exists (made on first use) and its inventory is `refs`. */
  private async writeInventory(stage: { app: string; stage: string }, refs: ObjectRef[]): Promise<void> {
    const ref = this.stageRef(stage);
    if (!(await this.live(ref))) {
      await this.ssa({ apiVersion: API_VERSION, kind: 'Stage', metadata: { name: ref.name, namespace: this.namespace, labels: { [APP_LABEL]: stage.app } }, spec: { app: stage.app, stage: stage.stage } });
    }
    const inventory = [...refs]
      .sort((a, b) => refKey(a).localeCompare(refKey(b)))
      .map((r) => ({ apiVersion: r.apiVersion, kind: r.kind, namespace: r.namespace, name: r.name, ...this.baseline.get(refKey(r)) && { digest: this.baseline.get(refKey(r))!.desired, owned: this.baseline.get(refKey(r))!.owned } }));
    await this.applyStatus(ref, { inventory }, `${FIELD_MANAGER}-inventory`);
  }

  /**
   * Server-side apply of an object's status (the status subresource) as
   * `manager`: the fields it wrote before and leaves out are removed, those of
   * other managers stay (the store's inventory beside the reconciler's status).
   */
  private async applyStatus(ref: ObjectRef, status: Record<string, unknown>, manager: string): Promise<void> {
    const body = await this.wire({ apiVersion: ref.apiVersion, kind: ref.kind, metadata: { name: ref.name, namespace: ref.namespace } });
    const answer = await this.client.request<KubeObject>('PATCH', `${await this.client.path(refOf(body))}/status`, {
      query: { fieldManager: manager, force: 'true' },
      body: { ...body, status },
      contentType: 'application/apply-patch+yaml',
    });
    (await this.cache(ref.apiVersion, ref.kind)).wrote(answer.metadata.namespace, answer.metadata.name, answer);
  }

  async get(ref: ObjectRef): Promise<StoredObject | undefined> {
    const o = await this.live(refOf(ref));
    return o && this.visible(o) ? stored(o) : undefined;
  }

  async held(prune: { labels: Record<string, string> }): Promise<StoredObject[]> {
    const out: StoredObject[] = [];
    for (const ref of await this.inventory(stageOf(prune.labels))) {
      const o = await this.get(ref);
      if (o && Object.entries(prune.labels).every(([k, v]) => o.metadata.labels?.[k] === v)) out.push(o);
    }
    return out;
  }

  /** From the caches: one kind when the filter names it, else every kind the store watches or has written; of kinds other than Spore's, only objects carrying the app label. */
  async list(filter: ListFilter = {}): Promise<StoredObject[]> {
    const caches = filter.kind
      ? [await this.cache(filter.apiVersion ?? API_VERSION, filter.kind)]
      : (await Promise.all([...this.caches.values()].map((c) => c.catch(() => undefined)))).filter((c): c is KindCache => Boolean(c) && (!filter.apiVersion || c!.apiVersion === filter.apiVersion));
    const out: StoredObject[] = [];
    for (const c of caches) {
      for (const o of c.list()) {
        const s = stored(o);
        if ((filter.namespace && s.metadata.namespace !== filter.namespace) || !this.visible(s)) continue;
        if (Object.entries(filter.labels ?? {}).some(([k, v]) => s.metadata.labels?.[k] !== v)) continue;
        out.push(s);
      }
    }
    return out.sort((a, b) => a.kind.localeCompare(b.kind) || a.metadata.namespace.localeCompare(b.metadata.namespace) || a.metadata.name.localeCompare(b.metadata.name));
  }

  /** Deletes an object, only as the store last saw it (a precondition on its version): changed since, it is left alone. */
  async delete(ref: ObjectRef): Promise<boolean> {
    const r = refOf(ref);
    const live = await this.live(r);
    const seen = (live?.metadata as { resourceVersion?: string } | undefined)?.resourceVersion;
    try {
      await this.client.request('DELETE', await this.client.path(refOf(await this.wire({ apiVersion: r.apiVersion, kind: r.kind, metadata: { name: r.name, namespace: r.namespace } }))), {
        query: { propagationPolicy: 'Background' },
        body: { apiVersion: 'v1', kind: 'DeleteOptions', ...(seen ? { preconditions: { resourceVersion: seen } } : {}) },
      });
    } catch (err) {
      if (err instanceof KubeError && (err.status === 404 || err.status === 409)) return false;
      throw err;
    }
    this.baseline.delete(refKey(r));
    const version = (live?.metadata as { resourceVersion?: string } | undefined)?.resourceVersion;
    // remembered as gone, until the watch shows the deletion (a later version than the last one seen)
    if (version && /^\d+$/.test(version)) (await this.cache(r.apiVersion, r.kind)).wrote(live!.metadata.namespace, r.name, null, BigInt(version) + 1n);
    return true;
  }

  /** Sets an object's status, as Spore writes it (what another writer keeps there, such as the inventory, stays). */
  async setStatus(ref: ObjectRef, status: Record<string, unknown>): Promise<void> {
    const r = refOf(ref);
    if (!(await this.live(r))) throw new Error(`cannot set status: ${formatRef(r)} not found`);
    await this.applyStatus(r, status, FIELD_MANAGER);
  }

  /** As the dataplane's field manager: the reconciler's conditions (and its status) stay, each condition being keyed by type. */
  async setCondition(ref: ObjectRef, condition: Condition): Promise<void> {
    await this.applyStatus(refOf(ref), { conditions: [condition] }, `${FIELD_MANAGER}-dataplane`);
  }

  watch(listener: (event: WatchEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  async close(): Promise<void> {
    this.closed = true;
    this.listeners.clear();
    const caches = [...this.caches.values()];
    this.caches.clear();
    await Promise.all(caches.map((c) => c.then((k) => k.stop(), () => {})));
    this.client.close();
  }
}

/** The app and stage a prune's labels name: on a cluster, prune goes by the stage's inventory. */
function stageOf(labels: Record<string, string>): { app: string; stage: string } {
  const app = labels[APP_LABEL];
  const stage = labels[STAGE_LABEL];
  if (!app || !stage) throw new Error(`prune on a cluster needs the ${APP_LABEL} and ${STAGE_LABEL} labels (its inventory is kept per app and stage)`);
  return { app, stage };
}

function union(a: ObjectRef[], b: ObjectRef[]): ObjectRef[] {
  const all = new Map([...a, ...b].map((r) => [refKey(r), r]));
  return [...all.values()];
}

/** A live object in the store's model: every object has a namespace (cluster-scoped ones `default`, as refOf gives them). */
function stored(o: KubeObject): StoredObject {
  const m = o.metadata as StoredObject['metadata'];
  return { ...o, metadata: { ...m, namespace: m.namespace ?? 'default', generation: m.generation ?? 0, resourceVersion: m.resourceVersion, creationTimestamp: m.creationTimestamp } } as StoredObject;
}
