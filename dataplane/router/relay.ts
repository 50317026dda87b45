// One proxied call, from the router to an instance and back: undici's
// dispatch handler with the call's state in one object (router.ts finds the
// route and the instance; this relays the bytes).
import { Socket } from 'node:net';
import { Readable, Transform } from 'node:stream';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { type Dispatcher, errors as undiciErrors } from 'undici';
import { DataplaneError } from '../errors.js';
import type { InstanceRef, Lease as PoolLease } from '../poolmgr/poolmgr.js';

type Lease = PoolLease<InstanceRef>;
import type { Router } from './router.js';

export const REQUEST_ID = 'x-spore-request-id';
export const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-authenticate', 'proxy-authorization', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'content-length', 'expect']);
/** Responses up to this size with a known length are relayed whole rather than streamed. */
export const SMALL_BODY = 64 * 1024;

export interface Call {
  namespace: string;
  name: string;
  path: string;
  params: Record<string, string>;
}

/** A 502 for an instance that failed mid-call, saying so when its memory limit was the cause. */
export function instanceFailed(call: { namespace: string; name: string }, lease: Lease, err: Error): DataplaneError {
  if (lease.instance.memoryLimited?.()) return new DataplaneError(502, 'OutOfMemory', `the instance of ${call.namespace}/${call.name} was stopped: it went over its Environment's memory limit`);
  const why = err instanceof undiciErrors.RequestAbortedError ? 'the call was aborted' : err.message;
  return new DataplaneError(502, 'BadGateway', `the instance of ${call.namespace}/${call.name} failed: ${why}`);
}

export function ignore() {}

/** A call's functionTimeout is up: the relay stops it (504, instance stopped). */
export function timeUp(relay: Relay) {
  relay.timedOut = true;
  relay.stop();
}

/**
 * One proxied call as undici's dispatch handler: its state in one object, a
 * small answer of known length gathered and written in one go (no stream, no
 * promise per response), any other streamed with backpressure. Whatever ends
 * the call (answer, timeout, client gone, instance failure) releases or stops
 * the instance and counts the call exactly once.
 */
export class Relay implements Dispatcher.DispatchHandlers {
  readonly t0 = performance.now();
  readonly requestId: string;
  lease!: Lease;
  body: Transform | null = null;
  timer: NodeJS.Timeout | undefined;
  resolve!: (reply: FastifyReply) => void;
  tUp = 0;
  clientGone = false;
  timedOut = false;
  tooLarge = false;
  private abort: ((err?: Error) => void) | null = null;
  private aborting = false;
  private status = 0;
  private out: string[] = [];
  private length = NaN;
  /** The small answer's chunks; null when streamed. */
  private chunks: Buffer[] | null = null;
  private stream: Readable | null = null;
  private size = 0;
  private tBodyEnd = 0;
  /** The response is the client's now (written or streaming): what remains is to settle. */
  private answered = false;
  private settled = false;

  constructor(
    private readonly router: Router,
    private readonly req: FastifyRequest,
    private readonly reply: FastifyReply,
    private readonly call: Call,
  ) {
    this.requestId = router.requestId(req);
  }

  count(code: number): void {
    this.router.o.metrics.recordCall(this.call.namespace, this.call.name, this.req.method, code, (performance.now() - this.t0) / 1000);
  }

  readonly onClose = () => {
    // a call from Router.invoke() has no socket to flush to: its answer is whole once ended
    const finished = this.reply.raw.writableFinished || (!(this.req.raw.socket instanceof Socket) && this.reply.raw.writableEnded);
    if (!finished) {
      this.clientGone = true;
      this.stop();
    }
    if (this.answered) this.settle(finished);
  };

  /** Stops the upstream call (now, or as soon as undici starts it). */
  stop(): void {
    if (this.abort) this.abort(new undiciErrors.RequestAbortedError());
    else this.aborting = true;
  }

  onConnect(abort: (err?: Error) => void): void {
    if (this.aborting) abort(new undiciErrors.RequestAbortedError());
    else this.abort = abort;
  }

