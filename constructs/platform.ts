// The platform itself, for the Kubernetes target: the CRDs, a namespace, and
// the reconciler (a Deployment, Service, ServiceAccount and the rights it
// needs) following the app's Git repository. The router and pool manager run
// on a cluster with the dataplane issue; until then they stay out by default.
import { createRequire } from 'node:module';
import { ApiObject, Chart, Duration, Size, type ChartProps } from 'cdk8s';
import type * as Kplus from 'cdk8s-plus-27';
import type { Construct } from 'constructs';
import { allCrds, DATAPLANE_KINDS, GROUP, KINDS, POOL_POD_LABEL, POOLMGR_CREDENTIAL_SECRET, waveOf, type KindName } from '../api/index.js';
import { SYNC_WAVE } from './spore-object.js';

const require = createRequire(import.meta.url);
// the package resolves itself by name, from its sources and from lib/ alike
const VERSION: string = require('spore/package.json').version;

export interface ComponentProps {
  /** @default 1 */
  readonly replicas?: number;
  /** @default the platform image */
  readonly image?: string;
  /** @default sized for a small cluster: see the README */
  readonly resources?: Kplus.ContainerResources;
}

/** One key of a Secret in the platform namespace. */
export interface SecretKeyRef {
  readonly name: string;
  readonly key: string;
}

export interface ReconcilerProps extends ComponentProps {
  /** The Git repository the reconciler follows: https://…, ssh://… or git@host:path. */
  readonly repository: string;
  /** Branch served as the main stage. @default 'main' */
  readonly branch?: string;
  /** How often it looks for new revisions, e.g. '1m'. @default the CLI's (30s) */
  readonly poll?: string;
  /** A stage (and namespace) per pull request and preview/* branch; runs their code. @default false */
  readonly previews?: boolean;
  /** Signing secret of GitHub/GitLab webhooks (POST /webhook), as SPORE_WEBHOOK_SECRET. @default no webhook: it polls */
  readonly webhookSecret?: SecretKeyRef;
  /** Bearer token of the reconciler's API (spore status --url …), as SPORE_API_TOKEN. @default a random token per start */
  readonly apiToken?: SecretKeyRef;
  /**
   * A Secret for a private repository, mounted read-only at /etc/spore/git:
   * keys `ssh-privatekey` and `known_hosts` for SSH, or `.git-credentials`
   * (lines `https://user:token@host`) for HTTPS. @default none (a public repository)
   */
  readonly gitCredentials?: string;
}

/** Kinds of one API group, by their plural (e.g. apiGroup 'apps', resources ['deployments']). */
export interface WatchableResources {
  /** '' for the core group. */
  readonly apiGroup: string;
  readonly resources: readonly string[];
}

export interface RouterProps extends ComponentProps {
  /**
   * What WatchTriggers may watch: the router reads these (get, list, watch) in
   * every namespace; a WatchTrigger on anything else fails with the API's 403,
   * said in the router's log. Secrets are left out by default: a watch trigger
   * sends the whole object to its function.
   * @default ConfigMaps, Pods, Services, Endpoints, Events, Namespaces and apps' Deployments, StatefulSets, DaemonSets
   */
  readonly watchable?: readonly WatchableResources[];
}

export const DEFAULT_WATCHABLE: readonly WatchableResources[] = [
  { apiGroup: '', resources: ['configmaps', 'pods', 'services', 'endpoints', 'events', 'namespaces'] },
  { apiGroup: 'apps', resources: ['deployments', 'statefulsets', 'daemonsets'] },
];

export interface PlatformProps extends ChartProps {
  /** Namespace of the platform's components and function instances. @default 'spore-system' */
  readonly platformNamespace?: string;
  /** Image holding the `spore` command (its entrypoint). @default `ghcr.io/spore-dev/spore:<version>` */
  readonly image?: string;
  /** The GitOps reconciler. @default none: the chart holds the CRDs and namespace only (Argo CD syncs the apps) */
  readonly reconciler?: ReconcilerProps;
  /** The router and pool manager on the cluster: they come with the dataplane issue (`spore router`/`spore poolmgr`). @default disabled */
  readonly dataplane?: { readonly enabled?: boolean };
  readonly router?: RouterProps;
  readonly poolManager?: ComponentProps;
  /** Images of the built-in runtimes. @default `ghcr.io/spore-dev/runtime-<name>:<version>` */
  readonly runtimeImages?: { readonly node?: string; readonly python?: string };
}

