// WatchTriggers: each one watches its kind (in the namespace it names, else in
// every namespace), with its label selector, on the cluster
// `spore up --kubeconfig` names, and calls the
// function with `{ type, object }` for each change, one at a time, in order,
// through the router's invoke() like every trigger. The watch starts from the
// present (a first list gives the version; existing objects are not sent), and
// after each call the version reached is kept in the store: a restart resumes
// there, with no replay of what was already sent. When the API server no
// longer has that version (410 Gone), the kind is listed again and the watch
// goes on from the list's version: changes made in the gap are not sent.
import { randomUUID } from 'node:crypto';
import type { KubeConfig } from '@kubernetes/client-node';
import { API_VERSION, calleeOf, type WatchTriggerSpec } from '../../api/index.js';
import { KubeClient, KubeError } from '../../store/kube-client.js';
import type { ResourceStore, StoredObject } from '../../store/index.js';
import type { LogSink } from '../logs.js';
import type { Metrics } from '../metrics.js';
import type { Router } from '../router/router.js';
import type { TriggerConditions } from './conditions.js';
import { failureOf } from './failure.js';
import type { TimerState } from './timers.js';

export interface WatchInfo {
  namespace: string;
  name: string;
  function: string;
  resource: string;
  state: 'connecting' | 'watching' | 'failed' | 'inactive';
  detail?: string;
  sent: number;
  /** Changes whose call failed (not retried). */
  failed: number;
  /** The last failed call: the change and what went wrong. */
  lastError?: string;
}

export interface WatchesOptions {
  store: ResourceStore;
  router: Router;
  logs: LogSink;
  /** The cluster watched; without it every WatchTrigger is inactive (said). */
  kubeconfig?: KubeConfig;
  /** Where the version each trigger reached is kept. */
  state?: TimerState;
  metrics?: Metrics;
  /** Where each trigger's state is written as its Active condition. */
  conditions?: TriggerConditions;
  report?: (message: string) => void;
}

interface Running {
  specText: string;
  info: WatchInfo;
  stop?: () => void;
  stopped: boolean;
}

export class Watches {
  private readonly running = new Map<string, Running>();
  private readonly client?: KubeClient;
  private unwatch?: () => void;

  constructor(private readonly o: WatchesOptions) {
    if (o.kubeconfig) this.client = new KubeClient(o.kubeconfig);
  }

  async start(): Promise<void> {
    this.unwatch = this.o.store.watch((e) => {
      if (e.object.apiVersion !== API_VERSION || e.object.kind !== 'WatchTrigger') return;
      if (e.type === 'DELETED') {
        this.remove(keyOf(e.object));
        this.o.conditions?.forget('WatchTrigger', e.object.metadata.namespace ?? 'default', e.object.metadata.name);
        // forgotten: one made again by the same name starts from the present, not from this one's place
        this.o.state?.writeState(`watch/${keyOf(e.object)}`, undefined);
      } else this.set(e.object);
    });
    for (const t of await this.o.store.list({ apiVersion: API_VERSION, kind: 'WatchTrigger' })) this.set(t);
  }

  list(): WatchInfo[] {
    return [...this.running.entries()].sort(([a], [b]) => a.localeCompare(b)).map(([, r]) => ({ ...r.info }));
  }

  async close(): Promise<void> {
    this.unwatch?.();
    for (const k of [...this.running.keys()]) this.remove(k);
    this.client?.close();
  }

  private set(o: StoredObject): void {
    const key = keyOf(o);
    const spec = (o as unknown as { spec: WatchTriggerSpec }).spec;
    const specText = JSON.stringify(spec);
    if (this.running.get(key)?.specText === specText) return;
    this.remove(key);
    const info: WatchInfo = { namespace: o.metadata.namespace ?? 'default', name: o.metadata.name, function: calleeOf(spec), resource: `${spec.resource.kind} (${spec.resource.apiVersion ?? 'v1'})`, state: 'connecting', sent: 0, failed: 0 };
    const r: Running = { specText, info, stopped: false };
    this.running.set(key, r);
    if (!this.o.kubeconfig) {
      this.setState(r, 'inactive', 'watch triggers need a cluster: start spore up with --kubeconfig PATH');
      this.report(`watch trigger ${key}: inactive: ${info.detail}`);
      return;
    }
    this.setState(r, 'connecting');
    void this.follow(key, r, spec);
  }

  /** The trigger's state, in spore list and as its Active condition. */
  private setState(r: Running, state: WatchInfo['state'], detail?: string): void {
    if (r.stopped) return; // removed (deleted, changed, closing): its condition is no longer this one's to write
    r.info.state = state;
    r.info.detail = detail;
    this.o.conditions?.state('WatchTrigger', r.info.namespace, r.info.name, state, detail);
  }

  private remove(key: string): void {
    const r = this.running.get(key);
    if (!r) return;
    this.running.delete(key);
    r.stopped = true;
    r.stop?.();
  }

