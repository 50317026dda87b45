// QueueTriggers: each one read from the store gets a consumer on its broker
// (nats.ts: a durable JetStream consumer; kafka.ts: a consumer group), and each message becomes a call of
// the function through the router's invoke(), the same path as an HTTP call.
// What happens to a message is decided here, for every broker alike:
//   2xx        → the response goes to responseTopic (when set), the message is acknowledged;
//   otherwise  → retried (the broker redelivers it, after a backoff) up to
//                maxRetries times, then published to errorTopic (when set)
//                with the error, and acknowledged.
// A message is acknowledged only once that is done: killed in between, Spore
// gets it again (at least once).
import { randomUUID } from 'node:crypto';
import { API_VERSION, calleeOf, type QueueTriggerSpec } from '../../api/index.js';
import type { ResourceStore, StoredObject } from '../../store/index.js';
import type { LogSink } from '../logs.js';
import type { Metrics } from '../metrics.js';
import type { TriggerConditions } from './conditions.js';
import { failureOf } from './failure.js';
import type { Router } from '../router/router.js';
import { kafkaConsumer } from './kafka.js';
import { natsConsumer } from './nats.js';

export interface QueueMessage {
  data: Buffer;
  /** The message's headers, names lowercased. */
  headers: Record<string, string>;
  /** 1 on the first delivery. */
  attempt: number;
}

/** What to do with a message once handled. */
export type Outcome = { ack: true } | { ack: false; retryInMs: number };

/** A running consumer of one trigger. */
export interface TriggerConsumer {
  /** Stops taking messages; resolves once the ones in hand are settled. `forget`: the trigger is gone, its durable state on the broker too. */
  stop(forget: boolean): Promise<void>;
  /** Messages on the broker not yet delivered to this consumer; undefined while it cannot say (not connected). */
  lag?(): Promise<number | undefined>;
}

export interface ConsumerContext {
  trigger: { namespace: string; name: string };
  spec: QueueTriggerSpec;
  url: string;
  handle(message: QueueMessage, publish: (topic: string, data: Buffer, headers: Record<string, string>) => Promise<void>): Promise<Outcome>;
  state(state: QueueInfo['state'], detail?: string): void;
  report(message: string): void;
}

export interface QueueInfo {
  namespace: string;
  name: string;
  function: string;
  broker: string;
  topic: string;
  state: 'connecting' | 'consuming' | 'failed' | 'inactive';
  /** Where it consumes from (the stream), or why it does not. */
  detail?: string;
  handled: number;
  failed: number;
  /** Why the last message failed, or its response or error could not be published. */
  lastError?: string;
  /** Messages waiting on the broker (status() only, when the broker answers). */
  lag?: number;
}

export interface QueuesOptions {
  store: ResourceStore;
  router: Router;
  logs: LogSink;
  metrics?: Metrics;
  /** Where each trigger's state is written as its Active condition. */
  conditions?: TriggerConditions;
  report?: (message: string) => void;
}

interface Running {
  specText: string;
  info: QueueInfo;
  consumer?: TriggerConsumer;
  stopped: boolean;
  /** This trigger's counters (children of the metrics, labelled once). */
  count: (what: 'consumed' | 'succeeded' | 'retried' | 'deadLettered') => void;
  publishFailed: (topic: 'response' | 'error') => void;
}

/** Delay before the attempt after `attempt`: 1 s, 2 s, 4 s … at most 60 s. */
export const retryDelayMs = (attempt: number) => Math.min(1000 * 2 ** (attempt - 1), 60_000);

export class Queues {
  private readonly running = new Map<string, Running>();
  private unwatch?: () => void;
  private closing = false;

  constructor(private readonly o: QueuesOptions) {}

