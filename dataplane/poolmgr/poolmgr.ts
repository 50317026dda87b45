// The pool manager: warm generic instances per Environment, specialized on a
// function's first call; per function, calls share instances up to
// requestsPerInstance, instances grow up to concurrency, then calls wait in a
// bounded queue, then get 429. Idle instances are reaped; an instance that
// crashes or overruns is removed; a changed function drains its old instances.
import { createHash } from 'node:crypto';
import { availableParallelism } from 'node:os';
import { API_VERSION, resolveExecutor, type ResolvedExecutor } from '../../api/index.js';
import type { ResourceStore, StoredObject, WatchEvent } from '../../store/index.js';
import { DataplaneError } from '../errors.js';
import type { LogSink } from '../logs.js';
import { resolveMounts } from './mounts.js';
import type { Metrics } from '../metrics.js';
import type { PackageFetcher } from './package-fetcher.js';
import type { AdoptedInstance, Instance, InstanceProvider, LogLine } from './provider.js';

export interface PoolManagerOptions {
  store: ResourceStore;
  provider: InstanceProvider;
  /** Where archives are fetched on this host (local instances): a bad one is refused before an instance is taken. */
  fetcher?: PackageFetcher;
  metrics: Metrics;
  logs?: LogSink;
  /** Calls that may wait for an instance, per function; past it, 429. @default 100 */
  queueSize?: number;
  /**
   * Instances one function may have at most on this host, whatever its
   * concurrency says (Fission's default of 500 is a cluster's): one busy
   * function cannot take the machine. @default 4 per CPU
   */
  maxInstancesPerFunction?: number;
  /** How often idle instances are looked for. @default 250 ms */
  reapIntervalMs?: number;
  /** Where instances' own messages go before they serve a function. @default stderr */
  report?: (message: string) => void;
  /** Folder of the Secrets functions name: `<namespace>/<name>/<key>` files (`spore up --secrets-dir`). */
  secretsDir?: string;
}

interface Slot {
  instance: Instance;
  inFlight: number;
  lastUsed: number;
  draining: boolean;
  revision: string;
  specializedAt: number;
}

interface Waiter {
  units: number;
  resolve: (lease: Lease) => void;
  reject: (err: Error) => void;
  timer: NodeJS.Timeout;
}

interface FunctionPool {
  key: string;
  namespace: string;
  name: string;
  slots: Slot[];
  specializing: number;
  waiters: Waiter[];
}

interface EnvPool {
  key: string;
  revision: string;
  warm: Instance[];
  starting: number;
  backoffMs: number;
  retryTimer?: NodeJS.Timeout;
}

/** What a caller of an instance needs of it. */
export type InstanceRef = Pick<Instance, 'id' | 'url' | 'token' | 'memoryLimited'>;

/**
 * Where a router gets instances: the pool manager itself (in one process), or
 * a client of it over HTTP (router/remote-pools.ts).
 */
export interface LeaseSource {
  acquire(namespace: string, name: string): Lease<InstanceRef> | Promise<Lease<InstanceRef>>;
  snapshot(): object | Promise<object>;
  updateGauges(): void;
}

/** An instance lent to one call: release it when the call is done, or kill it if it misbehaved. */
export interface Lease<I extends InstanceRef = Instance> {
  readonly url: string;
  readonly instance: I;
  /** True when this call paid for specializing the instance. */
  readonly coldStart: boolean;
  readonly executor: ResolvedExecutor;
  /** True once the instance serves an old revision (its function changed) or left: it takes no new calls. */
  draining(): boolean;
  release(): void;
  kill(): void;
}

export interface FunctionSnapshot {
  namespace: string;
  name: string;
  environment: string;
  executor: string;
  waiting: number;
  specializing: number;
  instances: { id: string; pid?: number; url: string; state: 'idle' | 'busy' | 'draining'; inFlight: number; ageSeconds: number }[];
}

const key = (namespace: string, name: string) => `${namespace}/${name}`;

/** A revision as a label value (at most 63 characters): what a specialized pod serves. */
export const revisionLabel = (revision: string) => createHash('sha256').update(revision).digest('hex').slice(0, 16);

export class PoolManager {
  private readonly functions = new Map<string, StoredObject>();
  private readonly packages = new Map<string, StoredObject>();
  private readonly environments = new Map<string, StoredObject>();
  private readonly pools = new Map<string, FunctionPool>();
  private readonly envPools = new Map<string, EnvPool>();
  private readonly owners = new WeakMap<Instance, { namespace: string; function: string }>();
  private unwatch?: () => void;
  private reaper?: NodeJS.Timeout;
  private closed = false;
  private readonly queueSize: number;
  private readonly maxInstances: number;

