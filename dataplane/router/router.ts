// The router: maps a request to a function through the route table, borrows
// an instance from the pool manager (in-process, no network hop on the warm
// path) and hands the call to a Relay (relay.ts) over a keep-alive agent.
import { randomUUID } from 'node:crypto';
import { Transform } from 'node:stream';
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import { Agent, type Dispatcher } from 'undici';
import { API_VERSION } from '../../api/index.js';
import type { InvocationState, LogStore, NewInvocation, ResourceStore, RunState, StoredObject } from '../../store/index.js';
import type { RunResult } from '../workflows/engine.js';
import { DataplaneError } from '../errors.js';
import type { Metrics } from '../metrics.js';
import type { InstanceRef, Lease, LeaseSource } from '../poolmgr/poolmgr.js';
import { INSTANCE_TOKEN } from '../poolmgr/provider.js';
import { HOP_BY_HOP, ignore, Relay, REQUEST_ID, timeUp, type Call } from './relay.js';
import { RouteTable } from './route-table.js';

export { REQUEST_ID };

export interface Invocation {
  namespace: string;
  name: string;
  method: string;
  /** Path under the function, with a query if any. */
  path: string;
  headers?: Record<string, string>;
  body?: string | Buffer;
  /** A route's parameters (an asynchronous call made through a route), passed as the route passes them. */
  params?: Record<string, string>;
  /** Made up when not given. */
  requestId?: string;
}

/** The header that makes a call asynchronous: 202 and an invocation id at once. */
export const ASYNC = 'x-spore-async';

/** Where asynchronous calls go (triggers/async.ts), and what the CLI may ask of them. */
export interface AsyncSink {
  accept(call: NewInvocation): Promise<string>;
  list(state?: InvocationState, limit?: number): Promise<unknown[]>;
  get(id: string): Promise<unknown>;
  retry(id: string): Promise<boolean>;
  /** The largest body it keeps with a call, when smaller than the router's. */
  maxBodyBytes?: number;
}

/** Where calls of a Workflow go (workflows/engine.ts), and what the CLI may ask of its runs. */
export interface WorkflowSink {
  has(namespace: string, name: string): boolean;
  run(namespace: string, workflow: string, input: unknown, requestId: string): Promise<{ id: string; done: Promise<RunResult> }>;
  get(id: string): Promise<unknown>;
  list(query: { namespace?: string; workflow?: string; state?: RunState; limit?: number }): Promise<unknown[]>;
}

export interface InvokeResult {
  status: number;
  requestId: string;
  /** The body as text. */
  body: string;
  /** The body as it came. */
  payload: Buffer;
  headers: Record<string, string | string[] | undefined>;
}
/** What a header value may hold as it is; anything else (a decoded `%0A`, `€`) is sent percent-encoded. */
const HEADER_SAFE = /^[\x20-\x7e]*$/;
const METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'] as const;

export interface RouterOptions {
  store: ResourceStore;
  /** The pool manager, or its client (remote-pools.ts) when it runs as its own process. */
  poolmgr: LeaseSource;
  metrics: Metrics;
  /** Serves `/_spore/*` (status and logs for the CLI) when given; local mode only. `status` adds to /_spore/status (the timers). */
  admin?: { logs: LogStore; status?: () => Record<string, unknown> | Promise<Record<string, unknown>> };
  /** Takes asynchronous calls (`X-Spore-Async: true`); without it they are refused (501). */
  async?: AsyncSink;
  /** Runs Workflows, called by name like functions; without it a workflow's name is not found. */
  workflows?: WorkflowSink;
  /** Largest request body accepted. @default 16 MiB */
  bodyLimit?: number;
  /** Bound on waiting for in-flight calls at shutdown. @default 10000 ms */
  shutdownGraceMs?: number;
  /** A client must send its request's headers within this, so slow clients cannot hold the router's sockets. @default 10000 ms */
  headersTimeoutMs?: number;
  report?: (message: string) => void;
}

function errorBody(status: number, reason: string, message: string, requestId: string) {
  return { status, error: reason, message, requestId };
}

export class Router {
  readonly server: FastifyInstance;
  private table = new RouteTable([]);
  private readonly agent = new Agent({ keepAliveTimeout: 30_000, keepAliveMaxTimeout: 60_000, connect: { timeout: 5_000 } });
  readonly bodyLimit: number;
  private unwatch?: () => void;
  private readonly triggers = new Map<string, StoredObject>();
  private rebuildQueued = false;
  /** Route parameters of calls invoke() is making, by their request id (only invoke() can set them). */
  private readonly invokeParams = new Map<string, Record<string, string>>();

