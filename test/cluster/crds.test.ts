// The only judge of a CRD is the API server: Spore's CRDs, the example app and
// the platform chart applied server-side to a real kube-apiserver, and bad
// objects refused by it and by Spore's own validator alike.
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { ApiException, AuthorizationV1Api, KubernetesObjectApi, type KubeConfig, type KubernetesObject } from '@kubernetes/client-node';
import { App } from 'cdk8s';
import yaml from 'js-yaml';
import { beforeAll, describe, expect, it } from 'vitest';
import { CLUSTER_SCOPED_KINDS, validateObject, waveOf } from '../../api/index.js';
import { Platform } from '../../constructs/index.js';
import { tempDir } from '../helpers.js';
import { applyObject, clusterReady, kubeConfig, testNamespace, waitEstablished } from './cluster.js';

const ROOT = new URL('../..', import.meta.url).pathname;
const BIN = join(ROOT, 'bin/spore.js');

const kubeconfig = await clusterReady();

/** The API server's refusal of a promise's request: its HTTP status and message. */
async function refusal(p: Promise<unknown>): Promise<{ code: number; message: string }> {
  try {
    await p;
  } catch (err) {
    if (!(err instanceof ApiException)) throw err;
    const body = typeof err.body === 'string' ? JSON.parse(err.body) : err.body;
    return { code: err.code, message: String(body?.message ?? err.body) };
  }
  throw new Error('the API server accepted the object');
}

/** Applies the spore.dev CRDs `spore crds` prints, as `kubectl apply --server-side` would, and waits until each is Established. */
async function installCrds(kc: KubeConfig): Promise<any[]> {
  const crds = yaml.loadAll(execFileSync(process.execPath, [BIN, 'crds'], { encoding: 'utf8' })) as any[];
  for (const crd of crds) await applyObject(kc, crd);
  for (const crd of crds) await waitEstablished(kc, crd.metadata.name);
  return crds;
}

/** `npx cdk8s synth` at the root: the platform chart and the example app, as a user renders them. */
function synthRoot(): Map<string, KubernetesObject[]> {
  const out = tempDir('spore-dist-');
  execFileSync(join(ROOT, 'node_modules/.bin/cdk8s'), ['synth', '--output', out], { cwd: ROOT, env: { ...process.env, CDK8S_CHECK_UPGRADE: 'false' }, stdio: 'pipe' });
  const files = new Map<string, KubernetesObject[]>();
  const walk = (d: string) => {
    for (const name of readdirSync(d).sort()) {
      const full = join(d, name);
      if (statSync(full).isDirectory()) walk(full);
      else if (name.endsWith('.yaml')) files.set(full.slice(out.length + 1), yaml.loadAll(readFileSync(full, 'utf8')) as KubernetesObject[]);
    }
  };
  walk(out);
  return files;
}