  onHeaders(statusCode: number, raw: Buffer[], resume: () => void): boolean {
    if (statusCode < 200) return true; // 1xx: not passed on
    this.status = statusCode;
    const out = this.out;
    for (let i = 0; i < raw.length; i += 2) {
      const k = raw[i].toString('latin1').toLowerCase();
      const v = raw[i + 1].toString('latin1'); // the bytes as they came: node writes header strings as latin1
      if (k === 'content-length') this.length = Number(v);
      if (!HOP_BY_HOP.has(k)) out.push(k, v);
    }
    out.push(REQUEST_ID, this.requestId);
    if (this.length <= SMALL_BODY) {
      this.chunks = [];
      return true;
    }
    // a large or unknown-length body streams through fastify, paused while the client lags
    const reply = this.reply.code(statusCode);
    for (let i = 0; i < out.length; i += 2) {
      const prev = reply.getHeader(out[i]);
      reply.header(out[i], prev === undefined ? out[i + 1] : ([] as (string | number)[]).concat(prev as string, out[i + 1]));
    }
    if (!Number.isNaN(this.length) && this.req.method !== 'HEAD') reply.header('content-length', this.length);
    this.stream = new Readable({ read: resume });
    this.answered = true;
    this.resolve(reply.send(this.stream));
    return true;
  }

  onData(chunk: Buffer): boolean {
    this.size += chunk.length;
    if (this.chunks) {
      this.chunks.push(chunk);
      return true;
    }
    return this.stream!.push(chunk);
  }

  onComplete(): void {
    clearTimeout(this.timer); // answered in full within its time
    this.tBodyEnd = performance.now();
    if (this.stream) {
      this.stream.push(null);
      return;
    }
    // a small body of known length goes out in one write with its headers, straight to the socket: no reply machinery
    const chunks = this.chunks!;
    const bytes = chunks.length === 1 ? chunks[0] : Buffer.concat(chunks, this.size);
    this.out.push('content-length', String(this.req.method === 'HEAD' ? this.length : this.size)); // HEAD: GET's length
    this.reply.hijack();
    this.answered = true;
    this.reply.raw.writeHead(this.status, this.out);
    this.reply.raw.end(bytes);
    this.resolve(this.reply);
  }

  onError(err: Error): void {
    clearTimeout(this.timer);
    if (this.answered) {
      this.stream?.destroy(err);
      this.settle(false);
      return;
    }
    this.body?.destroy();
    // nothing was sent yet: the caller still gets a clear answer
    const { call, lease } = this;
    let e: DataplaneError | null;
    if (this.timedOut) {
      lease.kill();
      e = new DataplaneError(504, 'Timeout', `function ${call.namespace}/${call.name} did not answer within ${lease.executor.functionTimeoutSeconds}s; its instance was stopped`);
    } else if (this.clientGone) {
      lease.release(); // a call the client dropped is not the instance's fault
      e = null;
    } else if (this.tooLarge) {
      lease.release(); // the instance did nothing wrong
      e = new DataplaneError(413, 'PayloadTooLarge', `the request body exceeds the limit of ${this.router.bodyLimit} bytes`);
    } else if (err instanceof undiciErrors.InvalidArgumentError) {
      lease.release(); // refused before it reached the instance
      e = new DataplaneError(400, 'BadRequest', `the request cannot be passed on: ${err.message}`);
    } else {
      lease.kill();
      e = instanceFailed(call, lease, err);
    }
    this.settled = true;
    this.count(e ? e.status : 499); // (499: the client closed the request, as nginx counts it)
    if (this.status) this.recordProxy();
    this.resolve(e ? this.router.fail(this.reply, e, this.requestId) : this.reply);
  }

  /** The end of an answered call: the instance released (or stopped, if it failed or overran) and the call counted. */
  private settle(ok: boolean): void {
    if (this.settled) return;
    this.settled = true;
    clearTimeout(this.timer);
    const dropped = this.clientGone && !this.timedOut;
    if (ok || dropped) this.lease.release();
    else this.lease.kill();
    this.count(ok ? this.status : dropped ? 499 : this.timedOut ? 504 : 502);
    this.recordProxy();
  }

  private recordProxy(): void {
    const end = this.tBodyEnd || performance.now();
    this.router.o.metrics.recordProxy(this.call.namespace, this.call.name, Math.max(0, this.tUp - this.t0 + (performance.now() - end)) / 1000, this.size);
  }
}