  constructor(readonly o: RouterOptions) {
    this.bodyLimit = o.bodyLimit ?? 16 * 1024 * 1024;
    const headersTimeoutMs = o.headersTimeoutMs ?? 10_000;
    this.server = Fastify({
      logger: false,
      return503OnClosing: true,
      keepAliveTimeout: 65_000,
      bodyLimit: this.bodyLimit,
      // Node checks the headers timeout only every connectionsCheckingInterval (30 s by default)
      http: { headersTimeout: headersTimeoutMs, connectionsCheckingInterval: Math.min(1000, headersTimeoutMs / 2) },
      // what fastify itself refuses (a URL that does not decode, say) gets Spore's error shape too
      frameworkErrors: (err, req, reply) => {
        const status = (err as { statusCode?: number }).statusCode ?? 400;
        this.fail(reply, new DataplaneError(status, status === 400 ? 'BadRequest' : 'Error', status === 400 ? `the request cannot be read: ${err.message}` : 'the request failed'), this.requestId(req));
      },
    });
    // methods the router does not route (TRACE, PROPFIND, …) and anything thrown: one JSON shape, with the request id
    this.server.setNotFoundHandler((req, reply) => this.fail(reply, new DataplaneError(404, 'NotFound', `no route for ${req.method} ${req.url.split('?')[0]}`), this.requestId(req)));
    this.server.setErrorHandler((err: { statusCode?: number; message?: string }, req, reply) => {
      if (err instanceof DataplaneError) return this.fail(reply, err, this.requestId(req)); // the router's own refusals, thrown where they arise
      const status = err.statusCode && err.statusCode >= 400 && err.statusCode < 500 ? err.statusCode : 500;
      // a 4xx is the client's to read; a 500's details stay out of the answer
      this.fail(reply, new DataplaneError(status, status === 500 ? 'InternalError' : 'BadRequest', status === 500 ? 'the router failed to handle the request' : String(err.message)), this.requestId(req));
    });
    this.server.removeAllContentTypeParsers();
    this.server.addContentTypeParser('*', (_req, _payload, done) => done(null)); // bodies stream through untouched
    this.routes();
  }

  /** Loads the routes, follows the store, and listens. Returns the base URL. */
  async listen(port: number, host = '127.0.0.1'): Promise<string> {
    this.unwatch = this.o.store.watch((e) => {
      if (e.object.apiVersion !== API_VERSION || e.object.kind !== 'HttpTrigger') return;
      const key = `${e.object.metadata.namespace}/${e.object.metadata.name}`;
      if (e.type === 'DELETED') this.triggers.delete(key);
      else this.triggers.set(key, e.object);
      // the events of one apply come together: rebuild once, before the applier's next step
      if (!this.rebuildQueued) {
        this.rebuildQueued = true;
        queueMicrotask(() => {
          this.rebuildQueued = false;
          this.rebuild();
        });
      }
    });
    await this.reload();
    await this.server.listen({ port, host });
    const address = this.server.server.address() as { port: number };
    return `http://${host}:${address.port}`;
  }

  /** Reads every HttpTrigger from the store again and rebuilds the route table. */
  async reload(): Promise<void> {
    this.triggers.clear();
    for (const t of await this.o.store.list({ apiVersion: API_VERSION, kind: 'HttpTrigger' })) this.triggers.set(`${t.metadata.namespace}/${t.metadata.name}`, t);
    this.rebuild();
  }

  /** Swaps in a new route table; requests in flight keep the one they started with. */
  private rebuild(): void {
    this.table = new RouteTable([...this.triggers.values()], { onConflict: (m) => this.report(m) });
  }

  get routeList() {
    return this.table.routes;
  }

  private report(message: string): void {
    (this.o.report ?? ((m) => process.stderr.write(`spore: ${m}\n`)))(message);
  }

