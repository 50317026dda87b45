// WatchTriggers: spore up's dataplane (in-process, over SQLite) watching the
// run's real kube-apiserver, a real Node function recording what it is sent.
import { afterEach, describe, expect, it } from 'vitest';
import type { KubeObject } from '../../api/index.js';
import { KubeClient } from '../../store/kube-client.js';
import { tempDir } from '../helpers.js';
import { environment, fn, harness, recordFile, waitFor, type Harness } from '../dataplane/harness.js';
import { clusterReady, kubeConfig, testNamespace } from './cluster.js';

const kubeconfig = await clusterReady();

const RECORDER = {
  'index.mjs': `import { appendFileSync } from 'node:fs';
  export default async (req) => {
    const { type, object } = await req.json();
    appendFileSync(process.env.OUT, JSON.stringify({ type, name: object.metadata.name, color: object.data?.color, watch: req.headers.get('x-spore-watch') }) + '\\n');
    return new Response('ok');
  };`,
};
type Line = { type: string; name: string; color?: string; watch: string };
const trigger = (spec: Record<string, unknown>): KubeObject => ({ apiVersion: 'spore.dev/v1alpha1', kind: 'WatchTrigger', metadata: { name: 'colors' }, spec: { resource: { apiVersion: 'v1', kind: 'ConfigMap' }, function: { name: 'rec' }, ...spec } });

let h: Harness | undefined;
afterEach(async () => {
  await h?.close();
  h = undefined;
});

describe('watch triggers without a cluster', () => {
  it('are inactive, and spore up says why', async () => {
    const rec = recordFile<Line>();
    h = await harness();
    await h.apply([environment('node', 'node'), ...fn('rec', RECORDER, { vars: { OUT: rec.out } }), trigger({ namespace: 'anywhere' })]);
    const info = await waitFor('the watch listed', () => h!.dp.watches.list().find((w) => w.name === 'colors'));
    expect(info).toMatchObject({ state: 'inactive', detail: 'watch triggers need a cluster: start spore up with --kubeconfig PATH' });
    expect(h.reports.join('\n')).toContain('watch trigger default/colors: inactive');
    // and the trigger's Active condition says it
    const stored = async () => (await h!.store.get({ apiVersion: 'spore.dev/v1alpha1', kind: 'WatchTrigger', namespace: 'default', name: 'colors' }))?.status?.conditions;
    await expect.poll(stored, { timeout: 10_000 }).toEqual([{ type: 'Active', status: 'False', reason: 'Inactive', message: 'watch triggers need a cluster: start spore up with --kubeconfig PATH', lastTransitionTime: expect.any(String) }]);
  });
});

describe.skipIf(!kubeconfig)('watch triggers on a cluster', () => {
  it('call the function with each change of the watched objects ({ type, object }), from the present on, and resume where they were after a restart', async () => {
    const kc = kubeConfig(kubeconfig!);
    const client = new KubeClient(kc);
    try {
      const ns = await testNamespace(kc, 'watch');
      const cm = (name: string, color: string, labels: Record<string, string> = { watched: 'yes' }) => ({ apiVersion: 'v1', kind: 'ConfigMap', metadata: { name, namespace: ns, labels }, data: { color } });
      const path = `/api/v1/namespaces/${ns}/configmaps`;
      // there before the trigger: not sent
      await client.request('POST', path, { body: cm('old', 'grey') });
      const rec = recordFile<Line>();
      const dir = tempDir('spore-watch-');
      h = await harness({ stateDir: dir, kubeconfig: kc });
      await h.apply([environment('node', 'node'), ...fn('rec', RECORDER, { vars: { OUT: rec.out } }), trigger({ namespace: ns, labelSelector: { watched: 'yes' } })]);
      await waitFor('watching', () => h!.dp.watches.list().find((w) => w.state === 'watching'), 30_000);
      await client.request('POST', path, { body: cm('a', 'red') });
      await client.request('POST', path, { body: cm('unlabelled', 'blue', { other: 'x' }) });
      await client.request('PATCH', `${path}/a`, { body: { data: { color: 'green' } }, contentType: 'application/merge-patch+json' });
      await client.request('DELETE', `${path}/a`);
      await waitFor('three events', () => (rec.lines().length >= 3 ? true : null), 30_000);
      expect(rec.lines()).toEqual([
        { type: 'ADDED', name: 'a', color: 'red', watch: 'colors' },
        { type: 'MODIFIED', name: 'a', color: 'green', watch: 'colors' },
        { type: 'DELETED', name: 'a', color: 'green', watch: 'colors' },
      ]);
      // stopped; a change meanwhile; started again: only that change comes, nothing already sent again
      await h.close();
      h = undefined;
      await client.request('POST', path, { body: cm('b', 'blue') });
      h = await harness({ stateDir: dir, kubeconfig: kc });
      await waitFor('the change made while down', () => rec.lines().find((l) => l.name === 'b'), 30_000);
      await new Promise((r) => setTimeout(r, 1000));
      expect(rec.lines().map((l) => `${l.type} ${l.name}`)).toEqual(['ADDED a', 'MODIFIED a', 'DELETED a', 'ADDED b']);
    } finally {
      client.close();
    }
  }, 120_000);
});

describe.skipIf(!kubeconfig)('watch triggers on a cluster: their Active condition', () => {
  it('is not written for a trigger deleted while its watch opens (no "could not write" for a trigger that is gone)', async () => {
    const kc = kubeConfig(kubeconfig!);
    const ns = await testNamespace(kc, 'watchgone');
    h = await harness({ kubeconfig: kc });
    const ref = { apiVersion: 'spore.dev/v1alpha1', kind: 'WatchTrigger', namespace: 'default', name: 'colors' };
    await h.store.apply([trigger({ namespace: ns })]);
    // its starting version kept: the watch is opening now; the trigger goes
    for (const deadline = Date.now() + 30_000; !h.store.readState('watch/default/colors'); ) {
      if (Date.now() > deadline) throw new Error('timed out waiting for the watch to list');
      await new Promise((r) => setImmediate(r));
    }
    await h.store.delete(ref);
    await new Promise((r) => setTimeout(r, 1000));
    expect(h.reports.filter((m) => m.includes('could not write'))).toEqual([]);
    expect(h.dp.watches.list()).toEqual([]);
  }, 60_000);
});
