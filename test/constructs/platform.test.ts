import { readFileSync } from 'node:fs';
import { App, Chart, Size } from 'cdk8s';
import { Cpu } from 'cdk8s-plus-27';
import { describe, expect, it } from 'vitest';
import { program } from '../../cli/main.js';
import { ArgoApplication, ArgoPullRequestApplicationSet, Platform } from '../../constructs/index.js';
import { tempDir } from '../helpers.js';

const { version: VERSION } = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };

function platform(props: ConstructorParameters<typeof Platform>[2] = {}) {
  const app = new App({ outdir: tempDir() });
  new Platform(app, 'platform', props);
  const objects = app.charts.flatMap((c) => c.toJson());
  const get = (kind: string, name: string) => objects.find((o: any) => o.kind === kind && o.metadata.name === name);
  return { objects, get };
}

const rulesOf = (role: any) => role.rules.map((r: any) => `${(r.apiGroups ?? ['']).join(',')}:${r.resources.join(',')}:${r.verbs.join(',')}`);
const REPO = 'https://git.example.com/acme/shop.git';
const containersOf = (objects: any[]) => objects.filter((o) => o.kind === 'Deployment').flatMap((d) => d.spec.template.spec.containers.map((c: any) => ({ d, c })));

/** The options `spore reconciler` gets from these args, parsed by the CLI's own commander program (its action replaced: nothing runs). */
async function parseReconcilerArgs(args: string[]): Promise<Record<string, unknown>> {
  const cli = program();
  const reconciler = cli.commands.find((c) => c.name() === 'reconciler')!;
  let options: Record<string, unknown> | undefined;
  let said = '';
  for (const c of [cli, reconciler]) c.exitOverride().configureOutput({ writeErr: (s) => (said += s), writeOut: (s) => (said += s) });
  reconciler.action((o) => void (options = o));
  await cli.parseAsync(args, { from: 'user' }).catch((err: Error) => {
    throw new Error(`spore ${args.join(' ')}: ${said || err.message}`);
  });
  return options!;
}

