// A QueueTrigger's consumer on Kafka: a consumer group per trigger
// (`spore-<namespace>-<trigger>`) subscribed to its topic; queues.ts decides
// what becomes of each message, as for NATS. Kafka has no per-message ack: a
// partition's committed offset is its place, so a message is committed only
// once settled (answered 2xx, or sent to errorTopic after maxRetries), and a
// failed one is retried in place after the backoff, its partition paused
// meanwhile (the others go on), so order within a partition is kept. At most
// one message per partition is in hand, and at most `concurrency` partitions
// at once. A Spore killed before the commit gets the message again from the
// group's committed offset.
//
// Client: kafkajs (pure JavaScript, unmaintained since 2023 but complete for
// what this needs). @confluentinc/kafka-javascript, the maintained one over
// librdkafka, fetches its prebuilt binding from GitHub at install, which a
// network with package registries only cannot reach, and building it instead
// downloads OpenSSL, zstd and curl sources, which fails the same way.
import { Kafka, logLevel, Partitioners, type Admin, type Consumer, type EachMessagePayload, type IHeaders, type KafkaConfig, type Producer } from 'kafkajs';
import type { ConsumerContext, Outcome, TriggerConsumer } from './queues.js';
import { retryDelayMs } from './queues.js';

/** A consumer silent this long loses its partitions to the others (a restarted Spore gets them back after it). */
export const SESSION_TIMEOUT_MS = 10_000;
const HEARTBEAT_MS = 3_000;

export const groupId = (t: { namespace: string; name: string }) => `spore-${t.namespace}-${t.name}`;

/**
 * The brokers, TLS and credentials a trigger's url names:
 * `kafka://host:port`, `kafka+ssl://…` (TLS), or bare `host:port`; several as
 * a comma list; `user:password@` before them for SASL/PLAIN; port 9092 when none.
 */
export function kafkaAddress(url: string): Pick<KafkaConfig, 'ssl' | 'sasl'> & { brokers: string[] } {
  const m = /^(?:([a-z][a-z0-9+.-]*):\/\/)?(?:([^@/]*)@)?([^@/]*)\/?$/i.exec(url.trim());
  const shown = url.replace(/^([a-z][a-z0-9+.-]*:\/\/)?[^@/]*@/i, '$1');
  const bad = (why: string) => new Error(`broker.connection.url "${shown}" is not a Kafka address (${why}): use kafka://host:port or host:port, several as a comma list`);
  if (!m) throw bad('a path or a stray @');
  const [, scheme, auth, hosts] = m;
  if (scheme && !['kafka', 'kafka+ssl'].includes(scheme.toLowerCase())) throw bad(`scheme ${scheme}://`);
  const brokers = hosts.split(',').map((h) => h.trim());
  for (const b of brokers) if (!/^(\[[0-9a-f:.]+\]|[a-z0-9.-]+)(:\d{1,5})?$/i.test(b)) throw bad(b ? `"${b}" is not host:port` : 'an empty host');
  const sasl = auth
    ? { mechanism: 'plain' as const, username: decodeURIComponent(auth.split(':')[0]), password: decodeURIComponent(auth.split(':').slice(1).join(':')) }
    : undefined;
  return { brokers: brokers.map((b) => (/:\d+$/.test(b) ? b : `${b}:9092`)), ssl: scheme?.toLowerCase() === 'kafka+ssl', sasl };
}

/** A Kafka message's headers as a call's: names lowercased, CloudEvents' Kafka `ce_` prefix as HTTP's `ce-`. */
export function headersOf(h: IHeaders | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(h ?? {})) {
    if (v === undefined) continue;
    const name = k.toLowerCase().replace(/^ce_/, 'ce-');
    out[name] = (Array.isArray(v) ? v : [v]).map(String).join(', ');
  }
  return out;
}

