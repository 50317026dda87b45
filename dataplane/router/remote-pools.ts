// The router's side of a pool manager that runs as its own process: instances
// it was lent are held here and their calls counted here, so a warm call makes
// no hop to the pool manager; only a miss asks it for another instance (which
// it lends whole: see poolmgr/server.ts). Idle instances are given back after
// a while, instances of a changed function once their calls are done, and
// leases are renewed while held.
import { request } from 'undici';
import { API_VERSION } from '../../api/index.js';
import type { ResourceStore, WatchEvent } from '../../store/index.js';
import { DataplaneError } from '../errors.js';
import type { InstanceRef, Lease, LeaseSource } from '../poolmgr/poolmgr.js';
import type { LeaseGrant } from '../poolmgr/server.js';

export interface RemotePoolsOptions {
  /** The pool manager's address, e.g. http://spore-poolmgr.spore-system:8081 */
  url: string;
  credential: string;
  /** Watched for changed Functions, Packages and Environments: their instances are given back. */
  store: ResourceStore;
  /** An idle instance is given back after this, at most (or half its idle timeout, if shorter). @default 10 s */
  holdMs?: number;
  /** How often held leases are renewed (the pool manager takes back one not renewed for 30 s, and says which ones another router waits for). @default 2 s */
  renewMs?: number;
  report?: (message: string) => void;
}

interface Held {
  key: string;
  grant: LeaseGrant;
  instance: InstanceRef;
  inFlight: number;
  lastUsed: number;
  /** Its function changed: no new calls; given back once idle. */
  stale: boolean;
  /** Calls through another router wait for it (the pool manager said so): given back once idle. */
  wanted: boolean;
  /** The call that made the pool manager specialize it has not been lent it yet. */
  fresh: boolean;
}

interface Waiter {
  resolve: (lease: Lease<InstanceRef>) => void;
  reject: (err: Error) => void;
}

/** A function's calls waiting for room, and the borrows under way for them. */
interface Waiting {
  namespace: string;
  name: string;
  calls: Waiter[];
  borrowing: number;
}

export class RemotePools implements LeaseSource {
  private readonly held = new Map<string, Held[]>();
  private readonly waiting = new Map<string, Waiting>();
  /** Instances of a function that changed, by function: one lent again before the pool manager saw the change is not kept. */
  private readonly retired = new Map<string, Set<string>>();
  private readonly timers: NodeJS.Timeout[] = [];
  private readonly unwatch: () => void;
  private readonly auth: string;
  private closed = false;

  constructor(private readonly o: RemotePoolsOptions) {
    this.auth = `Bearer ${o.credential}`;
    this.unwatch = o.store.watch((e) => this.onChange(e));
    const reap = setInterval(() => this.giveBackIdle(), 500);
    const renew = setInterval(() => void this.renew(), o.renewMs ?? 2_000);
    for (const t of [reap, renew]) t.unref();
    this.timers.push(reap, renew);
  }

  acquire(namespace: string, name: string): Lease<InstanceRef> | Promise<Lease<InstanceRef>> {
    if (this.closed) throw new DataplaneError(503, 'ShuttingDown', 'the router is shutting down');
    const key = `${namespace}/${name}`;
    const h = this.find(key);
    if (h) return this.lend(h);
    return new Promise((resolve, reject) => {
      let w = this.waiting.get(key);
      if (!w) this.waiting.set(key, (w = { namespace, name, calls: [], borrowing: 0 }));
      w.calls.push({ resolve, reject });
      this.pump(key);
    });
  }

  private find(key: string): Held | undefined {
    for (const h of this.held.get(key) ?? []) if (!h.stale && !h.wanted && h.inFlight < h.grant.executor.requestsPerInstance) return h;
    return undefined;
  }

  /**
   * Waiting calls take the room held instances have (one freed by a call
   * that ended, or a borrowed one); for the rest, borrows are started — one
   * at a time until an instance tells how many calls it takes.
   */
  private pump(key: string): void {
    const w = this.waiting.get(key);
    if (!w) return;
    for (let h = this.find(key); h && w.calls.length; h = this.find(key)) w.calls.shift()!.resolve(this.lend(h));
    if (!w.calls.length && !w.borrowing) return void this.waiting.delete(key);
    const perInstance = this.held.get(key)?.[0]?.grant.executor.requestsPerInstance;
    if (w.calls.length && (!w.borrowing || (perInstance !== undefined && w.calls.length > w.borrowing * perInstance))) {
      w.borrowing++;
      this.borrow(key, w.namespace, w.name).then(
        (h) => {
          w.borrowing--;
          // the first call waiting is served by what came, even an instance of an old revision (then given back)
          const first = w.calls.shift();
          if (first) first.resolve(this.lend(h));
          this.pump(key);
        },
        (err: Error) => {
          w.borrowing--;
          // the calls this borrow was for get its answer (a 429, a failed specialization …)
          if (!w.borrowing) for (const c of w.calls.splice(0)) c.reject(err);
          this.pump(key);
        },
      );
    }
  }

  private async borrow(key: string, namespace: string, name: string): Promise<Held> {
    const grant = (await this.call('POST', '/v1/leases', { namespace, name })) as LeaseGrant;
    if (this.closed) {
      void this.giveBack(grant.lease, 'release');
      throw new DataplaneError(503, 'ShuttingDown', 'the router is shutting down');
    }
    const h: Held = { key, grant, instance: { id: grant.instance, url: grant.url, token: grant.token }, inFlight: 0, lastUsed: Date.now(), stale: this.retired.get(key)?.has(grant.instance) ?? false, wanted: false, fresh: grant.coldStart };
    const list = this.held.get(key);
    if (list) list.push(h);
    else this.held.set(key, [h]);
    return h;
  }

