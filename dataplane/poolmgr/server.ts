// The pool manager as its own process (`spore poolmgr`): routers ask it for an
// instance only on a miss. Each instance is lent whole to one router (all its
// requestsPerInstance), which counts its calls itself: however many routers
// run, a function never has more than its concurrency × requestsPerInstance
// calls in flight. A router renews its leases while it holds them; a lease not
// renewed (its router died) comes back on its own.
import { randomBytes, timingSafeEqual } from 'node:crypto';
import Fastify, { type FastifyInstance } from 'fastify';
import { DataplaneError } from '../errors.js';
import type { Metrics } from '../metrics.js';
import type { Lease, PoolManager } from './poolmgr.js';

/** What a router gets for a lease. */
export interface LeaseGrant {
  lease: string;
  url: string;
  instance: string;
  token?: string;
  coldStart: boolean;
  executor: Lease['executor'];
}

export interface PoolServerOptions {
  poolmgr: PoolManager;
  metrics: Metrics;
  /** Routers send it as `Authorization: Bearer …`. */
  credential: string;
  /** A lease not renewed for this long is returned. @default 30 s */
  leaseTtlMs?: number;
}

const NAME = { type: 'string', minLength: 1, maxLength: 253, pattern: '^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$' } as const;
const LEASE_ID = { type: 'string', pattern: '^[A-Za-z0-9_-]{1,64}$' } as const;

/** The header a router names itself with: the pool manager tells it only of what other routers wait for. */
export const ROUTER_ID = 'x-spore-router';

