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
  ) {
    // list items come without apiVersion and kind: they are put back, so objects read the same from a list and a watch
    const list = async () => {
      const l = await client.request<{ items: KubeObject[]; metadata: { resourceVersion: string } }>('GET', collection);
      for (const o of l.items) Object.assign(o, { apiVersion, kind });
      return l as never;
    };
    this.informer = new ListWatch<KubernetesObject>(collection, new Watch(kc), list, false);
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
    let attempts = 0;
    this.informer.on('connect', () => (attempts = 0));
    // the client stops on an error other than 410: start again, waiting longer each time
    this.informer.on('error', (err: any) => {
      if (this.stopped) return;
      attempts++;
      // a first failure is common right after a CRD changed (its storage is initializing): said only when it lasts
      if (attempts > 1) onError(`watching ${kind} (${apiVersion}): ${err?.message ?? err}; again in ${Math.min(2 ** attempts, 30)} s`);
      this.retry = setTimeout(() => void this.informer.start().catch(() => {}), Math.min(2 ** attempts, 30) * 1000);
    });
    this.ready = this.informer.start();
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

const keyOf = (namespace: string | undefined, name: string) => `${namespace ?? ''}/${name}`;
