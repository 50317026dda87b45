// The dataplane on a cluster: `spore poolmgr` and `spore router` as their own
// processes against the run's real kube-apiserver, an app synced by
// `spore reconciler --kubeconfig`, pool pods run by the test node agent
// (test/cluster/node-agent.ts) as local processes, specialized over loopback
// HTTP by Spore's fetcher sidecar.
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import type { KubeConfig } from '@kubernetes/client-node';
import yaml from 'js-yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { packArchive } from '../../api/archive.js';
import { KubeClient } from '../../store/kube-client.js';
import { tempDir } from '../helpers.js';
import { Repo } from '../reconciler/gitrepo.js';
import { applyObject, clusterReady, installCrds, kubeConfig, podsAllowed, testNamespace } from './cluster.js';
import { components } from './components.js';

const ROOT = new URL('../..', import.meta.url).pathname;
const BIN = join(ROOT, 'bin/spore.js');
const kubeconfig = await clusterReady();

/** What the function answers: its version, its Secret and ConfigMap read at Fission's paths, and who served it. */
const HANDLER = (version: string) => `import { readFileSync } from 'node:fs';
export default async (req) => {
  const url = new URL(req.url);
  if (url.searchParams.has('slow')) await new Promise((r) => setTimeout(r, 3000));
  const ns = ${JSON.stringify('NS')};
  const read = (dir, kind, name, key) => { try { return readFileSync(dir + '/' + ns + '/' + name + '/' + key, 'utf8'); } catch (e) { return 'missing ' + kind; } };
  return Response.json({
    version: ${JSON.stringify(version)},
    token: read(process.env.SPORE_SECRETS_DIR, 'secret', 'token', 'token'),
    greeting: read(process.env.SPORE_CONFIGS_DIR, 'configmap', 'settings', 'greeting'),
    instance: process.env.SPORE_INSTANCE,
    pid: process.pid,
    region: process.env.REGION,
  });
};
`;

function manifests(ns: string, version: string): string {
  const meta = (name: string) => ({ name, namespace: ns });
  const archive = packArchive([{ path: 'index.mjs', data: Buffer.from(HANDLER(version).replace('"NS"', JSON.stringify(ns))) }]);
  const docs = [
    { apiVersion: 'spore.dev/v1alpha1', kind: 'Environment', metadata: meta('node'), spec: { runtime: { name: 'node' }, poolSize: 2, pod: { nodeSelector: { 'kubernetes.io/os': 'linux' }, env: [{ name: 'REGION', value: 'eu-1' }] } } },
    { apiVersion: 'v1', kind: 'ConfigMap', metadata: meta('settings'), data: { greeting: 'hello' } },
    { apiVersion: 'v1', kind: 'Secret', metadata: meta('token'), stringData: { token: 's3cret' } },
    { apiVersion: 'spore.dev/v1alpha1', kind: 'Package', metadata: meta('hello'), spec: { archive: { sha256: archive.sha256, size: archive.size, inline: archive.bytes.toString('base64') } } },
    {
      apiVersion: 'spore.dev/v1alpha1',
      kind: 'Function',
      metadata: meta('hello'),
      spec: { environment: { name: 'node' }, package: { name: 'hello' }, secrets: [{ name: 'token' }], configMaps: [{ name: 'settings' }], executor: { idleTimeoutSeconds: 10 } },
    },
    { apiVersion: 'spore.dev/v1alpha1', kind: 'HttpTrigger', metadata: meta('hello'), spec: { path: '/hello', function: { name: 'hello' } } },
    // one whose Secret is not there: its call fails clearly, no pod is taken for it
    { apiVersion: 'spore.dev/v1alpha1', kind: 'Function', metadata: meta('lost'), spec: { environment: { name: 'node' }, package: { name: 'hello' }, secrets: [{ name: 'nowhere' }] } },
    { apiVersion: 'spore.dev/v1alpha1', kind: 'HttpTrigger', metadata: meta('lost'), spec: { path: '/lost', function: { name: 'lost' } } },
  ];
  return docs.map((d) => yaml.dump(d)).join('---\n');
}