  constructor(private readonly o: PoolManagerOptions) {
    this.queueSize = o.queueSize ?? 100;
    this.maxInstances = o.maxInstancesPerFunction ?? availableParallelism() * 4;
  }

  async start(): Promise<void> {
    this.unwatch = this.o.store.watch((e) => this.onChange(e));
    for (const obj of await this.o.store.list({ apiVersion: API_VERSION })) this.remember(obj);
    if (this.o.provider.adopt) this.adoptAll(await this.o.provider.adopt());
    for (const env of this.environments.values()) this.syncEnvPool(env);
    this.reaper = setInterval(() => this.reap(), this.o.reapIntervalMs ?? 250);
    this.reaper.unref();
  }

  // ---- the store's view --------------------------------------------------

  private table(kind: string): Map<string, StoredObject> | undefined {
    return kind === 'Function' ? this.functions : kind === 'Package' ? this.packages : kind === 'Environment' ? this.environments : undefined;
  }

  private remember(obj: StoredObject): void {
    this.table(obj.kind)?.set(key(obj.metadata.namespace, obj.metadata.name), obj);
  }

  private onChange(e: WatchEvent): void {
    if (this.closed || e.object.apiVersion !== API_VERSION) return;
    const table = this.table(e.object.kind);
    if (!table) return;
    const k = key(e.object.metadata.namespace, e.object.metadata.name);
    if (e.type === 'DELETED') table.delete(k);
    else table.set(k, e.object);
    if (e.object.kind === 'Environment') {
      if (e.type === 'DELETED') this.dropEnvPool(k);
      else this.syncEnvPool(e.object);
    }
    // a changed function, package or environment: instances of the old revision drain
    for (const pool of this.pools.values()) {
      const fn = this.functions.get(pool.key);
      if (!fn) this.retire(pool, new DataplaneError(404, 'NotFound', `function ${pool.key} was removed`));
      else {
        const revision = this.revisionOf(fn);
        for (const slot of [...pool.slots]) if (slot.revision !== revision) this.drain(pool, slot);
        this.serveWaiters(pool); // waiting calls go to instances of the new revision
      }
    }
  }

  private revisionOf(fn: StoredObject): string {
    const spec = fn.spec as { environment: { name: string }; package: { name: string } };
    const pkg = this.packages.get(key(fn.metadata.namespace, spec.package.name));
    const env = this.environments.get(key(fn.metadata.namespace, spec.environment.name));
    return `${fn.metadata.generation}|${(pkg?.spec as any)?.archive?.sha256}|${env?.metadata.generation}`;
  }

  /**
   * Instances a previous pool manager left (pods): generic ones of an
   * Environment's current generation go back to its pool, specialized ones of
   * a function's current revision back to the function (idle from now); the
   * rest, and what exceeds a pool's size, is stopped.
   */
  private adoptAll(found: AdoptedInstance[]): void {
    const revisions = new Map([...this.functions].map(([k, fn]) => [k, revisionLabel(this.revisionOf(fn))]));
    for (const a of found) {
      const envKey = key(a.environment.namespace, a.environment.name);
      const env = this.environments.get(envKey);
      if (a.function) {
        const k = key(a.function.namespace, a.function.name);
        if (!env || revisions.get(k) !== a.function.revision) {
          void a.instance.kill();
          continue;
        }
        const pool = this.poolOf(a.function.namespace, a.function.name);
        const slot: Slot = { instance: a.instance, inFlight: 0, lastUsed: Date.now(), draining: false, revision: this.revisionOf(this.functions.get(k)!), specializedAt: Date.now() };
        pool.slots.push(slot);
        this.owners.set(a.instance, { namespace: pool.namespace, function: pool.name });
        void a.instance.exited.then(() => this.remove(pool, slot));
        continue;
      }
      if (!env || String(env.metadata.generation) !== a.environment.generation) {
        void a.instance.kill();
        continue;
      }
      this.syncEnvPool(env, false);
      const pool = this.envPools.get(envKey)!;
      if (pool.warm.length >= ((env.spec as { poolSize?: number }).poolSize ?? 3)) void a.instance.kill();
      else this.keepWarm(pool, a.instance);
    }
  }