describe('Platform', () => {
  it('runs what exists: without a repository the CRDs and namespace only; the router and pool manager only with the dataplane enabled', () => {
    const { objects, get } = platform();
    expect(objects.filter((o: any) => o.kind === 'CustomResourceDefinition').length).toBeGreaterThanOrEqual(8);
    expect(get('Namespace', 'spore-system')).toBeDefined();
    expect(objects.filter((o: any) => !['CustomResourceDefinition', 'Namespace'].includes(o.kind))).toEqual([]);
    const withDataplane = platform({ dataplane: { enabled: true } });
    expect(withDataplane.objects.filter((o: any) => o.kind === 'Deployment').map((d: any) => d.metadata.name).sort()).toEqual(['spore-poolmgr', 'spore-router']);
    expect(() => platform({ reconciler: {} as any })).toThrow(/reconciler\.repository is required/);
  });

  it("runs the reconciler with exactly the args `spore reconciler` accepts: the repository, branch, namespace, state folder, port and archive URL", async () => {
    const { get } = platform({ platformNamespace: 'faas', reconciler: { repository: REPO, branch: 'prod', previews: true, poll: '1m' } });
    const d = get('Deployment', 'spore-reconciler');
    expect(d.metadata.namespace).toBe('faas');
    expect(d.spec.template.spec.serviceAccountName).toBe('spore-reconciler');
    const [c] = d.spec.template.spec.containers;
    expect(c.image).toMatch(/^ghcr\.io\/spore-dev\/spore:\d+\.\d+\.\d+/);
    expect(c.command).toBeUndefined(); // the image's entrypoint is spore
    expect(c.args[0]).toBe('reconciler');
    expect(await parseReconcilerArgs(c.args)).toMatchObject({
      inCluster: true, git: REPO, branch: 'prod', namespace: 'faas', stateDir: '/var/lib/spore',
      reconcilerHost: '0.0.0.0', reconcilerPort: '8082', archiveUrl: 'http://spore-reconciler.faas.svc:8082', previews: true, poll: '1m',
    });
    expect(c.readinessProbe.httpGet).toMatchObject({ path: '/healthz', port: 8082 });
    expect(c.livenessProbe.httpGet).toMatchObject({ path: '/healthz', port: 8082 });
    expect(get('Service', 'spore-reconciler').spec.ports).toEqual([{ name: 'http', port: 8082, targetPort: 8082 }]);
    // defaults: branch main, no previews, the CLI's poll
    const plain = platform({ reconciler: { repository: REPO } }).get('Deployment', 'spore-reconciler').spec.template.spec.containers[0].args;
    expect(await parseReconcilerArgs(plain)).toMatchObject({ branch: 'main', namespace: 'spore-system', archiveUrl: 'http://spore-reconciler.spore-system.svc:8082', poll: '30s' });
    expect(plain).not.toContain('--previews');
  });

  it('fills the webhook secret and API token from the Secrets the user names, and mounts Git credentials where ssh and git look', () => {
    const { get } = platform({ reconciler: { repository: 'git@git.example.com:acme/shop.git', webhookSecret: { name: 'hooks', key: 'github' }, apiToken: { name: 'spore-api', key: 'token' }, gitCredentials: 'shop-deploy-key' } });
    const spec = get('Deployment', 'spore-reconciler').spec.template.spec;
    const env = Object.fromEntries(spec.containers[0].env.map((e: any) => [e.name, e.value ?? e.valueFrom]));
    expect(env.SPORE_WEBHOOK_SECRET).toEqual({ secretKeyRef: { name: 'hooks', key: 'github' } });
    expect(env.SPORE_API_TOKEN).toEqual({ secretKeyRef: { name: 'spore-api', key: 'token' } });
    expect(spec.volumes).toContainEqual({ name: 'git-credentials', secret: { secretName: 'shop-deploy-key', defaultMode: 0o440 } });
    expect(spec.containers[0].volumeMounts).toContainEqual({ name: 'git-credentials', mountPath: '/etc/spore/git', readOnly: true });
    expect(env.GIT_SSH_COMMAND).toContain('-i /etc/spore/git/ssh-privatekey');
    expect(env.GIT_SSH_COMMAND).toContain('UserKnownHostsFile=/etc/spore/git/known_hosts');
    expect([env.GIT_CONFIG_COUNT, env.GIT_CONFIG_KEY_0, env.GIT_CONFIG_VALUE_0]).toEqual(['1', 'credential.helper', 'store --file=/etc/spore/git/.git-credentials']);
    // nothing secret in the args, and no secret env without a Secret named
    expect(spec.containers[0].args.join(' ')).not.toMatch(/secret|token/i);
    const plain = platform({ reconciler: { repository: REPO } }).get('Deployment', 'spore-reconciler').spec.template.spec;
    expect(plain.containers[0].env.map((e: any) => e.name)).not.toEqual(expect.arrayContaining(['SPORE_WEBHOOK_SECRET']));
    expect(plain.containers[0].env.some((e: any) => e.valueFrom?.secretKeyRef || e.name.startsWith('GIT_'))).toBe(false);
  });

  it('fits a small cluster: CPU requests of 100m at most, memory of 256Mi at most, limits on the reconciler for npm ci and synth', () => {
    const { objects } = platform({ reconciler: { repository: REPO }, dataplane: { enabled: true } });
    const containers = containersOf(objects);
    expect(containers).toHaveLength(3);
    for (const { c } of containers) {
      expect(parseInt(c.resources.requests.cpu, 10), c.name).toBeLessThanOrEqual(100);
      expect(c.resources.requests.cpu, c.name).toMatch(/^\d+m$/);
      expect(parseInt(c.resources.requests.memory, 10), c.name).toBeLessThanOrEqual(256);
      expect(c.resources.requests.memory, c.name).toMatch(/^\d+Mi$/);
    }
    const reconciler = containers.find(({ c }) => c.name === 'reconciler')!.c;
    expect(reconciler.resources.limits).toEqual({ cpu: '1000m', memory: '2048Mi' });
  });

  it('mounts a volume for every mount, and writable emptyDirs wherever the reconciler writes under its read-only root (state, HOME, npm cache, /tmp)', () => {
    const { objects } = platform({ reconciler: { repository: REPO, gitCredentials: 'creds' }, dataplane: { enabled: true } });
    for (const { d, c } of containersOf(objects)) {
      const volumes = new Map(d.spec.template.spec.volumes.map((v: any) => [v.name, v]));
      for (const m of c.volumeMounts) expect(volumes.has(m.name), `${c.name}: ${m.name}`).toBe(true);
      expect(c.securityContext).toMatchObject({ readOnlyRootFilesystem: true, runAsNonRoot: true, allowPrivilegeEscalation: false });
      expect(c.securityContext.runAsUser).toBeGreaterThan(0);
      // every path it writes is under a mounted emptyDir that is not read-only
      const env = Object.fromEntries((c.env ?? []).map((e: any) => [e.name, e.value]));
      const writes = ['/tmp', ...(c.name === 'reconciler' ? ['/var/lib/spore', env.HOME, env.npm_config_cache, env.XDG_CACHE_HOME] : [])];
      for (const path of writes) {
        const mount = c.volumeMounts.find((m: any) => path === m.mountPath || path.startsWith(`${m.mountPath}/`));
        expect(mount, `${c.name} writes ${path}`).toBeDefined();
        expect((volumes.get(mount.name) as any).emptyDir, `${c.name}: ${path}`).toBeDefined();
        expect(mount.readOnly, `${c.name}: ${path}`).toBeFalsy();
      }
    }
  });

  it('selects pods by app.kubernetes.io labels, the Service by the same ones', () => {
    const { objects, get } = platform({ reconciler: { repository: REPO }, dataplane: { enabled: true } });
    for (const d of objects.filter((o: any) => o.kind === 'Deployment')) {
      const selector = d.spec.selector.matchLabels;
      const component = d.metadata.name.replace(/^spore-/, '');
      expect(selector).toEqual({ 'app.kubernetes.io/name': 'spore', 'app.kubernetes.io/instance': 'spore-system', 'app.kubernetes.io/component': component, 'app.kubernetes.io/part-of': 'spore' });
      expect(d.spec.selector.matchExpressions).toBeUndefined();
      expect(d.spec.template.metadata.labels).toMatchObject(selector);
      expect(get('Service', d.metadata.name).spec.selector).toEqual(selector);
    }
  });

  it('gives the reconciler the rights its code needs, cluster-wide and in its own namespace', () => {
    const { get } = platform({ reconciler: { repository: REPO } });
    const cluster = rulesOf(get('ClusterRole', 'spore-system-reconciler'));
    const all = 'get,list,watch,create,update,patch,delete';
    for (const plural of ['environments', 'packages', 'functions', 'httptriggers', 'timertriggers', 'queuetriggers', 'watchtriggers', 'workflows', 'stages']) {
      expect(cluster).toContain(`spore.dev:${plural}:${all}`);
      expect(cluster).toContain(`spore.dev:${plural}/status:get,update,patch`);
    }
    expect(cluster).toEqual(expect.arrayContaining([
      ':namespaces:get,list,watch,create,delete,patch',
      'apiextensions.k8s.io:customresourcedefinitions:get,list,watch',
      `:configmaps:${all}`,
      `:secrets:${all}`,
    ]));
    expect(cluster.join(' ')).not.toMatch(/pods|leases|rbac/);
    expect(get('ClusterRoleBinding', 'spore-system-reconciler')).toMatchObject({
      roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: 'spore-system-reconciler' },
      subjects: [{ kind: 'ServiceAccount', name: 'spore-reconciler', namespace: 'spore-system' }],
    });
    const own = get('Role', 'spore-reconciler-state');
    expect(own.metadata.namespace).toBe('spore-system');
    expect(rulesOf(own)).toEqual([`:configmaps:${all}`, 'coordination.k8s.io:leases:get,create,update']);
    expect(get('RoleBinding', 'spore-reconciler-state').subjects).toEqual([{ kind: 'ServiceAccount', name: 'spore-reconciler', namespace: 'spore-system', apiGroup: '' }]);
  });

  it("keeps the router's and pool manager's rights with the dataplane: reads for the router, pods only in the platform namespace", () => {
    const { get } = platform({ dataplane: { enabled: true } });
    const router = rulesOf(get('ClusterRole', 'spore-system-router'));
    // reads, but for its workflow runs and asynchronous calls (WorkflowRun and Invocation objects), which it writes, and its triggers' Active conditions
    expect(router.filter((r: string) => !r.endsWith(':get,list,watch'))).toEqual([
      'spore.dev:timertriggers/status:patch', 'spore.dev:queuetriggers/status:patch', 'spore.dev:watchtriggers/status:patch',
      'spore.dev:workflowruns:get,list,create,update,patch,delete', 'spore.dev:invocations:get,list,create,update,patch,delete',
    ]);
    expect(router.join(' ')).toContain('spore.dev:httptriggers');
    // of Secrets, the router reads only the pool manager's credential, in the platform namespace
    expect(router.join(' ')).not.toContain('secrets');
    expect(get('Role', 'spore-router-credential').rules).toEqual([{ apiGroups: [''], resources: ['secrets'], resourceNames: ['spore-poolmgr'], verbs: ['get'] }]);
    // triggers: it reads the trigger kinds and what watch triggers may watch; in its namespace the Lease electing who fires timers, and their state
    expect(router).toEqual(expect.arrayContaining(['spore.dev:timertriggers:get,list,watch', 'spore.dev:watchtriggers:get,list,watch', ':configmaps:get,list,watch', 'apps:deployments:get,list,watch']));
    expect(rulesOf(get('Role', 'spore-router-triggers'))).toEqual(['coordination.k8s.io:leases:get,create,update', ':configmaps:get,create,patch']);
    const narrow = rulesOf(platform({ dataplane: { enabled: true }, router: { watchable: [{ apiGroup: 'batch', resources: ['jobs'] }] } }).get('ClusterRole', 'spore-system-router'));
    expect(narrow).toContain('batch:jobs:get,list,watch');
    expect(narrow.join(' ')).not.toContain('configmaps');
    const poolmgr = rulesOf(get('ClusterRole', 'spore-system-poolmgr'));
    expect(poolmgr.some((r: string) => r.includes('pods'))).toBe(false);
    // pods, and each pod's credential Secret, only in the platform namespace
    expect(rulesOf(get('Role', 'spore-poolmgr-pods'))).toEqual(expect.arrayContaining([':pods:get,list,watch,create,delete,patch', ':pods/log:get', ':secrets:get,list,watch,create,delete']));
    expect(get('RoleBinding', 'spore-poolmgr-pods').subjects).toEqual([{ kind: 'ServiceAccount', name: 'spore-poolmgr', namespace: 'spore-system', apiGroup: '' }]);
    // the fetcher sidecar is the platform image; only the router and the pool manager reach the pool's pods
    expect(get('Deployment', 'spore-poolmgr').spec.template.spec.containers[0].env).toEqual(expect.arrayContaining([{ name: 'SPORE_FETCHER_IMAGE', value: `ghcr.io/spore-dev/spore:${VERSION}` }]));
    expect(get('NetworkPolicy', 'spore-pool').spec.ingress[0].from.map((f: any) => f.podSelector.matchLabels['app.kubernetes.io/component'])).toEqual(['router', 'poolmgr']);
    // one pool manager at a time: it owns the pool's pods (a rolling update would run two)
    expect(get('Deployment', 'spore-poolmgr').spec.strategy).toEqual({ type: 'Recreate' });
    expect(() => platform({ dataplane: { enabled: true }, poolManager: { replicas: 2 } })).toThrow(/poolmgr runs as one replica/);
  });

  it('takes images, replicas, resources and namespace', () => {
    const { get } = platform({
      platformNamespace: 'faas',
      image: 'registry.local/spore:dev',
      dataplane: { enabled: true },
      router: { replicas: 3, resources: { cpu: { request: Cpu.millis(50), limit: Cpu.millis(500) }, memory: { request: Size.mebibytes(64), limit: Size.mebibytes(128) } } },
      reconciler: { repository: REPO, image: 'registry.local/spore:reconciler' },
      runtimeImages: { node: 'registry.local/node-env:1' },
    });
    const router = get('Deployment', 'spore-router');
    expect(router.metadata.namespace).toBe('faas');
    expect(router.spec.replicas).toBe(3);
    // its stop (messages, async calls and calls in flight ending, then its runs and calls handed over) fits before the kubelet's SIGKILL
    expect(router.spec.template.spec.terminationGracePeriodSeconds).toBe(60);
    expect(router.spec.template.spec.containers[0].image).toBe('registry.local/spore:dev');
    expect(router.spec.template.spec.containers[0].resources).toEqual({ limits: { cpu: '500m', memory: '128Mi' }, requests: { cpu: '50m', memory: '64Mi' } });
    expect(get('Deployment', 'spore-reconciler').spec.template.spec.containers[0].image).toBe('registry.local/spore:reconciler');
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