  private routes(): void {
    const s = this.server;
    s.get('/healthz', async () => ({ status: 'ok' }));
    s.get('/metrics', async (_req, reply) => {
      this.o.poolmgr.updateGauges();
      return reply.type(this.o.metrics.registry.contentType).send(await this.o.metrics.registry.metrics());
    });
    const internal = (req: FastifyRequest, reply: FastifyReply) => {
      const { namespace, name } = req.params as { namespace: string; name: string };
      // the path as sent (fastify's wildcard is decoded: %2F would become a separator)
      const rest = req.url.split('?')[0].split('/').slice(4).join('/'); // '', '_fn', namespace, name, then the path
      const id = req.headers[REQUEST_ID];
      const params = (typeof id === 'string' && this.invokeParams.get(id)) || {};
      return this.call(req, reply, { namespace, name, path: `/${rest}`, params });
    };
    s.route({ method: [...METHODS], url: '/_fn/:namespace/:name', handler: internal });
    s.route({ method: [...METHODS], url: '/_fn/:namespace/:name/*', handler: internal });
    if (this.o.admin) {
      const logs = this.o.admin.logs;
      s.get('/_spore/status', async () => ({ ...(await this.o.poolmgr.snapshot()), routes: this.table.routes, ...(await this.o.admin?.status?.()) }));
      s.get('/_spore/logs', async (req) => {
        const q = req.query as Record<string, string | undefined>;
        if (!q.function) throw new DataplaneError(400, 'BadRequest', 'query parameter "function" is required');
        const num = (v: string | undefined, what: string) => {
          if (v === undefined) return undefined;
          const n = Number(v);
          if (!Number.isFinite(n) || n < 0) throw new DataplaneError(400, 'BadRequest', `query parameter "${what}" must be a non-negative number`);
          return n;
        };
        const namespace = q.namespace ?? 'default';
        // a function that does not exist: say so, rather than an empty answer that looks like a quiet function
        if (!(await this.o.store.get({ apiVersion: API_VERSION, kind: 'Function', namespace, name: q.function }))) {
          const known = (await this.o.store.list({ apiVersion: API_VERSION, kind: 'Function', namespace })).map((f) => f.metadata.name);
          const some = known.length > 20 ? `${known.slice(0, 20).join(', ')}, …` : known.join(', ') || 'none';
          throw new DataplaneError(404, 'NotFound', `function ${namespace}/${q.function} does not exist (functions in ${namespace}: ${some})`);
        }
        return logs.queryLogs({ namespace, function: q.function, since: num(q.since, 'since'), afterId: num(q.afterId, 'afterId'), limit: num(q.limit, 'limit') });
      });
      const workflows = this.o.workflows;
      if (workflows) {
        s.get('/_spore/workflow-runs', async (req) => {
          const q = req.query as Record<string, string | undefined>;
          const { state, limit } = listQuery(q, ['running', 'succeeded', 'failed']);
          return workflows.list({ namespace: q.namespace, workflow: q.workflow, state: state as RunState | undefined, limit });
        });
        s.get('/_spore/workflow-runs/:id', async (req) => {
          const { id } = req.params as { id: string };
          return (await workflows.get(id)) ?? Promise.reject(new DataplaneError(404, 'NotFound', `no workflow run ${id} (finished runs are kept for 7 days, the last 1000)`));
        });
      }
      const calls = this.o.async;
      if (calls) {
        s.get('/_spore/invocations', async (req) => {
          const { state, limit } = listQuery(req.query as Record<string, string | undefined>, ['queued', 'running', 'succeeded', 'failed']);
          return calls.list(state as InvocationState | undefined, limit);
        });
        s.get('/_spore/invocations/:id', async (req) => {
          const { id } = req.params as { id: string };
          return (await calls.get(id)) ?? Promise.reject(new DataplaneError(404, 'NotFound', `no asynchronous call ${id} (finished calls are kept for a while: the last 1000 that succeeded, 10000 that failed)`));
        });
        s.post('/_spore/invocations/:id/retry', async (req) => {
          const { id } = req.params as { id: string };
          if (!(await calls.get(id))) throw new DataplaneError(404, 'NotFound', `no asynchronous call ${id}`);
          if (!(await calls.retry(id))) throw new DataplaneError(409, 'NotFailed', `asynchronous call ${id} has not failed: only a failed call is retried`);
          return calls.get(id);
        });
      }
    }
    s.route({
      method: [...METHODS],
      url: '/*',
      handler: (req, reply) => {
        const path = req.url.split('?')[0];
        const m = this.table.match(req.method, req.headers.host, path);
        if (m.kind === 'none') return this.fail(reply, new DataplaneError(404, 'NotFound', `no route for ${req.method} ${path}`), this.requestId(req));
        if (m.kind === 'method') return this.fail(reply, new DataplaneError(405, 'MethodNotAllowed', `${path} does not accept ${req.method} (it accepts ${m.allow.join(', ')})`, { allow: m.allow.join(', ') }), this.requestId(req));
        return this.call(req, reply, { namespace: m.target.namespace, name: pick(m.target.functions), path: m.path, params: m.params });
      },
    });
  }