  private executorOf(fn: StoredObject): ResolvedExecutor {
    const spec = fn.spec as { executor?: object; environment: { name: string } };
    const env = this.environments.get(key(fn.metadata.namespace, spec.environment.name));
    return resolveExecutor(spec.executor, env?.spec as any);
  }

  // ---- environments: pools of warm generic instances ---------------------

  private syncEnvPool(env: StoredObject, fill = true): void {
    const k = key(env.metadata.namespace, env.metadata.name);
    const revision = String(env.metadata.generation);
    let pool = this.envPools.get(k);
    if (pool && pool.revision !== revision) {
      this.dropEnvPool(k);
      pool = undefined;
    }
    if (!pool) {
      pool = { key: k, revision, warm: [], starting: 0, backoffMs: 500 };
      this.envPools.set(k, pool);
    }
    if (fill) this.refill(pool);
  }

  private dropEnvPool(k: string): void {
    const pool = this.envPools.get(k);
    if (!pool) return;
    this.envPools.delete(k);
    clearTimeout(pool.retryTimer);
    for (const i of pool.warm.splice(0)) void i.kill();
  }

  private refill(pool: EnvPool): void {
    const env = this.environments.get(pool.key);
    if (!env || this.closed || pool.retryTimer) return;
    const size = (env.spec as { poolSize?: number }).poolSize ?? 3;
    while (pool.warm.length + pool.starting < size) {
      pool.starting++;
      this.startInstance(env)
        .then((instance) => {
          pool.starting--;
          pool.backoffMs = 500;
          if (this.closed || this.envPools.get(pool.key) !== pool) return void instance.kill();
          this.keepWarm(pool, instance);
        })
        .catch((err) => {
          pool.starting--;
          if (this.closed || this.envPools.get(pool.key) !== pool) return; // stopped on purpose
          this.retryLater(pool, `environment ${pool.key}: could not start an instance: ${(err as Error).message}`);
        });
    }
  }

  private keepWarm(pool: EnvPool, instance: Instance): void {
    pool.warm.push(instance);
    void instance.exited.then(() => {
      const i = pool.warm.indexOf(instance);
      if (i < 0) return;
      pool.warm.splice(i, 1);
      // an instance that dies on its own soon after starting would otherwise be respawned in a tight loop
      if (Date.now() - instance.startedAt < 5_000) this.retryLater(pool, `environment ${pool.key}: an instance exited right after starting`);
      else this.refill(pool);
    });
  }

  /** One retry at a time per environment, backing off up to 30 s. */
  private retryLater(pool: EnvPool, why: string): void {
    if (pool.retryTimer || this.closed) return;
    this.report(`${why}; retrying in ${pool.backoffMs} ms`);
    pool.retryTimer = setTimeout(() => {
      pool.retryTimer = undefined;
      this.refill(pool);
    }, pool.backoffMs);
    pool.retryTimer.unref();
    pool.backoffMs = Math.min(pool.backoffMs * 2, 30_000);
  }

  private startInstance(env: StoredObject): Promise<Instance> {
    let instance: Instance | undefined;
    return this.o.provider
      .start(env, {
        onLog: (line) => {
          if (instance) this.log(instance, line);
          else if (line.stream === 'stderr') this.report(`environment ${env.metadata.name}: ${line.line}`);
        },
      })
      .then((i) => (instance = i));
  }

  private log(instance: Instance, line: LogLine): void {
    const owner = this.owners.get(instance);
    if (!owner) {
      if (line.stream === 'stderr') this.report(`instance ${instance.id}: ${line.line}`);
      return;
    }
    this.o.logs?.write({ time: Date.now(), namespace: owner.namespace, function: owner.function, instance: instance.id, requestId: line.requestId, stream: line.stream, line: line.line });
  }

  private report(message: string): void {
    (this.o.report ?? ((m) => process.stderr.write(`spore: ${m}\n`)))(message);
  }

  /**
   * A warm generic instance of the environment, or a new one if the pool is
   * empty. The pool refills once the caller's specialization is done
   * (`refillLater`): starting a process competes for the CPU the cold start needs.
   */
  private async takeGeneric(envKey: string): Promise<Instance> {
    const env = this.environments.get(envKey);
    if (!env) throw new DataplaneError(500, 'EnvironmentMissing', `environment ${envKey} is not applied`);
    const instance = this.envPools.get(envKey)?.warm.shift();
    return instance ?? this.startInstance(env);
  }

  private refillLater(envKey: string): void {
    setTimeout(() => {
      const pool = this.envPools.get(envKey);
      if (pool) this.refill(pool);
    }, 20).unref();
  }

