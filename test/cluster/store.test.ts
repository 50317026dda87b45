// The store on the Kubernetes API, against the run's real kube-apiserver:
// server-side apply, unchanged objects never rewritten, drift told from what
// the API server adds, prune by the Stage's inventory, a refused object failing
// the apply before anything of the set is written, informers, status, and the
// reconciler's history kept in ConfigMaps.
import { KubernetesObjectApi, type KubeConfig } from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { APP_LABEL, STAGE_LABEL, type KubeObject } from '../../api/index.js';
import { KubeHistory } from '../../store/kube-history.js';
import { ApplyError, KubeStore } from '../../store/kubernetes.js';
import { refOf, type WatchEvent } from '../../store/index.js';
import { clusterReady, installCrds, kubeConfig, testNamespace } from './cluster.js';

const kubeconfig = await clusterReady();

const labels = (app: string, stage = 'main') => ({ [APP_LABEL]: app, [STAGE_LABEL]: stage });
const objects = (ns: string, app: string): KubeObject[] => [
  { apiVersion: 'spore.dev/v1alpha1', kind: 'Environment', metadata: { name: 'node', namespace: ns, labels: labels(app) }, spec: { runtime: { name: 'node' } } },
  { apiVersion: 'spore.dev/v1alpha1', kind: 'Package', metadata: { name: 'hello', namespace: ns, labels: labels(app) }, spec: { archive: { sha256: 'a'.repeat(64), size: 3, inline: 'AAAA' } } },
  // no executor: the API server fills in its default, which must not look like drift
  { apiVersion: 'spore.dev/v1alpha1', kind: 'Function', metadata: { name: 'hello', namespace: ns, labels: labels(app) }, spec: { environment: { name: 'node' }, package: { name: 'hello' } } },
  { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'settings', namespace: ns, labels: labels(app) }, data: { greeting: 'hi' } },
];