export function kafkaConsumer(ctx: ConsumerContext): TriggerConsumer {
  const group = groupId(ctx.trigger);
  const topic = ctx.spec.topic;
  let address: ReturnType<typeof kafkaAddress>;
  try {
    address = kafkaAddress(ctx.url);
  } catch (err) {
    ctx.state('failed', (err as Error).message);
    return { stop: async () => {} };
  }
  const where = address.brokers.join(',');
  const kafka = new Kafka({ clientId: `spore-${ctx.trigger.namespace}-${ctx.trigger.name}`, ...address, logLevel: logLevel.NOTHING, retry: { retries: 3 } });
  let stopped = false;
  let consumer: Consumer | undefined;
  let producer: Producer | undefined;
  let wake: (() => void) | undefined;
  /** Deliveries so far of the messages being retried (Kafka does not count them), by partition and offset. */
  const attempts = new Map<string, number>();
  /** The paused partitions' resumptions, due when their message's backoff is over. */
  const retries = new Set<NodeJS.Timeout>();
  const inHand = new Set<Promise<void>>();
  /** The offsets to commit (after the settled messages), by partition, and the commit under way. */
  const settled = new Map<number, string>();
  let committing: Promise<void> | undefined;
  // one commit at a time, of every partition's latest settled offset: the broker takes a commit in
  // about 10 ms (its coordinator lingers to batch writes), so one per message would cap a trigger at ~100 msg/s
  const flush = (c: Consumer): Promise<void> | undefined => {
    if (committing || !settled.size) return committing;
    const offsets = [...settled].map(([partition, offset]) => ({ topic, partition, offset }));
    settled.clear();
    committing = c
      .commitOffsets(offsets)
      // refused when a partition went to another member meanwhile: that one gets its messages again
      .catch((err: Error) => ctx.report(`offsets not committed (${err.message}): those messages will be delivered again`))
      .finally(() => {
        committing = undefined;
        void flush(c);
      });
    return committing;
  };

  const run = async () => {
    for (let backoff = 1000; !stopped; backoff = Math.min(backoff * 2, 30_000)) {
      let crashed: (err: Error) => void = () => {};
      const crash = new Promise<Error>((r) => (crashed = r));
      try {
        await prepare(kafka, group, topic);
        producer = kafka.producer({ createPartitioner: Partitioners.DefaultPartitioner });
        await producer.connect();
        // a short fetch wait: a paused partition's retry resumes at the next fetch, so it bounds the backoff's overshoot
        consumer = kafka.consumer({ groupId: group, sessionTimeout: SESSION_TIMEOUT_MS, heartbeatInterval: HEARTBEAT_MS, maxWaitTimeInMs: 500 });
        consumer.on(consumer.events.GROUP_JOIN, () => {
          backoff = 1000;
          ctx.state('consuming', `topic ${topic}, group ${group}`);
        });
        // kafkajs restarts by itself after a passing fault (said meanwhile); one it will not retry ends this round
        consumer.on(consumer.events.CRASH, ({ payload }) => {
          if (stopped) return;
          ctx.state('failed', `${payload.error.message} (${where})${payload.restart ? '; retrying' : ''}`);
          if (!payload.restart) crashed(payload.error);
        });
        await consumer.connect();
        // offsets are set before (prepare): a group without one for a partition (one added later) reads it from its start
        await consumer.subscribe({ topic, fromBeginning: true });
        if (stopped) break;
        const c = consumer;
        const p = producer;
        const settle = async ({ partition, message, heartbeat, pause }: EachMessagePayload) => {
          const at = `${partition}:${message.offset}`;
          const attempt = (attempts.get(at) ?? 0) + 1;
          attempts.set(at, attempt);
          // the response and the error message keep the message's key, so they keep its partition's order downstream
          const publish = async (to: string, body: Buffer, h: Record<string, string>) => {
            await p.send({ topic: to, messages: [{ key: message.key, value: body, headers: h }] });
          };
          // a long call must not cost the partition: the group hears from this member meanwhile
          let lost: Error | undefined;
          const beat = setInterval(() => heartbeat().catch((err: Error) => (lost ??= err)), HEARTBEAT_MS);
          let outcome: Outcome;
          try {
            outcome = await ctx.handle({ data: message.value ?? Buffer.alloc(0), headers: headersOf(message.headers), attempt }, publish);
          } catch (err) {
            ctx.report(`a message could not be settled, it will be tried again: ${(err as Error).message}`);
            outcome = { ack: false, retryInMs: retryDelayMs(attempt) };
          } finally {
            clearInterval(beat);
          }
          if (outcome.ack) {
            attempts.delete(at);
            settled.set(partition, (BigInt(message.offset) + 1n).toString());
            void flush(c);
            return;
          }
          if (lost) throw lost; // the group is rebalancing: kafkajs rejoins, the message comes again from the committed offset
          if (stopped) return; // left uncommitted: delivered again at the next start
          // tried again in place: the partition reads from this message again, paused until the backoff is over; the others go on
          c.seek({ topic, partition, offset: message.offset });
          const resume = pause();
          const timer = setTimeout(() => {
            retries.delete(timer);
            resume();
          }, outcome.retryInMs);
          retries.add(timer);
        };
        await c.run({
          autoCommit: false,
          partitionsConsumedConcurrently: ctx.spec.concurrency ?? 1,
          eachMessage: (m) => {
            if (stopped) return Promise.resolve(); // not taken: delivered again at the next start
            const settling = settle(m).finally(() => inHand.delete(settling));
            inHand.add(settling);
            return settling;
          },
        });
        const why = await Promise.race([crash, new Promise<undefined>((r) => (wake = () => r(undefined)))]);
        if (!why) break;
        throw why;
      } catch (err) {
        if (stopped) break;
        ctx.state('failed', `${(err as Error).message} (${where}); retrying`);
        await close();
        await new Promise<void>((r) => {
          wake = r;
          setTimeout(r, backoff).unref();
        });
      }
    }
  };

  /** An admin client kept for lag(), made on first use. */
  let admin: Promise<Admin> | undefined;
  const lag = async (): Promise<number | undefined> => {
    if (!consumer) return undefined; // not connected: cannot say
    admin ??= (async () => {
      const a = kafka.admin();
      await a.connect();
      return a;
    })();
    try {
      const a = await admin;
      const [ends, [committed]] = await Promise.all([a.fetchTopicOffsets(topic), a.fetchOffsets({ groupId: group, topics: [topic] })]);
      let n = 0n;
      for (const e of ends) {
        const c = committed.partitions.find((p) => p.partition === e.partition)?.offset;
        n += BigInt(e.high) - BigInt(c && c !== '-1' ? c : e.low);
      }
      return Number(n);
    } catch (err) {
      void admin.then((a) => a.disconnect()).catch(() => {});
      admin = undefined;
      throw err;
    }
  };

  const close = async () => {
    await consumer?.disconnect().catch(() => {});
    await producer?.disconnect().catch(() => {});
    consumer = producer = undefined;
  };
  const running = run();

  const self: TriggerConsumer & { lag(): Promise<number | undefined> } = {
    lag,
    async stop(forget) {
      stopped = true;
      wake?.();
      for (const t of retries) clearTimeout(t);
      // waits for the messages in hand: a settled one is committed, the others are left for the next start
      await Promise.all(inHand);
      for (const c = consumer; c && (committing || settled.size); ) await flush(c);
      await close();
      await running;
      await close(); // one set up while it was stopping
      await admin?.then((a) => a.disconnect()).catch(() => {});
      // a deleted trigger leaves no group behind; a stopping Spore keeps it (and its offsets)
      if (forget) {
        const a = kafka.admin();
        await a
          .connect()
          .then(() => a.deleteGroups([group]))
          .catch((err: Error) => ctx.report(`cannot delete consumer group ${group}: ${err.message}`))
          .finally(() => a.disconnect());
      }
    },
  };
  return self;
}