  requestId(req: FastifyRequest): string {
    const given = req.headers[REQUEST_ID];
    return typeof given === 'string' && /^[\w.:-]{1,128}$/.test(given) ? given : randomUUID();
  }

  /** Answers with Spore's error shape (used by Relay too). */
  fail(reply: FastifyReply, err: DataplaneError, requestId: string) {
    return reply.code(err.status).headers({ ...err.headers, [REQUEST_ID]: requestId }).send(errorBody(err.status, err.reason, err.message, requestId));
  }

  /** One call of a function: the same path for routes, /_fn/, timers and queues. */
  async call(req: FastifyRequest, reply: FastifyReply, call: Call): Promise<FastifyReply> {
    if (this.o.workflows?.has(call.namespace, call.name)) return this.callWorkflow(req, reply, call);
    if (req.headers[ASYNC] !== undefined) return this.accept(req, reply, call);
    const relay = new Relay(this, req, reply, call);
    // the client may leave while the call waits for an instance: know it, and stop the upstream call if one runs
    reply.raw.on('close', relay.onClose);
    const declared = Number(req.headers['content-length'] ?? 0);
    if (declared > this.bodyLimit) {
      relay.count(413);
      return this.fail(reply, new DataplaneError(413, 'PayloadTooLarge', `the request body (${declared} bytes) exceeds the limit of ${this.bodyLimit} bytes`), relay.requestId);
    }
    let lease: Lease<InstanceRef>;
    try {
      const got = this.o.poolmgr.acquire(call.namespace, call.name);
      lease = got instanceof Promise ? await got : got;
    } catch (err) {
      if (relay.clientGone) {
        relay.count(499);
        return reply;
      }
      const e = err instanceof DataplaneError ? err : new DataplaneError(500, 'InternalError', (err as Error).message);
      relay.count(e.status);
      return this.fail(reply, e, relay.requestId);
    }
    if (relay.clientGone) {
      lease.release();
      relay.count(499);
      return reply;
    }
    relay.lease = lease;
    // the caller's headers as they came (a flat name, value list: nothing rebuilt), less what is the router's to set
    const headers: string[] = [];
    const raw = req.raw.rawHeaders;
    for (let i = 0; i < raw.length; i += 2) {
      const k = raw[i].toLowerCase();
      if (HOP_BY_HOP.has(k) || k.startsWith('x-spore-param-') || k === REQUEST_ID || k === INSTANCE_TOKEN) continue;
      headers.push(raw[i], raw[i + 1]);
    }
    if (declared) headers.push('content-length', String(declared));
    headers.push(REQUEST_ID, relay.requestId, 'x-forwarded-for', req.ip, 'x-forwarded-proto', 'http');
    if (lease.instance.token) headers.push(INSTANCE_TOKEN, lease.instance.token);
    if (req.headers.host) headers.push('x-forwarded-host', req.headers.host);
    for (const k in call.params) headers.push(`x-spore-param-${k.toLowerCase()}`, HEADER_SAFE.test(call.params[k]) ? call.params[k] : encodeURIComponent(call.params[k]));

    const q = req.url.indexOf('?');
    const hasBody = req.method !== 'GET' && req.method !== 'HEAD' && (declared > 0 || req.headers['transfer-encoding'] !== undefined);
    if (hasBody) {
      const limit = this.bodyLimit;
      let received = 0;
      relay.body = req.raw.pipe(
        new Transform({
          transform(chunk: Buffer, _enc, cb) {
            received += chunk.length;
            if (received > limit) {
              relay.tooLarge = true;
              return cb(new Error('request body too large'));
            }
            cb(null, chunk);
          },
        }),
      );
      relay.body.on('error', ignore); // undici aborts the call on it; this keeps a late one (the answer already in) from throwing
    }
    relay.timer = setTimeout(timeUp, lease.executor.functionTimeoutSeconds * 1000, relay);
    const answered = new Promise<FastifyReply>((resolve) => (relay.resolve = resolve));
    relay.tUp = performance.now();
    this.agent.dispatch({ origin: lease.url, path: q < 0 ? call.path : call.path + req.url.slice(q), method: req.method as Dispatcher.HttpMethod, headers, body: relay.body, headersTimeout: 0, bodyTimeout: 0 }, relay);
    return answered;
  }