const ALL_KINDS = Object.keys(KINDS) as KindName[];
const READ = ['get', 'list', 'watch'];
const WRITE = [...READ, 'create', 'update', 'patch', 'delete'];
/** Where the reconciler keeps its Git mirror, checkouts, dependency installs and archives. */
export const STATE_DIR = '/var/lib/spore';
export const RECONCILER_PORT = 8082;
const GIT_CREDENTIALS_DIR = '/etc/spore/git';
/** The containers' user: not root, and the owner group of their writable volumes. */
const UID = 1000;

export class Platform extends Chart {
  constructor(scope: Construct, id: string, props: PlatformProps = {}) {
    super(scope, id, { ...props, namespace: undefined });
    // cdk8s-plus is loaded when a Platform is made: apps that only describe functions skip its load time
    const kplus: typeof Kplus = require('cdk8s-plus-27');
    const ns = props.platformNamespace ?? 'spore-system';
    const image = props.image ?? `ghcr.io/spore-dev/spore:${VERSION}`;
    const resource = (plural: string) => kplus.ApiResource.custom({ apiGroup: GROUP, resourceType: plural });
    // Stage is named here too, so the rights hold whether or not api/ registers the kind yet; runs (WorkflowRun) are the router's, not the reconciler's
    const sporePlurals = [...new Set([...ALL_KINDS.filter((k) => !('runtime' in KINDS[k])).map((k) => KINDS[k].plural), 'stages'])];
    const sporeResource = (kind: KindName, sub = '') => resource(KINDS[kind].plural + sub);
    if (props.reconciler && !props.reconciler.repository) {
      throw new Error(`Platform ${id}: reconciler.repository is required (the Git repository the reconciler follows); leave reconciler out when Argo CD syncs the apps`);
    }

    allCrds().forEach((crd) => new ApiObject(this, `crd-${(crd.spec as any).names.plural}`, crd as any));
    new kplus.Namespace(this, 'namespace', { metadata: { name: ns } });

    interface Spec {
      port: number;
      args: string[];
      env: Record<string, Kplus.EnvValue>;
      /** Writable emptyDirs by mount path: the root filesystem is read-only. */
      scratch: Record<string, string>;
      secretVolumes?: { name: string; secret: string; path: string }[];
      resources: Kplus.ContainerResources;
      /** One at a time: the old pod stops before the new one starts (no rolling overlap). */
      single?: boolean;
      /** How long its stop may take before the kubelet kills it (terminationGracePeriodSeconds). @default 30 */
      stopSeconds?: number;
    }
    const component = (name: string, c: ComponentProps, spec: Spec) => {
      if (spec.single && (c.replicas ?? 1) > 1) throw new Error(`Platform ${id}: ${name} runs as one replica (it owns the pool's pods; two would take each other's), not ${c.replicas}`);
      const sa = new kplus.ServiceAccount(this, `${name}-sa`, { metadata: { name: `spore-${name}`, namespace: ns }, automountToken: true });
      // selectors on the recommended labels, which outlive a construct's path (cdk8s-plus selects on cdk8s.io/metadata.addr)
      const labels = { 'app.kubernetes.io/name': 'spore', 'app.kubernetes.io/instance': ns, 'app.kubernetes.io/component': name, 'app.kubernetes.io/part-of': 'spore' };
      const deployment = new kplus.Deployment(this, name, {
        metadata: { name: `spore-${name}`, namespace: ns },
        replicas: c.replicas ?? 1,
        ...(spec.single ? { strategy: kplus.DeploymentStrategy.recreate() } : {}),
        select: false,
        serviceAccount: sa,
        automountServiceAccountToken: true,
        securityContext: { ensureNonRoot: true, user: UID, group: UID, fsGroup: UID },
        ...(spec.stopSeconds ? { terminationGracePeriod: Duration.seconds(spec.stopSeconds) } : {}),
      });
      deployment.select(kplus.LabelSelector.of({ labels }));
      for (const [k, v] of Object.entries(labels)) deployment.podMetadata.addLabel(k, v);
      const container = deployment.addContainer({
        name,
        image: c.image ?? image,
        args: spec.args,
        ports: [{ number: spec.port, name: 'http' }],
        resources: c.resources ?? spec.resources,
        securityContext: { ensureNonRoot: true, user: UID, group: UID, readOnlyRootFilesystem: true, allowPrivilegeEscalation: false },
        envVariables: spec.env,
        readiness: kplus.Probe.fromHttpGet('/healthz', { port: spec.port }),
        liveness: kplus.Probe.fromHttpGet('/healthz', { port: spec.port }),
      });
      for (const [path, volume] of Object.entries(spec.scratch)) container.mount(path, kplus.Volume.fromEmptyDir(this, `${name}-${volume}`, volume));
      for (const v of spec.secretVolumes ?? []) {
        // 0440 and the pod's fsGroup: readable by the container's user, and ssh accepts a key it does not own
        const secret = kplus.Secret.fromSecretName(this, `${name}-${v.name}-secret`, v.secret);
        container.mount(v.path, kplus.Volume.fromSecret(this, `${name}-${v.name}`, secret, { name: v.name, defaultMode: 0o440 }), { readOnly: true });
      }
      const service = new kplus.Service(this, `${name}-service`, { metadata: { name: `spore-${name}`, namespace: ns }, ports: [{ port: spec.port, targetPort: spec.port, name: 'http' }] });
      for (const [k, v] of Object.entries(labels)) service.selectLabel(k, v);
      return sa;
    };
    const bind = (name: string, sa: Kplus.ServiceAccount, rules: [string[], Kplus.ApiResource[]][], namespace?: string) => {
      // cluster-wide names carry the platform namespace: two platforms on one cluster keep their own
      const metadata = { name: namespace ? `spore-${name}` : `${ns}-${name}`, namespace };
      const role = namespace ? new kplus.Role(this, `${name}-role`, { metadata }) : new kplus.ClusterRole(this, `${name}-role`, { metadata });
      for (const [verbs, resources] of rules) role.allow(verbs, ...resources);
      const binding = namespace
        ? new kplus.RoleBinding(this, `${name}-binding`, { metadata, role: role as Kplus.Role })
        : new kplus.ClusterRoleBinding(this, `${name}-binding`, { metadata, role: role as Kplus.ClusterRole });
      binding.addSubjects(sa);
    };
    const secretEnv = (id: string, ref: SecretKeyRef) => kplus.EnvValue.fromSecretValue({ secret: kplus.Secret.fromSecretName(this, id, ref.name), key: ref.key });

    const r = props.reconciler;
    if (r) {
      const env: Record<string, Kplus.EnvValue> = {
        HOME: kplus.EnvValue.fromValue('/home/spore'),
        // npm ci and pip write their caches here, not under the read-only root
        npm_config_cache: kplus.EnvValue.fromValue('/var/cache/spore/npm'),
        XDG_CACHE_HOME: kplus.EnvValue.fromValue('/var/cache/spore'),
      };
      if (r.webhookSecret) env.SPORE_WEBHOOK_SECRET = secretEnv('reconciler-webhook-secret', r.webhookSecret);
      if (r.apiToken) env.SPORE_API_TOKEN = secretEnv('reconciler-api-token', r.apiToken);
      if (r.gitCredentials) {
        // SSH reads the mounted key and known hosts (strictly); HTTPS asks git's store helper; a Secret may hold either
        env.GIT_SSH_COMMAND = kplus.EnvValue.fromValue(`ssh -i ${GIT_CREDENTIALS_DIR}/ssh-privatekey -o UserKnownHostsFile=${GIT_CREDENTIALS_DIR}/known_hosts -o StrictHostKeyChecking=yes -o IdentitiesOnly=yes`);
        env.GIT_CONFIG_COUNT = kplus.EnvValue.fromValue('1');
        env.GIT_CONFIG_KEY_0 = kplus.EnvValue.fromValue('credential.helper');
        env.GIT_CONFIG_VALUE_0 = kplus.EnvValue.fromValue(`store --file=${GIT_CREDENTIALS_DIR}/.git-credentials`);
      }
      const sa = component('reconciler', r, {
        port: RECONCILER_PORT,
        args: [
          'reconciler', '--in-cluster', '--git', r.repository, '--branch', r.branch ?? 'main', '--namespace', ns,
          '--state-dir', STATE_DIR, '--reconciler-host', '0.0.0.0', '--reconciler-port', String(RECONCILER_PORT),
          '--archive-url', `http://spore-reconciler.${ns}.svc:${RECONCILER_PORT}`,
          ...(r.previews ? ['--previews'] : []),
          ...(r.poll ? ['--poll', r.poll] : []),
        ],
        env,
        scratch: { [STATE_DIR]: 'state', '/home/spore': 'home', '/var/cache/spore': 'cache', '/tmp': 'tmp' },
        secretVolumes: r.gitCredentials ? [{ name: 'git-credentials', secret: r.gitCredentials, path: GIT_CREDENTIALS_DIR }] : [],
        // idle it polls; npm ci and cdk8s synth of an app are its peaks
        resources: { cpu: { request: kplus.Cpu.millis(100), limit: kplus.Cpu.millis(1000) }, memory: { request: Size.mebibytes(256), limit: Size.gibibytes(2) } },
      });
      bind('reconciler', sa, [
        [WRITE, sporePlurals.map(resource)],
        [['get', 'update', 'patch'], sporePlurals.map((p) => resource(`${p}/status`))],
        // preview namespaces
        [[...READ, 'create', 'delete', 'patch'], [kplus.ApiResource.NAMESPACES]],
        [READ, [kplus.ApiResource.CUSTOM_RESOURCE_DEFINITIONS]],
        // what an app renders besides spore.dev kinds: the ConfigMaps and Secrets its functions use
        [WRITE, [kplus.ApiResource.CONFIG_MAPS, kplus.ApiResource.SECRETS]],
      ]);
      // its own namespace: the sync history (ConfigMaps) and the lease that keeps one reconciler active
      bind('reconciler-state', sa, [
        [WRITE, [kplus.ApiResource.CONFIG_MAPS]],
        [['get', 'create', 'update'], [kplus.ApiResource.custom({ apiGroup: 'coordination.k8s.io', resourceType: 'leases' })]],
      ], ns);
    }

    if (props.dataplane?.enabled) {
      const runtimeImages = {
        node: props.runtimeImages?.node ?? `ghcr.io/spore-dev/runtime-node:${VERSION}`,
        python: props.runtimeImages?.python ?? `ghcr.io/spore-dev/runtime-python:${VERSION}`,
      };
      const small: Kplus.ContainerResources = { cpu: { request: kplus.Cpu.millis(50), limit: kplus.Cpu.millis(500) }, memory: { request: Size.mebibytes(128), limit: Size.mebibytes(512) } };
      const dataplaneEnv = (port: number, env: Record<string, string>) => ({
        SPORE_NAMESPACE: kplus.EnvValue.fromFieldRef(kplus.EnvFieldPaths.POD_NAMESPACE),
        PORT: kplus.EnvValue.fromValue(String(port)),
        ...Object.fromEntries(Object.entries(env).map(([k, v]) => [k, kplus.EnvValue.fromValue(v)])),
      });
      // router: reads routes and what a function is made of (a change gives its instances back); asks the pool manager over HTTP on a miss
      // its stop lets queue messages, async calls and calls in flight end (10 s each, in turn) before it hands its runs and calls over
      const router = component('router', props.router ?? {}, { port: 8080, args: ['router'], env: dataplaneEnv(8080, { SPORE_POOLMGR_URL: `http://spore-poolmgr.${ns}:8081` }), scratch: { '/tmp': 'tmp' }, resources: small, stopSeconds: 60 });
      // its kinds, and what watch triggers may watch (timers, queues and watches run in the router: triggers/cluster.ts)
      const watchable = (props.router?.watchable ?? DEFAULT_WATCHABLE).flatMap((w) => w.resources.map((r) => kplus.ApiResource.custom({ apiGroup: w.apiGroup, resourceType: r })));
      bind('router', router, [
        [READ, [...DATAPLANE_KINDS.router.map((k) => sporeResource(k)), ...watchable]],
        // each timer's, queue's and watch's state, as its Active condition (dataplane/triggers/conditions.ts)
        [['patch'], (['TimerTrigger', 'QueueTrigger', 'WatchTrigger'] as const).map((k) => sporeResource(k, '/status'))],
        // workflow runs and asynchronous calls, one WorkflowRun or Invocation each, written as they go (store/kube-workflow-runs.ts, kube-invocations.ts)
        [['get', 'list', 'create', 'update', 'patch', 'delete'], [sporeResource('WorkflowRun'), sporeResource('Invocation')]],
      ]);
      // in its own namespace: the Lease that elects the replica firing timers and following watches, and their state (a ConfigMap)
      bind('router-triggers', router, [
        [['get', 'create', 'update'], [kplus.ApiResource.custom({ apiGroup: 'coordination.k8s.io', resourceType: 'leases' })]],
        [['get', 'create', 'patch'], [kplus.ApiResource.CONFIG_MAPS]],
      ], ns);
      // the pool manager's credential, which it makes: the one Secret the router reads (by name: a rule cdk8s-plus does not write)
      const credential = { name: 'spore-router-credential', namespace: ns };
      new ApiObject(this, 'router-credential-role', { apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'Role', metadata: credential, rules: [{ apiGroups: [''], resources: ['secrets'], resourceNames: [POOLMGR_CREDENTIAL_SECRET], verbs: ['get'] }] });
      new ApiObject(this, 'router-credential-binding', {
        apiVersion: 'rbac.authorization.k8s.io/v1',
        kind: 'RoleBinding',
        metadata: credential,
        roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name: credential.name },
        subjects: [{ kind: 'ServiceAccount', name: router.name, namespace: ns }],
      });
      // pool manager: reads what it runs (and the Secrets and ConfigMaps functions name, handed to the pods' fetchers);
      // runs instances as pods in its own namespace, each with a credential Secret of its own
      const poolmgr = component('poolmgr', props.poolManager ?? {}, {
        port: 8081,
        args: ['poolmgr'],
        env: dataplaneEnv(8081, { SPORE_RUNTIME_NODE_IMAGE: runtimeImages.node, SPORE_RUNTIME_PYTHON_IMAGE: runtimeImages.python, SPORE_FETCHER_IMAGE: image }),
        scratch: { '/tmp': 'tmp' },
        resources: small,
        single: true,
      });
      bind('poolmgr', poolmgr, [
        [READ, [...DATAPLANE_KINDS.poolmgr.map((k) => sporeResource(k)), kplus.ApiResource.SECRETS, kplus.ApiResource.CONFIG_MAPS]],
        [['get', 'patch', 'update'], [sporeResource('Function', '/status'), sporeResource('Package', '/status'), sporeResource('Environment', '/status')]],
      ]);
      bind('poolmgr-pods', poolmgr, [
        [[...READ, 'create', 'delete', 'patch'], [kplus.ApiResource.PODS]],
        [['get'], [kplus.ApiResource.custom({ apiGroup: '', resourceType: 'pods/log' })]],
        [[...READ, 'create', 'delete'], [kplus.ApiResource.SECRETS]],
      ], ns);
      // only the router and the pool manager reach the pool's pods (runtime and fetcher ports)
      new ApiObject(this, 'pool-network-policy', {
        apiVersion: 'networking.k8s.io/v1',
        kind: 'NetworkPolicy',
        metadata: { name: 'spore-pool', namespace: ns },
        spec: {
          podSelector: { matchLabels: { [POOL_POD_LABEL.name]: POOL_POD_LABEL.value } },
          policyTypes: ['Ingress'],
          ingress: [{ from: ['router', 'poolmgr'].map((c) => ({ podSelector: { matchLabels: { 'app.kubernetes.io/name': 'spore', 'app.kubernetes.io/component': c } } })) }],
        },
      });
    }

    for (const obj of this.node.findAll().filter((c): c is ApiObject => c instanceof ApiObject)) {
      obj.metadata.addAnnotation(SYNC_WAVE, String(waveOf(obj)));
      obj.metadata.addLabel('app.kubernetes.io/part-of', 'spore');
      obj.metadata.addLabel('app.kubernetes.io/managed-by', 'spore');
      obj.metadata.addLabel('app.kubernetes.io/version', VERSION);
    }
  }
}