  // ---- functions: leases, specialization, queueing -----------------------

  private poolOf(namespace: string, name: string): FunctionPool {
    const k = key(namespace, name);
    let pool = this.pools.get(k);
    if (!pool) {
      if (!this.functions.has(k)) throw new DataplaneError(404, 'NotFound', `function ${k} does not exist`);
      pool = { key: k, namespace, name, slots: [], specializing: 0, waiters: [] };
      this.pools.set(k, pool);
    }
    return pool;
  }

  private lease(pool: FunctionPool, slot: Slot, coldStart: boolean, executor: ResolvedExecutor, units: number): Lease {
    slot.inFlight += units;
    let done = false;
    return {
      url: slot.instance.url,
      instance: slot.instance,
      coldStart,
      executor,
      draining: () => slot.draining || !pool.slots.includes(slot),
      release: () => {
        if (done) return;
        done = true;
        slot.inFlight -= units;
        slot.lastUsed = Date.now();
        if (slot.draining) {
          if (slot.inFlight === 0) this.remove(pool, slot);
        } else this.serveWaiters(pool);
      },
      kill: () => {
        if (done) return;
        done = true;
        slot.inFlight -= units;
        this.remove(pool, slot);
        this.serveWaiters(pool);
      },
    };
  }

  /**
   * An instance for one call of a function. Synchronous when a specialized
   * instance has room (the warm path); otherwise specializes one, or queues.
   * `whole`: the instance is lent whole (all its requestsPerInstance), to a
   * router that counts its calls itself — so the function's concurrency holds
   * across any number of routers.
   */
  acquire(namespace: string, name: string, whole = false): Lease | Promise<Lease> {
    if (this.closed) throw new DataplaneError(503, 'ShuttingDown', 'the dataplane is shutting down');
    const pool = this.poolOf(namespace, name);
    const fn = this.functions.get(pool.key)!;
    const executor = this.executorOf(fn);
    const revision = this.revisionOf(fn);
    const units = whole ? executor.requestsPerInstance : 1;
    for (const slot of pool.slots) {
      if (!slot.draining && slot.inFlight + units <= executor.requestsPerInstance && slot.revision === revision) return this.lease(pool, slot, false, executor, units);
    }
    if (this.live(pool) + pool.specializing < this.capOf(executor)) return this.coldStart(pool, fn, executor, revision, units);
    // instances being specialized will take (requestsPerInstance - 1) more calls each: those wait without counting against the queue
    if (pool.waiters.length >= this.queueSize + pool.specializing * (executor.requestsPerInstance - 1)) {
      throw new DataplaneError(429, 'TooManyRequests', `function ${pool.key} is at its concurrency limit (${this.capOf(executor)} instances × ${executor.requestsPerInstance}) and ${pool.waiters.length} calls are already waiting`, { 'retry-after': '1' });
    }
    return new Promise<Lease>((resolve, reject) => {
      const waiter: Waiter = {
        units,
        resolve,
        reject,
        timer: setTimeout(() => {
          pool.waiters.splice(pool.waiters.indexOf(waiter), 1);
          reject(new DataplaneError(504, 'Timeout', `no instance of ${pool.key} became free within ${executor.functionTimeoutSeconds}s`));
        }, executor.functionTimeoutSeconds * 1000),
      };
      pool.waiters.push(waiter);
    });
  }

  private capOf(executor: ResolvedExecutor): number {
    return Math.min(this.maxInstances, executor.type === 'dedicated' ? executor.maxScale : executor.concurrency);
  }

  private live(pool: FunctionPool): number {
    return pool.slots.filter((s) => !s.draining).length;
  }

  private serveWaiters(pool: FunctionPool): void {
    const fn = this.functions.get(pool.key);
    if (!fn || this.pools.get(pool.key) !== pool || !pool.waiters.length) return;
    const executor = this.executorOf(fn);
    const revision = this.revisionOf(fn);
    while (pool.waiters.length) {
      const units = pool.waiters[0].units;
      const slot = pool.slots.find((s) => !s.draining && s.inFlight + units <= executor.requestsPerInstance && s.revision === revision);
      if (slot) {
        const w = pool.waiters.shift()!;
        clearTimeout(w.timer);
        w.resolve(this.lease(pool, slot, false, executor, units));
        continue;
      }
      if (this.live(pool) + pool.specializing < this.capOf(executor)) {
        const w = pool.waiters.shift()!;
        clearTimeout(w.timer);
        this.coldStart(pool, fn, executor, revision, units).then(w.resolve, w.reject);
        continue;
      }
      return;
    }
  }

