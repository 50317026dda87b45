// Asynchronous calls (`X-Spore-Async: true` on any route or /_fn/): the router
// keeps the call in the store and answers 202 with its id at once; here they
// run, through the router's invoke() like any trigger's call (counted once;
// the invocation id is the call's request id, so its logs carry it). A call
// that fails with no answer, a 5xx or a 429 is tried again, ATTEMPTS in all,
// backing off; one that still fails — or a 4xx, which a retry would not
// change — lands in the dead letter (state failed), kept until retried by
// hand (`spore invocations retry ID`). Calls running when Spore stopped run
// again at its next start: at least once.
import type { Invocation, InvocationState, InvocationStore, NewInvocation } from '../../store/index.js';
import type { LogSink } from '../logs.js';
import type { Metrics } from '../metrics.js';
import { failureOf } from './failure.js';
import type { Router } from '../router/router.js';

/** Attempts of an asynchronous call before it goes to the dead letter. */
export const ATTEMPTS = 3;
/** Delay before the attempt after `attempt`: 1 s, 2 s, 4 s … */
export const asyncRetryDelayMs = (attempt: number) => Math.min(1000 * 2 ** (attempt - 1), 60_000);

export interface AsyncCallsOptions {
  store: InvocationStore;
  /** The router's invoke(): the call's path. */
  invoke: Router['invoke'];
  logs: LogSink;
  /** Calls running at once (each still within its function's own limits). @default 16 */
  concurrency?: number;
  metrics?: Metrics;
  report?: (message: string) => void;
  /** The largest body the store keeps with a call, when it has a bound of its own. */
  maxBodyBytes?: number;
}

/** An invocation as the API shows it: the body is not sent back. */
export type InvocationView = Omit<Invocation, 'body' | 'headers' | 'params'> & { bodyBytes: number };

export class AsyncCalls {
  private readonly running = new Set<Promise<void>>();
  private timer?: NodeJS.Timeout;
  private closed = false;
  private filling = false;
  private fillAgain = false;

  readonly maxBodyBytes?: number;

  constructor(private readonly o: AsyncCallsOptions) {
    this.maxBodyBytes = o.maxBodyBytes;
  }

  start(): Promise<void> {
    return this.resume();
  }

  /**
   * Takes up the calls a stopped Spore left (locally at a start; on a
   * cluster, again and again by the router holding the Lease) and runs them.
   */
  async resume(): Promise<void> {
    const again = await this.o.store.requeueRunning();
    if (again) this.report(`${again} asynchronous call(s) were under way when their Spore stopped: they run (again)`);
    this.pump();
  }

  /** Keeps the call (durably) and starts it when there is room; returns its id. */
  async accept(call: NewInvocation): Promise<string> {
    const inv = await this.o.store.enqueue(call);
    this.o.metrics?.asyncCalls.inc({ namespace: call.namespace, function: call.function, outcome: 'accepted' });
    this.pump();
    return inv.id;
  }

  async list(state?: InvocationState, limit?: number): Promise<InvocationView[]> {
    return (await this.o.store.listInvocations({ state, limit })).map(view);
  }

  async get(id: string): Promise<InvocationView | undefined> {
    const inv = await this.o.store.getInvocation(id);
    return inv && view(inv);
  }

  /** A failed call queued again (its attempts from zero); false when there is no failed call by that id. */
  async retry(id: string): Promise<boolean> {
    const ok = await this.o.store.retryInvocation(id);
    if (ok) this.pump();
    return ok;
  }

  /** Starts the due calls there is room for, one fill at a time (a store may answer later). */
  private pump(): void {
    if (this.closed) return;
    if (this.filling) {
      this.fillAgain = true;
      return;
    }
    this.filling = true;
    this.fill()
      .catch((err: Error) => {
        if (!this.closed) this.report(`asynchronous calls: ${err.message}`);
      })
      .finally(() => {
        this.filling = false;
        if (this.fillAgain) {
          this.fillAgain = false;
          this.pump();
        }
      });
  }

