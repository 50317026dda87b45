import { App, Chart, Size } from 'cdk8s';
import { Cpu } from 'cdk8s-plus-27';
import { describe, expect, it } from 'vitest';
import { ArgoApplication, ArgoPullRequestApplicationSet, Platform } from '../../constructs/index.js';
import { tempDir } from '../helpers.js';

function platform(props: ConstructorParameters<typeof Platform>[2] = {}) {
  const app = new App({ outdir: tempDir() });
  new Platform(app, 'platform', props);
  const objects = app.charts.flatMap((c) => c.toJson());
  const get = (kind: string, name: string) => objects.find((o: any) => o.kind === kind && o.metadata.name === name);
  return { objects, get };
}

const rulesOf = (role: any) => role.rules.map((r: any) => `${(r.apiGroups ?? ['']).join(',')}:${r.resources.join(',')}:${r.verbs.join(',')}`);

describe('Platform', () => {
  it('holds the CRDs, a namespace, and a Deployment, Service and ServiceAccount per component, by explicit names', () => {
    const { objects, get } = platform();
    expect(objects.filter((o: any) => o.kind === 'CustomResourceDefinition')).toHaveLength(8);
    expect(get('Namespace', 'spore-system')).toBeDefined();
    for (const c of ['router', 'poolmgr', 'reconciler']) {
      const d = get('Deployment', `spore-${c}`);
      expect(d, c).toBeDefined();
      expect(d.metadata.namespace).toBe('spore-system');
      expect(d.spec.template.spec.serviceAccountName).toBe(`spore-${c}`);
      expect(d.spec.template.spec.containers[0].args).toEqual([c]);
      expect(d.spec.template.spec.containers[0].image).toMatch(/^ghcr\.io\/spore-dev\/spore:\d+\.\d+\.\d+/);
      expect(get('Service', `spore-${c}`)).toBeDefined();
      expect(get('ServiceAccount', `spore-${c}`)).toBeDefined();
    }
  });

  it('gives each component only the rights it needs', () => {
    const { get } = platform();
    const router = rulesOf(get('ClusterRole', 'spore-router'));
    expect(router.every((r: string) => r.endsWith(':get,list,watch'))).toBe(true);
    expect(router.join(' ')).toContain('spore.dev:httptriggers');
    const poolmgr = rulesOf(get('ClusterRole', 'spore-poolmgr'));
    expect(poolmgr.some((r: string) => r.includes('pods'))).toBe(false); // pods only in its own namespace, by a Role
    expect(rulesOf(get('Role', 'spore-poolmgr-pods'))).toEqual(expect.arrayContaining([':pods:get,list,watch,create,delete,patch', ':pods/log:get']));
    expect(get('RoleBinding', 'spore-poolmgr-pods').subjects).toEqual([{ kind: 'ServiceAccount', name: 'spore-poolmgr', namespace: 'spore-system', apiGroup: '' }]);
    const reconciler = rulesOf(get('ClusterRole', 'spore-reconciler')).join(' ');
    expect(reconciler).toContain('spore.dev:functions:get,list,watch,create,update,patch,delete');
    expect(reconciler).not.toContain('secrets');
    expect(get('ClusterRoleBinding', 'spore-reconciler').roleRef).toEqual({ apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: 'spore-reconciler' });
  });

  it('takes images, replicas, resources and namespace, and can leave the reconciler out for Argo CD', () => {
    const { get } = platform({
      platformNamespace: 'faas',
      image: 'registry.local/spore:dev',
      router: { replicas: 3, resources: { cpu: { request: Cpu.millis(200), limit: Cpu.millis(500) }, memory: { request: Size.mebibytes(64), limit: Size.mebibytes(128) } } },
      reconciler: { enabled: false },
      runtimeImages: { node: 'registry.local/node-env:1' },
    });
    const router = get('Deployment', 'spore-router');
    expect(router.metadata.namespace).toBe('faas');
    expect(router.spec.replicas).toBe(3);
    expect(router.spec.template.spec.containers[0].image).toBe('registry.local/spore:dev');
    expect(router.spec.template.spec.containers[0].resources).toEqual({ limits: { cpu: '500m', memory: '128Mi' }, requests: { cpu: '200m', memory: '64Mi' } });
    expect(get('Deployment', 'spore-reconciler')).toBeUndefined();
    const env = get('Deployment', 'spore-poolmgr').spec.template.spec.containers[0].env;
    expect(env).toEqual(expect.arrayContaining([{ name: 'SPORE_RUNTIME_NODE_IMAGE', value: 'registry.local/node-env:1' }]));
  });
});

describe('Argo CD constructs', () => {
  it("ArgoApplication syncs spore publish's branch of rendered manifests, with prune and self-heal", () => {
    const app = new App({ outdir: tempDir() });
    const chart = new Chart(app, 'argo');
    new ArgoApplication(chart, 'shop', { repoUrl: 'https://git.example.com/shop.git', namespace: 'shop' });
    const [a] = chart.toJson();
    expect(a).toMatchObject({
      apiVersion: 'argoproj.io/v1alpha1',
      kind: 'Application',
      metadata: { name: 'shop', namespace: 'argocd' },
      spec: {
        source: { repoURL: 'https://git.example.com/shop.git', path: '.', targetRevision: 'rendered' },
        destination: { namespace: 'shop', server: 'https://kubernetes.default.svc' },
        syncPolicy: { automated: { prune: true, selfHeal: true } },
      },
    });
    expect(JSON.stringify(a)).not.toContain('tracking-id');
  });

  it("ArgoPullRequestApplicationSet makes one Application per pull request, from that pull request's rendered branch", () => {
    const app = new App({ outdir: tempDir() });
    const chart = new Chart(app, 'argo');
    new ArgoPullRequestApplicationSet(chart, 'shop-previews', { repoUrl: 'https://github.com/acme/shop.git', owner: 'acme', repo: 'shop', labels: ['preview'] });
    const [set] = chart.toJson();
    expect(set.kind).toBe('ApplicationSet');
    expect(set.spec.generators[0].pullRequest.github).toEqual({ owner: 'acme', repo: 'shop', labels: ['preview'] });
    const t = set.spec.template;
    expect(t.metadata.name).toBe('shop-previews-{{number}}');
    expect(t.spec.source).toEqual({ repoURL: 'https://github.com/acme/shop.git', path: '.', targetRevision: 'rendered/pr-{{number}}' });
    expect(t.spec.destination.namespace).toBe('preview-{{number}}');
    expect(t.spec.info).toEqual([{ name: 'branch', value: '{{branch}}' }]);
  });
});