/**
 * The topic, made when missing (the broker's default partitions and
 * replication), and the group's place in each partition that has none yet:
 * the end of a topic that was there (a new trigger takes what is produced from
 * then on), the start of one just made. Kept as committed offsets, so a Spore
 * killed before its first commit does not skip what came meanwhile.
 */
async function prepare(kafka: Kafka, group: string, topic: string): Promise<void> {
  const admin: Admin = kafka.admin();
  await admin.connect();
  try {
    let made = false;
    if (!(await admin.listTopics()).includes(topic)) {
      try {
        made = await admin.createTopics({ topics: [{ topic }], waitForLeaders: true });
      } catch (err) {
        const e = err as Error & { errors?: { message: string }[] };
        throw new Error(`topic ${topic} does not exist, and Spore could not create it: ${e.errors?.[0]?.message ?? e.message}`);
      }
    }
    const [committed] = await admin.fetchOffsets({ groupId: group, topics: [topic] });
    const unset = new Set(committed.partitions.filter((p) => p.offset === '-1').map((p) => p.partition));
    if (!unset.size) return;
    const ends = await admin.fetchTopicOffsets(topic);
    const partitions = ends.filter((p) => unset.has(p.partition)).map((p) => ({ partition: p.partition, offset: made ? p.low : p.high }));
    // refused while the group has members (another Spore consuming): they keep their places
    await admin.setOffsets({ groupId: group, topic, partitions }).catch(() => {});
  } finally {
    await admin.disconnect();
  }
}
