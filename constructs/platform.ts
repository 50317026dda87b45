// The platform itself, for the Kubernetes target: the CRDs, a namespace, one
// ServiceAccount per component with only the rights it needs, and a Deployment
// and Service for the router, pool manager and reconciler.
import { createRequire } from 'node:module';
import { ApiObject, Chart, type ChartProps } from 'cdk8s';
import type * as Kplus from 'cdk8s-plus-27';
import type { Construct } from 'constructs';
import { allCrds, GROUP, KINDS, waveOf, type KindName } from '../api/index.js';
import { SYNC_WAVE } from './spore-object.js';

const require = createRequire(import.meta.url);
// the package resolves itself by name, from its sources and from lib/ alike
const VERSION: string = require('spore/package.json').version;

export interface ComponentProps {
  /** @default 1 */
  readonly replicas?: number;
  /** @default the platform image */
  readonly image?: string;
  /** @default cdk8s-plus defaults */
  readonly resources?: Kplus.ContainerResources;
}

export interface PlatformProps extends ChartProps {
  /** Namespace of the platform's components and function instances. @default 'spore-system' */
  readonly platformNamespace?: string;
  /** Image holding the `spore` command. @default `ghcr.io/spore-dev/spore:<version>` */
  readonly image?: string;
  readonly router?: ComponentProps;
  readonly poolManager?: ComponentProps;
  /** The GitOps reconciler; leave it out (`enabled: false`) when Argo CD syncs the manifests. */
  readonly reconciler?: ComponentProps & { readonly enabled?: boolean };
  /** Images of the built-in runtimes. @default `ghcr.io/spore-dev/runtime-<name>:<version>` */
  readonly runtimeImages?: { readonly node?: string; readonly python?: string };
}

const ALL_KINDS = Object.keys(KINDS) as KindName[];
const READ = ['get', 'list', 'watch'];

export class Platform extends Chart {
  constructor(scope: Construct, id: string, props: PlatformProps = {}) {
    super(scope, id, { ...props, namespace: undefined });
    // cdk8s-plus is loaded when a Platform is made: apps that only describe functions skip its load time
    const kplus: typeof Kplus = require('cdk8s-plus-27');
    const sporeResource = (kind: KindName, sub = '') => kplus.ApiResource.custom({ apiGroup: GROUP, resourceType: KINDS[kind].plural + sub });
    const ns = props.platformNamespace ?? 'spore-system';
    const image = props.image ?? `ghcr.io/spore-dev/spore:${VERSION}`;
    const runtimeImages = {
      node: props.runtimeImages?.node ?? `ghcr.io/spore-dev/runtime-node:${VERSION}`,
      python: props.runtimeImages?.python ?? `ghcr.io/spore-dev/runtime-python:${VERSION}`,
    };

    allCrds().forEach((crd) => new ApiObject(this, `crd-${(crd.spec as any).names.plural}`, crd as any));
    new kplus.Namespace(this, 'namespace', { metadata: { name: ns } });

    const component = (name: string, port: number, c: ComponentProps = {}, env: Record<string, string> = {}) => {
      const sa = new kplus.ServiceAccount(this, `${name}-sa`, { metadata: { name: `spore-${name}`, namespace: ns }, automountToken: true });
      const deployment = new kplus.Deployment(this, name, {
        metadata: { name: `spore-${name}`, namespace: ns },
        replicas: c.replicas ?? 1,
        serviceAccount: sa,
        automountServiceAccountToken: true,
        containers: [
          {
            name,
            image: c.image ?? image,
            args: [name],
            portNumber: port,
            resources: c.resources,
            envVariables: Object.fromEntries([
              ['SPORE_NAMESPACE', kplus.EnvValue.fromFieldRef(kplus.EnvFieldPaths.POD_NAMESPACE)],
              ['PORT', kplus.EnvValue.fromValue(String(port))],
              ...Object.entries(env).map(([k, v]) => [k, kplus.EnvValue.fromValue(v)]),
            ]),
            readiness: kplus.Probe.fromHttpGet('/healthz', { port }),
            liveness: kplus.Probe.fromHttpGet('/healthz', { port }),
          },
        ],
      });
      deployment.exposeViaService({ name: `spore-${name}`, ports: [{ port, targetPort: port, name: 'http' }] });
      return sa;
    };
    const clusterRole = (name: string, sa: Kplus.ServiceAccount, rules: [string[], Kplus.ApiResource[]][]) => {
      const role = new kplus.ClusterRole(this, `${name}-role`, { metadata: { name: `spore-${name}` } });
      for (const [verbs, resources] of rules) role.allow(verbs, ...resources);
      new kplus.ClusterRoleBinding(this, `${name}-binding`, { metadata: { name: `spore-${name}` }, role }).addSubjects(sa);
    };

    // router: reads routes and functions; calls the pool manager over HTTP
    const router = component('router', 8080, props.router, { SPORE_POOLMGR_URL: `http://spore-poolmgr.${ns}:8081` });
    clusterRole('router', router, [[READ, [sporeResource('HttpTrigger'), sporeResource('Function'), sporeResource('TimerTrigger'), sporeResource('QueueTrigger'), sporeResource('WatchTrigger'), sporeResource('Workflow')]]]);

    // pool manager: reads what it runs, runs instances as pods in its own namespace
    const poolmgr = component('poolmgr', 8081, props.poolManager, { SPORE_RUNTIME_NODE_IMAGE: runtimeImages.node, SPORE_RUNTIME_PYTHON_IMAGE: runtimeImages.python });
    clusterRole('poolmgr', poolmgr, [
      [READ, [sporeResource('Environment'), sporeResource('Package'), sporeResource('Function'), kplus.ApiResource.SECRETS, kplus.ApiResource.CONFIG_MAPS]],
      [['get', 'patch', 'update'], [sporeResource('Function', '/status'), sporeResource('Package', '/status'), sporeResource('Environment', '/status')]],
    ]);
    const pods = new kplus.Role(this, 'poolmgr-pods', { metadata: { name: 'spore-poolmgr-pods', namespace: ns } });
    pods.allow([...READ, 'create', 'delete', 'patch'], kplus.ApiResource.PODS);
    pods.allow(['get'], kplus.ApiResource.custom({ apiGroup: '', resourceType: 'pods/log' }));
    new kplus.RoleBinding(this, 'poolmgr-pods-binding', { metadata: { name: 'spore-poolmgr-pods', namespace: ns }, role: pods }).addSubjects(poolmgr);

    // reconciler: owns the spore.dev objects and the preview namespaces
    if (props.reconciler?.enabled ?? true) {
      const reconciler = component('reconciler', 8082, props.reconciler);
      clusterRole('reconciler', reconciler, [
        [[...READ, 'create', 'update', 'patch', 'delete'], ALL_KINDS.map((k) => sporeResource(k))],
        [['get', 'patch', 'update'], ALL_KINDS.map((k) => sporeResource(k, '/status'))],
        [[...READ, 'create', 'delete'], [kplus.ApiResource.NAMESPACES]],
        [READ, [kplus.ApiResource.CUSTOM_RESOURCE_DEFINITIONS]],
      ]);
    }

    for (const obj of this.node.findAll().filter((c): c is ApiObject => c instanceof ApiObject)) {
      obj.metadata.addAnnotation(SYNC_WAVE, String(waveOf(obj)));
      obj.metadata.addLabel('app.kubernetes.io/part-of', 'spore');
      obj.metadata.addLabel('app.kubernetes.io/managed-by', 'spore');
      obj.metadata.addLabel('app.kubernetes.io/version', VERSION);
    }
  }
}