describe.skipIf(!kubeconfig)('Spore on a real kube-apiserver', () => {
  let kc: KubeConfig;
  let crds: any[];
  beforeAll(async () => {
    kc = kubeConfig(kubeconfig!);
    crds = await installCrds(kc);
  });

  it('accepts every CRD `spore crds` prints, and each becomes Established with its printer columns', async () => {
    expect(crds.map((c) => c.metadata.name)).toEqual([
      'environments.spore.dev', 'packages.spore.dev', 'functions.spore.dev', 'httptriggers.spore.dev',
      'timertriggers.spore.dev', 'queuetriggers.spore.dev', 'watchtriggers.spore.dev', 'workflows.spore.dev', 'stages.spore.dev', 'workflowruns.spore.dev', 'invocations.spore.dev',
    ]);
    const api = KubernetesObjectApi.makeApiClient(kc);
    for (const crd of crds) {
      const stored = (await api.read(crd)) as any;
      const columns = stored.spec.versions[0].additionalPrinterColumns.map((c: any) => c.name);
      // a run or a call has a state, not readiness
      expect(columns, crd.metadata.name).toEqual(expect.arrayContaining([['WorkflowRun', 'Invocation'].includes(crd.spec.names.kind) ? 'State' : 'Ready', 'Age']));
    }
  });

  it('applies every object of the platform chart and of the example app server-side', async () => {
    const ns = await testNamespace(kc, 'example-app');
    const files = synthRoot();
    expect([...files.keys()]).toEqual(['examples/shop.k8s.yaml', 'platform.k8s.yaml']);
    // the app's objects carry no namespace (a stage chooses it): they go to this test's
    const objects = [...files.values()].flat().map((o) =>
      o.metadata!.namespace || CLUSTER_SCOPED_KINDS.has(o.kind!) ? o : { ...o, metadata: { ...o.metadata, namespace: ns } },
    );
    // in sync-wave order, as Spore applies them: CRDs and namespaces, the platform, then spore.dev kinds by wave
    const ordered = [...objects].sort((a, b) => waveOf(a as any) - waveOf(b as any));
    const applied: string[] = [];
    for (const o of ordered) {
      const result = await applyObject(kc, o);
      if (o.kind === 'CustomResourceDefinition') await waitEstablished(kc, o.metadata!.name!);
      expect(result.metadata?.uid, `${o.kind}/${o.metadata!.name}`).toBeTruthy();
      applied.push(`${o.kind}/${o.metadata!.name}`);
    }
    expect(applied.length).toBe(objects.length);
    // the API server stored what Spore rendered, defaults included
    const api = KubernetesObjectApi.makeApiClient(kc);
    const fn = objects.find((o) => o.kind === 'Function')!;
    const stored = (await api.read(fn as any)) as any;
    expect(stored.spec).toEqual((fn as any).spec);
    const route = (await api.read(objects.find((o) => o.kind === 'HttpTrigger' && (o as any).spec.functions)! as any)) as any;
    expect(route.spec.functions.map((f: any) => f.weight).reduce((a: number, b: number) => a + b)).toBe(100);
  });

  it('applies the platform chart with a reconciler (repository, secrets, Git credentials) and the dataplane, and its RBAC gives the reconciler what its code needs', async () => {
    const ns = `spore-${(await testNamespace(kc, 'platform')).split('-').pop()}`;
    const app = new App({ outdir: tempDir() });
    new Platform(app, 'platform', {
      platformNamespace: ns,
      reconciler: { repository: 'git@git.example.com:acme/shop.git', branch: 'prod', previews: true, poll: '1m', webhookSecret: { name: 'hooks', key: 'github' }, apiToken: { name: 'spore-api', key: 'token' }, gitCredentials: 'deploy-key' },
      dataplane: { enabled: true },
    });
    const objects = app.charts.flatMap((c) => c.toJson()).sort((a, b) => waveOf(a) - waveOf(b)) as KubernetesObject[];
    expect(new Set(objects.map((o) => o.kind))).toEqual(new Set(['CustomResourceDefinition', 'Namespace', 'ServiceAccount', 'Deployment', 'Service', 'ClusterRole', 'ClusterRoleBinding', 'Role', 'RoleBinding', 'NetworkPolicy']));
    for (const o of objects) {
      // a dry run first, as Spore validates a whole revision before applying it
      await applyObject(kc, o, { dryRun: true });
      const result = await applyObject(kc, o);
      if (o.kind === 'CustomResourceDefinition') await waitEstablished(kc, o.metadata!.name!);
      expect(result.metadata?.uid, `${o.kind}/${o.metadata!.name}`).toBeTruthy();
    }
    // the stored Deployment selects its pods by the recommended labels, and its template carries them
    const api = KubernetesObjectApi.makeApiClient(kc);
    const stored = (await api.read({ apiVersion: 'apps/v1', kind: 'Deployment', metadata: { name: 'spore-reconciler', namespace: ns } })) as any;
    expect(stored.spec.selector.matchLabels).toEqual({ 'app.kubernetes.io/name': 'spore', 'app.kubernetes.io/instance': ns, 'app.kubernetes.io/component': 'reconciler', 'app.kubernetes.io/part-of': 'spore' });
    expect(stored.spec.template.spec.containers[0].args).toContain('--in-cluster');

    // what the API server's RBAC authorizer says the reconciler's ServiceAccount may do
    const authz = kc.makeApiClient(AuthorizationV1Api);
    const may = async (verb: string, resource: string, { group = '', namespace = 'some-app', subresource = '', name = '', who = 'spore-reconciler' } = {}) => {
      const review = await authz.createSubjectAccessReview({
        body: {
          apiVersion: 'authorization.k8s.io/v1', kind: 'SubjectAccessReview',
          spec: { user: `system:serviceaccount:${ns}:${who}`, groups: ['system:serviceaccounts', `system:serviceaccounts:${ns}`], resourceAttributes: { verb, group, resource, subresource, namespace, name } },
        },
      });
      return review.status?.allowed === true;
    };
    const allowed: [string, string, Parameters<typeof may>[2]?][] = [
      ['create', 'functions', { group: 'spore.dev' }],
      ['delete', 'httptriggers', { group: 'spore.dev' }],
      ['watch', 'environments', { group: 'spore.dev' }],
      ['create', 'stages', { group: 'spore.dev' }],
      ['patch', 'stages', { group: 'spore.dev', subresource: 'status' }],
      ['update', 'functions', { group: 'spore.dev', subresource: 'status' }],
      ['create', 'namespaces', { namespace: '' }],
      ['delete', 'namespaces', { namespace: '' }],
      ['watch', 'customresourcedefinitions', { group: 'apiextensions.k8s.io', namespace: '' }],
      ['create', 'secrets'],
      ['patch', 'configmaps'],
      ['update', 'configmaps', { namespace: ns }],
      ['get', 'leases', { group: 'coordination.k8s.io', namespace: ns }],
      ['create', 'leases', { group: 'coordination.k8s.io', namespace: ns }],
      ['update', 'leases', { group: 'coordination.k8s.io', namespace: ns }],
      // the pool manager: pods and their credentials in the platform namespace; reads what functions name anywhere
      ['create', 'pods', { namespace: ns, who: 'spore-poolmgr' }],
      ['patch', 'pods', { namespace: ns, who: 'spore-poolmgr' }],
      ['create', 'secrets', { namespace: ns, who: 'spore-poolmgr' }],
      ['delete', 'secrets', { namespace: ns, who: 'spore-poolmgr' }],
      ['get', 'secrets', { who: 'spore-poolmgr' }],
      ['watch', 'functions', { group: 'spore.dev', who: 'spore-poolmgr' }],
      // the router: routes and functions, and the pool manager's credential by name
      ['watch', 'httptriggers', { group: 'spore.dev', who: 'spore-router' }],
      ['list', 'packages', { group: 'spore.dev', who: 'spore-router' }],
      ['get', 'secrets', { namespace: ns, name: 'spore-poolmgr', who: 'spore-router' }],
      // the router's triggers: their kinds, what watch triggers watch, the Lease electing who fires timers, their state
      ['watch', 'timertriggers', { group: 'spore.dev', who: 'spore-router' }],
      ['list', 'watchtriggers', { group: 'spore.dev', who: 'spore-router' }],
      ['watch', 'configmaps', { who: 'spore-router' }],
      ['list', 'deployments', { group: 'apps', who: 'spore-router' }],
      ['update', 'leases', { group: 'coordination.k8s.io', namespace: ns, who: 'spore-router' }],
      ['patch', 'configmaps', { namespace: ns, who: 'spore-router' }],
      // the Active condition of each timer, queue and watch trigger (a server-side apply of its status)
      ...['timertriggers', 'queuetriggers', 'watchtriggers'].map((r): (typeof allowed)[number] => ['patch', r, { group: 'spore.dev', subresource: 'status', who: 'spore-router' }]),
      // the router's workflow runs and asynchronous calls: one WorkflowRun or Invocation each, in the function's namespace
      ...['create', 'get', 'list', 'update', 'delete'].flatMap((verb): (typeof allowed)[number][] => ['workflowruns', 'invocations'].map((r) => [verb, r, { group: 'spore.dev', who: 'spore-router' }])),
    ];
    const denied: [string, string, Parameters<typeof may>[2]?][] = [
      ['create', 'pods'],
      ['create', 'pods', { namespace: ns }],
      ['delete', 'customresourcedefinitions', { group: 'apiextensions.k8s.io', namespace: '' }],
      ['update', 'leases', { group: 'coordination.k8s.io' }], // leases only in its own namespace
      ['create', 'clusterrolebindings', { group: 'rbac.authorization.k8s.io', namespace: '' }],
      ['create', 'deployments', { group: 'apps' }],
      ['create', 'pods', { who: 'spore-poolmgr' }], // pods only in the platform namespace
      ['create', 'secrets', { who: 'spore-poolmgr' }],
      ['get', 'secrets', { namespace: ns, name: 'spore-poolmgr-other', who: 'spore-router' }],
      ['get', 'secrets', { who: 'spore-router' }],
      ['create', 'functions', { group: 'spore.dev', who: 'spore-router' }],
      ['patch', 'timertriggers', { group: 'spore.dev', who: 'spore-router' }], // their status only, not their spec
      ['update', 'leases', { group: 'coordination.k8s.io', who: 'spore-router' }], // its Lease only in the platform namespace
      ['patch', 'configmaps', { who: 'spore-router' }],
      ['watch', 'secrets', { who: 'spore-router' }], // not watchable by default
      ['create', 'workflowruns', { group: 'spore.dev' }], // the router's, not the reconciler's
    ];
    const say = ([verb, resource, o]: (typeof allowed)[number]) => `${o?.who ?? 'spore-reconciler'}: ${verb} ${resource}${o?.subresource ? `/${o.subresource}` : ''}${o?.name ? ` ${o.name}` : ''} in ${o?.namespace ?? 'some-app'}`;
    const answers = async (list: typeof allowed) => Promise.all(list.map(async (q) => `${say(q)}: ${await may(q[0], q[1], q[2])}`));
    expect(await answers(allowed)).toEqual(allowed.map((q) => `${say(q)}: true`));
    expect(await answers(denied)).toEqual(denied.map((q) => `${say(q)}: false`));
  });

  it('defaults what a hand-written Function leaves out the way Spore does', async () => {
    const ns = await testNamespace(kc, 'defaults');
    const fn = { apiVersion: 'spore.dev/v1alpha1', kind: 'Function', metadata: { name: 'bare', namespace: ns }, spec: { environment: { name: 'node' }, package: { name: 'p' } } };
    const stored = (await applyObject(kc, fn)) as any;
    expect(validateObject(fn)).toEqual([]);
    expect(stored.spec.executor).toEqual({ type: 'pool' });
  });

  // Each bad object: what is wrong with it, and the field both judges must name.
  const okFn = { environment: { name: 'node' }, package: { name: 'p' } };
  const okRoute = { path: '/hello', function: { name: 'f' } };
  const archive = { sha256: 'a'.repeat(64), size: 10 };
  const BAD: [string, string, Record<string, unknown>, string][] = [
    ['a Function with an unknown executor type', 'Function', { ...okFn, executor: { type: 'fast' } }, 'spec.executor.type'],
    ['a Function whose executor type is a number', 'Function', { ...okFn, executor: { type: 3 } }, 'spec.executor.type'],
    ['a Function with a negative concurrency', 'Function', { ...okFn, executor: { concurrency: -1 } }, 'spec.executor.concurrency'],
    ['a Function without a package', 'Function', { environment: { name: 'node' } }, 'spec.package'],
    ['a Function with minScale above maxScale', 'Function', { ...okFn, executor: { type: 'dedicated', minScale: 3, maxScale: 1 } }, 'spec.executor.minScale'],
    ['an HttpTrigger with a bad method', 'HttpTrigger', { ...okRoute, methods: ['FETCH'] }, 'spec.methods[0]'],
    ['an HttpTrigger listing a method twice', 'HttpTrigger', { ...okRoute, methods: ['GET', 'GET'] }, 'spec.methods'],
    ['an HttpTrigger with both path and prefix', 'HttpTrigger', { ...okRoute, prefix: '/api' }, 'spec'],
    ['an HttpTrigger with neither function nor functions', 'HttpTrigger', { path: '/hello' }, 'spec'],
    ['a canary whose weights sum to 90', 'HttpTrigger', { path: '/c', functions: [{ name: 'a', weight: 50 }, { name: 'b', weight: 40 }] }, 'spec.functions'],
    ['a route path without a leading slash', 'HttpTrigger', { ...okRoute, path: 'hello' }, 'spec.path'],
    ['a Package with both inline and url', 'Package', { archive: { ...archive, inline: 'AAAA', url: 'https://example.com/a.tgz' } }, 'spec.archive'],
    ['a Package with neither inline nor url', 'Package', { archive }, 'spec.archive'],
    ['an Environment with no runtime', 'Environment', { runtime: {} }, 'spec.runtime'],
    ['an Environment with a pool size as text', 'Environment', { runtime: { name: 'node' }, poolSize: 'three' }, 'spec.poolSize'],
    ['a QueueTrigger with both a url and a secret', 'QueueTrigger', { broker: { kind: 'nats', connection: { url: 'nats://n:4222', secretRef: { name: 's', key: 'k' } } }, topic: 't', function: { name: 'f' } }, 'spec.broker.connection'],
    ['a Workflow task requiring a task twice', 'Workflow', { tasks: { a: { run: 'noop' }, b: { run: 'noop', requires: ['a', 'a'] } } }, 'spec.tasks.b.requires'],
  ];

  it.each(BAD)('refuses %s, on the API server and in Spore, naming the field', async (_what, kind, spec, field) => {
    const ns = await testNamespace(kc, `bad-${kind}`);
    const obj = { apiVersion: 'spore.dev/v1alpha1', kind, metadata: { name: 'bad', namespace: ns }, spec };
    const errors = validateObject(obj);
    expect(errors.map((e) => e.path), JSON.stringify(errors)).toContain(field);
    const { code, message } = await refusal(applyObject(kc, obj));
    // 422 Invalid; a value server-side apply cannot even type (a string for an
    // integer, a duplicate in a set) is refused with 500 "failed to create typed patch object"
    expect([422, 500], message).toContain(code);
    expect(message).toContain(`${field}:`);
  });
});
