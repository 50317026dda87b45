// `spore reconciler --kubeconfig` against the run's real kube-apiserver: a Git
// repository pushed through file:// is synced to the cluster, healed, pruned,
// rejected whole when broken, rolled back, previewed in a namespace of its
// own, and converges after a kill -9 in the middle of an apply.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { KubernetesObjectApi, type KubeConfig } from '@kubernetes/client-node';
import yaml from 'js-yaml';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { packArchive } from '../../api/archive.js';
import { APP_LABEL, STAGE_LABEL } from '../../api/index.js';
import { tempDir } from '../helpers.js';
import { Repo } from '../reconciler/gitrepo.js';
import { clusterReady, installCrds, kubeConfig, testNamespace } from './cluster.js';

const ROOT = new URL('../..', import.meta.url).pathname;
const BIN = join(ROOT, 'bin/spore.js');
const kubeconfig = await clusterReady();

/** The rendered manifests of an app (the repository holds them: --manifests), every object in `ns`. */
function manifests(ns: string | undefined, functions: string[], extra: object[] = []): string {
  const meta = (name: string) => ({ name, ...(ns ? { namespace: ns } : {}) });
  const docs: object[] = [
    { apiVersion: 'spore.dev/v1alpha1', kind: 'Environment', metadata: meta('node'), spec: { runtime: { name: 'node' } } },
    { apiVersion: 'v1', kind: 'ConfigMap', metadata: meta('settings'), data: { greeting: 'hello' } },
    // what the API server rewrites (stringData into data, an empty map dropped) must not look like drift
    { apiVersion: 'v1', kind: 'Secret', metadata: { ...meta('token'), annotations: {} }, stringData: { token: 's3cret' } },
    { apiVersion: 'v1', kind: 'ConfigMap', metadata: meta('empty'), data: {} },
  ];
  for (const f of functions) {
    const archive = packArchive([{ path: 'index.mjs', data: Buffer.from(`export default () => new Response(${JSON.stringify(f)});\n`) }]);
    docs.push(
      { apiVersion: 'spore.dev/v1alpha1', kind: 'Package', metadata: meta(f), spec: { archive: { sha256: archive.sha256, size: archive.size, inline: archive.bytes.toString('base64') } } },
      { apiVersion: 'spore.dev/v1alpha1', kind: 'Function', metadata: meta(f), spec: { environment: { name: 'node' }, package: { name: f } } },
      { apiVersion: 'spore.dev/v1alpha1', kind: 'HttpTrigger', metadata: meta(f), spec: { path: `/${f}`, function: { name: f } } },
    );
  }
  return [...docs, ...extra].map((d) => yaml.dump(d)).join('---\n');
}