  private lend(h: Held): Lease<InstanceRef> {
    h.inFlight++;
    const coldStart = h.fresh;
    h.fresh = false;
    let done = false;
    return {
      url: h.grant.url,
      instance: h.instance,
      coldStart,
      executor: h.grant.executor,
      release: () => {
        if (done) return;
        done = true;
        h.inFlight--;
        h.lastUsed = Date.now();
        if ((h.stale || h.wanted) && h.inFlight === 0) this.drop(h, 'release');
        else this.pump(h.key);
      },
      kill: () => {
        if (done) return;
        done = true;
        h.inFlight--;
        this.drop(h, 'kill');
        this.pump(h.key);
      },
    };
  }

  /** Gives a held instance back to the pool manager. */
  private drop(h: Held, verb: 'release' | 'kill'): void {
    if (this.forget(h)) void this.giveBack(h.grant.lease, verb);
  }

  /** No longer held here; false if it was not. */
  private forget(h: Held): boolean {
    const list = this.held.get(h.key);
    const i = list?.indexOf(h) ?? -1;
    if (i < 0) return false;
    list!.splice(i, 1);
    if (!list!.length) this.held.delete(h.key);
    return true;
  }

  private retire(h: Held): void {
    h.stale = true;
    if (h.inFlight === 0) this.drop(h, 'release');
  }

  private async giveBack(lease: string, verb: 'release' | 'kill'): Promise<void> {
    await this.call('POST', `/v1/leases/${lease}/${verb}`).catch((err: DataplaneError) => {
      // one the pool manager no longer knows is back already
      if (err.status !== 404) this.report(`cannot ${verb} lease ${lease}: ${err.message}`);
    });
  }

  private giveBackIdle(): void {
    const now = Date.now();
    for (const list of [...this.held.values()]) {
      for (const h of [...list]) {
        const hold = Math.min(this.o.holdMs ?? 10_000, h.grant.executor.idleTimeoutSeconds * 500);
        if (h.inFlight === 0 && now - h.lastUsed >= hold) this.drop(h, 'release');
      }
    }
  }

  private async renew(): Promise<void> {
    const all = [...this.held.values()].flat();
    if (!all.length) return;
    try {
      const { unknown, wanted } = (await this.call('POST', '/v1/leases/renew', { leases: all.map((h) => h.grant.lease) })) as { unknown: string[]; wanted: string[] };
      // another router's calls wait for these: they go back once their calls here are done
      const asked = new Set(wanted);
      for (const h of all) {
        if (!asked.has(h.grant.lease)) continue;
        h.wanted = true;
        if (h.inFlight === 0) this.drop(h, 'release');
      }
      // gone: its instance died, or the pool manager restarted (it adopts the instance and lends it again)
      const gone = new Set(unknown);
      for (const h of all) if (gone.has(h.grant.lease)) this.forget(h);
    } catch (err) {
      this.report(`cannot renew the router's leases: ${(err as Error).message}`);
    }
  }

  /** A Function, Package or Environment changed: what may serve an old revision goes back. */
  private onChange(e: WatchEvent): void {
    const o = e.object;
    if (o.apiVersion !== API_VERSION || !['Function', 'Package', 'Environment'].includes(o.kind)) return;
    const affected = [...this.held.keys()].filter((k) => (o.kind === 'Function' ? k === `${o.metadata.namespace}/${o.metadata.name}` : k.startsWith(`${o.metadata.namespace}/`)));
    for (const key of affected) {
      const ids = this.retired.get(key) ?? new Set();
      for (const h of [...(this.held.get(key) ?? [])]) {
        ids.add(h.instance.id);
        this.retire(h);
      }
      // bounded: only the latest few matter (the pool manager catches up within moments)
      this.retired.set(key, new Set([...ids].slice(-64)));
    }
  }

  private async call(method: 'GET' | 'POST', path: string, body?: object): Promise<unknown> {
    let res;
    try {
      res = await request(this.o.url + path, {
        method,
        headers: { authorization: this.auth, ...(body ? { 'content-type': 'application/json' } : {}) },
        body: body ? JSON.stringify(body) : undefined,
        // a miss may wait for a specialization (bounded by the pool manager)
        headersTimeout: 600_000,
      });
    } catch (err) {
      throw new DataplaneError(502, 'PoolManagerUnavailable', `cannot reach the pool manager at ${this.o.url}: ${(err as Error).message}`);
    }
    const text = await res.body.text();
    let json: any;
    try {
      json = text ? JSON.parse(text) : undefined;
    } catch {
      json = undefined;
    }
    if (res.statusCode >= 400) {
      const retry = res.headers['retry-after'];
      throw new DataplaneError(res.statusCode, json?.reason ?? 'PoolManagerError', json?.error ?? `the pool manager answered ${res.statusCode}: ${text.slice(0, 300)}`, typeof retry === 'string' ? { 'retry-after': retry } : {});
    }
    return json;
  }

  private report(message: string): void {
    (this.o.report ?? ((m) => process.stderr.write(`spore: ${m}\n`)))(message);
  }

  snapshot(): Promise<object> {
    return this.call('GET', '/v1/status') as Promise<object>;
  }

  updateGauges(): void {
    // the pool's gauges are the pool manager's (its /metrics)
  }

  /** Gives every held instance back (calls in flight are the router's to finish first). */
  async close(): Promise<void> {
    this.closed = true;
    this.unwatch();
    for (const t of this.timers) clearInterval(t);
    const all = [...this.held.values()].flat();
    this.held.clear();
    await Promise.all(all.map((h) => this.giveBack(h.grant.lease, 'release')));
  }
}
