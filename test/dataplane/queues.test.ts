// QueueTriggers on NATS JetStream: a real nats-server, a real dataplane over
// SQLite, a real Node function recording each call in a file.
import { jetstream, jetstreamManager, type JetStreamManager } from '@nats-io/jetstream';
import { connect, headers as natsHeaders, type NatsConnection } from '@nats-io/transport-node';
import { afterEach, describe, expect, it } from 'vitest';
import type { KubeObject } from '../../api/index.js';
import { consumerName } from '../../dataplane/triggers/nats.js';
import { freePort, tempDir } from '../helpers.js';
import { collect, natsInstalled, startNats, type Nats } from '../nats-server.js';
import { dataplaneProcess, environment, fn, harness, waitFor, type Harness } from './harness.js';
import { outFile, queueTrigger, RECORDER } from './queue-recorder.js';

const queue = (name: string, url: string, spec: Record<string, unknown>) => queueTrigger('nats', name, url, spec);

describe.skipIf(!natsInstalled)('queue triggers on NATS JetStream', () => {
  let h: Harness | undefined;
  let nats: Nats | undefined;
  let nc: NatsConnection | undefined;
  const stops: (() => Promise<unknown> | unknown)[] = [];
  afterEach(async () => {
    await h?.close();
    h = undefined;
    await nc?.close();
    nc = undefined;
    for (const s of stops.splice(0)) await s();
    await nats?.stop();
    nats = undefined;
  });

  async function setup(triggers: (url: string) => KubeObject[], vars: Record<string, string> = {}) {
    nats = await startNats();
    nc = await connect({ servers: nats.url });
    const rec = outFile();
    h = await harness();
    await h.store.apply([environment('node', 'node'), ...fn('rec', RECORDER, { vars: { OUT: rec.out, ...vars } }), ...triggers(nats.url)]);
    const jsm = await jetstreamManager(nc);
    return { rec, jsm, js: jetstream(nc), consuming: (name: string) => waitFor(`queue trigger ${name} consuming`, () => h!.dp.queues.list().find((q) => q.name === name && q.state === 'consuming'), 30_000) };
  }

  const pending = async (jsm: JetStreamManager, stream: string, trigger: string) => {
    const info = await jsm.consumers.info(stream, consumerName({ namespace: 'default', name: trigger }));
    return { unacked: info.num_ack_pending, waiting: info.num_pending, redelivered: info.num_redelivered };
  };

  it('calls the function with each message (body, headers, a CloudEvent in binary mode), publishes the answer to responseTopic, and acknowledges it', async () => {
    const { rec, jsm, js, consuming } = await setup((url) => [queue('orders', url, { topic: 'orders.new', responseTopic: 'orders.done' })]);
    const answers = collect(nc!, 'orders.done');
    await consuming('orders');
    // no stream captured orders.new: Spore made one, named after the subject
    expect((await jsm.streams.info('SPORE_orders_new')).config.subjects).toEqual(['orders.new']);
    const hdrs = natsHeaders();
    hdrs.set('X-Custom', 'yes');
    await js.publish('orders.new', 'one', { headers: hdrs });
    const event = natsHeaders();
    event.set('content-type', 'application/cloudevents+json');
    await js.publish('orders.new', JSON.stringify({ specversion: '1.0', id: 'e1', source: '/shop', type: 'order.placed', datacontenttype: 'text/plain', data: 'two' }), { headers: event });
    await waitFor('two answers', () => (answers.length >= 2 ? answers : null), 30_000);
    expect(answers.map((m) => JSON.parse(m.string()))).toEqual([
      { got: 'one', custom: 'yes', ce: null },
      { got: 'two', custom: null, ce: 'order.placed' },
    ]);
    expect(answers[0].headers?.get('x-spore-function')).toBe('default/rec');
    const [first, second] = rec.starts();
    expect(first).toMatchObject({ body: 'one', delivery: '1', trigger: 'orders', type: 'text/plain' });
    expect(second).toMatchObject({ body: 'two', type: 'text/plain', ce: 'order.placed' });
    expect(first.id).toMatch(/^[0-9a-f-]{36}$/);
    // acknowledged: nothing left unacknowledged or redelivered; in the function's logs with the call's request id
    expect(await waitFor('acks', async () => ((await pending(jsm, 'SPORE_orders_new', 'orders')).unacked === 0 ? true : null), 10_000)).toBe(true);
    expect((await pending(jsm, 'SPORE_orders_new', 'orders')).redelivered).toBe(0);
    const logged = await waitFor('the log line', () => h!.store.queryLogs({ function: 'rec' }).find((e) => e.instance === 'queue/orders' && e.requestId === first.id));
    expect(logged.line).toMatch(/queue orders: message from orders\.new \(delivery 1\) → 200, sent to orders\.done/);
  });

  it('retries a failing call maxRetries times with a backoff, then publishes the original message to errorTopic with the error, and is done with it', async () => {
    const { rec, jsm, js, consuming } = await setup((url) => [queue('pay', url, { topic: 'pay', maxRetries: 2, errorTopic: 'pay.failed' })]);
    const errors = collect(nc!, 'pay.failed');
    await consuming('pay');
    const hdrs = natsHeaders();
    hdrs.set('x-custom', 'kept');
    await js.publish('pay', 'fail-1', { headers: hdrs });
    await waitFor('the error message', () => (errors.length ? errors : null), 30_000);
    const [e] = errors;
    expect(e.string()).toBe('fail-1');
    expect(e.headers?.get('x-custom')).toBe('kept');
    expect(e.headers?.get('x-spore-error')).toContain('broken by fail-1');
    expect(e.headers?.get('x-spore-status')).toBe('500');
    expect(e.headers?.get('x-spore-attempts')).toBe('3');
    // three deliveries (1 + maxRetries), each later than the one before by the backoff (1 s, then 2 s)
    const tries = rec.starts();
    expect(tries.map((t) => t.delivery)).toEqual(['1', '2', '3']);
    expect(tries[1].at - tries[0].at).toBeGreaterThanOrEqual(900);
    expect(tries[2].at - tries[1].at).toBeGreaterThanOrEqual(1900);
    // and never again
    await new Promise((r) => setTimeout(r, 2500));
    expect(rec.starts()).toHaveLength(3);
    expect((await pending(jsm, 'SPORE_pay', 'pay')).unacked).toBe(0);
    expect(h!.dp.queues.list().find((q) => q.name === 'pay')).toMatchObject({ handled: 0, failed: 1 });
  });

  it('is done with a message whose response the broker refuses (over max_payload): said, not retried forever', async () => {
    const { rec, jsm, js, consuming } = await setup((url) => [queue('big', url, { topic: 'big', responseTopic: 'big.done' })]);
    await consuming('big');
    await js.publish('big', 'huge');
    const logged = await waitFor('the log line', () => h!.store.queryLogs({ function: 'rec' }).find((e) => e.instance === 'queue/big'), 30_000);
    expect(logged.line).toMatch(/→ 200, NOT sent to big\.done: .*max_payload/i);
    await new Promise((r) => setTimeout(r, 2500));
    expect(rec.starts()).toHaveLength(1);
    expect((await pending(jsm, 'SPORE_big', 'big')).unacked).toBe(0);
  });

  it('consumes from the stream that captures the subject, with at most `concurrency` messages in hand', async () => {
    const { rec, jsm, js, consuming } = await setup((url) => [queue('audit', url, { topic: 'audit.*', concurrency: 2 })]);
    // the operator's stream, made before: Spore uses it (the trigger retries until it can)
    await jsm.streams.add({ name: 'AUDIT', subjects: ['audit.>'] });
    await consuming('audit');
    expect(h!.dp.queues.list().find((q) => q.name === 'audit')!.detail).toContain('stream AUDIT');
    await expect(jsm.streams.info('SPORE_audit__')).rejects.toThrow();
    for (let i = 0; i < 6; i++) await js.publish(`audit.e${i}`, `slow-${i}`);
    await waitFor('six calls done', () => (rec.lines().filter((l) => l.what === 'end').length === 6 ? true : null), 60_000);
    // in hand at once, from the recorded starts and ends: never more than 2
    const events = rec.lines().map((l) => ({ at: l.at, d: l.what === 'start' ? 1 : -1 })).sort((a, b) => a.at - b.at || a.d - b.d);
    let now = 0;
    let most = 0;
    for (const e of events) most = Math.max(most, (now += e.d));
    expect(most).toBe(2);
  });

  it('says when its broker cannot be reached, keeps serving, and consumes once the broker is there', async () => {
    const port = await freePort();
    const rec = outFile();
    h = await harness();
    await h.apply([environment('node', 'node'), ...fn('rec', RECORDER, { vars: { OUT: rec.out }, route: '/rec' }), queue('late', `nats://127.0.0.1:${port}`, { topic: 'late' })]);
    const failed = await waitFor('the trigger failing', () => h!.dp.queues.list().find((q) => q.name === 'late' && q.state === 'failed'), 30_000);
    expect(failed.detail).toContain(`nats://127.0.0.1:${port}`);
    expect(h.reports.join('\n')).toContain('queue trigger default/late');
    // its Active condition in the store says the same
    const active = async () => ((await h!.store.get({ apiVersion: 'spore.dev/v1alpha1', kind: 'QueueTrigger', namespace: 'default', name: 'late' }))?.status?.conditions as { type: string; status: string; reason: string; message: string }[] | undefined)?.find((c) => c.type === 'Active');
    await expect.poll(active, { timeout: 10_000 }).toMatchObject({ status: 'False', reason: 'Failed', message: expect.stringContaining(`nats://127.0.0.1:${port}`) });
    expect((await h.get('/rec', { method: 'POST', body: 'still serving' })).status).toBe(200);
    nats = await startNats(port);
    await waitFor('consuming', () => h!.dp.queues.list().find((q) => q.name === 'late' && q.state === 'consuming'), 60_000);
    await expect.poll(active, { timeout: 10_000 }).toMatchObject({ status: 'True', reason: 'Consuming' });
    nc = await connect({ servers: nats.url });
    await jetstream(nc).publish('late', 'finally');
    await waitFor('the call', () => rec.starts().find((l) => l.body === 'finally'), 30_000);
  });

  it('loses no message when Spore is killed (SIGKILL) while handling it: after a restart it is delivered again', async () => {
    nats = await startNats();
    const rec = outFile();
    const dp = dataplaneProcess(tempDir('spore-queue-kill-'));
    stops.push(() => dp.kill());
    const objects = [environment('node', 'node'), ...fn('rec', RECORDER, { vars: { OUT: rec.out, SLOW: '4000' } }), queue('jobs', nats.url, { topic: 'jobs' })];
    const first = dp.start(objects);
    await first.consuming('jobs');
    nc = await connect({ servers: nats.url });
    await jetstream(nc).publish('jobs', 'slow-job');
    await waitFor('the call started', () => rec.starts().find((l) => l.body === 'slow-job'), 30_000);
    await first.kill(); // mid-call: not acknowledged
    expect(rec.lines().filter((l) => l.what === 'end')).toHaveLength(0);
    const second = dp.start();
    await second.consuming('jobs');
    // redelivered once its ack deadline passes (ACK_WAIT_MS), and this time done
    const done = await waitFor('the redelivered call done', () => rec.lines().find((l) => l.what === 'end' && l.body === 'slow-job'), 90_000);
    expect(Number(done.delivery)).toBe(2);
    second.child.kill('SIGTERM');
  }, 150_000);
});

describe('queue triggers: their Active condition', () => {
  it('writes nothing for a trigger deleted while it looks up its broker (no "could not write" for a trigger that is gone)', async () => {
    const h = await harness();
    try {
      const ref = { apiVersion: 'spore.dev/v1alpha1', kind: 'QueueTrigger', namespace: 'default', name: 'brief' };
      // its broker's address is in a Secret that is not there: the lookup fails after the trigger is deleted
      await h.store.apply([{ ...queue('brief', '', {}), spec: { ...queue('brief', '', {}).spec as object, broker: { kind: 'nats', connection: { secretRef: { name: 'nats', key: 'url' } } } } }]);
      await h.store.delete(ref);
      await new Promise((r) => setTimeout(r, 300));
      await h.dp.close();
      expect(h.reports.filter((m) => m.includes('could not write'))).toEqual([]);
    } finally {
      await h.close();
    }
  });
});
