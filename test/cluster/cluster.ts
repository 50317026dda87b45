// What suites use to reach the run's API server: wait for it, a namespace per
// test, server-side apply as Spore does it (field manager `spore`).
import { randomBytes } from 'node:crypto';
import { KubeConfig, KubernetesObjectApi, loadYaml, PatchStrategy, type KubernetesObject } from '@kubernetes/client-node';
import { inject } from 'vitest';
import { allCrds } from '../../api/index.js';
import { readOutcome } from './run-state.js';

export const FIELD_MANAGER = 'spore';

async function outcome() {
  const dir = inject('clusterDir');
  if (!dir) throw new Error('no test cluster: test/global-setup.ts did not run (run the tests with vitest from the repository root)');
  for (;;) {
    const o = readOutcome(dir);
    if (o) return o;
    await new Promise((r) => setTimeout(r, 250));
  }
}

/**
 * The kubeconfig of the run's API server, once it is ready (the first run may
 * build the binaries first). Throws the reason when there is none. Outside CI,
 * when the binaries cannot be had here, resolves undefined after printing why:
 * the suite skips. Under CI=true a missing server is always a failure.
 */
export async function clusterReady(): Promise<string | undefined> {
  const o = await outcome();
  if (o.kubeconfig) return o.kubeconfig;
  if (o.unavailable && process.env.CI !== 'true') {
    console.warn(`skipping the cluster suites: ${o.reason}`);
    return undefined;
  }
  throw new Error(`the test API server did not start: ${o.reason}`);
}

export function kubeConfig(path: string): KubeConfig {
  const kc = new KubeConfig();
  kc.loadFromFile(path);
  return kc;
}

/** A fresh namespace for one test, named after it. */
export async function testNamespace(kc: KubeConfig, prefix = 't'): Promise<string> {
  const name = `${prefix.toLowerCase().replace(/[^a-z0-9-]+/g, '-').slice(0, 40).replace(/-+$/, '')}-${randomBytes(3).toString('hex')}`;
  await KubernetesObjectApi.makeApiClient(kc).create({ apiVersion: 'v1', kind: 'Namespace', metadata: { name } });
  return name;
}

/**
 * Server-side apply of one manifest (field manager `spore`, taking over
 * conflicting fields), or its dry run. The client serializes built-in kinds
 * from its own models, whose field names differ from the wire's (`_default`
 * for `default`, `xKubernetesValidations` …) and drops what it does not know:
 * a manifest is read into those models first, by the client's own loader.
 */
export async function applyObject<T extends KubernetesObject>(kc: KubeConfig, manifest: T, { dryRun = false } = {}): Promise<T> {
  const obj = loadYaml<T>(JSON.stringify(manifest)); // JSON is YAML
  return KubernetesObjectApi.makeApiClient(kc).patch(obj, undefined, dryRun ? 'All' : undefined, FIELD_MANAGER, true, PatchStrategy.ServerSideApply);
}

/** Waits until the API server serves a CRD's kind. */
export async function waitEstablished(kc: KubeConfig, name: string): Promise<void> {
  const api = KubernetesObjectApi.makeApiClient(kc);
  for (let i = 0; ; i++) {
    const crd = (await api.read({ apiVersion: 'apiextensions.k8s.io/v1', kind: 'CustomResourceDefinition', metadata: { name } })) as any;
    if (crd.status?.conditions?.some((c: any) => c.type === 'Established' && c.status === 'True')) return;
    if (i === 300) throw new Error(`CRD ${name} is not Established: ${JSON.stringify(crd.status?.conditions)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** The spore.dev CRDs, applied server-side as `spore crds | kubectl apply --server-side -f -` does, each Established. */
export async function installCrds(kc: KubeConfig): Promise<any[]> {
  const crds = allCrds() as any[];
  for (const crd of crds) await applyObject(kc, crd);
  for (const crd of crds) await waitEstablished(kc, crd.metadata.name);
  return crds;
}

/**
 * Waits until the namespace has its `default` ServiceAccount, which the test
 * node agent creates (as the controller manager would): the API server refuses
 * pods in a namespace without one.
 */
export async function podsAllowed(kc: KubeConfig, namespace: string): Promise<void> {
  const api = KubernetesObjectApi.makeApiClient(kc);
  for (let i = 0; ; i++) {
    const found = await api.read({ apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name: 'default', namespace } }).then(() => true, () => false);
    if (found) return;
    if (i === 600) throw new Error(`namespace ${namespace} has no default ServiceAccount: is the test node agent running (test/cluster/node-agent.ts)?`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
