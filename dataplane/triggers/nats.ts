// A QueueTrigger's consumer on NATS JetStream: a durable consumer per trigger
// (`spore-<namespace>-<trigger>`) on the stream that captures its subject, or
// on a stream Spore creates for it (`SPORE_<subject>`: file storage, messages
// kept 7 days, at most 1 GiB). Explicit acks; at most `concurrency` messages
// unacknowledged (max_ack_pending), so the server sends no more than the
// trigger handles at once. A message is acknowledged once queues.ts has
// settled it, negatively acknowledged with a delay to be retried; while it is
// being handled its ack deadline is pushed back, so a long call is not
// redelivered, and a Spore killed mid-way gets it again within ACK_WAIT_MS.
import { AckPolicy, DeliverPolicy, jetstream, jetstreamManager, RetentionPolicy, StorageType, type ConsumerMessages, type JetStreamManager, type JsMsg } from '@nats-io/jetstream';
import { connect, headers as natsHeaders, nanos, type NatsConnection } from '@nats-io/transport-node';
import type { ConsumerContext, TriggerConsumer } from './queues.js';
import { retryDelayMs } from './queues.js';

/** An unacknowledged message is redelivered after this (pushed back while it is handled). */
export const ACK_WAIT_MS = 30_000;
/** The limits of a stream Spore creates. */
export const STREAM_LIMITS = { maxAgeMs: 7 * 24 * 3600_000, maxBytes: 1024 ** 3 };

/** Names the server accepts for streams and consumers: no `.`, `*`, `>` or spaces. */
const safe = (s: string) => s.replace(/[^A-Za-z0-9_-]/g, '_');
export const consumerName = (t: { namespace: string; name: string }) => safe(`spore-${t.namespace}-${t.name}`);
export const streamName = (subject: string) => safe(`SPORE_${subject}`).slice(0, 200);

export function natsConsumer(ctx: ConsumerContext): TriggerConsumer {
  let stopped = false;
  let nc: NatsConnection | undefined;
  let messages: ConsumerMessages | undefined;
  let where: { stream: string; durable: string; jsm: JetStreamManager } | undefined;
  let wake: (() => void) | undefined;
  const inHand = new Set<Promise<void>>();
  const publish = async (topic: string, data: Buffer, headers: Record<string, string>) => {
    const h = natsHeaders();
    for (const [k, v] of Object.entries(headers)) h.set(k, v);
    nc!.publish(topic, data, { headers: h });
  };

  const settle = async (m: JsMsg) => {
    // the deadline pushed back while the function works on it
    const working = setInterval(() => m.working(), ACK_WAIT_MS / 3);
    try {
      const headers: Record<string, string> = {};
      for (const k of m.headers?.keys() ?? []) headers[k.toLowerCase()] = m.headers!.get(k);
      const outcome = await ctx.handle({ data: Buffer.from(m.data), headers, attempt: m.info.deliveryCount }, publish);
      if (outcome.ack) m.ack();
      else m.nak(outcome.retryInMs);
    } catch (err) {
      // not settled (a publish to the response or error topic failed): it comes again
      ctx.report(`a message could not be settled, it will be delivered again: ${(err as Error).message}`);
      m.nak(retryDelayMs(m.info.deliveryCount));
    } finally {
      clearInterval(working);
    }
  };

  const run = async () => {
    for (let backoff = 1000; !stopped; backoff = Math.min(backoff * 2, 30_000)) {
      try {
        if (nc?.isClosed()) nc = undefined; // given up on (say, refused credentials): a new one
        nc ??= await connect({ servers: ctx.url, name: `spore ${ctx.trigger.namespace}/${ctx.trigger.name}`, maxReconnectAttempts: -1, reconnectTimeWait: 1000 });
        const jsm = await jetstreamManager(nc);
        const { stream, made } = await streamFor(jsm, ctx.spec.topic);
        const durable = consumerName(ctx.trigger);
        const limits = { max_ack_pending: ctx.spec.concurrency ?? 1, ack_wait: nanos(ACK_WAIT_MS), filter_subject: ctx.spec.topic };
        const found = await jsm.consumers.info(stream, durable).catch(() => undefined);
        // the trigger's topic may have changed: the filter goes with the update
        if (found) await jsm.consumers.update(stream, durable, limits);
        // a new consumer takes what is published from now on (all of a stream just made for it); a durable one resumes where it was
        else await jsm.consumers.add(stream, { durable_name: durable, ack_policy: AckPolicy.Explicit, deliver_policy: made ? DeliverPolicy.All : DeliverPolicy.New, max_deliver: -1, ...limits });
        where = { stream, durable, jsm };
        if (stopped) break;
        messages = await (await jetstream(nc).consumers.get(stream, durable)).consume({ max_messages: ctx.spec.concurrency ?? 1 });
        if (stopped) {
          messages.stop(); // stopped while it was being set up
          break;
        }
        ctx.state('consuming', `stream ${stream}, consumer ${durable}`);
        backoff = 1000;
        for await (const m of messages) {
          const p = settle(m).finally(() => inHand.delete(p));
          inHand.add(p);
        }
        if (stopped) break;
        throw new Error('the consumer stopped delivering');
      } catch (err) {
        if (stopped) break;
        // said once per cause, not at every retry (which backs off up to 30 s)
        ctx.state('failed', `${(err as Error).message} (${redacted(ctx.url)}); retrying`);
        await new Promise<void>((r) => {
          wake = r;
          setTimeout(r, backoff).unref();
        });
      }
    }
  };
  const running = run();

  return {
    async lag() {
      if (!where || stopped) return undefined;
      return (await where.jsm.consumers.info(where.stream, where.durable)).num_pending;
    },
    async stop(forget) {
      stopped = true;
      wake?.();
      messages?.stop();
      await Promise.all(inHand);
      await running;
      // a deleted trigger leaves no consumer behind on the server; a stopping Spore keeps it (and its place)
      if (forget && where) await where.jsm.consumers.delete(where.stream, where.durable).catch((err: Error) => ctx.report(`cannot delete consumer ${where!.durable}: ${err.message}`));
      await nc?.drain().catch(() => nc?.close());
    },
  };
}

/** A broker address fit to print: no user or password. */
const redacted = (url: string) => url.replace(/\/\/[^@/]*@/, '//');

/** The stream capturing the subject, or one made for it. */
async function streamFor(jsm: JetStreamManager, subject: string): Promise<{ stream: string; made: boolean }> {
  const found = await jsm.streams.find(subject).catch(() => undefined);
  if (found) return { stream: found, made: false };
  const name = streamName(subject);
  try {
    await jsm.streams.add({ name, subjects: [subject], retention: RetentionPolicy.Limits, storage: StorageType.File, max_age: nanos(STREAM_LIMITS.maxAgeMs), max_bytes: STREAM_LIMITS.maxBytes });
  } catch (err) {
    throw new Error(`no stream captures subject ${subject}, and Spore could not create ${name}: ${(err as Error).message}`);
  }
  return { stream: name, made: true };
}