  private async fill(): Promise<void> {
    clearTimeout(this.timer);
    const max = this.o.concurrency ?? 16;
    while (this.running.size < max && !this.closed) {
      const inv = await this.o.store.claim(Date.now());
      if (!inv) break;
      const p = this.run(inv).finally(() => {
        this.running.delete(p);
        this.pump();
      });
      this.running.add(p);
    }
    // the next retry that comes due
    const due = this.o.store.nextDue();
    if (due !== undefined && this.running.size < max && !this.closed) {
      this.timer = setTimeout(() => this.pump(), Math.max(0, due - Date.now()) + 5);
      this.timer.unref();
    }
  }

  private async run(inv: Invocation): Promise<void> {
    const t0 = performance.now();
    let status = 0;
    let error: string | undefined;
    let response: string | undefined;
    try {
      const res = await this.o.invoke({ namespace: inv.namespace, name: inv.function, method: inv.method, path: inv.path, headers: inv.headers, params: inv.params, body: inv.body, requestId: inv.id });
      status = res.status;
      response = res.body.slice(0, 4096);
      if (status < 200 || status > 299) error = failureOf(res.body, status);
    } catch (err) {
      error = (err as Error).message;
    }
    // its start only, as the answer's: a function's message may be of any size, and a call's record (on a cluster, an object in etcd) is bounded
    if (error && error.length > 4096) error = `${error.slice(0, 4096)}…`;
    // stopping: a call cut short by the stop is not the call's failure; it stays running and runs again at the next start
    if (this.closed && error) return;
    const ms = Math.round(performance.now() - t0);
    const retryable = error !== undefined && (status === 0 || status === 429 || status >= 500);
    const last = inv.attempts >= ATTEMPTS;
    const state = !error ? 'succeeded' : retryable && !last ? 'queued' : 'failed';
    const nextAt = state === 'queued' ? Date.now() + asyncRetryDelayMs(inv.attempts) : undefined;
    try {
      await this.o.store.finish(inv.id, { state, status, error, response, nextAt });
    } catch (err) {
      // the store closed under a call that outlived the grace: it runs again at the next start
      if (!this.closed) this.report(`asynchronous call ${inv.id}: its ${state === 'queued' ? 'retry' : 'end'} could not be recorded (it will run again): ${(err as Error).message}`);
      return;
    }
    this.o.metrics?.asyncCalls.inc({ namespace: inv.namespace, function: inv.function, outcome: state === 'queued' ? 'retried' : state });
    const outcome = state === 'succeeded' ? String(status) : `${status || 'no answer'} ${error}; ${state === 'queued' ? `attempt ${inv.attempts} of ${ATTEMPTS}, again in ${nextAt! - Date.now()} ms` : `failed after ${inv.attempts} attempt(s): in the dead letter (spore invocations --failed)`}`;
    this.o.logs.write({ time: Date.now(), namespace: inv.namespace, function: inv.function, instance: 'async', requestId: inv.id, stream: error ? 'stderr' : 'stdout', line: `async call ${inv.id}: ${inv.method} ${inv.path} → ${outcome} in ${ms} ms` });
    if (state === 'failed') this.report(`asynchronous call ${inv.id} of ${inv.namespace}/${inv.function} failed: ${error}`);
  }

  /** No new call starts; the ones running finish (bounded by `graceMs`), or run again at the next start. */
  async close(graceMs = 10_000): Promise<void> {
    this.closed = true;
    clearTimeout(this.timer);
    let t: NodeJS.Timeout | undefined;
    await Promise.race([Promise.all(this.running), new Promise((r) => (t = setTimeout(r, graceMs)))]);
    clearTimeout(t);
  }

  private report(message: string): void {
    (this.o.report ?? ((m) => process.stderr.write(`spore: ${m}\n`)))(message);
  }
}

export function view(inv: Invocation): InvocationView {
  const { body, headers: _headers, params: _params, ...rest } = inv;
  return { ...rest, bodyBytes: inv.bodyBytes ?? body.length };
}
