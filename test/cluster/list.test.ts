// `spore list --kubeconfig …`: the spore.dev objects of a cluster and the pool's
// pods, read from the run's real kube-apiserver (a cluster's router serves no
// /_spore/status). A real `spore poolmgr` keeps the Environment's warm pod;
// the triggers' conditions are written as the dataplane and the reconciler
// write them (server-side apply on /status). And its clear errors: no cluster,
// no namespace, and a cluster without Spore's CRDs (a second, bare API server).
import { execFile } from 'node:child_process';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import yaml from 'js-yaml';
import { describe, expect, it } from 'vitest';
import { tempDir } from '../helpers.js';
import { ensureAssets } from './assets.js';
import { clusterReady } from './cluster.js';
import { appWithPool, clusterSuite } from './components.js';
import { startCluster } from './harness.js';

const kubeconfig = await clusterReady();
const BIN = new URL('../../bin/spore.js', import.meta.url).pathname;
const HELLO = `export default async () => new Response('hello');\n`;

/** `spore list …`: its exit code, stdout and stderr. */
const list = (...args: string[]) =>
  promisify(execFile)(process.execPath, [BIN, 'list', ...args], { encoding: 'utf8' }).then(
    (r) => ({ code: 0, stdout: r.stdout, stderr: r.stderr }),
    (err: { code: number; stdout: string; stderr: string }) => ({ code: err.code, stdout: err.stdout, stderr: err.stderr }),
  );

/** The hour and minute of a time in a time zone. */
const clock = (iso: string, timeZone: string) => new Intl.DateTimeFormat('en-GB', { timeZone, hour: '2-digit', minute: '2-digit', hourCycle: 'h23' }).format(new Date(iso));

