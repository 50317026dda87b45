// Timers and watch triggers on a cluster: two `spore router` processes (two
// replicas) and a `spore poolmgr` against the run's real kube-apiserver, pool
// pods run by the test node agent. Of the routers, only the one holding the
// Lease `spore-triggers` fires timers and follows watches; killed, the other
// takes over; stopped, it gives the Lease back. Queue triggers (a real NATS
// server) are consumed by every router.
import { jetstream } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { describe, expect, it } from 'vitest';
import { LeaderElector } from '../../dataplane/triggers/leader.js';
import { natsInstalled, startNats } from '../nats-server.js';
import { applyObject, clusterReady, testNamespace } from './cluster.js';
import { appWithPool, clusterSuite } from './components.js';

const kubeconfig = await clusterReady();

/** Records every call: which trigger sent it, its request id, and for a watch the change. */
const RECORDER = `import { appendFileSync } from 'node:fs';
export default async (req) => {
  const body = await req.text();
  let change = {};
  try { const { type, object } = JSON.parse(body); change = { type, name: object?.metadata?.name }; } catch {}
  appendFileSync(process.env.OUT, JSON.stringify({ timer: req.headers.get('x-spore-timer'), watch: req.headers.get('x-spore-watch'), queue: req.headers.get('x-spore-trigger'), id: req.headers.get('x-spore-request-id'), body: body.slice(0, 100), ...change }) + '\\n');
  return new Response('ok');
};
`;
type Call = { timer: string | null; watch: string | null; queue: string | null; id: string; body: string; type?: string; name?: string };

