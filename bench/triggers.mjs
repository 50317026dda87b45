// Triggers: what a message costs against an HTTP call, and how close to its
// schedule a timer fires. spore up's dataplane (startDataplane over SQLite) in
// a process of its own, a tiny Node function, a real nats-server.
//   queue: BENCH_MESSAGES messages published to JetStream and handled by a
//          QueueTrigger (concurrency BENCH_TRIGGER_CONCURRENCY) vs as many
//          POSTs through the router's route to the same function (as many
//          keep-alive connections), in turn, BENCH_ROUNDS rounds; msg/s ÷ req/s per round.
//   timer: a TimerTrigger firing every second for BENCH_TIMER_SECONDS; each
//          call's arrival at the function minus the second it was due.
// BENCH_ONLY=queue|timer runs one part.
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { request } from 'undici';
import { API, NODE_ENV, SINK, dataplane, fmt, freePort, nodeFunction, percentile, queueVsHttp, scope, startProcess, waitFor } from './util.mjs';

const MESSAGES = Number(process.env.BENCH_MESSAGES ?? 3000);
const CONCURRENCY = Number(process.env.BENCH_TRIGGER_CONCURRENCY ?? 32);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const TIMER_SECONDS = Number(process.env.BENCH_TIMER_SECONDS ?? 12);
const ONLY = process.env.BENCH_ONLY;

// clock notes when each call arrives
const CLOCK = `import { appendFileSync } from 'node:fs';
export default async () => { appendFileSync(process.env.OUT, Date.now() + '\\n'); return new Response('ok'); };\n`;

/** The series of /metrics with these labels, summed (0 before it exists). */
async function metric(url, name, labels) {
  const text = await (await request(`${url}/metrics`)).body.text();
  const want = Object.entries(labels).map(([k, v]) => `${k}="${v}"`);
  let sum = 0;
  for (const line of text.split('\n')) {
    const m = /^(\w+)\{([^}]*)\} (\S+)$/.exec(line);
    if (m && m[1] === name && want.every((w) => m[2].split(',').includes(w))) sum += Number(m[3]);
  }
  return sum;
}

async function queue(s, dir) {
  if (spawnSync('nats-server', ['--version'], { stdio: 'ignore' }).status !== 0) return { skipped: 'nats-server is not installed (apt-get install nats-server)' };
  const port = await freePort();
  const nats = startProcess(s, 'nats-server', ['-js', '-a', '127.0.0.1', '-p', String(port), '-sd', join(dir, 'nats')], /Server is ready/);
  await nats.matched;
  const natsUrl = `nats://127.0.0.1:${port}`;
  const objects = [
    NODE_ENV,
    ...(await nodeFunction('sink', SINK)),
    { apiVersion: API, kind: 'HttpTrigger', metadata: { name: 'sink', namespace: 'default' }, spec: { methods: ['POST'], path: '/sink', function: { name: 'sink' } } },
    { apiVersion: API, kind: 'QueueTrigger', metadata: { name: 'bench', namespace: 'default' }, spec: { broker: { kind: 'nats', connection: { url: natsUrl } }, topic: 'bench.in', function: { name: 'sink' }, contentType: 'text/plain', concurrency: CONCURRENCY, maxRetries: 0 } },
  ];
  const dp = await dataplane(s, join(dir, 'queue'), objects);
  const { connect } = await import('@nats-io/transport-node');
  const { jetstream } = await import('@nats-io/jetstream');
  const nc = await connect({ servers: natsUrl });
  s.defer(() => nc.close());
  const js = jetstream(nc);
  const labels = { namespace: 'default', trigger: 'bench' };
  await waitFor('the queue trigger consuming', async () => (await (await request(`${dp.url}/_spore/status`)).body.json()).queues?.some((q) => q.state === 'consuming'), 30_000);

  const handled = () => metric(dp.url, 'spore_queue_messages_succeeded_total', labels);
  /** Publishes `count` messages, acknowledged by the stream, 256 at a time. */
  const send = async (count) => {
    for (let i = 0; i < count; i += 256) await Promise.all(Array.from({ length: Math.min(256, count - i) }, () => js.publish('bench.in', 'message')));
  };
  const r = await queueVsHttp({ route: `${dp.url}/sink`, send, handled, messages: MESSAGES, connections: CONCURRENCY, rounds: ROUNDS });
  return { ...r, lag: await metric(dp.url, 'spore_queue_consumer_lag', labels) };
}