  /** Whether the call asks to be asynchronous; throws on a value that is neither yes nor absent. */
  private asked(req: FastifyRequest): boolean {
    if (req.headers[ASYNC] === undefined) return false;
    const flag = String(req.headers[ASYNC]).toLowerCase();
    if (flag !== 'true' && flag !== '1') throw new DataplaneError(400, 'BadRequest', `header X-Spore-Async must be "true" (got "${req.headers[ASYNC]}")`);
    return true;
  }

  /** The whole request body (bounded), for a call that is kept before it runs. */
  private async wholeBody(req: FastifyRequest, limit = this.bodyLimit, why = ''): Promise<Buffer> {
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const chunk of req.raw as AsyncIterable<Buffer>) {
      size += chunk.length;
      if (size > limit) throw new DataplaneError(413, 'PayloadTooLarge', `the request body exceeds the limit of ${limit} bytes${why}`);
      chunks.push(chunk);
    }
    return Buffer.concat(chunks);
  }

  /** The caller's headers worth keeping with a call, by lowercase name (repeated ones joined). */
  private keptHeaders(req: FastifyRequest): Record<string, string> {
    const headers: Record<string, string> = {};
    const raw = req.raw.rawHeaders;
    for (let i = 0; i < raw.length; i += 2) {
      const k = raw[i].toLowerCase();
      if (HOP_BY_HOP.has(k) || k.startsWith('x-spore-') || k === 'content-length' || k === 'host' || k === REQUEST_ID) continue;
      headers[k] = headers[k] === undefined ? raw[i + 1] : `${headers[k]}, ${raw[i + 1]}`;
    }
    return headers;
  }

  /** An asynchronous call: kept, then answered 202 with its id; it runs later (triggers/async.ts). */
  private async accept(req: FastifyRequest, reply: FastifyReply, call: Call): Promise<FastifyReply> {
    const requestId = this.requestId(req);
    this.asked(req);
    if (!this.o.async) return this.fail(reply, new DataplaneError(501, 'AsyncUnavailable', 'this router keeps no asynchronous calls'), requestId);
    if (!(await this.o.store.get({ apiVersion: API_VERSION, kind: 'Function', namespace: call.namespace, name: call.name }))) {
      return this.fail(reply, new DataplaneError(404, 'NotFound', `function ${call.namespace}/${call.name} does not exist`), requestId);
    }
    // the whole body first (bounded): it is kept with the call
    const kept = this.o.async.maxBodyBytes;
    const body = kept !== undefined && kept < this.bodyLimit ? await this.wholeBody(req, kept, ' kept with an asynchronous call here (it goes in an Invocation object): call it synchronously, or pass a reference to the data') : await this.wholeBody(req);
    const q = req.url.indexOf('?');
    let id: string;
    try {
      id = await this.o.async.accept({ namespace: call.namespace, function: call.name, method: req.method, path: q < 0 ? call.path : call.path + req.url.slice(q), headers: this.keptHeaders(req), params: call.params, body });
    } catch (err) {
      // its store refused it (on a cluster, the API server): said to the caller and in the log, not a bare 500
      const message = `asynchronous call of ${call.namespace}/${call.name} could not be kept: ${(err as Error).message}`;
      this.report(message);
      return this.fail(reply, new DataplaneError(503, 'Unavailable', message), requestId);
    }
    return reply.code(202).headers({ [REQUEST_ID]: requestId, 'x-spore-invocation-id': id }).send({ invocation: id, function: `${call.namespace}/${call.name}`, state: 'queued' });
  }

  /**
   * A call of a Workflow: its run is kept, then answered with the workflow's
   * output (or at once with 202 and the run id, when asked to be asynchronous).
   * `$.Invocation.Inputs` holds the body as `default` (JSON when the request
   * says so, text otherwise), and headers, query, method, params.
   */
  private async callWorkflow(req: FastifyRequest, reply: FastifyReply, call: Call): Promise<FastifyReply> {
    const requestId = this.requestId(req);
    const detached = this.asked(req);
    const body = await this.wholeBody(req);
    let value: unknown = body.length ? body.toString('utf8') : undefined;
    if (body.length && /[/+]json\b/i.test(String(req.headers['content-type'] ?? ''))) {
      try {
        value = JSON.parse(body.toString('utf8'));
      } catch (err) {
        throw new DataplaneError(400, 'BadRequest', `the request body says it is JSON but is not: ${(err as Error).message}`);
      }
    }
    const q = req.url.indexOf('?');
    const query = Object.fromEntries(new URLSearchParams(q < 0 ? '' : req.url.slice(q + 1)));
    // the run's input is kept (7 days) and shown by spore workflow get: no credentials in it
    const headers = this.keptHeaders(req);
    for (const secret of ['authorization', 'proxy-authorization', 'cookie']) delete headers[secret];
    const input = { default: value, headers, query, method: req.method, params: call.params };
    let run: Awaited<ReturnType<WorkflowSink['run']>>;
    try {
      run = await this.o.workflows!.run(call.namespace, call.name, input, requestId);
    } catch (err) {
      throw new DataplaneError(503, 'Unavailable', (err as Error).message);
    }
    const ids = { [REQUEST_ID]: requestId, 'x-spore-workflow-run': run.id };
    if (detached) return reply.code(202).headers(ids).send({ run: run.id, workflow: `${call.namespace}/${call.name}`, state: 'running' });
    const result = await run.done;
    if (result.state === 'succeeded') {
      const out = result.output;
      const type = typeof out === 'string' ? 'text/plain; charset=utf-8' : 'application/json';
      return reply.code(200).headers({ 'content-type': type, ...result.headers, ...ids }).send(out === undefined ? '' : typeof out === 'string' ? out : JSON.stringify(out));
    }
    if (result.state === 'stopped') return this.fail(reply.headers(ids), new DataplaneError(503, 'Stopping', `Spore is stopping: workflow run ${run.id} goes on at its next start (spore workflow get ${run.id})`), requestId);
    const e = result.error;
    const status = e.timedOut ? 504 : 500;
    const details = { run: run.id, task: e.task, functionStatus: e.status, functionBody: e.body };
    return reply.code(status).headers(ids).send({ ...errorBody(status, e.timedOut ? 'WorkflowTimedOut' : 'WorkflowFailed', e.message, requestId), ...details });
  }

  /**
   * One call from inside Spore (a timer's firing): injected into the `/_fn/`
   * route, so it takes the very path of an HTTP call (call() and a Relay: one
   * count in the metrics, a request id, the function's concurrency, queue and
   * timeout) with no socket and no round trip through the network stack.
   */
  async invoke(c: Invocation): Promise<InvokeResult> {
    const requestId = c.requestId ?? randomUUID();
    const url = `/_fn/${encodeURIComponent(c.namespace)}/${encodeURIComponent(c.name)}${c.path.startsWith('/') ? c.path : `/${c.path}`}`;
    if (c.params && Object.keys(c.params).length) this.invokeParams.set(requestId, c.params);
    const res = await this.server.inject({ method: c.method as Dispatcher.HttpMethod, url, headers: { ...c.headers, [REQUEST_ID]: requestId }, payload: c.body }).finally(() => this.invokeParams.delete(requestId));
    return { status: res.statusCode, requestId, body: res.body, payload: res.rawPayload, headers: res.headers as InvokeResult['headers'] };
  }

  async close(): Promise<void> {
    this.unwatch?.();
    const grace = this.o.shutdownGraceMs ?? 10_000;
    const closing = this.server.close();
    const timer = setTimeout(() => this.server.server.closeAllConnections(), grace);
    await closing;
    clearTimeout(timer);
    await this.agent.close();
  }
}

/** The `state` and `limit` (default 100) of a listing the CLI asks for, checked. */
function listQuery(q: Record<string, string | undefined>, states: readonly string[]): { state?: string; limit: number } {
  if (q.state !== undefined && !states.includes(q.state)) throw new DataplaneError(400, 'BadRequest', `query parameter "state" must be one of ${states.join(', ')}`);
  const limit = q.limit === undefined ? 100 : Number(q.limit);
  if (!Number.isInteger(limit) || limit < 1 || limit > 10_000) throw new DataplaneError(400, 'BadRequest', 'query parameter "limit" must be a whole number from 1 to 10000');
  return { state: q.state, limit };
}

/** A function from a weighted list (one entry: itself). */
function pick(functions: { name: string; weight: number }[]): string {
  if (functions.length === 1) return functions[0].name;
  let r = Math.random() * 100;
  for (const f of functions) {
    r -= f.weight;
    if (r < 0) return f.name;
  }
  return functions[functions.length - 1].name;
}
