// The reconciler's history and small state on a cluster: one ConfigMap per
// sync record (gzipped JSON, with the objects a rollback re-applies) and one
// ConfigMap of state, in Spore's namespace. Read once when the reconciler
// starts, then served from memory; writes go to the API in order behind it
// (flush() waits for them), so the reconciler's calls stay synchronous.
import { gunzipSync, gzipSync } from 'node:zlib';
import type { KubeClient } from './kube-client.js';
import { KubeError } from './kube-client.js';
import type { SyncHistory, SyncRecord } from './types.js';

const HISTORY_LABEL = 'spore.dev/history-of';
const STAGE_OF_LABEL = 'spore.dev/history-stage';
/** Records kept per stage (older ones are deleted). */
const KEEP = 100;
/** Records per stage that keep their objects in memory (what rollback can reach without a fetch). */
const KEEP_OBJECTS = 20;
/** A ConfigMap holds at most 1 MiB: a record over this many gzipped bytes is kept without its objects. */
const MAX_BYTES = 900 * 1024;

/** ConfigMap keys allow [-._a-zA-Z0-9]: anything else is written as _xx. */
const dataKey = (key: string) => key.replace(/[^-.a-zA-Z0-9]/g, (c) => `_${c.charCodeAt(0).toString(16).padStart(2, '0')}`);

export class KubeHistory implements SyncHistory {
  private records: SyncRecord[] = []; // newest first
  private state: Record<string, string> = {};
  private nextId = 1;
  private queue: Promise<void> = Promise.resolve();
  private closed = false;
  private readonly base: string;

  private constructor(
    private readonly client: KubeClient,
    private readonly namespace: string,
    private readonly app: string,
    private readonly report: (line: string) => void,
  ) {
    this.base = `/api/v1/namespaces/${namespace}/configmaps`;
  }

  static async open(client: KubeClient, namespace: string, app: string, report: (line: string) => void = (l) => process.stderr.write(`${l}\n`)): Promise<KubeHistory> {
    const h = new KubeHistory(client, namespace, app, report);
    // listing in a namespace that does not exist answers an empty list: asked first
    await client.request('GET', `/api/v1/namespaces/${namespace}`).catch((err: KubeError) => {
      if (err.status === 404) throw new Error(`namespace ${namespace} does not exist: create it (kubectl create namespace ${namespace}) or give --namespace`);
      throw err;
    });
    const list = await client.request<{ items: any[] }>('GET', h.base, { query: { labelSelector: `${HISTORY_LABEL}=${app}` } });
    for (const cm of list.items) {
      if (cm.metadata.name === h.stateName()) h.state = cm.data ?? {};
      else if (cm.binaryData?.record) h.records.push(JSON.parse(gunzipSync(Buffer.from(cm.binaryData.record, 'base64')).toString('utf8')));
    }
    h.records.sort((a, b) => b.id! - a.id!);
    h.nextId = (h.records[0]?.id ?? 0) + 1;
    h.trimObjects();
    return h;
  }

  private stateName(): string {
    return `spore-state-${this.app}`;
  }

  /**
   * Runs writes one after another, each tried until it lands (waiting up to
   * 30 s between tries, said from the second failure on): an API server away
   * for a while delays the history, it does not lose it. A refusal that no
   * retry can change (400, 403, 422) is said and dropped.
   */
  private later(what: string, work: () => Promise<unknown>): void {
    this.queue = this.queue.then(async () => {
      for (let attempt = 1; !this.closed; attempt++) {
        try {
          await work();
          return;
        } catch (err) {
          const status = (err as KubeError).status;
          if (status === 400 || status === 403 || status === 422) return this.report(`store: could not ${what}: ${(err as Error).message}`);
          if (attempt > 1) this.report(`store: could not ${what} yet (${(err as Error).message}); trying again`);
          await new Promise((r) => setTimeout(r, Math.min(500 * 2 ** attempt, 30_000)));
        }
      }
    });
  }

  /** Stops retrying writes that have not landed (the process is ending; flush() first to wait for them). */
  close(): void {
    this.closed = true;
  }

  /** Waits until every write so far reached the API server (or was given up and reported). */
  flush(): Promise<void> {
    return this.queue;
  }

  private trimObjects(): void {
    const seen = new Map<string, number>();
    for (const r of this.records) {
      const n = (seen.get(r.stage) ?? 0) + 1;
      seen.set(r.stage, n);
      if (n > KEEP_OBJECTS) delete r.objects;
    }
  }

  recordSync(record: SyncRecord): number {
    const id = this.nextId++;
    const r = { ...record, id };
    this.records.unshift(r);
    let zipped = gzipSync(JSON.stringify(r));
    if (zipped.length > MAX_BYTES) {
      this.report(`store: the record of ${record.stage} ${record.revision.slice(0, 12)} is over ${MAX_BYTES} bytes gzipped: kept without its objects (a rollback to it after a restart cannot re-apply them)`);
      const { objects: _objects, ...small } = r;
      zipped = gzipSync(JSON.stringify(small));
    }
    const name = `spore-sync-${this.app}-${id}`;
    const body = { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name, namespace: this.namespace, labels: { [HISTORY_LABEL]: this.app, [STAGE_OF_LABEL]: record.stage } }, binaryData: { record: zipped.toString('base64') } };
    this.later(`record the sync of ${record.stage} ${record.revision.slice(0, 12)}`, () => this.client.request('POST', this.base, { body }).catch(ignore(409)));
    const mine = this.records.filter((x) => x.stage === record.stage);
    for (const old of mine.slice(KEEP)) {
      this.records.splice(this.records.indexOf(old), 1);
      this.later(`delete an old sync record`, () => this.client.request('DELETE', `${this.base}/spore-sync-${this.app}-${old.id}`).catch(ignore(404)));
    }
    this.trimObjects();
    return id;
  }

  listSyncs(q: { stage?: string; limit?: number; result?: SyncRecord['result'] }): SyncRecord[] {
    return this.records.filter((r) => (!q.stage || r.stage === q.stage) && (!q.result || r.result === q.result)).slice(0, q.limit ?? 50);
  }

  getSync(q: { stage: string; revision: string; result?: SyncRecord['result'] }): SyncRecord | undefined {
    return this.records.find((r) => r.stage === q.stage && r.revision.startsWith(q.revision) && (!q.result || r.result === q.result));
  }

  readState<T>(key: string): T | undefined {
    const v = this.state[dataKey(key)];
    return v === undefined ? undefined : (JSON.parse(v) as T);
  }

  writeState(key: string, value: unknown): void {
    const k = dataKey(key);
    if (value === undefined) delete this.state[k];
    else this.state[k] = JSON.stringify(value);
    const data = { ...this.state };
    const body = { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: this.stateName(), namespace: this.namespace, labels: { [HISTORY_LABEL]: this.app } }, data };
    // the whole state each time, by server-side apply: the last write wins whole
    this.later('save the reconciler state', () => this.client.request('PATCH', `${this.base}/${this.stateName()}`, { query: { fieldManager: 'spore-reconciler', force: 'true' }, body, contentType: 'application/apply-patch+yaml' }));
  }
}

const ignore = (status: number) => (err: unknown) => {
  if (!(err instanceof KubeError && err.status === status)) throw err;
};
