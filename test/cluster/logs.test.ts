// `spore logs FN --kubeconfig …`: a function's logs read from its pods through
// the real API server (pods/log, answered by the test node agent), against a
// real `spore poolmgr` + `spore router`.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import yaml from 'js-yaml';
import { afterAll, describe, expect, it } from 'vitest';
import { packArchive } from '../../api/archive.js';
import { tempDir } from '../helpers.js';
import { applyObject, clusterReady, installCrds, kubeConfig, podsAllowed, testNamespace } from './cluster.js';

const ROOT = new URL('../..', import.meta.url).pathname;
const BIN = join(ROOT, 'bin/spore.js');
const kubeconfig = await clusterReady();

/** Logs a line per call (within the call: the runtime frames it with the request id). */
const HANDLER = `export default async (req) => {
  console.log('said ' + new URL(req.url).searchParams.get('say'));
  return Response.json({ instance: process.env.SPORE_INSTANCE });
};
`;

describe.skipIf(!kubeconfig)('spore logs on a cluster', () => {
  const children = new Set<ChildProcess>();
  afterAll(() => {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  });

  /** A `spore` command left running, with its stdout and stderr. */
  function start(args: string[]) {
    const out = { stdout: '', stderr: '' };
    const child = spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    children.add(child);
    child.stdout!.on('data', (d) => (out.stdout += d));
    child.stderr!.on('data', (d) => (out.stderr += d));
    return { child, out };
  }
  const stop = async (child: ChildProcess) => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const gone = new Promise((r) => child.once('exit', r));
    child.kill('SIGTERM');
    await gone;
  };
  const logs = (args: string[]) => spawnSync(process.execPath, [BIN, 'logs', ...args], { encoding: 'utf8', timeout: 60_000 });

  it("prints a function's lines from its pods, with the pod's name and the request id; -f follows pods specialized after it started", async () => {
    const kc = kubeConfig(kubeconfig!);
    await installCrds(kc);
    const ns = await testNamespace(kc, 'logs-app');
    const system = await testNamespace(kc, 'logs-system');
    await podsAllowed(kc, system);
    const archive = packArchive([{ path: 'index.mjs', data: Buffer.from(HANDLER) }]);
    const meta = (name: string) => ({ name, namespace: ns });
    for (const o of [
      { apiVersion: 'spore.dev/v1alpha1', kind: 'Environment', metadata: meta('node'), spec: { runtime: { name: 'node' }, poolSize: 1 } },
      { apiVersion: 'spore.dev/v1alpha1', kind: 'Package', metadata: meta('hello'), spec: { archive: { sha256: archive.sha256, size: archive.size, inline: archive.bytes.toString('base64') } } },
      { apiVersion: 'spore.dev/v1alpha1', kind: 'Function', metadata: meta('hello'), spec: { environment: { name: 'node' }, package: { name: 'hello' } } },
      { apiVersion: 'spore.dev/v1alpha1', kind: 'HttpTrigger', metadata: meta('hello'), spec: { path: '/hello', function: { name: 'hello' } } },
    ]) await applyObject(kc, o as any);
    const target = ['hello', '-n', ns, '--kubeconfig', kubeconfig!, '--pool-namespace', system];

    // no pod serves it yet: said so, exit 0
    const none = logs(target);
    expect(none.stderr).toContain(`no instances of ${ns}/hello are running on the cluster; logs live as long as the function's pods`);
    expect([none.status, none.stdout]).toEqual([0, '']);

    const common = ['--kubeconfig', kubeconfig!, '--namespace', system, '--watch-namespace', ns, '--host', '127.0.0.1', '--port', '0'];
    const url = async (p: { child: ChildProcess; out: { stdout: string } }, what: string) => {
      await expect.poll(() => (p.child.exitCode !== null ? `exited` : /listening on (\S+)/.exec(p.out.stdout)?.[1] ?? ''), { timeout: 60_000, interval: 100 }).toMatch(/^http/);
      return /listening on (\S+)/.exec(p.out.stdout)![1] + what;
    };
    const poolmgr = start(['poolmgr', ...common]);
    const router = start(['router', ...common, '--poolmgr', await url(poolmgr, '')]);
    const hello = await url(router, '/hello');

    // following from before the function has a pod
    const follow = start(['logs', ...target, '-f']);
    await expect.poll(() => follow.out.stderr, { timeout: 60_000, interval: 100 }).toContain(`no instances of ${ns}/hello`);

    const call = async (say: string, id: string) => {
      const res = await fetch(`${hello}?say=${say}`, { headers: { 'x-spore-request-id': id }, signal: AbortSignal.timeout(60_000) });
      expect(res.status).toBe(200);
      return ((await res.json()) as { instance: string }).instance;
    };
    const pod = await call('first', 'abc');
    const line = (id: string, text: string) => new RegExp(`^\\d{4}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\d\\.\\d{3}Z ${pod} ${id} ${text}$`, 'm');
    // the pod was specialized after `logs -f` started: picked up by its watch
    await expect.poll(() => follow.out.stdout, { timeout: 60_000, interval: 100 }).toMatch(line('abc', 'said first'));

    const once = logs(target);
    expect(once.status).toBe(0);
    expect(once.stdout).toMatch(line('abc', 'said first'));

    await call('later', 'def');
    await expect.poll(() => follow.out.stdout, { timeout: 60_000, interval: 100 }).toMatch(line('def', 'said later'));
    expect(follow.out.stdout.match(/said first/g)).toHaveLength(1);

    await stop(follow.child);
    await stop(router.child);
    await stop(poolmgr.child);
  }, 180_000);

  it('fails clearly, exit 1, on a missing kubeconfig or an unreachable cluster', () => {
    const missing = logs(['hello', '--kubeconfig', '/nonexistent/kubeconfig']);
    expect(missing.status).toBe(1);
    expect(missing.stderr).toContain('spore: --kubeconfig /nonexistent/kubeconfig:');
    const dir = tempDir('spore-logs-');
    const unreachable = join(dir, 'kubeconfig');
    writeFileSync(unreachable, yaml.dump({
      apiVersion: 'v1', kind: 'Config', 'current-context': 'x',
      clusters: [{ name: 'x', cluster: { server: 'https://127.0.0.1:1' } }], users: [{ name: 'x', user: { token: 't' } }], contexts: [{ name: 'x', context: { cluster: 'x', user: 'x' } }],
    }));
    const down = logs(['hello', '--kubeconfig', unreachable]);
    expect(down.status).toBe(1);
    expect(down.stderr).toContain('spore: the Kubernetes API at https://127.0.0.1:1 cannot be reached');
  });
});