describe.skipIf(!kubeconfig)('spore list on a cluster', () => {
  const suite = clusterSuite(kubeconfig);

  it("shows a namespace's functions, routes, timers, queues, watches and environments with their conditions and pool pods, as text and as JSON", async () => {
    const app = await appWithPool(suite, 'list', { name: 'hello', code: HELLO }, (meta) => [
      { apiVersion: 'spore.dev/v1alpha1', kind: 'Function', metadata: meta('hello-next'), spec: { environment: { name: 'node' }, package: { name: 'hello' } } },
      { apiVersion: 'spore.dev/v1alpha1', kind: 'HttpTrigger', metadata: meta('greet'), spec: { methods: ['GET', 'POST'], path: '/greet', host: 'api.example.com', functions: [{ name: 'hello', weight: 90 }, { name: 'hello-next', weight: 10 }] } },
      { apiVersion: 'spore.dev/v1alpha1', kind: 'TimerTrigger', metadata: meta('nightly'), spec: { cron: '0 3 * * *', timeZone: 'Europe/Paris', function: { name: 'hello' } } },
      { apiVersion: 'spore.dev/v1alpha1', kind: 'QueueTrigger', metadata: meta('orders'), spec: { broker: { kind: 'nats', connection: { url: 'nats://127.0.0.1:1' } }, topic: 'orders.new', function: { name: 'hello' } } },
      { apiVersion: 'spore.dev/v1alpha1', kind: 'WatchTrigger', metadata: meta('colors'), spec: { resource: { kind: 'ConfigMap' }, function: { name: 'hello' } } },
    ]);
    const { ns, system } = app;
    // as the dataplane writes a timer's state, and the reconciler its Ready: server-side apply on /status, each its own field manager
    const writeStatus = (plural: string, kind: string, name: string, manager: string, condition: object) =>
      suite.client.request('PATCH', `/apis/spore.dev/v1alpha1/namespaces/${ns}/${plural}/${name}/status`, {
        query: { fieldManager: manager, force: 'true' },
        body: { apiVersion: 'spore.dev/v1alpha1', kind, metadata: { name, namespace: ns }, status: { conditions: [{ lastTransitionTime: new Date().toISOString(), ...condition }] } },
        contentType: 'application/apply-patch+yaml',
      });
    await writeStatus('timertriggers', 'TimerTrigger', 'nightly', 'spore-dataplane', { type: 'Active', status: 'True', reason: 'Scheduled', message: '"0 3 * * *" (Europe/Paris) → hello' });
    await writeStatus('queuetriggers', 'QueueTrigger', 'orders', 'spore', { type: 'Ready', status: 'True', reason: 'Applied' });

    const args = ['--kubeconfig', kubeconfig!, '--pool-namespace', system, '-n', ns];
    // the pool manager's generic pod for the Environment, once its runtime is ready
    await expect.poll(async () => (await list(...args)).stdout, { timeout: 90_000, interval: 500 }).toContain(`${`${ns}/node`.padEnd(32)} warm=1 starting=0`);

    const text = await list(...args);
    expect(text.code).toBe(0);
    const lines = text.stdout.trimEnd().split('\n');
    const at = (name: string) => `  ${`${ns}/${name}`.padEnd(32)} `;
    expect(lines[0]).toBe('FUNCTIONS');
    expect(lines).toContain(`${at('hello')}env=node executor=pool instances=0 ready=0`);
    expect(lines).toContain(`${at('hello-next')}env=node executor=pool instances=0 ready=0`);
    expect(lines).toContain(`  GET,POST   /greet host=api.example.com → hello 90%, hello-next 10% (${ns}/greet) ready=-`);
    const timer = lines.find((l) => l.startsWith(at('nightly')));
    expect(timer).toMatch(/^ {2}\S+\s+"0 3 \* \* \*" Europe\/Paris → hello next=(\S+) active=True Scheduled \("0 3 \* \* \*" \(Europe\/Paris\) → hello\) ready=-$/);
    expect(lines).toContain(`${at('orders')}nats orders.new → hello active=- ready=True Applied`);
    expect(lines).toContain(`${at('colors')}ConfigMap (v1) → hello active=- ready=-`);
    expect(lines.filter((l) => /^[A-Z]+$/.test(l))).toEqual(['FUNCTIONS', 'ROUTES', 'TIMERS', 'QUEUES', 'WATCHES', 'ENVIRONMENTS']);

    const data = JSON.parse((await list(...args, '-o', 'json')).stdout);
    expect(data.functions).toEqual([
      { namespace: ns, name: 'hello', environment: 'node', executor: 'pool', instances: [] },
      { namespace: ns, name: 'hello-next', environment: 'node', executor: 'pool', instances: [] },
    ]);
    expect(data.routes).toEqual([{ stage: 'main', namespace: ns, trigger: 'greet', methods: ['GET', 'POST'], path: '/greet', host: 'api.example.com', functions: [{ name: 'hello', weight: 90 }, { name: 'hello-next', weight: 10 }], ready: null }]);
    const [t] = data.timers;
    expect(t).toMatchObject({ namespace: ns, name: 'nightly', function: 'hello', cron: '0 3 * * *', timeZone: 'Europe/Paris', active: { status: 'True', reason: 'Scheduled', message: '"0 3 * * *" (Europe/Paris) → hello' }, ready: null });
    // the next firing: 03:00 in Paris, within a day
    expect(clock(t.nextRun, 'Europe/Paris')).toBe('03:00');
    expect(Date.parse(t.nextRun) - Date.now()).toBeGreaterThan(0);
    expect(Date.parse(t.nextRun) - Date.now()).toBeLessThanOrEqual(25 * 3600_000);
    expect(timer).toContain(`next=${t.nextRun} `);
    expect(data.queues).toEqual([{ namespace: ns, name: 'orders', broker: 'nats', topic: 'orders.new', function: 'hello', active: null, ready: { status: 'True', reason: 'Applied' } }]);
    expect(data.watches).toEqual([{ namespace: ns, name: 'colors', resource: 'ConfigMap (v1)', function: 'hello', active: null, ready: null }]);
    expect(data.environments).toEqual([{ namespace: ns, name: 'node', warm: 1, starting: 0, pods: [expect.objectContaining({ pod: expect.stringMatching(/^node-/), state: 'ready' })] }]);
    expect(yaml.load((await list(...args, '-o', 'yaml')).stdout)).toEqual({ ...data, environments: [expect.objectContaining({ name: 'node', warm: 1 })] });

    // without -n: every namespace's objects, this one's among them
    const all = await list('--kubeconfig', kubeconfig!, '--pool-namespace', system, '-o', 'json');
    expect(all.code).toBe(0);
    expect(JSON.parse(all.stdout).timers).toContainEqual(expect.objectContaining({ namespace: ns, name: 'nightly' }));
    await suite.stop(app.poolmgr.child);
  }, 180_000);

  it('fails clearly, exit 1: a namespace that does not exist, an unreachable cluster, a missing kubeconfig', async () => {
    const gone = await list('--kubeconfig', kubeconfig!, '-n', 'no-such-namespace');
    expect(gone.code).toBe(1);
    expect(gone.stderr).toMatch(/^spore: namespace no-such-namespace does not exist on the cluster at https:\/\/127\.0\.0\.1:\d+\n$/);

    const dir = tempDir('spore-list-');
    const unreachable = join(dir, 'kubeconfig');
    writeFileSync(unreachable, yaml.dump({
      apiVersion: 'v1', kind: 'Config', 'current-context': 'x',
      clusters: [{ name: 'x', cluster: { server: 'https://127.0.0.1:1' } }], users: [{ name: 'x', user: { token: 't' } }], contexts: [{ name: 'x', context: { cluster: 'x', user: 'x' } }],
    }));
    const down = await list('--kubeconfig', unreachable);
    expect(down.code).toBe(1);
    expect(down.stderr).toContain('spore: the Kubernetes API at https://127.0.0.1:1 cannot be reached');

    const missing = await list('--kubeconfig', join(dir, 'nothing'));
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain(`spore: --kubeconfig ${join(dir, 'nothing')}:`);
    rmSync(dir, { recursive: true, force: true });
  });

  it("says how to install Spore's CRDs on a cluster without them", async () => {
    const dir = tempDir('spore-bare-cluster-');
    const bare = await startCluster(dir, await ensureAssets(join(dir, 'build.log')));
    try {
      const r = await list('--kubeconfig', bare.kubeconfig);
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(new RegExp(`^spore: the cluster at ${bare.server.replace(/\./g, '\\.')} does not serve \\w+ \\(spore\\.dev/v1alpha1\\): install Spore's CRDs first \\(npx spore crds \\| kubectl apply --server-side -f -\\)\\n$`));
    } finally {
      await bare.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