export async function triggers() {
  const s = scope();
  try {
    const dir = mkdtempSync(join(tmpdir(), 'spore-bench-triggers-'));
    s.defer(async () => rmSync(dir, { recursive: true, force: true }));
    const result = {};
    // a part that fails is said; the other still runs
    const part = (run) => run(s, dir).catch((err) => ({ error: err.stack ?? err.message }));
    if (!ONLY || ONLY === 'queue') result.queue = await part(queue);
    if (!ONLY || ONLY === 'timer') result.timer = await part(jitter);
    result.failed = Boolean(result.queue?.skipped || result.queue?.error || result.timer?.error);
    return result;
  } finally {
    await s.close();
  }
}

/** Timer firing every second for TIMER_SECONDS: arrival − due, per call, in ms. */
async function jitter(s, dir) {
  // instances run as users of their own: a folder and file they may write
  const shared = mkdtempSync(join(tmpdir(), 'spore-bench-clock-'));
  s.defer(async () => rmSync(shared, { recursive: true, force: true }));
  chmodSync(shared, 0o777);
  const out = join(shared, 'arrivals');
  writeFileSync(out, '', { mode: 0o666 });
  chmodSync(out, 0o666);
  const objects = [
    NODE_ENV,
    ...(await nodeFunction('clock', CLOCK, { OUT: out })),
    { apiVersion: API, kind: 'TimerTrigger', metadata: { name: 'every-second', namespace: 'default' }, spec: { cron: '* * * * * *', method: 'POST', path: '/', function: { name: 'clock' } } },
  ];
  const dp = await dataplane(s, join(dir, 'timer'), objects);
  const arrivals = () => readFileSync(out, 'utf8').trim().split('\n').filter(Boolean).map(Number);
  // the first call is a cold start, and firings due meanwhile wait for it: the figures start 3 calls later
  await waitFor('the first firing', () => arrivals().length >= 1, 30_000).catch((err) => {
    throw new Error(`${err.message}; the dataplane said:\n${dp.output()}`);
  });
  await new Promise((r) => setTimeout(r, (TIMER_SECONDS + 3) * 1000));
  const all = arrivals().slice(3);
  const fires = await metric(dp.url, 'spore_timer_fires_total', { namespace: 'default', trigger: 'every-second' });
  // due: the whole second each call was fired for. The calls come in order, one per firing, so
  // the last one's second (its arrival, floored: the firings have long caught up) fixes the others'
  const last = Math.floor(all[all.length - 1] / 1000) * 1000;
  const late = all.map((t, i) => t - (last - (all.length - 1 - i) * 1000));
  return { calls: all.length, fires, p50: percentile(late, 50), p99: percentile(late, 99), max: Math.max(...late), min: Math.min(...late) };
}

export function report(r) {
  const lines = [];
  if (r.queue?.skipped) lines.push(`queue trigger vs HTTP: not measured: ${r.queue.skipped}`);
  else if (r.queue?.error) lines.push(`queue trigger vs HTTP: FAILED: ${r.queue.error}`);
  else if (r.queue) {
    const q = r.queue;
    lines.push(
      `queue trigger vs HTTP: ${MESSAGES} messages published to JetStream (nats-server), handled by a QueueTrigger (concurrency ${CONCURRENCY}) calling a Node function,`,
      `vs ${MESSAGES} POSTs through the router's route to the same function (${CONCURRENCY} keep-alive connections), in turn, ${ROUNDS} rounds (median):`,
      `  queue trigger ${fmt(q.queue, 0)} msg/s, HTTP ${fmt(q.http, 0)} req/s: ${fmt(q.ratio)}× HTTP (rounds ${q.ratios.map((x) => fmt(x)).join(', ')}); consumer lag after: ${q.lag}`,
    );
  }
  if (r.timer?.error) lines.push(`timer jitter: FAILED: ${r.timer.error}`);
  else if (r.timer) {
    const t = r.timer;
    lines.push(`timer jitter: a TimerTrigger "* * * * * *" for ${TIMER_SECONDS} s (${t.calls} warm calls, ${t.fires} firings counted), arrival at the function − the second it was due:`, `  p50 ${fmt(t.p50, 0)} ms, p99 ${fmt(t.p99, 0)} ms (min ${t.min}, max ${t.max})`);
  }
  return lines.join('\n');
}
