// Kafka queue trigger vs HTTP: what a message costs against a call. spore up's
// dataplane (startDataplane over SQLite) in a process of its own, a tiny Node
// function, a real single-node Kafka broker (KRaft, the jars test/kafka-jars.sh
// fetches from Maven Central; Java 17).
//   BENCH_KAFKA_MESSAGES messages produced to a topic of BENCH_KAFKA_PARTITIONS
//   partitions and handled by a QueueTrigger (concurrency = the partitions: one
//   message in hand per partition) vs as many POSTs through the router's route
//   to the same function (as many keep-alive connections), in turn,
//   BENCH_ROUNDS rounds; msg/s ÷ req/s per round. A message counts once its
//   offset is committed (Spore commits only a settled message).
// `npm run bench -- kafka` (or `node bench/kafka.mjs`) runs it alone.
import { execFileSync, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { request } from 'undici';
import { API, NODE_ENV, ROOT, SINK, dataplane, fmt, freePort, nodeFunction, queueVsHttp, scope, startProcess, waitFor } from './util.mjs';

const MESSAGES = Number(process.env.BENCH_KAFKA_MESSAGES ?? 2000);
const PARTITIONS = Number(process.env.BENCH_KAFKA_PARTITIONS ?? 8);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);

/** The broker, formatted and started in `dir`; resolves to host:port once it serves. */
async function broker(s, dir) {
  const jars = execFileSync('bash', [join(ROOT, 'test/kafka-jars.sh')], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] }).trim();
  const [port, controller] = [await freePort(), await freePort()];
  mkdirSync(dir);
  const config = join(dir, 'server.properties');
  const props = {
    'process.roles': 'broker,controller',
    'node.id': 1,
    'controller.quorum.voters': `1@127.0.0.1:${controller}`,
    listeners: `PLAINTEXT://127.0.0.1:${port},CONTROLLER://127.0.0.1:${controller}`,
    'controller.listener.names': 'CONTROLLER',
    'listener.security.protocol.map': 'PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT',
    'log.dirs': join(dir, 'data'),
    'offsets.topic.replication.factor': 1,
    'offsets.topic.num.partitions': 1,
    'group.initial.rebalance.delay.ms': 0,
  };
  writeFileSync(config, Object.entries(props).map(([k, v]) => `${k}=${v}\n`).join(''));
  const cp = ['-Xmx512m', '-cp', join(jars, '*')];
  execFileSync('java', [...cp, 'kafka.tools.StorageTool', 'format', '-t', randomBytes(16).toString('base64url'), '-c', config], { stdio: 'pipe' });
  await startProcess(s, 'java', [...cp, 'kafka.Kafka', config], /Kafka Server started/).matched;
  return `127.0.0.1:${port}`;
}

async function measure(s, dir) {
  const missing = ['java', 'mvn'].filter((c) => spawnSync(c, [c === 'java' ? '-version' : '-v'], { stdio: 'ignore' }).status !== 0);
  if (missing.length) return { skipped: `${missing.join(' and ')} not installed (Java 17 and Maven run the Kafka broker)` };
  const brokers = await broker(s, join(dir, 'kafka'));
  const { Kafka, logLevel, Partitioners } = await import('kafkajs');
  const kafka = new Kafka({ brokers: [brokers], logLevel: logLevel.NOTHING });
  const admin = kafka.admin();
  await admin.connect();
  s.defer(() => admin.disconnect());
  await admin.createTopics({ topics: [{ topic: 'bench-in', numPartitions: PARTITIONS }] });
  const producer = kafka.producer({ createPartitioner: Partitioners.DefaultPartitioner });
  await producer.connect();
  s.defer(() => producer.disconnect());

  const objects = [
    NODE_ENV,
    ...(await nodeFunction('sink', SINK)),
    { apiVersion: API, kind: 'HttpTrigger', metadata: { name: 'sink', namespace: 'default' }, spec: { methods: ['POST'], path: '/sink', function: { name: 'sink' } } },
    { apiVersion: API, kind: 'QueueTrigger', metadata: { name: 'bench', namespace: 'default' }, spec: { broker: { kind: 'kafka', connection: { url: `kafka://${brokers}` } }, topic: 'bench-in', function: { name: 'sink' }, contentType: 'text/plain', concurrency: PARTITIONS, maxRetries: 0 } },
  ];
  const dp = await dataplane(s, join(dir, 'dataplane'), objects);
  await waitFor('the queue trigger consuming', async () => (await (await request(`${dp.url}/_spore/status`)).body.json()).queues?.some((q) => q.state === 'consuming'), 60_000);

  /** The trigger's committed offsets, summed over the partitions: the messages it is done with. */
  const handled = async () => (await admin.fetchOffsets({ groupId: 'spore-default-bench', topics: ['bench-in'] }))[0].partitions.reduce((n, p) => n + Math.max(0, Number(p.offset)), 0);
  /** Produces `count` messages, acknowledged by the broker, 500 a request, round-robin over the partitions. */
  const send = async (count) => {
    for (let i = 0; i < count; i += 500) await producer.send({ topic: 'bench-in', messages: Array.from({ length: Math.min(500, count - i) }, (_, k) => ({ value: 'message', partition: (i + k) % PARTITIONS })) });
  };
  return queueVsHttp({ route: `${dp.url}/sink`, send, handled, messages: MESSAGES, connections: PARTITIONS, rounds: ROUNDS, pollMs: 20 });
}

export async function kafkaQueue() {
  const s = scope();
  try {
    const dir = mkdtempSync(join(tmpdir(), 'spore-bench-kafka-'));
    s.defer(async () => rmSync(dir, { recursive: true, force: true }));
    const result = await measure(s, dir);
    return { ...result, failed: Boolean(result.skipped) };
  } finally {
    await s.close();
  }
}

export function report(r) {
  if (r.skipped) return `Kafka queue trigger vs HTTP: not measured: ${r.skipped}`;
  return [
    `Kafka queue trigger vs HTTP: ${MESSAGES} messages produced to a ${PARTITIONS}-partition topic (a KRaft broker), handled by a QueueTrigger (concurrency ${PARTITIONS}) calling a Node function,`,
    `vs ${MESSAGES} POSTs through the router's route to the same function (${PARTITIONS} keep-alive connections), in turn, ${ROUNDS} rounds (median):`,
    `  queue trigger ${fmt(r.queue, 0)} msg/s, HTTP ${fmt(r.http, 0)} req/s: ${fmt(r.ratio)}× HTTP (rounds ${r.ratios.map((x) => fmt(x)).join(', ')})`,
  ].join('\n');
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const r = await kafkaQueue().catch((err) => ({ error: err }));
  console.log(r.error ? `kafka: FAILED: ${r.error.stack ?? r.error.message}` : report(r));
  process.exit(r.error || r.failed ? 1 : 0);
}