  async start(): Promise<void> {
    // the lag gauge asks the brokers when it is scraped
    if (this.o.metrics) this.o.metrics.consumerLag = async () => (await this.status()).map((q) => ({ namespace: q.namespace, trigger: q.name, broker: q.broker, lag: q.lag }));
    this.unwatch = this.o.store.watch((e) => {
      if (e.object.apiVersion !== API_VERSION || e.object.kind !== 'QueueTrigger') return;
      if (e.type === 'DELETED') {
        void this.remove(keyOf(e.object), true);
        this.o.conditions?.forget('QueueTrigger', e.object.metadata.namespace ?? 'default', e.object.metadata.name);
      }
      else void this.set(e.object);
    });
    for (const t of await this.o.store.list({ apiVersion: API_VERSION, kind: 'QueueTrigger' })) await this.set(t);
  }

  list(): QueueInfo[] {
    return [...this.running.entries()].sort(([a], [b]) => a.localeCompare(b)).map(([, r]) => ({ ...r.info }));
  }

  /** list() with each consumer's lag, asked of its broker (at most LAG_WAIT_MS; no answer: no figure). */
  async status(): Promise<QueueInfo[]> {
    const rs = [...this.running.entries()].sort(([a], [b]) => a.localeCompare(b)).map(([, r]) => r);
    return Promise.all(
      rs.map(async (r) => {
        const lag = await lagOf(r.consumer);
        return { ...r.info, ...(lag !== undefined ? { lag } : {}) };
      }),
    );
  }

  /** Stops every consumer; messages in hand are settled (bounded by `graceMs`), the rest stays on the broker. */
  async close(graceMs = 10_000): Promise<void> {
    this.closing = true;
    this.unwatch?.();
    let timer: NodeJS.Timeout | undefined;
    const all = Promise.all([...this.running.keys()].map((k) => this.remove(k, false)));
    await Promise.race([all, new Promise((r) => (timer = setTimeout(r, graceMs)))]);
    clearTimeout(timer);
  }

  private async set(o: StoredObject): Promise<void> {
    const key = keyOf(o);
    const spec = (o as unknown as { spec: QueueTriggerSpec }).spec;
    const specText = JSON.stringify(spec);
    if (this.running.get(key)?.specText === specText) return;
    await this.remove(key, false);
    if (this.closing) return; // closed meanwhile: no consumer (nor condition) after close
    const trigger = { namespace: o.metadata.namespace ?? 'default', name: o.metadata.name };
    const info: QueueInfo = { ...trigger, function: calleeOf(spec), broker: spec.broker.kind, topic: spec.topic, state: 'connecting', handled: 0, failed: 0 };
    const r: Running = { specText, info, stopped: false, ...this.counters(trigger.namespace, trigger.name, spec.broker.kind) };
    this.running.set(key, r);
    /** The trigger's state, in spore list and as its Active condition. */
    const setState = (state: QueueInfo['state'], detail?: string) => {
      if (r.stopped) return; // removed meanwhile (deleted, changed, closing): its condition is no longer this one's to write
      info.state = state;
      info.detail = detail;
      this.o.conditions?.state('QueueTrigger', trigger.namespace, trigger.name, state, detail);
    };
    setState('connecting');
    let url: string;
    try {
      url = await this.brokerUrl(trigger.namespace, spec);
    } catch (err) {
      if (r.stopped) return;
      setState('failed', (err as Error).message);
      this.report(`queue trigger ${key}: ${info.detail}`);
      return;
    }
    const consumer = (spec.broker.kind === 'kafka' ? kafkaConsumer : natsConsumer)({
      trigger,
      spec,
      url,
      handle: (m, publish) => this.handle(r, m, publish),
      state: (state, detail) => {
        if (r.stopped) return;
        if (state !== info.state || detail !== info.detail) {
          if (state === 'consuming') this.report(`queue trigger ${key}: consuming ${spec.topic} (${detail}) → ${trigger.namespace}/${calleeOf(spec)}`);
          else if (state === 'failed') this.report(`queue trigger ${key}: ${detail}`);
        }
        setState(state, detail);
      },
      report: (m) => this.report(`queue trigger ${key}: ${m}`),
    });
    if (r.stopped) return void consumer.stop(false);
    r.consumer = consumer;
  }