describe.skipIf(!kubeconfig)('spore reconciler on a cluster', () => {
  let kc: KubeConfig;
  let api: KubernetesObjectApi;
  const children: ChildProcess[] = [];

  beforeAll(async () => {
    kc = kubeConfig(kubeconfig!);
    api = KubernetesObjectApi.makeApiClient(kc);
    await installCrds(kc);
  });
  afterEach(() => {
    for (const c of children.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  });

  /** `spore reconciler` following `repo`, its output collected. */
  function start(repo: Repo, state: string, system: string, app = 'shop'): { child: ChildProcess; output: () => string } {
    let out = '';
    const child = spawn(process.execPath, [BIN, 'reconciler', '--kubeconfig', kubeconfig!, '--git', repo.url, '--manifests', '--state-dir', state, '--namespace', system, '--app', app, '--poll', '1h', '--previews'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    child.stdout!.on('data', (d) => (out += d));
    child.stderr!.on('data', (d) => (out += d));
    children.push(child);
    return { child, output: () => out };
  }
  const cli = (state: string, ...args: string[]) => spawnSync(process.execPath, [BIN, ...args, '--state-dir', state], { encoding: 'utf8' });
  const status = (state: string) => {
    const r = cli(state, 'status', '-o', 'json');
    return r.stdout ? JSON.parse(r.stdout) : undefined;
  };
  const read = (apiVersion: string, kind: string, name: string, namespace?: string) =>
    (api.read({ apiVersion, kind, metadata: { name, ...(namespace ? { namespace } : {}) } } as any) as Promise<any>).catch(() => undefined);
  const fn = (name: string, ns: string) => read('spore.dev/v1alpha1', 'Function', name, ns);
  const versions = async (ns: string, names: string[]) => Object.fromEntries(await Promise.all(names.map(async (n) => [n, (await fn(n, ns))?.metadata.resourceVersion])));

  it('syncs, never rewrites what is in sync, heals drift, prunes, rejects a broken commit whole, rolls back', async () => {
    const ns = await testNamespace(kc, 'rec-main');
    const system = await testNamespace(kc, 'rec-system');
    const state = tempDir('spore-kube-rec-');
    const repo = new Repo();
    const a = repo.commit('two functions', { 'dist/app.yaml': manifests(ns, ['a', 'b']) });
    const rec = start(repo, state, system);
    await expect.poll(() => status(state)?.[0]?.state, { timeout: 60_000, interval: 250 }).toBe('synced');
    expect(status(state)[0].liveRevision).toBe(a);

    // on the cluster, labelled as the app's, with the Stage telling what spore status tells
    const b = await fn('b', ns);
    expect(b.metadata.labels).toMatchObject({ [APP_LABEL]: 'shop', [STAGE_LABEL]: 'main' });
    expect(await read('spore.dev/v1alpha1', 'HttpTrigger', 'a', ns)).toBeTruthy();
    const stage = await read('spore.dev/v1alpha1', 'Stage', 'shop-main', system);
    expect(stage.status).toMatchObject({ lastAppliedRevision: a, lastAttemptedRevision: a, conditions: [{ type: 'Ready', status: 'True', reason: 'Synced' }] });
    expect(stage.status.inventory).toHaveLength(10);
    // each object says it is Ready and which revision last changed it, in its status subresource
    expect(b.status).toMatchObject({ observedGeneration: 1, revision: a, conditions: [{ type: 'Ready', status: 'True', reason: 'Applied', message: 'environment node, package b' }] });
    expect((await read('spore.dev/v1alpha1', 'HttpTrigger', 'a', ns)).status).toMatchObject({ revision: a, conditions: [{ status: 'True', message: 'calls function a' }] });

    // polls of a repository that did not move write nothing and heal nothing, even with a look-alike of another's
    // (the labels of this app and stage, elsewhere, not in its inventory) on the cluster
    const elsewhere = await testNamespace(kc, 'rec-other');
    await api.create({ apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'look-alike', namespace: elsewhere, labels: { [APP_LABEL]: 'shop', [STAGE_LABEL]: 'main' } } } as any);
    const before = await versions(ns, ['a', 'b']);
    const records = JSON.parse(cli(state, 'history', '-o', 'json').stdout).length;
    for (let i = 0; i < 3; i++) expect(cli(state, 'sync').status).toBe(0);
    expect(await versions(ns, ['a', 'b'])).toEqual(before);
    // (what each new record healed, if any: the objects that looked changed)
    expect(JSON.parse(cli(state, 'history', '-o', 'json').stdout).slice(0, -records).map((r: any) => `${r.trigger}: ${JSON.stringify(r.healed ?? r.counts)}`)).toEqual([]);
    expect(rec.output()).not.toContain('drift');

    // out of band: a deleted ConfigMap and a field of Spore's edited are put back (a field another manager adds is theirs and
    // stays, as server-side apply keeps it); the untouched function is not written
    await api.delete({ apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'settings', namespace: ns } } as any);
    await api.patch({ apiVersion: 'spore.dev/v1alpha1', kind: 'Function', metadata: { name: 'a', namespace: ns }, spec: { package: { name: 'b' }, env: [{ name: 'THEIRS', value: '1' }] } } as any, undefined, undefined, 'kubectl-edit', undefined, 'application/merge-patch+json' as any);
    await expect.poll(async () => (await fn('a', ns)).spec.package.name, { timeout: 10_000 }).toBe('b');
    // synced until the reconciler's watch has seen both edits and healed them
    await expect.poll(() => (cli(state, 'sync'), JSON.parse(cli(state, 'history', '-o', 'json').stdout)[0]?.healed?.length ?? 0), { timeout: 30_000, interval: 500 }).toBeGreaterThan(0);
    await expect.poll(async () => (await read('v1', 'ConfigMap', 'settings', ns))?.data, { timeout: 20_000 }).toEqual({ greeting: 'hello' });
    await expect.poll(async () => (await fn('a', ns)).spec.package.name, { timeout: 20_000 }).toBe('a');
    expect((await fn('a', ns)).spec).toMatchObject({ package: { name: 'a' }, env: [{ name: 'THEIRS', value: '1' }] });
    expect((await fn('b', ns)).metadata.resourceVersion).toBe(before.b);
    const healed = JSON.parse(cli(state, 'history', '-o', 'json').stdout).filter((h: any) => h.trigger === 'sync: drift').flatMap((h: any) => h.healed);
    expect(healed).toEqual(expect.arrayContaining([`ConfigMap/${ns}/settings`, `Function/${ns}/a`]));

    // a function removed from the repository is pruned; what Spore did not create is left alone
    await api.create({ apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'by-hand', namespace: ns, labels: { [APP_LABEL]: 'shop', [STAGE_LABEL]: 'main' } } } as any);
    const c = repo.commit('drop b', { 'dist/app.yaml': manifests(ns, ['a']) });
    expect(cli(state, 'sync').status).toBe(0);
    await expect.poll(() => fn('b', ns), { timeout: 20_000 }).toBeUndefined();
    expect(await read('spore.dev/v1alpha1', 'Package', 'b', ns)).toBeUndefined();
    expect(await read('spore.dev/v1alpha1', 'HttpTrigger', 'b', ns)).toBeUndefined();
    expect(await read('v1', 'ConfigMap', 'by-hand', ns)).toBeTruthy();
    expect((await fn('a', ns)).status.revision).toBe(a); // unchanged since a

    // a broken commit is rejected whole: the previous revision's objects stay, and the Stage says why
    const broken = repo.commit('broken', { 'dist/app.yaml': manifests(ns, ['a', 'd'], [{ apiVersion: 'spore.dev/v1alpha1', kind: 'Function', metadata: { name: 'e', namespace: ns }, spec: { environment: { name: 'node' } } }]) });
    const failed = cli(state, 'sync');
    expect(failed.status).toBe(1);
    expect(failed.stdout).toContain('failed at validate');
    expect(await fn('d', ns)).toBeUndefined();
    expect(await fn('a', ns)).toBeTruthy();
    const stageNow = await read('spore.dev/v1alpha1', 'Stage', 'shop-main', system);
    expect(stageNow.status).toMatchObject({ lastAppliedRevision: c, lastAttemptedRevision: broken, failure: { revision: broken, step: 'validate' }, conditions: [{ type: 'Ready', status: 'False', reason: 'SyncFailed' }] });

    // rollback to the revision before the live one brings b back
    const back = cli(state, 'rollback');
    expect(back.status, back.stderr + back.stdout).toBe(0);
    await expect.poll(() => fn('b', ns), { timeout: 20_000 }).toBeTruthy();
    expect((await read('spore.dev/v1alpha1', 'Stage', 'shop-main', system)).status.lastAppliedRevision).toBe(a);
    expect(rec.output()).not.toMatch(/could not write its Stage/);
  });

  it('gives a preview branch a namespace of its own, deleted with the branch', async () => {
    const system = await testNamespace(kc, 'rec-system');
    const main = await testNamespace(kc, 'rec-main');
    const state = tempDir('spore-kube-rec-');
    const repo = new Repo();
    repo.commit('main', { 'dist/app.yaml': manifests(main, []) });
    const branch = `preview/x${randomBytes(3).toString('hex')}`;
    const stage = branch.replace('/', '-');
    repo.commit('try', { 'dist/app.yaml': manifests(undefined, ['p']) }, branch);
    start(repo, state, system);
    await expect.poll(() => status(state)?.find((s: any) => s.stage === stage)?.state, { timeout: 60_000, interval: 250 }).toBe('synced');
    const namespace = await read('v1', 'Namespace', stage);
    expect(namespace.metadata.labels).toMatchObject({ [APP_LABEL]: 'shop', [STAGE_LABEL]: stage });
    expect(await fn('p', stage)).toBeTruthy();
    expect((await read('spore.dev/v1alpha1', 'Stage', `shop-${stage}`, system)).spec).toMatchObject({ stage, namespace: stage, ref: `refs/heads/${branch}` });

    repo.deleteBranch(branch);
    expect(cli(state, 'sync').status).toBe(0);
    await expect.poll(() => fn('p', stage), { timeout: 20_000 }).toBeUndefined();
    // no namespace controller runs here: a deleted namespace stays Terminating, its deletion under way
    const gone = await read('v1', 'Namespace', stage);
    expect(gone === undefined || Boolean(gone.metadata.deletionTimestamp)).toBe(true);
    expect(await read('spore.dev/v1alpha1', 'Stage', `shop-${stage}`, system)).toBeUndefined();
  });

  it('converges after a kill -9 in the middle of an apply: the next revision prunes what the killed run created', async () => {
    const ns = await testNamespace(kc, 'rec-kill');
    const system = await testNamespace(kc, 'rec-system');
    const state = tempDir('spore-kube-rec-');
    const repo = new Repo();
    const many = (n: number) => Array.from({ length: n }, (_, i) => ({ apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: `c${i}`, namespace: ns }, data: { i: String(i) } }));
    repo.commit('many', { 'dist/app.yaml': manifests(ns, [], many(300)) });
    const first = start(repo, state, system, 'bulk');
    const count = async () => ((await api.list('v1', 'ConfigMap', ns)).items as any[]).filter((c) => /^c\d+$/.test(c.metadata.name)).length;
    await expect.poll(count, { timeout: 60_000, interval: 20 }).toBeGreaterThan(0);
    first.child.kill('SIGKILL');
    await new Promise((r) => first.child.once('exit', r));
    const partial = await count();
    expect(partial).toBeLessThan(300); // killed part-way

    // the next revision holds fewer: only the inventory written ahead of the killed apply knows what it created
    repo.commit('fewer', { 'dist/app.yaml': manifests(ns, [], many(10)) });
    start(repo, state, system, 'bulk');
    await expect.poll(() => status(state)?.[0]?.state, { timeout: 60_000, interval: 250 }).toBe('synced');
    expect(await count()).toBe(10);
  });
});