  private async coldStart(pool: FunctionPool, fn: StoredObject, executor: ResolvedExecutor, revision: string, units: number): Promise<Lease> {
    pool.specializing++;
    const started = performance.now();
    try {
      const slot = await this.specialize(pool, fn, executor, revision);
      if (this.closed) {
        void slot.instance.kill();
        throw new DataplaneError(503, 'ShuttingDown', 'the dataplane is shutting down');
      }
      // the function may have changed or gone while this instance was specialized:
      // it serves this one call, then goes
      const now = this.functions.get(pool.key);
      slot.draining = this.pools.get(pool.key) !== pool || !now || this.revisionOf(now) !== revision;
      pool.slots.push(slot);
      const labels = { namespace: pool.namespace, function: pool.name };
      this.o.metrics.coldStarts.inc(labels);
      this.o.metrics.coldStartSeconds.observe(labels, (performance.now() - started) / 1000);
      void slot.instance.exited.then(() => this.remove(pool, slot));
      const lease = this.lease(pool, slot, true, executor, units);
      this.serveWaiters(pool); // the new instance may have room for waiting calls too
      return lease;
    } catch (err) {
      // calls waiting on this specialization get the same answer
      if (this.live(pool) === 0 && pool.specializing === 1) {
        for (const w of pool.waiters.splice(0)) {
          clearTimeout(w.timer);
          w.reject(err as Error);
        }
      }
      throw err;
    } finally {
      pool.specializing--;
      this.refillLater(key(pool.namespace, (fn.spec as { environment: { name: string } }).environment.name));
    }
  }

  private async specialize(pool: FunctionPool, fn: StoredObject, executor: ResolvedExecutor, revision: string): Promise<Slot> {
    const spec = fn.spec as { environment: { name: string }; package: { name: string }; entrypoint?: string; env?: { name: string; value: string }[]; secrets?: { name: string }[]; configMaps?: { name: string }[] };
    const pkgKey = key(pool.namespace, spec.package.name);
    const pkg = this.packages.get(pkgKey);
    if (!pkg) throw new DataplaneError(500, 'PackageMissing', `function ${pool.key} refers to Package ${pkgKey}, which is not applied`);
    // what can be refused without an instance is, before one is taken: a missing Secret, a bad archive fetched here
    const mounts = await resolveMounts({ namespace: pool.namespace, name: pool.name, secrets: spec.secrets, configMaps: spec.configMaps }, { store: this.o.store, secretsDir: this.o.secretsDir }).catch((err: Error) => {
      this.report(err.message);
      throw err;
    });
    if (this.o.fetcher) {
      await this.o.fetcher.bytes(pkg).catch((err: Error) => {
        throw new DataplaneError(500, 'BadPackage', err.message);
      });
    }
    const instance = await this.takeGeneric(key(pool.namespace, spec.environment.name)).catch((err) => {
      throw err instanceof DataplaneError ? err : new DataplaneError(502, 'NoInstance', `no instance of environment ${spec.environment.name}: ${(err as Error).message}`);
    });
    if (this.closed) {
      void instance.kill();
      throw new DataplaneError(503, 'ShuttingDown', 'the dataplane is shutting down');
    }
    this.owners.set(instance, { namespace: pool.namespace, function: pool.name });
    try {
      await instance.specialize(
        {
          function: { namespace: pool.namespace, name: pool.name },
          package: { namespace: pool.namespace, name: spec.package.name, archive: (pkg.spec as { archive: { sha256: string; size: number; inline?: string; url?: string } }).archive },
          entrypoint: spec.entrypoint ?? '',
          env: Object.fromEntries((spec.env ?? []).map((e) => [e.name, e.value])),
          ...mounts,
          timeoutSeconds: executor.specializationTimeoutSeconds,
        },
        { revision: revisionLabel(revision) },
      );
    } catch (err) {
      void instance.kill();
      throw err;
    }
    return { instance, inFlight: 0, lastUsed: Date.now(), draining: false, revision, specializedAt: Date.now() };
  }

  private drain(pool: FunctionPool, slot: Slot): void {
    slot.draining = true;
    if (slot.inFlight === 0) this.remove(pool, slot);
  }