describe.skipIf(!kubeconfig)('the dataplane on a cluster (spore poolmgr + spore router)', () => {
  let kc: KubeConfig;
  let client: KubeClient;
  const { run, stop } = components({ tail: 4000 });

  beforeAll(async () => {
    kc = kubeConfig(kubeconfig!);
    client = new KubeClient(kc);
    await installCrds(kc);
  });
  afterAll(() => client?.close());

  /** The pool's pods, as the API server has them (not being deleted). */
  async function pods(namespace: string): Promise<{ name: string; fn?: string; revision?: string; ready: boolean }[]> {
    const list = await client.request('GET', `/api/v1/namespaces/${namespace}/pods`, { query: { labelSelector: 'app.kubernetes.io/managed-by=spore-poolmgr' } });
    return list.items.filter((p: any) => !p.metadata.deletionTimestamp).map((p: any) => ({ name: p.metadata.name, fn: p.metadata.labels['spore.dev/function'], revision: p.metadata.labels['spore.dev/function-revision'], ready: p.status?.conditions?.some((c: any) => c.type === 'Ready' && c.status === 'True') ?? false }));
  }
  /** Generic pods of the pool, Ready. */
  const generic = async (ns: string) => (await pods(ns)).filter((p) => !p.fn && p.ready).length;
  const specialized = async (ns: string) => (await pods(ns)).filter((p) => p.fn).map((p) => p.name).sort();

  it('serves a route from a pool pod specialized over the network, reuses it, survives a dying pod and a restarted pool manager, drains a changed package and deletes idle pods', async () => {
    const ns = await testNamespace(kc, 'dp-app');
    const system = await testNamespace(kc, 'dp-system');
    await podsAllowed(kc, system);
    const state = tempDir('spore-kube-dp-');
    const repo = new Repo();
    repo.commit('v1', { 'dist/app.yaml': manifests(ns, 'v1') });
    const rec = await run('spore reconciler', ['reconciler', '--kubeconfig', kubeconfig!, '--git', repo.url, '--manifests', '--state-dir', state, '--namespace', system, '--app', 'shop', '--poll', '1s']);
    const synced = () => JSON.parse(spawnSync(process.execPath, [BIN, 'status', '-o', 'json', '--state-dir', state], { encoding: 'utf8' }).stdout || '[]')[0]?.state;
    await expect.poll(synced, { timeout: 60_000, interval: 250 }).toBe('synced');

    const common = ['--kubeconfig', kubeconfig!, '--namespace', system, '--watch-namespace', ns, '--host', '127.0.0.1', '--port', '0'];
    let poolmgr = await run('spore poolmgr', ['poolmgr', ...common], /spore poolmgr listening on (\S+)/);
    const router = await run('spore router', ['router', ...common, '--poolmgr', poolmgr.url], /spore router listening on (\S+)/);
    // the pool: poolSize generic pods of the Environment, Ready
    await expect.poll(() => generic(system), { timeout: 60_000, interval: 250 }).toBe(2);

    const get = async (path: string) => {
      const res = await fetch(router.url + path, { signal: AbortSignal.timeout(60_000) });
      const text = await res.text();
      let body: any = text;
      try {
        body = JSON.parse(text);
      } catch {
        // not JSON
      }
      return { status: res.status, body };
    };
    const first = await get('/hello');
    expect(first).toMatchObject({ status: 200, body: { version: 'v1', token: 's3cret', greeting: 'hello', region: 'eu-1' } });
    // the Environment's pod settings on the pod
    const made = await client.request('GET', `/api/v1/namespaces/${system}/pods/${first.body.instance}`);
    expect(made.spec.nodeSelector).toEqual({ 'kubernetes.io/os': 'linux' });
    expect(made.spec.automountServiceAccountToken).toBe(false);
    expect(made.spec.containers.map((c: any) => c.securityContext)).toEqual([0, 1].map(() => ({ allowPrivilegeEscalation: false, capabilities: { drop: ['ALL'] } })));
    // served by a pod of the pool, relabelled for the function; the pool refilled behind it
    expect(await specialized(system)).toEqual([first.body.instance]);
    await expect.poll(() => generic(system), { timeout: 60_000, interval: 250 }).toBe(2);
    // the second call: the same pod, held by the router (no new specialization)
    const second = await get('/hello');
    expect(second.body.instance).toBe(first.body.instance);
    expect(await specialized(system)).toEqual([first.body.instance]);

    // a Secret that is not there: a clear 500, and no pod taken for it
    const lost = await get('/lost');
    expect(lost.status).toBe(500);
    expect(lost.body).toMatchObject({ error: 'SecretMissing' });
    expect(lost.body.message).toContain('nowhere');
    expect(await specialized(system)).toEqual([first.body.instance]);

    // the pod's runtime dies mid-call: that call gets 502; the next one is served by a new pod
    const slow = get('/hello?slow=1');
    await new Promise((r) => setTimeout(r, 1000));
    process.kill(first.body.pid, 'SIGKILL');
    expect((await slow).status).toBe(502);
    await expect.poll(async () => (await specialized(system)).includes(first.body.instance), { timeout: 30_000, interval: 250 }).toBe(false);
    const third = await get('/hello');
    expect(third).toMatchObject({ status: 200, body: { version: 'v1' } });
    expect(third.body.instance).not.toBe(first.body.instance);

    // a restarted pool manager adopts the pods it finds: the same pods serve, none is added or lost
    // (once the pool is Ready: one still starting when its starter stops is deleted and started again)
    await expect.poll(async () => (await pods(system)).map((p) => p.ready), { timeout: 60_000, interval: 250 }).toEqual([true, true, true]);
    const before = (await pods(system)).map((p) => p.name).sort();
    await stop(poolmgr.child);
    poolmgr = await run('spore poolmgr', ['poolmgr', ...common, '--port', new URL(poolmgr.url).port], /spore poolmgr listening on (\S+)/);
    await new Promise((r) => setTimeout(r, 6000)); // the router's leases renewed against the new pool manager: unknown, dropped
    const fourth = await get('/hello');
    expect(fourth.body.instance).toBe(third.body.instance);
    expect((await pods(system)).map((p) => p.name).sort()).toEqual(before);

    // a changed package: new pods serve the new code, the old one drains and is deleted
    repo.commit('v2', { 'dist/app.yaml': manifests(ns, 'v2') });
    await expect.poll(async () => (await get('/hello')).body.version, { timeout: 60_000, interval: 500 }).toBe('v2');
    await expect.poll(async () => (await specialized(system)).includes(third.body.instance), { timeout: 30_000, interval: 250 }).toBe(false);

    // idle past the function's idleTimeout: its pods are deleted, the pool stays
    await expect.poll(() => specialized(system), { timeout: 60_000, interval: 500 }).toEqual([]);
    expect(await generic(system)).toBe(2);

    await stop(router.child);
    await stop(poolmgr.child);
    await stop(rec.child);
  }, 300_000);

  it("holds a function's concurrency across two routers: an instance is lent whole to one router at a time", async () => {
    const ns = await testNamespace(kc, 'dp-two');
    const system = await testNamespace(kc, 'dp-two-system');
    await podsAllowed(kc, system);
    // one instance, two calls at a time: the function counts the calls it has in flight
    const code = `let now = 0, most = 0;
export default async () => {
  most = Math.max(most, ++now);
  await new Promise((r) => setTimeout(r, 1000));
  now--;
  return Response.json({ most, instance: process.env.SPORE_INSTANCE });
};
`;
    const archive = packArchive([{ path: 'index.mjs', data: Buffer.from(code) }]);
    const meta = (name: string) => ({ name, namespace: ns });
    for (const o of [
      { apiVersion: 'spore.dev/v1alpha1', kind: 'Environment', metadata: meta('node'), spec: { runtime: { name: 'node' }, poolSize: 1 } },
      { apiVersion: 'spore.dev/v1alpha1', kind: 'Package', metadata: meta('one'), spec: { archive: { sha256: archive.sha256, size: archive.size, inline: archive.bytes.toString('base64') } } },
      { apiVersion: 'spore.dev/v1alpha1', kind: 'Function', metadata: meta('one'), spec: { environment: { name: 'node' }, package: { name: 'one' }, executor: { concurrency: 1, requestsPerInstance: 2 } } },
      { apiVersion: 'spore.dev/v1alpha1', kind: 'HttpTrigger', metadata: meta('one'), spec: { path: '/one', function: { name: 'one' } } },
    ]) await applyObject(kc, o as any);
    const common = ['--kubeconfig', kubeconfig!, '--namespace', system, '--watch-namespace', ns, '--host', '127.0.0.1', '--port', '0'];
    const poolmgr = await run('spore poolmgr', ['poolmgr', ...common], /spore poolmgr listening on (\S+)/);
    const routers = [await run('spore router', ['router', ...common, '--poolmgr', poolmgr.url], /spore router listening on (\S+)/), await run('spore router', ['router', ...common, '--poolmgr', poolmgr.url], /spore router listening on (\S+)/)];
    await expect.poll(() => generic(system), { timeout: 60_000, interval: 250 }).toBe(1);
    // four calls through each router at once
    const calls = await Promise.all([0, 1, 0, 1, 0, 1, 0, 1].map(async (i) => {
      const res = await fetch(`${routers[i].url}/one`, { signal: AbortSignal.timeout(60_000) });
      return { status: res.status, body: (await res.json()) as { most: number; instance: string } };
    }));
    expect(calls.map((c) => c.status)).toEqual([200, 200, 200, 200, 200, 200, 200, 200]);
    // never more than two at once on the instance (each router could send two), and only one instance
    expect(Math.max(...calls.map((c) => c.body.most))).toBe(2);
    expect(new Set(calls.map((c) => c.body.instance)).size).toBe(1);
    expect(await specialized(system)).toHaveLength(1);
    for (const r of routers) await stop(r.child);
    await stop(poolmgr.child);
  }, 180_000);
});
