// QueueTriggers on Kafka: a real single-node broker (KRaft), a real dataplane
// over SQLite, a real Node function recording each call in a file.
import { Kafka, logLevel, Partitioners, type Admin, type KafkaMessage, type Producer } from 'kafkajs';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { KubeObject } from '../../api/index.js';
import { groupId, kafkaAddress } from '../../dataplane/triggers/kafka.js';
import { freePort, tempDir } from '../helpers.js';
import { kafkaRunnable, startKafka, type KafkaBroker } from '../kafka-broker.js';
import { dataplaneProcess, environment, fn, harness, waitFor, type Harness } from './harness.js';
import { outFile, queueTrigger, RECORDER } from './queue-recorder.js';

const queue = (name: string, url: string, spec: Record<string, unknown>) => queueTrigger('kafka', name, url, spec);

describe('a Kafka trigger\'s broker address', () => {
  it('reads kafka://, kafka+ssl://, bare host:port lists and user:password@, and says what is wrong with anything else (no password shown)', () => {
    expect(kafkaAddress('kafka://k1:9093,k2')).toEqual({ brokers: ['k1:9093', 'k2:9092'], ssl: false, sasl: undefined });
    expect(kafkaAddress(' 127.0.0.1:19092 ')).toEqual({ brokers: ['127.0.0.1:19092'], ssl: false, sasl: undefined });
    expect(kafkaAddress('kafka+ssl://app:p%40ss@[::1]:9093')).toEqual({ brokers: ['[::1]:9093'], ssl: true, sasl: { mechanism: 'plain', username: 'app', password: 'p@ss' } });
    expect(() => kafkaAddress('nats://app:secret@q:4222')).toThrow('broker.connection.url "nats://q:4222" is not a Kafka address (scheme nats://): use kafka://host:port or host:port, several as a comma list');
    expect(() => kafkaAddress('kafka://k1:9092,,k2')).toThrow('(an empty host)');
    expect(() => kafkaAddress('kafka://k1:port')).toThrow('("k1:port" is not host:port)');
    expect(() => kafkaAddress('kafka://k1:9092/topic')).toThrow('(a path or a stray @)');
  });
});

