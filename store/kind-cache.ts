// One kind's objects as the API server has them, kept current by an informer
// (list, then watch from its resourceVersion; a relist on 410 Gone, and a
// reconnect after any other error), plus the store's own latest writes until
// the watch has caught up with them, so that a read after a write sees it.
import { ListWatch, Watch, type KubeConfig, type KubernetesObject } from '@kubernetes/client-node';
import type { KubeObject } from '../api/index.js';
import type { KubeClient } from './kube-client.js';

export type CacheEvent = { type: 'ADDED' | 'MODIFIED' | 'DELETED'; object: KubeObject };

const version = (o: KubeObject | undefined) => {
  const v = (o?.metadata as { resourceVersion?: string } | undefined)?.resourceVersion;
  return v && /^\d+$/.test(v) ? BigInt(v) : -1n;
};

export class KindCache {
  private readonly informer: ListWatch<KubernetesObject>;
  /** Objects this process wrote (or deleted: null) that the watch has not shown yet, by namespace/name. */
  private readonly written = new Map<string, { object: KubeObject | null; rv: bigint }>();
  private stopped = false;
  private retry?: NodeJS.Timeout;
  readonly ready: Promise<void>;

  constructor(
    kc: KubeConfig,
    client: KubeClient,
    readonly apiVersion: string,
    readonly kind: string,
    collection: string,
    onEvent: (e: CacheEvent) => void,
    onError: (message: string) => void,
    /** Only objects matching this label selector are kept (the rest is read on demand). */
    readonly labelSelector?: string,
  ) {
    let attempts = 0;
    let listed = false;
    let ready!: { resolve: () => void; reject: (err: Error) => void };
    this.ready = new Promise((resolve, reject) => (ready = { resolve, reject }));
    // list items come without apiVersion and kind: they are put back, so objects read the same from a list and a watch
    const list = async () => {
      const l = await client.request<{ items: KubeObject[]; metadata: { resourceVersion: string } }>('GET', collection, { query: { labelSelector } });
      for (const o of l.items) Object.assign(o, { apiVersion, kind });
      // a cache is ready once a list succeeded (the client goes on to watch even when it failed)
      attempts = 0;
      listed = true;
      setImmediate(ready.resolve); // after the client has put the items in (its next step, a microtask away)
      return l as never;
    };
    this.informer = new ListWatch<KubernetesObject>(collection, new Watch(kc), list, false, labelSelector);
    const emit = (type: CacheEvent['type']) => (o: KubernetesObject) => {
      const object = o as KubeObject;
      const key = keyOf(object.metadata.namespace, object.metadata.name);
      const w = this.written.get(key);
      if (w && version(object) >= w.rv) this.written.delete(key);
      onEvent({ type, object });
    };
    this.informer.on('add', emit('ADDED'));
    this.informer.on('update', emit('MODIFIED'));
    this.informer.on('delete', emit('DELETED'));
    // the client stops on an error other than 410: start again, waiting longer each time
    this.informer.on('error', (err: any) => {
      if (this.stopped) return;
      attempts++;
      const message = `listing and watching ${kind} (${apiVersion}): ${err?.message ?? err}`;
      if (!listed && attempts >= FIRST_LIST_TRIES) {
        // never listed: the store cannot answer for this kind (no rights, no such kind); said to whoever waits
        void this.stop();
        return ready.reject(new Error(message));
      }
      const wait = Math.min(2 ** attempts, 30);
      // a first failure is common right after a CRD changed (its storage initializing): said when it lasts
      if (attempts > 1) onError(`${message}; again in ${wait} s`);
      this.retry = setTimeout(() => void this.informer.start().catch(() => {}), wait * 1000);
    });
    void this.informer.start().catch(() => {});
  }

  get(namespace: string | undefined, name: string): KubeObject | undefined {
    const key = keyOf(namespace, name);
    const w = this.written.get(key);
    const seen = this.informer.get(name, namespace) as KubeObject | undefined;
    if (w && w.rv > version(seen)) return w.object ?? undefined;
    return seen;
  }

  list(): KubeObject[] {
    const out = new Map<string, KubeObject>();
    for (const o of this.informer.list() as KubeObject[]) out.set(keyOf(o.metadata.namespace, o.metadata.name), o);
    for (const [key, w] of this.written) {
      if (w.rv <= version(out.get(key))) continue;
      if (w.object) out.set(key, w.object);
      else out.delete(key);
    }
    return [...out.values()];
  }

  /** Remembers an object this process just wrote (or deleted, with the version the deletion had). */
  wrote(namespace: string | undefined, name: string, object: KubeObject | null, rv = version(object ?? undefined)): void {
    this.written.set(keyOf(namespace, name), { object, rv });
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.retry);
    await this.informer.stop();
  }
}

/** Tries of a kind's first list before the store gives up on it (about 15 s of backoff). */
const FIRST_LIST_TRIES = 5;

const keyOf = (namespace: string | undefined, name: string) => `${namespace ?? ''}/${name}`;