  private remove(pool: FunctionPool, slot: Slot): void {
    const i = pool.slots.indexOf(slot);
    if (i < 0) return;
    pool.slots.splice(i, 1);
    this.o.metrics.instanceAlive.observe({ namespace: pool.namespace, function: pool.name }, (Date.now() - slot.specializedAt) / 1000);
    void slot.instance.kill();
    this.serveWaiters(pool); // room for a new instance
  }

  private retire(pool: FunctionPool, err: Error): void {
    this.pools.delete(pool.key);
    for (const w of pool.waiters.splice(0)) {
      clearTimeout(w.timer);
      w.reject(err);
    }
    for (const slot of [...pool.slots]) this.drain(pool, slot);
  }

  private reap(): void {
    const now = Date.now();
    for (const pool of this.pools.values()) {
      const fn = this.functions.get(pool.key);
      if (!fn) continue;
      const executor = this.executorOf(fn);
      const keep = executor.type === 'dedicated' ? executor.minScale : 0;
      for (const slot of [...pool.slots]) {
        if (this.live(pool) <= keep) break;
        if (!slot.draining && slot.inFlight === 0 && now - slot.lastUsed >= executor.idleTimeoutSeconds * 1000) this.remove(pool, slot);
      }
    }
  }

  // ---- views and shutdown ------------------------------------------------

  /** Calls waiting for an instance of the function. */
  waiting(namespace: string, name: string): number {
    return this.pools.get(key(namespace, name))?.waiters.length ?? 0;
  }

  snapshot(): { functions: FunctionSnapshot[]; environments: { namespace: string; name: string; warm: number; starting: number }[] } {
    const now = Date.now();
    const functions = [...this.functions.values()].map((fn) => {
      const pool = this.pools.get(key(fn.metadata.namespace, fn.metadata.name));
      const spec = fn.spec as { environment: { name: string } };
      return {
        namespace: fn.metadata.namespace,
        name: fn.metadata.name,
        environment: spec.environment.name,
        executor: this.executorOf(fn).type,
        waiting: pool?.waiters.length ?? 0,
        specializing: pool?.specializing ?? 0,
        instances: (pool?.slots ?? []).map((s) => ({
          id: s.instance.id,
          pid: s.instance.pid,
          url: s.instance.url,
          state: s.draining ? ('draining' as const) : s.inFlight ? ('busy' as const) : ('idle' as const),
          inFlight: s.inFlight,
          ageSeconds: Math.round((now - s.specializedAt) / 1000),
        })),
      };
    });
    const environments = [...this.envPools.values()].map((p) => {
      const [namespace, name] = p.key.split('/');
      return { namespace, name, warm: p.warm.length, starting: p.starting };
    });
    return { functions, environments };
  }

  /** Pids of every live instance (warm or specialized). */
  pids(): number[] {
    const pids: number[] = [];
    for (const p of this.envPools.values()) for (const i of p.warm) if (i.pid) pids.push(i.pid);
    for (const p of this.pools.values()) for (const s of p.slots) if (s.instance.pid) pids.push(s.instance.pid);
    return pids;
  }

  updateGauges(): void {
    const m = this.o.metrics;
    m.warm.reset();
    m.specialized.reset();
    m.busy.reset();
    for (const p of this.envPools.values()) {
      const [namespace, environment] = p.key.split('/');
      m.warm.set({ namespace, environment }, p.warm.length);
    }
    for (const p of this.pools.values()) {
      m.specialized.set({ namespace: p.namespace, function: p.name }, p.slots.length);
      m.busy.set({ namespace: p.namespace, function: p.name }, p.slots.filter((s) => s.inFlight > 0).length);
    }
  }

  async shutdown(): Promise<void> {
    this.closed = true;
    this.unwatch?.();
    clearInterval(this.reaper);
    const kills: Promise<void>[] = [];
    // instances that outlive us (pods) stay, for the next pool manager to adopt
    const stop = (i: Instance) => {
      if (!this.o.provider.keepsInstances) kills.push(i.kill());
    };
    for (const pool of this.pools.values()) {
      for (const w of pool.waiters.splice(0)) {
        clearTimeout(w.timer);
        w.reject(new DataplaneError(503, 'ShuttingDown', 'the dataplane is shutting down'));
      }
      for (const s of pool.slots.splice(0)) stop(s.instance);
    }
    for (const p of this.envPools.values()) {
      clearTimeout(p.retryTimer);
      for (const i of p.warm.splice(0)) stop(i);
    }
    await Promise.all(kills);
    await this.o.provider.shutdown();
  }
}