describe.skipIf(!kubeconfig)('timers and watch triggers on a cluster (spore router replicas, one elected by a Lease)', () => {
  const suite = clusterSuite(kubeconfig);

  /** An app namespace with the recording function, a platform namespace, a pool manager and two routers. */
  async function setup(prefix: string) {
    const { ns, system, rec, meta, poolmgr, router, common } = await appWithPool<Call>(suite, prefix, { name: 'rec', code: RECORDER });
    const routers = [await router('router 1'), await router('router 2')];
    return { ns, system, rec, meta, poolmgr, routers, common };
  }

  it('fires each timer firing once across two routers, follows a watch once, fails over to the other router when the leader is killed, and releases the Lease on SIGTERM', async () => {
    const { ns, system, rec, meta, poolmgr, routers } = await setup('trig');
    const lease = async () => (await suite.client.request('GET', `/apis/coordination.k8s.io/v1/namespaces/${system}/leases/spore-triggers`).catch(() => undefined))?.spec;
    /** The router holding the Lease (its identity names its pid). */
    const holder = async () => {
      const who: string | undefined = (await lease())?.holderIdentity ?? undefined;
      return routers.findIndex((r) => who?.includes(`-${r.child.pid}-`));
    };
    await expect.poll(holder, { timeout: 30_000, interval: 250 }).toBeGreaterThanOrEqual(0);
    const leader = await holder();
    const follower = 1 - leader;

    // a timer firing every second, and a watch of labelled ConfigMaps
    await applyObject(suite.kc, { apiVersion: 'spore.dev/v1alpha1', kind: 'TimerTrigger', metadata: meta('tick'), spec: { cron: '@every 1s', function: { name: 'rec' } } } as any);
    await applyObject(suite.kc, { apiVersion: 'spore.dev/v1alpha1', kind: 'WatchTrigger', metadata: meta('colors'), spec: { resource: { kind: 'ConfigMap' }, namespace: ns, labelSelector: { watched: 'yes' }, function: { name: 'rec' } } } as any);
    const timerCalls = () => rec.lines().filter((c) => c.timer === 'tick');
    const watchCalls = () => rec.lines().filter((c) => c.watch === 'colors').map((c) => `${c.type} ${c.name}`);
    await expect.poll(() => timerCalls().length, { timeout: 90_000, interval: 250 }).toBeGreaterThanOrEqual(4);
    // each trigger's state as its Active condition, written by the leader as Spore's dataplane
    const path = (plural: string, name: string) => `/apis/spore.dev/v1alpha1/namespaces/${ns}/${plural}/${name}`;
    const conditions = async (plural: string, name: string) => ((await suite.client.request('GET', path(plural, name))).status?.conditions ?? []) as { type: string; status: string; reason: string; message?: string }[];
    await expect.poll(() => conditions('timertriggers', 'tick'), { timeout: 10_000, interval: 250 }).toEqual([expect.objectContaining({ type: 'Active', status: 'True', reason: 'Scheduled', message: '"@every 1s" (UTC) → rec' })]);
    await expect.poll(() => conditions('watchtriggers', 'colors'), { timeout: 30_000, interval: 250 }).toEqual([expect.objectContaining({ type: 'Active', status: 'True', reason: 'Watching' })]);
    // the reconciler writing its status (server-side apply as `spore`) leaves the dataplane's condition: conditions are keyed by type
    await suite.client.request('PATCH', `${path('timertriggers', 'tick')}/status`, {
      query: { fieldManager: 'spore', force: 'true' },
      body: { apiVersion: 'spore.dev/v1alpha1', kind: 'TimerTrigger', metadata: { name: 'tick', namespace: ns }, status: { observedGeneration: 1, conditions: [{ type: 'Ready', status: 'True', reason: 'Applied' }] } },
      contentType: 'application/apply-patch+yaml',
    });
    expect((await conditions('timertriggers', 'tick')).map((c) => `${c.type}=${c.status}`).sort()).toEqual(['Active=True', 'Ready=True']);
    // the watch has its starting version once it is kept in the triggers' state (a ConfigMap of the platform namespace)
    const stateKey = `watch.${ns}.colors`;
    await expect.poll(async () => Boolean((await suite.client.request('GET', `/api/v1/namespaces/${system}/configmaps/spore-trigger-state`).catch(() => undefined))?.data?.[stateKey]), { timeout: 30_000, interval: 250 }).toBe(true);
    const cm = (name: string) => ({ apiVersion: 'v1', kind: 'ConfigMap', metadata: { name, namespace: ns, labels: { watched: 'yes' } }, data: { color: name } });
    const first = await suite.client.request('POST', `/api/v1/namespaces/${ns}/configmaps`, { body: cm('first') });
    await expect.poll(watchCalls, { timeout: 30_000, interval: 250 }).toContain('ADDED first');
    // kept (the state is written within a second): the next leader resumes after it
    const kept = async () => JSON.parse((await suite.client.request('GET', `/api/v1/namespaces/${system}/configmaps/spore-trigger-state`)).data[stateKey]).resourceVersion;
    await expect.poll(kept, { timeout: 10_000, interval: 250 }).toBe(first.metadata.resourceVersion);

    // every call was made by the leader (each in its log, by request id), none by the other router: one call per firing
    const logged = (i: number) => new Set([...routers[i].output().matchAll(/ (?:timer|watch)\/\S+ \[([0-9a-f-]+)\]:/g)].map((m) => m[1]));
    await expect.poll(() => rec.lines().filter((c) => !logged(leader).has(c.id)).length, { timeout: 10_000, interval: 250 }).toBe(0);
    expect(logged(follower).size).toBe(0);
    expect(new Set(rec.lines().map((c) => c.id)).size).toBe(rec.lines().length);
    // and counted there: the leader's /metrics has the timer's firings, the other's none
    const fires = async (i: number) => {
      const text = await (await fetch(`${routers[i].url}/metrics`)).text();
      return Number(/^spore_timer_fires_total\{[^}]*trigger="tick"[^}]*\} (\d+)/m.exec(text)?.[1] ?? 0);
    };
    expect(await fires(leader)).toBeGreaterThanOrEqual(4);
    expect(await fires(follower)).toBe(0);

    // the leader dies without a word: a change made meanwhile is not lost, and the other router takes over
    routers[leader].child.kill('SIGKILL');
    await suite.client.request('POST', `/api/v1/namespaces/${ns}/configmaps`, { body: cm('during') });
    await expect.poll(holder, { timeout: 60_000, interval: 500 }).toBe(follower);
    const before = timerCalls().length;
    await expect.poll(() => timerCalls().length, { timeout: 30_000, interval: 250 }).toBeGreaterThanOrEqual(before + 3);
    await expect.poll(watchCalls, { timeout: 30_000, interval: 250 }).toContain('ADDED during');
    await suite.client.request('POST', `/api/v1/namespaces/${ns}/configmaps`, { body: cm('after') });
    await expect.poll(watchCalls, { timeout: 30_000, interval: 250 }).toContain('ADDED after');
    // resumed where the dead leader was: nothing sent twice, nothing lost
    expect(watchCalls()).toEqual(['ADDED first', 'ADDED during', 'ADDED after']);
    // the new leader logs a call when it ends, after the function recorded it: wait for the lines
    await expect.poll(() => timerCalls().filter((c) => logged(follower).has(c.id)).length, { timeout: 10_000, interval: 250 }).toBeGreaterThanOrEqual(3);

    // stopped, the new leader gives the Lease back: no holder, for the next replica to take at once
    const gone = new Promise((r) => routers[follower].child.once('exit', r));
    routers[follower].child.kill('SIGTERM');
    await gone;
    expect(routers[follower].output()).toContain(`released lease ${system}/spore-triggers`);
    expect((await lease())?.holderIdentity ?? null).toBeNull();
    const callsWhenStopped = rec.lines().length;
    await new Promise((r) => setTimeout(r, 2000));
    expect(rec.lines().length).toBe(callsWhenStopped); // no router left: no firing
    poolmgr.child.kill('SIGTERM');
  }, 300_000);

  it.skipIf(!natsInstalled)('consumes a NATS queue trigger on every router: each message reaches the function, and with one router killed the other goes on', async () => {
    const nats = await startNats();
    const nc = await connect({ servers: nats.url });
    try {
      const { rec, meta, poolmgr, routers } = await setup('trig-queue');
      await applyObject(suite.kc, { apiVersion: 'spore.dev/v1alpha1', kind: 'QueueTrigger', metadata: meta('orders'), spec: { broker: { kind: 'nats', connection: { url: nats.url } }, topic: 'orders.new', function: { name: 'rec' }, concurrency: 2 } } as any);
      // both routers consume (each said so), through the one durable consumer of the trigger
      for (const r of routers) await expect.poll(() => /queue trigger \S+\/orders: consuming orders\.new/.test(r.output()), { timeout: 60_000, interval: 250 }).toBe(true);
      const js = jetstream(nc);
      const bodies = (from: number, to: number) => Array.from({ length: to - from }, (_, i) => `order-${from + i}`);
      for (const b of bodies(0, 10)) await js.publish('orders.new', b);
      const got = () => new Set(rec.lines().filter((c) => c.queue === 'orders').map((c) => c.body));
      await expect.poll(() => bodies(0, 10).filter((b) => !got().has(b)), { timeout: 60_000, interval: 250 }).toEqual([]);
      // one router dies: the other takes every message from here on
      routers[0].child.kill('SIGKILL');
      for (const b of bodies(10, 20)) await js.publish('orders.new', b);
      await expect.poll(() => bodies(0, 20).filter((b) => !got().has(b)), { timeout: 90_000, interval: 250 }).toEqual([]);
      const gone = new Promise((r) => routers[1].child.once('exit', r));
      routers[1].child.kill('SIGTERM');
      await gone;
      poolmgr.child.kill('SIGTERM');
    } finally {
      await nc.close();
      await nats.stop();
    }
  }, 300_000);

  it('elects one of two electors on a Lease; a leader whose Lease another took steps down at once; a closing leader releases it to the other', async () => {
    const ns = await testNamespace(suite.kc, 'lease');
    const events: string[] = [];
    const elector = (identity: string) =>
      new LeaderElector({
        client: suite.client, namespace: ns, name: 'spore-triggers', identity, leaseDurationSeconds: 3, renewMs: 500, retryMs: 300, renewDeadlineMs: 2000, report: () => {},
        onStart: () => void events.push(`${identity} starts`),
        onStop: () => void events.push(`${identity} stops`),
      });
    const both = [elector('a'), elector('b')];
    for (const e of both) e.start();
    try {
      await expect.poll(() => both.filter((e) => e.leading).length, { timeout: 10_000, interval: 100 }).toBe(1);
      // for a while: never two leaders, never a change
      for (let i = 0; i < 20; i++) {
        expect(both.filter((e) => e.leading).length).toBe(1);
        await new Promise((r) => setTimeout(r, 100));
      }
      const leader = both.findIndex((e) => e.leading);
      const name = leader === 0 ? 'a' : 'b';
      expect(events).toEqual([`${name} starts`]);
      // someone else takes the Lease (as a replica would that judged it expired): the leader stops at its next renewal
      const path = `/apis/coordination.k8s.io/v1/namespaces/${ns}/leases/spore-triggers`;
      const lease = await suite.client.request('GET', path);
      await suite.client.request('PUT', path, { body: { ...lease, spec: { ...lease.spec, holderIdentity: 'elsewhere' } } });
      await expect.poll(() => events, { timeout: 10_000, interval: 100 }).toContain(`${name} stops`);
      // 'elsewhere' never renews: once it expired, one of the two leads again
      await expect.poll(() => both.filter((e) => e.leading).length, { timeout: 15_000, interval: 100 }).toBe(1);
      const next = both.findIndex((e) => e.leading);
      // the leader closes: it stops, releases the Lease, and the other takes it without waiting for an expiry
      events.length = 0;
      await both[next].close();
      expect(events).toEqual([`${next === 0 ? 'a' : 'b'} stops`]);
      expect((await suite.client.request('GET', path)).spec.holderIdentity ?? null).toBeNull();
      await expect.poll(() => both[1 - next].leading, { timeout: 10_000, interval: 100 }).toBe(true);
    } finally {
      await Promise.all(both.map((e) => e.close()));
    }
  }, 60_000);
});
