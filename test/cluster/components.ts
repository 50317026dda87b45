// Spore's components (`spore poolmgr`, `spore router`, `spore reconciler` …) as
// child processes of a cluster suite, and the app most suites run them for.
import { spawn, type ChildProcess } from 'node:child_process';
import type { KubeConfig } from '@kubernetes/client-node';
import { afterAll, afterEach, beforeAll, expect } from 'vitest';
import { packArchive } from '../../api/archive.js';
import { KubeClient } from '../../store/kube-client.js';
import { recordFile } from '../dataplane/harness.js';
import { applyObject, installCrds, kubeConfig, podsAllowed, testNamespace } from './cluster.js';

const BIN = new URL('../../bin/spore.js', import.meta.url).pathname;

export interface Component {
  child: ChildProcess;
  /** The address it printed ('' when not waited for). */
  url: string;
  output: () => string;
}
export type Run = (name: string, args: string[], announce?: RegExp) => Promise<Component>;

/**
 * For the describe block it is called in: `run` starts `spore <args>`, and when
 * `announce` is given resolves once its output matched it (the capture being
 * its address); what each said is printed (its last `tail` characters) when a
 * test fails, and all are killed when the block ends.
 */
export function components({ tail = 6000 } = {}): { run: Run; stop: (child: ChildProcess) => Promise<void> } {
  const children = new Set<ChildProcess>();
  const said: (() => string)[] = [];
  afterEach((ctx) => {
    if (ctx.task.result?.state === 'fail') for (const out of said) console.error(out().slice(-tail));
    said.length = 0;
  });
  afterAll(() => {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  });

  async function run(name: string, args: string[], announce?: RegExp): Promise<Component> {
    let out = '';
    const child = spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    children.add(child);
    child.stdout!.on('data', (d) => (out += d));
    child.stderr!.on('data', (d) => (out += d));
    said.push(() => `--- ${name}:\n${out}`);
    let url = '';
    if (announce) {
      await expect.poll(() => (child.exitCode !== null ? `exited: ${out}` : announce.exec(out)?.[1] ?? ''), { timeout: 60_000, interval: 100 }).toMatch(/^http/);
      url = announce.exec(out)![1];
    }
    return { child, url, output: () => out };
  }
  /** SIGTERM, then waits until it exited. */
  async function stop(child: ChildProcess): Promise<void> {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const gone = new Promise((r) => child.once('exit', r));
    child.kill('SIGTERM');
    await gone;
  }
  return { run, stop };
}

/** A suite running Spore's components against the test cluster: its kubeconfig, a client, and components(). */
export interface ClusterSuite {
  kubeconfig: string;
  /** Set before the block's tests run (its CRDs installed). */
  kc: KubeConfig;
  client: KubeClient;
  run: Run;
  stop: (child: ChildProcess) => Promise<void>;
}

/** For the describe block it is called in: the cluster opened and Spore's CRDs installed before its tests, the client closed after. */
export function clusterSuite(kubeconfig: string | undefined): ClusterSuite {
  const suite = { kubeconfig: kubeconfig!, ...components() } as ClusterSuite;
  beforeAll(async () => {
    suite.kc = kubeConfig(kubeconfig!);
    suite.client = new KubeClient(suite.kc);
    await installCrds(suite.kc);
  });
  afterAll(() => suite.client?.close());
  return suite;
}

/**
 * An app namespace holding the Node function `fn` (its module `code`, with env
 * OUT naming a record file it may append to) and `more` of the app's objects,
 * a platform namespace where pods may run, and a `spore poolmgr` for both;
 * `router(name)` starts a `spore router` next to it.
 */
export async function appWithPool<Call>({ kc, kubeconfig, run, client }: ClusterSuite, prefix: string, fn: { name: string; code: string }, more: (meta: (name: string) => { name: string; namespace: string }) => object[] = () => []) {
  const ns = await testNamespace(kc, `${prefix}-app`);
  const system = await testNamespace(kc, `${prefix}-system`);
  await podsAllowed(kc, system);
  const rec = recordFile<Call>();
  const archive = packArchive([{ path: 'index.mjs', data: Buffer.from(fn.code) }]);
  const meta = (name: string) => ({ name, namespace: ns });
  for (const o of [
    { apiVersion: 'spore.dev/v1alpha1', kind: 'Environment', metadata: meta('node'), spec: { runtime: { name: 'node' }, poolSize: 1, pod: { env: [{ name: 'OUT', value: rec.out }] } } },
    { apiVersion: 'spore.dev/v1alpha1', kind: 'Package', metadata: meta(fn.name), spec: { archive: { sha256: archive.sha256, size: archive.size, inline: archive.bytes.toString('base64') } } },
    { apiVersion: 'spore.dev/v1alpha1', kind: 'Function', metadata: meta(fn.name), spec: { environment: { name: 'node' }, package: { name: fn.name } } },
    ...more(meta),
  ]) await applyObject(kc, o as any);
  const common = ['--kubeconfig', kubeconfig, '--namespace', system, '--watch-namespace', ns, '--host', '127.0.0.1', '--port', '0'];
  const poolmgr = await run('poolmgr', ['poolmgr', ...common], /spore poolmgr listening on (\S+)/);
  const router = (name: string) => run(name, ['router', ...common, '--poolmgr', poolmgr.url], /spore router listening on (\S+)/);
  /** The holder of the Lease `spore-triggers` (the router firing timers and taking over runs and calls): '' when none. */
  const leaseHolder = async (): Promise<string> => (await client.request('GET', `/apis/coordination.k8s.io/v1/namespaces/${system}/leases/spore-triggers`).catch(() => undefined))?.spec?.holderIdentity ?? '';
  return { ns, system, rec, meta, common, poolmgr, router, leaseHolder };
}