describe.skipIf(!kubeconfig)('the store on the Kubernetes API', () => {
  let kc: KubeConfig;
  let api: KubernetesObjectApi;
  let store: KubeStore;
  let system: string;
  const events: WatchEvent[] = [];
  // the informers' watch may lag the write by a moment (or longer, right after the CRDs were installed)
  const soon = { timeout: 20_000 };

  beforeAll(async () => {
    kc = kubeConfig(kubeconfig!);
    api = KubernetesObjectApi.makeApiClient(kc);
    await installCrds(kc);
    system = await testNamespace(kc, 'spore-system');
    store = await KubeStore.open({ kubeconfig: kc, namespace: system, report: () => {} });
    store.watch((e) => events.push(e));
  });
  afterAll(async () => {
    await store?.close();
  });

  /** The object as the API server has it now (not from the store's cache). */
  const read = (o: KubeObject) => api.read(o as any) as Promise<any>;

  it('applies a set server-side, and applying it again writes nothing', async () => {
    const ns = await testNamespace(kc, 'apply');
    const set = objects(ns, 'shop');
    const first = await store.apply(set, { prune: { labels: labels('shop') } });
    expect(first.created.map((r) => r.kind).sort()).toEqual(['ConfigMap', 'Environment', 'Function', 'Package']);
    const fn = await read(set[2]);
    expect(fn.spec.executor).toEqual({ type: 'pool' }); // the server's default
    expect(fn.metadata.managedFields.some((m: any) => m.manager === 'spore' && m.operation === 'Apply')).toBe(true);
    const versions = await Promise.all(set.map(async (o) => (await read(o)).metadata.resourceVersion));

    const again = await store.apply(set, { prune: { labels: labels('shop') } });
    expect(again).toMatchObject({ created: [], updated: [], pruned: [] });
    expect(again.unchanged).toHaveLength(4);
    expect(await Promise.all(set.map(async (o) => (await read(o)).metadata.resourceVersion))).toEqual(versions);
    // the store's read of it, with what the server added, and the part Spore applied equal to what it applied
    const stored = await store.get({ apiVersion: 'spore.dev/v1alpha1', kind: 'Function', namespace: ns, name: 'hello' });
    expect(stored?.metadata.generation).toBe(1);
    expect(store.applied(stored!)).toMatchObject({ spec: set[2].spec });
    expect((store.applied(stored!) as any).spec.executor).toBeUndefined();
  });

  it('puts back a field edited out of band, and leaves fields other managers own alone', async () => {
    const ns = await testNamespace(kc, 'drift');
    const set = objects(ns, 'shop');
    await store.apply(set, { prune: { labels: labels('shop') } });
    // someone edits Spore's field, and adds one of their own
    await api.patch({ apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'settings', namespace: ns }, data: { greeting: 'hacked', extra: 'theirs' } } as any, undefined, undefined, 'kubectl-edit', undefined, 'application/merge-patch+json' as any);
    await expect.poll(async () => (await store.get({ apiVersion: 'v1', kind: 'ConfigMap', namespace: ns, name: 'settings' }))?.data, soon).toEqual({ greeting: 'hacked', extra: 'theirs' });
    const r = await store.apply(set, { prune: { labels: labels('shop') } });
    expect(r.updated.map((x) => x.kind)).toEqual(['ConfigMap']);
    expect(r.unchanged).toHaveLength(3);
    expect((await read(set[3])).data).toEqual({ greeting: 'hi', extra: 'theirs' });
  });

  it('prunes what left the inventory, and nothing it does not hold', async () => {
    const ns = await testNamespace(kc, 'prune');
    const set = objects(ns, 'shop');
    await store.apply(set, { prune: { labels: labels('shop') } });
    // made by hand with the app's labels: not in the inventory, so never Spore's to delete
    await api.create({ apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'by-hand', namespace: ns, labels: labels('shop') }, data: {} } as any);
    const r = await store.apply(set.slice(0, 3), { prune: { labels: labels('shop') } });
    expect(r.pruned).toEqual([{ apiVersion: 'v1', kind: 'ConfigMap', namespace: ns, name: 'settings' }]);
    await expect(read(set[3])).rejects.toThrow();
    expect((await read({ apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'by-hand', namespace: ns } })).metadata.name).toBe('by-hand');
    const stage = await read({ apiVersion: 'spore.dev/v1alpha1', kind: 'Stage', metadata: { name: 'shop-main', namespace: system } });
    expect(stage.status.inventory.map((e: any) => `${e.kind}/${e.name}`)).toEqual(expect.arrayContaining(['Environment/node', 'Package/hello', 'Function/hello']));
    expect(stage.status.inventory.some((e: any) => e.name === 'settings' && e.namespace === ns)).toBe(false);
    // an object of the inventory that someone else relabelled is theirs now: left alone
    await store.apply(set, { prune: { labels: labels('shop') } });
    await api.patch({ apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'settings', namespace: ns, labels: { [APP_LABEL]: 'other' } } } as any, undefined, undefined, 'kubectl-edit', true, 'application/apply-patch+yaml' as any);
    const again = await store.apply(set.slice(0, 3), { prune: { labels: labels('shop') } });
    expect(again.pruned).toEqual([]);
    expect((await read(set[3])).metadata.name).toBe('settings');
  });

  it('refuses the whole set when the API server refuses one object, before writing any of it', async () => {
    const ns = await testNamespace(kc, 'refuse');
    const set = objects(ns, 'shop');
    const bad = { ...set[2], metadata: { ...set[2].metadata, name: 'bad' }, spec: { ...(set[2] as any).spec, executor: { type: 'fast' } } };
    const err = await store.apply([...set, bad], { prune: { labels: labels('shop') } }).catch((e) => e);
    expect(err).toBeInstanceOf(ApplyError);
    expect(err.message).toMatch(new RegExp(`Function/${ns}/bad: .*spec.executor.type`));
    expect(err.applied).toEqual([]);
    for (const o of set) await expect(read(o)).rejects.toThrow();
  });

  it('creates a namespace and what goes in it in one apply, the namespace first', async () => {
    const ns = `preview-${Date.now().toString(36)}`;
    const set = [{ apiVersion: 'v1', kind: 'Namespace', metadata: { name: ns, labels: labels('shop', 'pr-1') } }, ...objects(ns, 'shop').map((o) => ({ ...o, metadata: { ...o.metadata, labels: labels('shop', 'pr-1') } }))];
    const r = await store.apply(set, { prune: { labels: labels('shop', 'pr-1') } });
    expect(r.created).toHaveLength(5);
    expect(r.created[0].kind).toBe('Namespace');
    const torn = await store.apply([], { prune: { labels: labels('shop', 'pr-1') } });
    // the objects first (reverse waves: functions before what they use), the namespace last
    expect(torn.pruned).toHaveLength(5);
    expect(torn.pruned[0].kind).toBe('Function');
    expect(torn.pruned.at(-1)?.kind).toBe('Namespace');
  });

  it('tells watchers of changes and keeps a status Spore writes apart from the spec', async () => {
    const ns = await testNamespace(kc, 'watch');
    const set = objects(ns, 'shop');
    events.length = 0;
    await store.apply(set, { prune: { labels: labels('shop') } });
    await expect.poll(() => events.filter((e) => e.object.metadata.namespace === ns).map((e) => `${e.type} ${e.object.kind}`), soon).toEqual(
      expect.arrayContaining(['ADDED Environment', 'ADDED Package', 'ADDED Function']),
    );
    const ref = { apiVersion: 'spore.dev/v1alpha1', kind: 'Function', namespace: ns, name: 'hello' };
    await store.setStatus(ref, { observedGeneration: 1, conditions: [{ type: 'Ready', status: 'True', reason: 'Found', message: 'ok', lastTransitionTime: new Date().toISOString() }] });
    await expect.poll(() => events.some((e) => e.type === 'MODIFIED' && e.object.metadata.name === 'hello' && e.object.metadata.namespace === ns && (e.object.status as any)?.conditions), soon).toBe(true);
    expect((await store.get(ref))?.status).toMatchObject({ observedGeneration: 1 });
    // a change of the spec bumps the generation and keeps the status
    await store.apply(set.map((o) => (o.kind === 'Function' ? { ...o, spec: { ...(o as any).spec, env: [{ name: 'GREETING', value: 'hi' }] } } : o)), { prune: { labels: labels('shop') } });
    const fn = await read(set[2]);
    expect(fn.metadata.generation).toBe(2);
    expect(fn.status.conditions[0].type).toBe('Ready');
    await store.apply(set.filter((o) => o.kind !== 'Function'), { prune: { labels: labels('shop') } });
    await expect.poll(() => events.some((e) => e.type === 'DELETED' && e.object.kind === 'Function' && e.object.metadata.namespace === ns), soon).toBe(true);
    expect(await store.get(ref)).toBeUndefined();
  });

  it('fails clearly when asked to watch a kind the cluster does not serve, or to keep history in a namespace that does not exist', async () => {
    await expect(KubeStore.open({ kubeconfig: kc, namespace: system, kinds: [{ apiVersion: 'nope.example/v1', kind: 'Thing' }], report: () => {} })).rejects.toThrow(/does not serve Thing in nope.example\/v1 \(is its CustomResourceDefinition installed\?\)/);
    await expect(KubeHistory.open(store.client, 'no-such-namespace', 'shop', () => {})).rejects.toThrow('namespace no-such-namespace does not exist: create it (kubectl create namespace no-such-namespace) or give --namespace');
  });

  it('applies a new CRD and objects of its kind in one set, and does not take what the server rewrites for drift', async () => {
    const ns = await testNamespace(kc, 'crd');
    const group = `t${Date.now().toString(36)}.example.com`;
    const crd = {
      apiVersion: 'apiextensions.k8s.io/v1', kind: 'CustomResourceDefinition', metadata: { name: `widgets.${group}`, labels: labels('shop', 'crd') },
      spec: { group, scope: 'Namespaced', names: { plural: 'widgets', singular: 'widget', kind: 'Widget' }, versions: [{ name: 'v1', served: true, storage: true, schema: { openAPIV3Schema: { type: 'object', properties: { spec: { type: 'object', properties: { size: { type: 'integer' } } } } } } }] },
    };
    const widget = { apiVersion: `${group}/v1`, kind: 'Widget', metadata: { name: 'w', namespace: ns, labels: labels('shop', 'crd') }, spec: { size: 3 } };
    // values the API server rewrites: stringData becomes data, an empty map is dropped
    const secret = { apiVersion: 'v1', kind: 'Secret', metadata: { name: 's', namespace: ns, labels: labels('shop', 'crd'), annotations: {} }, stringData: { password: 'hunter2' } };
    const empty = { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'empty', namespace: ns, labels: labels('shop', 'crd') }, data: {} };
    expect(await store.get(refOf(widget as any))).toBeUndefined(); // not served yet: nothing there, not an error
    const set = [crd, widget, secret, empty] as KubeObject[];
    const first = await store.apply(set, { prune: { labels: labels('shop', 'crd') } });
    expect(first.created).toHaveLength(4);
    expect((await read(widget as any)).spec).toEqual({ size: 3 });
    const again = await store.apply(set, { prune: { labels: labels('shop', 'crd') } });
    expect(again).toMatchObject({ created: [], updated: [], unchanged: expect.arrayContaining([expect.objectContaining({ kind: 'Secret' }), expect.objectContaining({ kind: 'ConfigMap' })]) });
    // a restarted store knows it too (the baseline is kept in the Stage's inventory)
    const restarted = await KubeStore.open({ kubeconfig: kc, namespace: system, report: () => {} });
    try {
      expect((await restarted.apply(set, { prune: { labels: labels('shop', 'crd') } })).unchanged).toHaveLength(4);
    } finally {
      await restarted.close();
    }
  });

  it('watches only what it labelled of kinds other than Spore\'s, and still reads an unlabelled object by name (so it is never taken over unseen)', async () => {
    const ns = await testNamespace(kc, 'labelled');
    await api.create({ apiVersion: 'v1', kind: 'Secret', metadata: { name: 'by-hand', namespace: ns }, stringData: { k: 'v' } } as any);
    const secret = await store.get({ apiVersion: 'v1', kind: 'Secret', namespace: ns, name: 'by-hand' });
    expect(secret?.metadata.labels).toBeUndefined();
    expect(secret?.kind).toBe('Secret');
    expect((await store.list({ apiVersion: 'v1', kind: 'Secret', namespace: ns })).map((o) => o.metadata.name)).toEqual([]);
    expect(await store.get({ apiVersion: 'v1', kind: 'Secret', namespace: ns, name: 'nothing' })).toBeUndefined();
  });

  it('keeps the sync history and state in ConfigMaps, read back by a restarted reconciler', async () => {
    const ns = await testNamespace(kc, 'history');
    const h = await KubeHistory.open(store.client, ns, 'shop', () => {});
    const objects = [{ apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'x' } }];
    h.recordSync({ stage: 'main', revision: 'a'.repeat(40), startedAt: 1, durationMs: 5, result: 'succeeded', trigger: 'start', objects, applied: { x: 'd' } });
    h.recordSync({ stage: 'main', revision: 'b'.repeat(40), startedAt: 2, durationMs: 5, result: 'failed', trigger: 'poll', error: { step: 'render', message: 'boom' } });
    h.writeState('pin:main', { revision: 'aaa', head: 'bbb' });
    h.writeState('stages', { 'pr-1': 'refs/pull/1/head' });
    h.writeState('stages', undefined);
    await h.flush();
    const again = await KubeHistory.open(store.client, ns, 'shop', () => {});
    expect(again.listSyncs({ stage: 'main' }).map((r) => [r.id, r.result])).toEqual([[2, 'failed'], [1, 'succeeded']]);
    expect(again.getSync({ stage: 'main', revision: 'aaaa', result: 'succeeded' })?.objects).toEqual(objects);
    expect(again.getSync({ stage: 'main', revision: 'b'.repeat(40) })?.error).toEqual({ step: 'render', message: 'boom' });
    expect(again.readState('pin:main')).toEqual({ revision: 'aaa', head: 'bbb' });
    expect(again.readState('stages')).toBeUndefined();
    // another app's history is its own
    expect((await KubeHistory.open(store.client, ns, 'other', () => {})).listSyncs({})).toEqual([]);
  });
});