  private async remove(key: string, forget: boolean): Promise<void> {
    const r = this.running.get(key);
    if (!r) return;
    this.running.delete(key);
    r.stopped = true;
    await r.consumer?.stop(forget);
  }

  private counters(namespace: string, trigger: string, broker: string): Pick<Running, 'count' | 'publishFailed'> {
    const m = this.o.metrics;
    if (!m) return { count: () => {}, publishFailed: () => {} };
    const l = [namespace, trigger, broker];
    const c = { consumed: m.queueConsumed.labels(...l), succeeded: m.queueSucceeded.labels(...l), retried: m.queueRetried.labels(...l), deadLettered: m.queueDeadLettered.labels(...l) };
    return { count: (what) => c[what].inc(), publishFailed: (topic) => m.queuePublishFailed.inc({ namespace, trigger, broker, topic }) };
  }

  /** The broker's address: the trigger's own, or the key of a Secret in its namespace. */
  private async brokerUrl(namespace: string, spec: QueueTriggerSpec): Promise<string> {
    const c = spec.broker.connection;
    if (c.url) return c.url;
    const ref = c.secretRef!;
    const secret = (await this.o.store.get({ apiVersion: 'v1', kind: 'Secret', namespace, name: ref.name })) as { data?: Record<string, string> } | undefined;
    const value = secret?.data?.[ref.key];
    if (!value) throw new Error(`broker.connection.secretRef: ${secret ? `Secret ${namespace}/${ref.name} has no key "${ref.key}"` : `Secret ${namespace}/${ref.name} is not applied`}`);
    return Buffer.from(value, 'base64').toString().trim();
  }

  /** One message: the function's call, then what becomes of the message. */
  private async handle(r: Running, m: QueueMessage, publish: (topic: string, data: Buffer, headers: Record<string, string>) => Promise<void>): Promise<Outcome> {
    const { namespace, name } = r.info;
    const spec = JSON.parse(r.specText) as QueueTriggerSpec;
    const fn = calleeOf(spec);
    const requestId = randomUUID();
    r.count('consumed');
    const call = asCall(m, spec.contentType);
    const headers: Record<string, string> = { ...call.headers, 'x-spore-trigger': name, 'x-spore-delivery': String(m.attempt) };
    const t0 = performance.now();
    let status = 0;
    let error: string | undefined;
    let payload: Buffer = Buffer.alloc(0);
    let contentType: string | undefined;
    try {
      const res = await this.o.router.invoke({ namespace, name: fn, method: 'POST', path: '/', headers, body: call.body, requestId });
      status = res.status;
      payload = res.payload;
      contentType = typeof res.headers['content-type'] === 'string' ? res.headers['content-type'] : undefined;
      if (status < 200 || status > 299) error = failureOf(res.body, status);
    } catch (err) {
      error = (err as Error).message;
    }
    const ms = Math.round(performance.now() - t0);
    const log = (line: string, failed: boolean) =>
      this.o.logs.write({ time: Date.now(), namespace, function: fn, instance: `queue/${name}`, requestId, stream: failed ? 'stderr' : 'stdout', line: `queue ${name}: message from ${spec.topic} (delivery ${m.attempt}) → ${line} in ${ms} ms` });
    const meta = { 'x-spore-function': `${namespace}/${fn}`, 'x-spore-trigger': `${namespace}/${name}`, 'x-spore-request-id': requestId };
    // a publish the broker refuses (too large, a bad subject) is said; the message is still done with: it would fail the same way again
    const send = async (role: 'response' | 'error', topic: string, data: Buffer, headers: Record<string, string>) =>
      publish(topic, data, headers).then(
        () => `, sent to ${topic}`,
        (err: Error) => {
          r.publishFailed(role);
          r.info.lastError = `${role} NOT sent to ${topic}: ${err.message}`;
          return `, NOT sent to ${topic}: ${err.message}`;
        },
      );
    if (!error) {
      r.info.handled++;
      r.count('succeeded');
      const sent = spec.responseTopic ? await send('response', spec.responseTopic, payload, { ...(contentType ? { 'content-type': contentType } : {}), ...meta }) : '';
      log(`${status}${sent}`, sent.includes('NOT sent'));
      return { ack: true };
    }
    // stopping: the call failed because Spore is going away, not because of the message; it comes again
    if (this.closing) return { ack: false, retryInMs: 0 };
    const retries = spec.maxRetries ?? 0;
    if (m.attempt <= retries) {
      const retryInMs = retryDelayMs(m.attempt);
      log(`${status || 'no answer'} ${error}; retry ${m.attempt} of ${retries} in ${retryInMs} ms`, true);
      r.count('retried');
      return { ack: false, retryInMs };
    }
    r.info.failed++;
    r.info.lastError = error.slice(0, 500);
    r.count('deadLettered');
    // the original message, as it came, with what went wrong
    const sent = spec.errorTopic ? await send('error', spec.errorTopic, m.data, { ...m.headers, ...meta, 'x-spore-error': error.replace(/[\r\n]+/g, ' ').slice(0, 1000), 'x-spore-status': String(status), 'x-spore-attempts': String(m.attempt) }) : ', dropped (no errorTopic)';
    log(`${status || 'no answer'} ${error}; ${retries ? `failed after ${m.attempt} deliveries` : 'failed'}${sent}`, true);
    this.report(`queue trigger ${namespace}/${name} → ${namespace}/${fn}: a message failed (request ${requestId}): ${error}`);
    return { ack: true };
  }

