// Where the triggers' small state lives on a cluster (SQLite's readState /
// writeState locally): a ConfigMap in the platform namespace, one key per
// trigger (`timer.<namespace>.<name>`: a catchUp timer's last firing;
// `watch.<namespace>.<name>`: the resourceVersion a watch reached). Only the
// leader writes it. It is read whole when a replica starts to lead, held in
// memory, and written back at most once per `flushMs` (merge patch), and at
// once on `flush()` (stepping down): a leader killed without a flush leaves
// the state of up to `flushMs` before, so its successor may send those last
// watch events again (at least once, never lost).
import type { KubeClient } from '../../store/kube-client.js';
import { KubeError } from '../../store/kube-client.js';
import type { TimerState } from './timers.js';

export const TRIGGER_STATE_CONFIGMAP = 'spore-trigger-state';

/** A state key (`timer/ns/name`) as a ConfigMap key: namespaces have no dots, so `.` parts stay apart. */
const keyOf = (key: string) => key.replace(/\//g, '.');

export class KubeTriggerState implements TimerState {
  private data = new Map<string, string>();
  private dirty = new Map<string, string | null>();
  private timer?: NodeJS.Timeout;
  private writing: Promise<void> = Promise.resolve();

  private constructor(
    private readonly client: KubeClient,
    private readonly namespace: string,
    private readonly flushMs: number,
    private readonly report: (message: string) => void,
  ) {}

  static async load(client: KubeClient, namespace: string, o: { flushMs?: number; report?: (message: string) => void } = {}): Promise<KubeTriggerState> {
    const s = new KubeTriggerState(client, namespace, o.flushMs ?? 1000, o.report ?? ((m) => process.stderr.write(`spore: ${m}\n`)));
    try {
      const cm = await client.request<{ data?: Record<string, string> }>('GET', s.path);
      s.data = new Map(Object.entries(cm.data ?? {}));
    } catch (err) {
      if (!(err instanceof KubeError && err.status === 404)) throw err;
    }
    return s;
  }

  private get path(): string {
    return `/api/v1/namespaces/${this.namespace}/configmaps/${TRIGGER_STATE_CONFIGMAP}`;
  }

  readState<T>(key: string): T | undefined {
    const text = this.data.get(keyOf(key));
    if (text === undefined) return undefined;
    try {
      return JSON.parse(text) as T;
    } catch {
      return undefined; // edited by hand into something else: as if none
    }
  }

  writeState(key: string, value: unknown): void {
    const k = keyOf(key);
    const text = value === undefined ? undefined : JSON.stringify(value);
    if (this.data.get(k) === text) return;
    if (text === undefined) this.data.delete(k);
    else this.data.set(k, text);
    this.dirty.set(k, text ?? null); // null: the merge patch removes the key
    this.timer ??= setTimeout(() => void this.flush(), this.flushMs);
  }

  /** Writes what changed now (and waits for a write under way). */
  flush(): Promise<void> {
    clearTimeout(this.timer);
    this.timer = undefined;
    if (this.dirty.size === 0) return this.writing;
    const data = Object.fromEntries(this.dirty);
    this.dirty.clear();
    this.writing = this.writing.then(() => this.write(data));
    return this.writing;
  }

  private async write(data: Record<string, string | null>): Promise<void> {
    try {
      await this.client.request('PATCH', this.path, { body: { data }, contentType: 'application/merge-patch+json' }).catch(async (err) => {
        if (!(err instanceof KubeError && err.status === 404)) throw err;
        // the first write: the ConfigMap with all that is known
        const body = { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: TRIGGER_STATE_CONFIGMAP, namespace: this.namespace, labels: { 'app.kubernetes.io/part-of': 'spore' } }, data: Object.fromEntries(this.data) };
        await this.client.request('POST', `/api/v1/namespaces/${this.namespace}/configmaps`, { body });
      });
    } catch (err) {
      this.report(`could not keep the triggers' state in ConfigMap ${this.namespace}/${TRIGGER_STATE_CONFIGMAP}: ${(err as Error).message}; trying again`);
      // with the next write, unless newer values came meanwhile
      for (const [k, v] of Object.entries(data)) if (!this.dirty.has(k)) this.dirty.set(k, v);
      this.timer ??= setTimeout(() => void this.flush(), this.flushMs * 5);
    }
  }
}
