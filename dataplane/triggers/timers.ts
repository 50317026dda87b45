// TimerTriggers: croner schedules each one read from the store (listed, then
// followed by watch), and each firing calls the function through the router's
// invoke(), the same path as an HTTP call.
//
// As Fission's timer does (a cron job per trigger feeding one publisher that
// sends its requests one by one, in order), one timer's calls never overlap: a
// firing due while the previous call is still in flight waits and is sent when
// that call ends. At most MAX_WAITING firings wait per timer; past that a
// firing is dropped and said (Fission's buffer holds 32 too, then blocks).
// A changed trigger is rescheduled at once and a deleted one stops (its
// waiting firings dropped, a call in flight finishes). Nothing missed while
// Spore was down is replayed, unless the trigger says `catchUp`: then its last
// firing is kept in the store, and if a run fell due since, it fires once at
// the start (however many were missed). Fission retries a call only on a transport error
// or a 404; here the call is in-process, so none is retried.
import { randomUUID } from 'node:crypto';
import { Cron } from 'croner';
import { API_VERSION, calleeOf, type TimerTriggerSpec } from '../../api/index.js';
import { parseSchedule } from '../../api/schedule.js';
import type { ResourceStore, StoredObject } from '../../store/index.js';
import type { LogSink } from '../logs.js';
import type { Metrics } from '../metrics.js';
import type { Router } from '../router/router.js';
import type { TriggerConditions } from './conditions.js';

export const MAX_WAITING = 32;

export interface TimerInfo {
  namespace: string;
  name: string;
  function: string;
  cron: string;
  timeZone: string;
  /** ISO time of the next firing; null when the schedule has none left. */
  nextRun: string | null;
  /** Status of the last call (0: it failed before an answer), when there was one. */
  lastStatus?: number;
  lastError?: string;
}

interface Timer {
  key: string;
  namespace: string;
  name: string;
  spec: TimerTriggerSpec;
  /** The spec as scheduled: a change of anything in it reschedules. */
  specText: string;
  cron: Cron;
  busy: boolean;
  waiting: number;
  stopped: boolean;
  lastStatus?: number;
  lastError?: string;
}

/** Where `catchUp` timers keep their last firing (the local store's small state). */
export interface TimerState {
  readState<T>(key: string): T | undefined;
  /** `undefined` forgets the key. */
  writeState(key: string, value: unknown): void;
}

export interface TimersOptions {
  store: ResourceStore;
  /** Without it, `catchUp` cannot be honoured (said once per trigger). */
  state?: TimerState;
  router: Router;
  logs: LogSink;
  metrics?: Metrics;
  /** Where each timer's state is written as its Active condition. */
  conditions?: TriggerConditions;
  report?: (message: string) => void;
}

export class Timers {
  private readonly timers = new Map<string, Timer>();
  private readonly inFlight = new Set<Promise<void>>();
  private unwatch?: () => void;

  constructor(private readonly o: TimersOptions) {}

  /** Follows the store's TimerTriggers (watch first, so no change between the list and the watch is missed). */
  async start(): Promise<void> {
    this.unwatch = this.o.store.watch((e) => {
      if (e.object.apiVersion !== API_VERSION || e.object.kind !== 'TimerTrigger') return;
      if (e.type === 'DELETED') {
        this.remove(keyOf(e.object));
        this.o.conditions?.forget('TimerTrigger', e.object.metadata.namespace ?? 'default', e.object.metadata.name);
        this.o.state?.writeState(`timer/${keyOf(e.object)}`, undefined); // its last firing forgotten with it
      } else this.set(e.object);
    });
    for (const t of await this.o.store.list({ apiVersion: API_VERSION, kind: 'TimerTrigger' })) this.set(t);
  }

  /** Every timer with its schedule and next run, in name order. */
  list(): TimerInfo[] {
    return [...this.timers.values()]
      .sort((a, b) => a.key.localeCompare(b.key))
      .map((t) => ({
        namespace: t.namespace,
        name: t.name,
        function: calleeOf(t.spec),
        cron: t.spec.cron,
        timeZone: t.spec.timeZone ?? 'UTC',
        nextRun: t.cron.nextRun()?.toISOString() ?? null,
        ...(t.lastStatus !== undefined ? { lastStatus: t.lastStatus } : {}),
        ...(t.lastError ? { lastError: t.lastError } : {}),
      }));
  }

  /** Stops every schedule and waits (at most `graceMs`) for the calls in flight. */
  async close(graceMs = 10_000): Promise<void> {
    this.unwatch?.();
    for (const key of [...this.timers.keys()]) this.remove(key);
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([Promise.all(this.inFlight), new Promise((r) => (timer = setTimeout(r, graceMs)))]);
    clearTimeout(timer);
  }

  private set(o: StoredObject): void {
    const key = keyOf(o);
    const spec = (o as unknown as { spec: TimerTriggerSpec }).spec;
    const specText = JSON.stringify(spec);
    if (this.timers.get(key)?.specText === specText) return; // a status write or a no-op apply: keep the schedule
    this.remove(key);
    const namespace = o.metadata.namespace ?? 'default';
    let cron: Cron;
    try {
      cron = schedule(spec, () => this.fire(timer));
    } catch (err) {
      // the store validated it; a schedule that still cannot run is said, not fatal
      this.report(`timer ${key}: cannot schedule "${spec.cron}": ${(err as Error).message}`);
      this.o.conditions?.state('TimerTrigger', namespace, o.metadata.name, 'failed', `cannot schedule "${spec.cron}": ${(err as Error).message}`);
      return;
    }
    this.o.conditions?.state('TimerTrigger', namespace, o.metadata.name, 'scheduled', `"${spec.cron}" (${spec.timeZone ?? 'UTC'}) → ${calleeOf(spec)}`);
    const timer: Timer = { key, namespace, name: o.metadata.name, spec, specText, cron, busy: false, waiting: 0, stopped: false };
    this.timers.set(key, timer);
    if (spec.catchUp) this.catchUp(timer);
  }