  private report(message: string): void {
    (this.o.report ?? ((m) => process.stderr.write(`spore: ${m}\n`)))(message);
  }
}

/**
 * The call a message makes: its body and headers (a CloudEvent in binary
 * mode keeps its ce-* headers as they are; one in structured mode,
 * application/cloudevents+json, is turned into binary mode: its attributes
 * become ce-* headers and its data the body).
 */
export function asCall(m: QueueMessage, contentType: string): { headers: Record<string, string>; body: Buffer } {
  const headers: Record<string, string> = { 'content-type': contentType };
  // the broker's own headers, Spore's (x-spore-async would make the call answer 202 unseen) and the transport's are not passed
  for (const [k, v] of Object.entries(m.headers)) if (!k.startsWith('nats-') && !k.startsWith('x-spore-') && !TRANSPORT.has(k) && !/[\r\n]/.test(v)) headers[k] = v;
  if (!(m.headers['content-type'] ?? '').startsWith('application/cloudevents+json')) return { headers, body: m.data };
  let event: Record<string, unknown>;
  try {
    event = JSON.parse(m.data.toString('utf8'));
  } catch {
    return { headers, body: m.data }; // not JSON after all: passed as it came
  }
  const { data, data_base64: base64, datacontenttype, ...attributes } = event;
  for (const [k, v] of Object.entries(attributes)) if (/^[a-z0-9]{1,20}$/.test(k) && v !== null && typeof v !== 'object') headers[`ce-${k}`] = String(v);
  headers['content-type'] = typeof datacontenttype === 'string' ? datacontenttype : 'application/json';
  const body = typeof base64 === 'string' ? Buffer.from(base64, 'base64') : data === undefined ? Buffer.alloc(0) : typeof data === 'string' ? Buffer.from(data) : Buffer.from(JSON.stringify(data));
  return { headers, body };
}

/** How long a status or a scrape waits for a broker to say a consumer's lag. */
export const LAG_WAIT_MS = 2000;

async function lagOf(consumer: TriggerConsumer | undefined): Promise<number | undefined> {
  if (!consumer?.lag) return undefined;
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<undefined>((r) => (timer = setTimeout(() => r(undefined), LAG_WAIT_MS)));
  try {
    return await Promise.race([consumer.lag().catch(() => undefined), late]);
  } finally {
    clearTimeout(timer);
  }
}

const TRANSPORT = new Set(['content-length', 'transfer-encoding', 'connection', 'keep-alive', 'host', 'upgrade', 'te', 'trailer']);

function keyOf(o: StoredObject): string {
  return `${o.metadata.namespace ?? 'default'}/${o.metadata.name}`;
}
