// The router's side of a pool manager that runs as its own process: instances
// it was lent are held here and their calls counted here, so a warm call makes
// no hop to the pool manager; only a miss asks it for another instance (which
// it lends whole: see poolmgr/server.ts). Leases are renewed every 2 s, and the
// renewal says what to give back once idle: instances of an old revision (the
// pool manager judges: a change of the function is renewed for at once) and
// instances another router's calls wait for. Idle ones go back after a while.
import { randomBytes } from 'node:crypto';
import { request } from 'undici';
import { API_VERSION } from '../../api/index.js';
import type { ResourceStore, WatchEvent } from '../../store/index.js';
import { DataplaneError } from '../errors.js';
import type { InstanceRef, Lease, LeaseSource } from '../poolmgr/poolmgr.js';
import { ROUTER_ID, type LeaseGrant } from '../poolmgr/server.js';

export interface RemotePoolsOptions {
  /** The pool manager's address, e.g. http://spore-poolmgr.spore-system:8081 */
  url: string;
  credential: string;
  /** Reads the credential again, when the pool manager refuses it (it made a new one). */
  refreshCredential?: () => Promise<string>;
  /** Calls that may wait per function for an instance; past it, 429. @default 1000 */
  queueSize?: number;
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
  private readonly timers: NodeJS.Timeout[] = [];
  private readonly unwatch: () => void;
  private auth: string;
  /** Names this router to the pool manager. */
  private readonly id = randomBytes(8).toString('hex');
  private renewSoon?: NodeJS.Timeout;
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
    let w = this.waiting.get(key);
    if (w && w.calls.length >= (this.o.queueSize ?? 1000)) {
      throw new DataplaneError(429, 'TooManyRequests', `function ${key}: ${w.calls.length} calls already wait for an instance at this router`, { 'retry-after': '1' });
    }
    return new Promise((resolve, reject) => {
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
  private pump(key: string, borrow = true): void {
    const w = this.waiting.get(key);
    if (!w) return;
    for (let h = this.find(key); h && w.calls.length; h = this.find(key)) w.calls.shift()!.resolve(this.lend(h));
    if (!w.calls.length && !w.borrowing) return void this.waiting.delete(key);
    const perInstance = this.held.get(key)?.[0]?.grant.executor.requestsPerInstance;
    if (borrow && w.calls.length && (!w.borrowing || (perInstance !== undefined && w.calls.length > w.borrowing * perInstance))) {
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
          // the calls the borrows still under way cannot take get this one's answer (a 429, a failed
          // specialization …), at once: no new borrow for them, which would only be refused again
          const perInstance = this.held.get(key)?.[0]?.grant.executor.requestsPerInstance;
          const covered = !w.borrowing ? 0 : perInstance === undefined ? w.calls.length : w.borrowing * perInstance;
          for (const c of w.calls.splice(covered)) c.reject(err);
          this.pump(key, false);
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
    const h: Held = { key, grant, instance: { id: grant.instance, url: grant.url, token: grant.token }, inFlight: 0, lastUsed: Date.now(), stale: false, wanted: false, fresh: grant.coldStart };
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
      draining: () => h.stale,
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
      const { unknown, wanted, draining } = (await this.call('POST', '/v1/leases/renew', { leases: all.map((h) => h.grant.lease) })) as { unknown: string[]; wanted: string[]; draining: string[] };
      // of an old revision, or another router's calls wait for them: back once their calls here are done
      const old = new Set(draining);
      const asked = new Set(wanted);
      for (const h of all) {
        if (old.has(h.grant.lease)) h.stale = true;
        else if (asked.has(h.grant.lease)) h.wanted = true;
        else continue;
        if (h.inFlight === 0) this.drop(h, 'release');
      }
      // gone: its instance died, or the pool manager restarted (it adopts the instance and lends it again)
      const gone = new Set(unknown);
      for (const h of all) if (gone.has(h.grant.lease)) this.forget(h);
    } catch (err) {
      this.report(`cannot renew the router's leases: ${(err as Error).message}`);
    }
  }

  /**
   * A Function, Package or Environment changed: the pool manager, which
   * judges what an old revision is, is asked at once (a renewal) rather than
   * at the next tick, so old code stops serving within moments.
   */
  private onChange(e: WatchEvent): void {
    const o = e.object;
    if (o.apiVersion !== API_VERSION || !['Function', 'Package', 'Environment'].includes(o.kind) || !this.held.size || this.renewSoon) return;
    // the pool manager reads the same store: give its informer a moment to see the change too
    this.renewSoon = setTimeout(() => {
      this.renewSoon = undefined;
      void this.renew();
    }, 200);
    this.renewSoon.unref();
  }

  private async call(method: 'GET' | 'POST', path: string, body?: object, again = true): Promise<unknown> {
    let res;
    try {
      res = await request(this.o.url + path, {
        method,
        headers: { authorization: this.auth, [ROUTER_ID]: this.id, ...(body ? { 'content-type': 'application/json' } : {}) },
        body: body ? JSON.stringify(body) : undefined,
        // a miss may wait for a specialization (bounded by the pool manager)
        headersTimeout: 600_000,
      });
    } catch (err) {
      throw new DataplaneError(502, 'PoolManagerUnavailable', `cannot reach the pool manager at ${this.o.url}: ${(err as Error).message}`);
    }
    const text = await res.body.text();
    if (res.statusCode === 401 && again && this.o.refreshCredential) {
      // the pool manager made a new credential (its Secret was recreated): read it, once
      this.auth = `Bearer ${await this.o.refreshCredential().catch(() => '')}`;
      return this.call(method, path, body, false);
    }
    let json: any;
    try {
      json = text ? JSON.parse(text) : undefined;
    } catch {
      json = undefined;
    }
    if (res.statusCode >= 400) {
      const retry = res.headers['retry-after'];
      // the router's own trouble with the pool manager is a bad gateway to the caller, not a 401
      const status = res.statusCode === 401 || res.statusCode === 403 ? 502 : res.statusCode;
      throw new DataplaneError(status, json?.reason ?? 'PoolManagerError', json?.error ?? `the pool manager answered ${res.statusCode}: ${text.slice(0, 300)}`, typeof retry === 'string' ? { 'retry-after': retry } : {});
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
    clearTimeout(this.renewSoon);
    for (const w of this.waiting.values()) for (const c of w.calls.splice(0)) c.reject(new DataplaneError(503, 'ShuttingDown', 'the router is shutting down'));
    const all = [...this.held.values()].flat();
    this.held.clear();
    await Promise.all(all.map((h) => this.giveBack(h.grant.lease, 'release')));
  }
}