  /** List (for a version) unless one is kept, then watch; again on 410 or a dropped watch, backing off on errors. */
  private async follow(key: string, r: Running, spec: WatchTriggerSpec): Promise<void> {
    const client = this.client!;
    const selector = Object.entries(spec.labelSelector ?? {}).map(([k, v]) => `${k}=${v}`).join(',') || undefined;
    const stateKey = `watch/${key}`;
    let version = this.o.state?.readState<{ resourceVersion: string }>(stateKey)?.resourceVersion;
    // one call at a time, in order: events wait here
    let chain = Promise.resolve();
    // the Kubernetes client is loaded only when a watch runs: spore up without a cluster never needs it
    const { Watch } = await import('@kubernetes/client-node');
    for (let backoff = 1000; !r.stopped; ) {
      try {
        const path = await client.collection(spec.resource.apiVersion ?? 'v1', spec.resource.kind, spec.namespace);
        if (!version) {
          version = (await client.request('GET', path, { query: { labelSelector: selector, limit: '1' } })).metadata.resourceVersion as string;
          this.o.state?.writeState(stateKey, { resourceVersion: version });
        }
        const ended = await new Promise<Error | undefined>((resolve) => {
          new Watch(this.o.kubeconfig!)
            .watch(
              path,
              { resourceVersion: version, labelSelector: selector, allowWatchBookmarks: true },
              (type, object) => {
                const rv = (object as { metadata?: { resourceVersion?: string } }).metadata?.resourceVersion;
                if (type === 'BOOKMARK') {
                  if (rv) version = rv;
                  return;
                }
                if (type === 'ERROR') return resolve(new KubeError((object as { code?: number }).code ?? 500, (object as { reason?: string }).reason ?? 'Error', (object as { message?: string }).message ?? 'watch error'));
                chain = chain.then(() => this.send(r, spec, type, object)).then(() => {
                  if (!rv) return;
                  version = rv;
                  this.o.state?.writeState(stateKey, { resourceVersion: rv });
                });
              },
              (err) => resolve(err ?? undefined),
            )
            .then(
              (req) => {
                if (r.stopped) return req.abort(); // removed while it opened: not followed, nor said to be watching
                r.stop = () => req.abort();
                // the watch is open: changes from here on are sent
                this.setState(r, 'watching', `${path}${selector ? `?labelSelector=${selector}` : ''}`);
              },
              (err) => resolve(err),
            );
        });
        await chain;
        if (r.stopped) return;
        if (ended instanceof KubeError && ended.status === 410) {
          // that version is gone: from the present again (what changed in between is not sent)
          this.report(`watch trigger ${key}: resourceVersion ${version} is too old (410 Gone): listing again; changes made meanwhile are not sent`);
          version = undefined;
          continue;
        }
        if (!ended) continue; // the server closed the watch (its timeout): go on from the version reached
        throw ended;
      } catch (err) {
        if (r.stopped) return;
        const message = (err as Error).message;
        if (r.info.state !== 'failed' || r.info.detail !== message) this.report(`watch trigger ${key}: ${message}; retrying`);
        this.setState(r, 'failed', message);
        await new Promise((res) => setTimeout(res, backoff).unref());
        backoff = Math.min(backoff * 2, 30_000);
      }
    }
  }

  private async send(r: Running, spec: WatchTriggerSpec, type: string, object: unknown): Promise<void> {
    if (r.stopped) return;
    const { namespace, name } = r.info;
    const requestId = randomUUID();
    let line: string;
    let failed = false;
    try {
      const res = await this.o.router.invoke({ namespace, name: calleeOf(spec), method: 'POST', path: '/', headers: { 'content-type': 'application/json', 'x-spore-watch': name }, body: JSON.stringify({ type, object }), requestId });
      failed = res.status < 200 || res.status > 299;
      line = failed ? `${res.status} ${failureOf(res.body, res.status)}` : String(res.status);
    } catch (err) {
      failed = true;
      line = `no answer: ${(err as Error).message}`;
    }
    r.info.sent++;
    const labels = { namespace, trigger: name };
    this.o.metrics?.watchEvents.inc(labels);
    const o = object as { metadata?: { name?: string; namespace?: string } };
    if (failed) {
      r.info.failed++;
      r.info.lastError = `${type} ${o.metadata?.name}: ${line}`.slice(0, 500);
      this.o.metrics?.watchFailed.inc(labels);
    }
    // a failed call is said, not retried: the next change comes as it comes
    this.o.logs.write({ time: Date.now(), namespace, function: calleeOf(spec), instance: `watch/${name}`, requestId, stream: failed ? 'stderr' : 'stdout', line: `watch ${name}: ${type} ${spec.resource.kind} ${o.metadata?.namespace ? `${o.metadata.namespace}/` : ''}${o.metadata?.name} → ${line}` });
    if (failed) this.report(`watch trigger ${namespace}/${name} → ${namespace}/${calleeOf(spec)}: ${type} of ${o.metadata?.name} failed (request ${requestId}): ${line}`);
  }

  private report(message: string): void {
    (this.o.report ?? ((m) => process.stderr.write(`spore: ${m}\n`)))(message);
  }
}

function keyOf(o: StoredObject): string {
  return `${o.metadata.namespace ?? 'default'}/${o.metadata.name}`;
}