describe.skipIf(!kafkaRunnable)('queue triggers on Kafka', () => {
  let kafka: KafkaBroker;
  let client: Kafka;
  let admin: Admin;
  let producer: Producer;
  let h: Harness | undefined;
  const stops: (() => Promise<unknown> | unknown)[] = [];
  // one broker for the suite (a start takes seconds); each test its own topics and triggers
  beforeAll(async () => {
    kafka = await startKafka();
    client = new Kafka({ brokers: [kafka.brokers], logLevel: logLevel.NOTHING });
    admin = client.admin();
    await admin.connect();
    producer = client.producer({ createPartitioner: Partitioners.DefaultPartitioner });
    await producer.connect();
  }, 180_000);
  afterAll(async () => {
    await producer?.disconnect();
    await admin?.disconnect();
    await kafka?.stop();
  });
  afterEach(async () => {
    await h?.close();
    h = undefined;
    for (const s of stops.splice(0)) await s();
  });

  async function setup(triggers: KubeObject[], vars: Record<string, string> = {}) {
    const rec = outFile();
    h = await harness();
    await h.store.apply([environment('node', 'node'), ...fn('rec', RECORDER, { vars: { OUT: rec.out, ...vars } }), ...triggers]);
    return { rec, consuming: (name: string) => waitFor(`queue trigger ${name} consuming`, () => h!.dp.queues.list().find((q) => q.name === name && q.state === 'consuming'), 60_000) };
  }

  /** What arrives on a topic from its start, as it comes. */
  async function collect(topic: string): Promise<KafkaMessage[]> {
    const got: KafkaMessage[] = [];
    await admin.createTopics({ topics: [{ topic }] }); // false when Spore made it already
    const c = client.consumer({ groupId: `test-${topic}-${Date.now()}` });
    await c.connect();
    await c.subscribe({ topic, fromBeginning: true });
    await c.run({ eachMessage: async ({ message }) => void got.push(message) });
    stops.push(() => c.disconnect());
    return got;
  }

  /** The group's committed offset of partition 0 of `topic`. */
  const committed = async (trigger: string, topic: string) => (await admin.fetchOffsets({ groupId: groupId({ namespace: 'default', name: trigger }), topics: [topic] }))[0].partitions.find((p) => p.partition === 0)!.offset;

  it('calls the function with each message (body, headers, a CloudEvent in binary mode), sends the answer to responseTopic, and commits its offset', async () => {
    const { rec, consuming } = await setup([queue('orders', kafka.brokers, { topic: 'orders', responseTopic: 'orders-done' })]);
    const q = await consuming('orders');
    expect(q.detail).toBe('topic orders, group spore-default-orders');
    // no topic "orders" was there: Spore made it
    expect(await admin.listTopics()).toContain('orders');
    await producer.send({ topic: 'orders', messages: [{ key: 'k1', value: 'one', headers: { 'X-Custom': 'yes' } }] });
    // CloudEvents' Kafka binding: binary mode, attributes as ce_ headers
    await producer.send({ topic: 'orders', messages: [{ key: 'k2', value: 'two', headers: { ce_specversion: '1.0', ce_id: 'e1', ce_source: '/shop', ce_type: 'order.placed' } }] });
    const answers = await collect('orders-done');
    await waitFor('two answers', () => (answers.length >= 2 ? answers : null), 60_000);
    expect(answers.map((m) => JSON.parse(String(m.value)))).toEqual([
      { got: 'one', custom: 'yes', ce: null },
      { got: 'two', custom: null, ce: 'order.placed' },
    ]);
    expect(answers.map((m) => String(m.key))).toEqual(['k1', 'k2']);
    expect(String(answers[0].headers!['x-spore-function'])).toBe('default/rec');
    const [first, second] = rec.starts();
    expect(first).toMatchObject({ body: 'one', delivery: '1', trigger: 'orders', type: 'text/plain', custom: 'yes' });
    expect(second).toMatchObject({ body: 'two', ce: 'order.placed' });
    expect(first.id).toMatch(/^[0-9a-f-]{36}$/);
    // both committed: the group's place is after them
    expect(await waitFor('the commit', async () => ((await committed('orders', 'orders')) === '2' ? true : null), 10_000)).toBe(true);
    const logged = await waitFor('the log line', () => h!.store.queryLogs({ function: 'rec' }).find((e) => e.instance === 'queue/orders' && e.requestId === first.id));
    expect(logged.line).toMatch(/queue orders: message from orders \(delivery 1\) → 200, sent to orders-done/);
  });

  it('retries a failing call maxRetries times with a backoff, then sends the original message to errorTopic with the error, and commits it', async () => {
    const { rec, consuming } = await setup([queue('pay', kafka.brokers, { topic: 'pay', maxRetries: 2, errorTopic: 'pay-failed' })]);
    await consuming('pay');
    await producer.send({ topic: 'pay', messages: [{ key: 'p1', value: 'fail-1', headers: { 'x-custom': 'kept' } }] });
    const errors = await collect('pay-failed');
    const [e] = await waitFor('the error message', () => (errors.length ? errors : null), 60_000);
    expect(String(e.value)).toBe('fail-1');
    expect(String(e.key)).toBe('p1');
    expect(String(e.headers!['x-custom'])).toBe('kept');
    expect(String(e.headers!['x-spore-error'])).toContain('broken by fail-1');
    expect(String(e.headers!['x-spore-status'])).toBe('500');
    expect(String(e.headers!['x-spore-attempts'])).toBe('3');
    const tries = rec.starts();
    expect(tries.map((t) => t.delivery)).toEqual(['1', '2', '3']);
    expect(tries[1].at - tries[0].at).toBeGreaterThanOrEqual(900);
    expect(tries[2].at - tries[1].at).toBeGreaterThanOrEqual(1900);
    expect(await waitFor('the commit', async () => ((await committed('pay', 'pay')) === '1' ? true : null), 10_000)).toBe(true);
    await new Promise((r) => setTimeout(r, 2500));
    expect(rec.starts()).toHaveLength(3);
    expect(h!.dp.queues.list().find((q) => q.name === 'pay')).toMatchObject({ handled: 0, failed: 1 });
  });

  it('keeps each partition in order across a retry: the message being retried holds its partition, the other partition goes on', async () => {
    // the operator's topic, two partitions: Spore consumes what is produced from then on
    await admin.createTopics({ topics: [{ topic: 'steps', numPartitions: 2 }] });
    await producer.send({ topic: 'steps', messages: [{ value: 'before', partition: 0 }] });
    const { rec, consuming } = await setup([queue('steps', kafka.brokers, { topic: 'steps', maxRetries: 3, concurrency: 2 })]);
    await consuming('steps');
    await producer.send({ topic: 'steps', messages: ['flaky-a1', 'a2', 'a3'].map((value) => ({ value, partition: 0 })) });
    await producer.send({ topic: 'steps', messages: ['b1', 'b2', 'b3'].map((value) => ({ value, partition: 1 })) });
    await waitFor('six calls done', () => (rec.ends().length === 6 ? true : null), 60_000);
    const ends = rec.ends().map((l) => l.body);
    expect(ends.filter((b) => b.includes('a'))).toEqual(['flaky-a1', 'a2', 'a3']);
    expect(ends.filter((b) => b.startsWith('b'))).toEqual(['b1', 'b2', 'b3']);
    const starts = rec.starts();
    expect(starts.filter((l) => l.body === 'flaky-a1').map((l) => l.delivery)).toEqual(['1', '2']);
    // a2 waited for flaky-a1's retry; partition 1 did not
    const a1Done = rec.ends().find((l) => l.body === 'flaky-a1')!.at;
    expect(starts.find((l) => l.body === 'a2')!.at).toBeGreaterThanOrEqual(a1Done);
    expect(rec.ends().find((l) => l.body === 'b3')!.at).toBeLessThan(a1Done);
    expect(starts.some((l) => l.body === 'before')).toBe(false);
  });

  it('leaves a message waiting for its retry uncommitted when Spore stops: the next start delivers it again', async () => {
    const { rec, consuming } = await setup([queue('later', kafka.brokers, { topic: 'later', maxRetries: 5 })]);
    await consuming('later');
    await producer.send({ topic: 'later', messages: [{ value: 'fail-then-stop' }] });
    await waitFor('the first delivery', () => (rec.starts().length ? true : null), 60_000);
    const dir = h!.dir;
    await h!.close();
    h = undefined;
    const seen = rec.starts().length;
    expect(await committed('later', 'later')).toBe('0');
    h = await harness({ stateDir: dir });
    await waitFor('delivered again after the restart', () => (rec.starts().length > seen ? true : null), 60_000);
    expect(rec.starts().every((l) => l.body === 'fail-then-stop')).toBe(true);
  });

  it('says when its broker cannot be reached or its url is no Kafka address (never printing the password), keeps serving, and consumes once the broker is there', async () => {
    const port = await freePort();
    const rec = outFile();
    h = await harness();
    await h.apply([
      environment('node', 'node'),
      ...fn('rec', RECORDER, { vars: { OUT: rec.out }, route: '/rec' }),
      queue('late', `kafka://127.0.0.1:${port}`, { topic: 'late' }),
      queue('bad', 'http://user:s3cret@127.0.0.1:9092/', { topic: 'bad' }),
    ]);
    const bad = await waitFor('the bad url said', () => h!.dp.queues.list().find((q) => q.name === 'bad' && q.state === 'failed'), 10_000);
    expect(bad.detail).toMatch(/broker\.connection\.url "http:\/\/127\.0\.0\.1:9092\/" is not a Kafka address \(scheme http:\/\/\): use kafka:\/\/host:port/);
    const failed = await waitFor('the trigger failing', () => h!.dp.queues.list().find((q) => q.name === 'late' && q.state === 'failed'), 60_000);
    expect(failed.detail).toContain(`127.0.0.1:${port}`);
    expect(h.reports.join('\n')).toContain('queue trigger default/late');
    expect(h.reports.join('\n')).not.toContain('s3cret');
    expect((await h.get('/rec', { method: 'POST', body: 'still serving' })).status).toBe(200);
    const late = await startKafka(port);
    stops.push(() => late.stop());
    await waitFor('consuming', () => h!.dp.queues.list().find((q) => q.name === 'late' && q.state === 'consuming'), 90_000);
    const p = new Kafka({ brokers: [late.brokers], logLevel: logLevel.NOTHING }).producer({ createPartitioner: Partitioners.DefaultPartitioner });
    await p.connect();
    await p.send({ topic: 'late', messages: [{ value: 'finally' }] });
    await p.disconnect();
    await waitFor('the call', () => rec.starts().find((l) => l.body === 'finally'), 60_000);
  }, 240_000);

  it('loses no message when Spore is killed (SIGKILL) while handling one: after a restart each is processed, none lost', async () => {
    const rec = outFile();
    const dp = dataplaneProcess(tempDir('spore-kafka-kill-'));
    stops.push(() => dp.kill());
    const objects = [environment('node', 'node'), ...fn('rec', RECORDER, { vars: { OUT: rec.out, SLOW: '4000' } }), queue('jobs', kafka.brokers, { topic: 'jobs' })];
    const first = dp.start(objects);
    await first.consuming('jobs', 90_000);
    const bodies = ['job-1', 'slow-job-2', 'job-3', 'job-4', 'job-5'];
    await producer.send({ topic: 'jobs', messages: bodies.map((value) => ({ value })) });
    await waitFor('the slow call started', () => rec.starts().find((l) => l.body === 'slow-job-2'), 60_000);
    await first.kill(); // mid-call: its offset not committed
    expect(rec.ends().map((l) => l.body)).toEqual(['job-1']);
    const second = dp.start();
    await second.consuming('jobs', 90_000);
    // the group's committed offset is after job-1: slow-job-2 comes again, then the rest
    await waitFor('every message done', () => (bodies.every((b) => rec.ends().some((l) => l.body === b)) ? true : null), 90_000);
    expect(rec.ends().map((l) => l.body)).toEqual(bodies);
    expect(rec.starts().filter((l) => l.body === 'slow-job-2')).toHaveLength(2);
    expect(await waitFor('the commit', async () => ((await committed('jobs', 'jobs')) === '5' ? true : null), 10_000)).toBe(true);
    second.child.kill('SIGTERM');
  }, 240_000);
});