export function poolServer(o: PoolServerOptions): FastifyInstance {
  const ttl = o.leaseTtlMs ?? 30_000;
  const leases = new Map<string, { lease: Lease; renewed: number; fn: string; router: string }>();
  /** Borrows waiting for an instance, by function and router. */
  const borrowing = new Map<string, Map<string, number>>();
  /** The leases on each instance (one at a time, but a lease may outlive its release here): one exit listener per instance. */
  const byInstance = new Map<Lease['instance'], Set<string>>();
  const expect = Buffer.from(`Bearer ${o.credential}`);
  const app = Fastify({ logger: false, bodyLimit: 64 * 1024 });
  const expiry = setInterval(() => {
    const now = Date.now();
    for (const [id, l] of leases) {
      if (now - l.renewed <= ttl) continue;
      forget(id);
      l.lease.release();
    }
  }, Math.min(ttl, 5_000));
  expiry.unref();
  app.addHook('onClose', async () => clearInterval(expiry));
  const forget = (id: string) => {
    const l = leases.get(id);
    if (!l) return;
    leases.delete(id);
    const ids = byInstance.get(l.lease.instance);
    ids?.delete(id);
    if (ids && !ids.size) byInstance.delete(l.lease.instance);
  };
  const count = (fn: string, router: string, by: number) => {
    const m = borrowing.get(fn) ?? new Map<string, number>();
    const n = (m.get(router) ?? 0) + by;
    if (n > 0) m.set(router, n);
    else m.delete(router);
    if (m.size) borrowing.set(fn, m);
    else borrowing.delete(fn);
  };
  const othersWait = (fn: string, router: string) => [...(borrowing.get(fn)?.keys() ?? [])].some((r) => r !== router);

  app.setErrorHandler((err: Error, _req, reply) => {
    if (err instanceof DataplaneError) return reply.code(err.status).headers(err.headers).send({ error: err.message, reason: err.reason });
    const status = (err as { statusCode?: number }).statusCode ?? 500;
    // a schema refusal says what and where (fastify's message names the field)
    return reply.code(status).send({ error: err.message, reason: status === 400 ? 'BadRequest' : 'InternalError' });
  });
  app.get('/healthz', async () => ({ status: 'ok' }));
  app.get('/metrics', async (_req, reply) => {
    o.poolmgr.updateGauges();
    return reply.type(o.metrics.registry.contentType).send(await o.metrics.registry.metrics());
  });
  app.register(async (api) => {
    api.addHook('onRequest', async (req, reply) => {
      const given = Buffer.from(req.headers.authorization ?? '');
      if (given.length !== expect.length || !timingSafeEqual(given, expect)) return reply.code(401).send({ error: 'the pool manager wants its credential (Authorization: Bearer, the Secret the pool manager keeps)', reason: 'Unauthorized' });
    });
    const routerOf = (req: { headers: Record<string, unknown> }) => String(req.headers[ROUTER_ID] ?? '');
    api.post<{ Body: { namespace: string; name: string } }>(
      '/v1/leases',
      { schema: { body: { type: 'object', required: ['namespace', 'name'], additionalProperties: false, properties: { namespace: NAME, name: NAME } } } },
      async (req, reply) => {
        const { namespace, name } = req.body;
        const fn = `${namespace}/${name}`;
        const router = routerOf(req);
        let gone = false;
        reply.raw.once('close', () => (gone = !reply.raw.writableFinished));
        count(fn, router, 1);
        let lease: Lease;
        try {
          const got = o.poolmgr.acquire(namespace, name, true);
          lease = got instanceof Promise ? await got : got;
        } finally {
          count(fn, router, -1);
        }
        // a router that left while it waited (its call ended) will never use it
        if (gone) {
          lease.release();
          return reply;
        }
        const id = randomBytes(12).toString('base64url');
        leases.set(id, { lease, renewed: Date.now(), fn, router });
        let ids = byInstance.get(lease.instance);
        if (!ids) {
          byInstance.set(lease.instance, (ids = new Set()));
          // an instance that dies is no one's lease: its router hears it at its next renewal
          void lease.instance.exited.then(() => {
            for (const dead of byInstance.get(lease.instance) ?? []) forget(dead);
            byInstance.delete(lease.instance);
          });
        }
        ids.add(id);
        const grant: LeaseGrant = { lease: id, url: lease.url, instance: lease.instance.id, token: lease.instance.token, coldStart: lease.coldStart, executor: lease.executor };
        return reply.code(201).send(grant);
      },
    );
    // release: the router is done with it; kill: it misbehaved (timed out, or the router could not reach it)
    for (const verb of ['release', 'kill'] as const) {
      api.post<{ Params: { id: string } }>(`/v1/leases/:id/${verb}`, { schema: { params: { type: 'object', properties: { id: LEASE_ID } } } }, async (req, reply) => {
        const l = leases.get(req.params.id);
        if (!l) return reply.code(404).send({ error: `no lease ${req.params.id} (it expired, or the pool manager restarted)`, reason: 'NotFound' });
        forget(req.params.id);
        l.lease[verb]();
        return reply.code(204).send();
      });
    }
    api.post<{ Body: { leases: string[] } }>(
      '/v1/leases/renew',
      // a router may hold many: ids of 16 characters, up to the schema's count
      { bodyLimit: 4 * 1024 * 1024, schema: { body: { type: 'object', required: ['leases'], additionalProperties: false, properties: { leases: { type: 'array', maxItems: 100_000, items: LEASE_ID } } } } },
      async (req) => {
        const now = Date.now();
        const router = routerOf(req);
        const unknown: string[] = [];
        const wanted: string[] = [];
        const draining: string[] = [];
        for (const id of req.body.leases) {
          const l = leases.get(id);
          if (!l) unknown.push(id);
          else {
            l.renewed = now;
            // its function changed (or the instance is going): no new calls on it, back once idle
            if (l.lease.draining()) draining.push(id);
            // calls through another router wait for an instance of its function: back once idle
            else if (othersWait(l.fn, router)) wanted.push(id);
          }
        }
        return { unknown, wanted, draining };
      },
    );
    api.get('/v1/status', async () => o.poolmgr.snapshot());
  });
  return app;
}