  /** A `catchUp` timer whose next run after its last firing is already past fires once now. */
  private catchUp(t: Timer): void {
    if (!this.o.state) return void this.report(`timer ${t.key}: catchUp is not honoured here (no store for its last firing)`);
    const last = this.o.state.readState<{ at: number }>(stateKey(t))?.at;
    if (last === undefined) return void this.o.state.writeState(stateKey(t), { at: Date.now() }); // from now on
    const s = parseSchedule(t.spec.cron, t.spec.timeZone ?? 'UTC');
    let due: number | undefined;
    if (s.kind === 'every') due = last + Math.max(1000, Math.floor(s.everyMs / 1000) * 1000);
    else {
      const probe = schedule(t.spec, () => {}, { paused: true });
      due = probe.nextRun(new Date(last))?.getTime();
      probe.stop();
    }
    if (due === undefined || due > Date.now()) return;
    this.report(`timer ${t.key}: a run due at ${new Date(due).toISOString()} was missed while Spore was down; catching up (once)`);
    this.fire(t);
  }

  private remove(key: string): void {
    const t = this.timers.get(key);
    if (!t) return;
    t.stopped = true;
    t.waiting = 0;
    t.cron.stop();
    this.timers.delete(key);
  }

  /** A firing: run it now, or after the call in flight (Fission's order), or drop it when too many wait. */
  private fire(t: Timer): void {
    if (t.stopped) return;
    const labels = { namespace: t.namespace, trigger: t.name };
    this.o.metrics?.timerFires.inc(labels);
    if (!t.busy) return void this.run(t);
    if (t.waiting >= MAX_WAITING) {
      this.o.metrics?.timerDropped.inc(labels);
      this.report(`timer ${t.key}: firing dropped: ${MAX_WAITING} firings already wait for ${calleeOf(t.spec)}, whose calls take longer than the schedule's interval`);
      return;
    }
    t.waiting++;
  }

  private run(t: Timer): void {
    t.busy = true;
    if (t.spec.catchUp) this.o.state?.writeState(stateKey(t), { at: Date.now() });
    const done = this.call(t).finally(() => {
      this.inFlight.delete(done);
      t.busy = false;
      if (t.stopped || t.waiting === 0) return;
      t.waiting--;
      this.run(t);
    });
    this.inFlight.add(done);
  }

  private async call(t: Timer): Promise<void> {
    const { spec } = t;
    const fn = calleeOf(spec);
    const headers: Record<string, string> = { 'x-spore-timer': t.name };
    for (const [k, v] of Object.entries(spec.headers ?? {})) headers[k.toLowerCase()] = v;
    const requestId = randomUUID();
    const t0 = performance.now();
    let result: string;
    let failed: boolean;
    try {
      const res = await this.o.router.invoke({ namespace: t.namespace, name: fn, method: spec.method, path: spec.path, headers, body: spec.body, requestId });
      failed = res.status >= 400;
      t.lastStatus = res.status;
      t.lastError = failed ? reason(res.body) : undefined;
      result = failed ? `${res.status} ${t.lastError}` : String(res.status);
    } catch (err) {
      failed = true;
      t.lastStatus = 0;
      t.lastError = (err as Error).message;
      result = `no answer: ${t.lastError}`;
    }
    const ms = Math.round(performance.now() - t0);
    // in the function's logs (spore logs), under the timer, with the call's request id
    this.o.logs.write({ time: Date.now(), namespace: t.namespace, function: fn, instance: `timer/${t.name}`, requestId, stream: failed ? 'stderr' : 'stdout', line: `timer ${t.name}: ${spec.method} ${spec.path} → ${result} in ${ms} ms` });
    if (failed) this.report(`timer ${t.key} → ${t.namespace}/${fn} failed (request ${requestId}): ${result} in ${ms} ms`);
  }

  private report(message: string): void {
    (this.o.report ?? ((m) => process.stderr.write(`spore: ${m}\n`)))(message);
  }
}

const stateKey = (t: Timer) => `timer/${t.key}`;

function keyOf(o: StoredObject): string {
  return `${o.metadata.namespace ?? 'default'}/${o.metadata.name}`;
}

/** The answer's `message` (Spore's error shape), else its first 200 characters. */
function reason(body: string): string {
  try {
    const m = (JSON.parse(body) as { message?: unknown }).message;
    if (typeof m === 'string') return m;
  } catch {
    // not JSON
  }
  const text = body.replace(/\s+/g, ' ').trim();
  return text.length > 200 ? `${text.slice(0, 200)}…` : text;
}

/**
 * A running croner job for a trigger's schedule, in its time zone (UTC unless
 * it says). `@every D` is croner's every-second pattern held `D` apart (whole
 * seconds, as Go's cron rounds it), its first run `D` after the start.
 */
export function schedule(spec: Pick<TimerTriggerSpec, 'cron' | 'timeZone'>, fire: () => void, options: { paused?: boolean } = {}): Cron {
  const timezone = spec.timeZone ?? 'UTC';
  const s = parseSchedule(spec.cron, timezone); // the rules the store applied: one parser
  const base = { timezone, paused: options.paused, catch: true, mode: '5-or-6-parts' as const };
  if (s.kind === 'every') {
    const seconds = Math.max(1, Math.floor(s.everyMs / 1000));
    return new Cron('* * * * * *', { ...base, interval: seconds, startAt: new Date(Date.now() - 1000) }, fire);
  }
  return new Cron(spec.cron.trim(), base, fire);
}
