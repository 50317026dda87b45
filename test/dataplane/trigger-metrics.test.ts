// What the triggers show of themselves: their counts in /metrics (per
// trigger) and their state in `spore list` (a queue's lag and last error).
// A real dataplane over SQLite, a real Node function, a real nats-server.
import { execFile, spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { jetstream } from '@nats-io/jetstream';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { afterEach, describe, expect, it } from 'vitest';
import type { KubeObject } from '../../api/index.js';
import { natsInstalled, startNats, type Nats } from '../nats-server.js';
import { environment, fn, harness, recordFile, waitFor, type Harness } from './harness.js';

const BIN = join(new URL('../..', import.meta.url).pathname, 'bin/spore.js');

/** Records each call's body in OUT; a body starting "fail" answers 500, "hold" waits until the file FLAG exists. */
const RECORDER = {
  'index.mjs': `import { appendFileSync, existsSync } from 'node:fs';
  export default async (req) => {
    const body = await req.text();
    appendFileSync(process.env.OUT, JSON.stringify({ body }) + '\\n');
    if (body.startsWith('fail')) return new Response('broken by ' + body, { status: 500 });
    while (body.startsWith('hold') && !existsSync(process.env.FLAG)) await new Promise((r) => setTimeout(r, 50));
    return new Response('ok');
  };`,
};

let h: Harness | undefined;
let nats: Nats | undefined;
let nc: NatsConnection | undefined;
afterEach(async () => {
  await h?.close();
  h = undefined;
  await nc?.close();
  nc = undefined;
  await nats?.stop();
  nats = undefined;
});

/** The value of one series of /metrics (0 when it is not there yet). */
async function metric(name: string, labels: Record<string, string>): Promise<number> {
  const text = (await h!.get('/metrics')).body;
  const want = Object.entries(labels).map(([k, v]) => `${k}="${v}"`);
  for (const line of text.split('\n')) {
    const m = /^(\w+)\{([^}]*)\} (\S+)$/.exec(line);
    if (m && m[1] === name && want.every((w) => m[2].split(',').includes(w))) return Number(m[3]);
  }
  return 0;
}

/** `spore list` against the dataplane (asynchronously: the dataplane answers from this process). */
const list = () => promisify(execFile)(process.execPath, [BIN, 'list', '--url', h!.url], { encoding: 'utf8' });

async function setup(triggers: KubeObject[]) {
  const rec = recordFile<{ body: string }>();
  h = await harness();
  await h.store.apply([environment('node', 'node'), ...fn('rec', RECORDER, { vars: { OUT: rec.out, FLAG: rec.flag } }), ...triggers]);
  return rec;
}

describe('timer trigger metrics', () => {
  it('counts each firing of a timer in spore_timer_fires_total, under its namespace and name', async () => {
    const rec = await setup([{ apiVersion: 'spore.dev/v1alpha1', kind: 'TimerTrigger', metadata: { name: 'tick' }, spec: { cron: '* * * * * *', method: 'POST', path: '/', body: 'tick', function: { name: 'rec' } } }]);
    await waitFor('two calls', () => rec.lines().length >= 2, 30_000);
    await h!.dp.timers.close(); // no more firings, the calls in flight done: the counts are now fixed
    const calls = rec.lines().length;
    // every call came from a firing (a firing that waited behind a call may have been dropped by the stop)
    expect(await metric('spore_timer_fires_total', { namespace: 'default', trigger: 'tick' })).toBeGreaterThanOrEqual(calls);
    expect(await metric('spore_timer_fires_dropped_total', { namespace: 'default', trigger: 'tick' })).toBe(0);
  });
});

describe.skipIf(!natsInstalled)('queue trigger metrics and state on NATS JetStream', () => {
  const queue = (name: string, spec: Record<string, unknown>): KubeObject => ({
    apiVersion: 'spore.dev/v1alpha1',
    kind: 'QueueTrigger',
    metadata: { name },
    spec: { broker: { kind: 'nats', connection: { url: nats!.url } }, function: { name: 'rec' }, contentType: 'text/plain', concurrency: 1, ...spec },
  });
  const consuming = (name: string) => waitFor(`queue trigger ${name} consuming`, () => h!.dp.queues.list().find((q) => q.name === name && q.state === 'consuming'), 30_000);

  it('counts a message consumed, retried, then dead-lettered to errorTopic, per trigger; spore list says the last error', async () => {
    nats = await startNats();
    nc = await connect({ servers: nats.url });
    const rec = await setup([queue('pay', { topic: 'pay', maxRetries: 1, errorTopic: 'pay.failed' }), queue('other', { topic: 'other' })]);
    const errors = nc.subscribe('pay.failed', { max: 1 });
    await consuming('pay');
    await jetstream(nc).publish('pay', 'fail-1');
    for await (const _ of errors) break; // on the error topic: the message is done with
    const labels = { namespace: 'default', trigger: 'pay', broker: 'nats' };
    // delivered twice (1 + maxRetries): retried once, then dead-lettered
    expect(rec.lines().map((l) => l.body)).toEqual(['fail-1', 'fail-1']);
    expect(await waitFor('dead-lettered', () => metric('spore_queue_messages_dead_lettered_total', labels))).toBe(1);
    expect(await metric('spore_queue_messages_consumed_total', labels)).toBe(2);
    expect(await metric('spore_queue_messages_retried_total', labels)).toBe(1);
    expect(await metric('spore_queue_messages_succeeded_total', labels)).toBe(0);
    // another trigger's counts are its own
    expect(await metric('spore_queue_messages_consumed_total', { namespace: 'default', trigger: 'other' })).toBe(0);

    await jetstream(nc).publish('pay', 'fine');
    expect(await waitFor('succeeded', () => metric('spore_queue_messages_succeeded_total', labels))).toBe(1);
    expect(await metric('spore_queue_messages_consumed_total', labels)).toBe(3);

    const out = await list();
    expect(out.stdout).toMatch(/^  default\/pay\s+nats pay → rec consuming \(.*\) handled=1 failed=1 lag=0 last-error=\(HTTP 500: broken by fail-1\)$/m);
  });

  it('shows the messages waiting on the broker as the consumer lag, in /metrics and spore list', async () => {
    nats = await startNats();
    nc = await connect({ servers: nats.url });
    const rec = await setup([queue('slow', { topic: 'slow' })]);
    await consuming('slow');
    const js = jetstream(nc);
    // one message in hand (concurrency 1), held; three more wait on the broker
    await js.publish('slow', 'hold');
    await waitFor('the held call', () => rec.lines().length === 1);
    for (const body of ['a', 'b', 'c']) await js.publish('slow', body);
    const labels = { namespace: 'default', trigger: 'slow', broker: 'nats' };
    expect(await waitFor('a lag of 3', async () => ((await metric('spore_queue_consumer_lag', labels)) === 3 ? 3 : null))).toBe(3);
    const out = await list();
    expect(out.stdout).toMatch(/^  default\/slow\s+nats slow → rec consuming \(stream SPORE_slow, consumer spore-default-slow\) handled=0 failed=0 lag=3$/m);

    // let go: all handled, nothing waits
    spawnSync('touch', [rec.flag]);
    await waitFor('four calls', () => rec.lines().length === 4);
    expect(await waitFor('no lag', async () => ((await metric('spore_queue_consumer_lag', labels)) === 0 ? 'none' : null))).toBe('none');
    expect(await waitFor('four succeeded', async () => ((await metric('spore_queue_messages_succeeded_total', labels)) === 4 ? 4 : null))).toBe(4);
  });
});
