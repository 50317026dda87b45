// `spore poolmgr` and `spore router`: the dataplane's two parts as their own
// processes on a cluster (spore up runs both in one process on SQLite). Both
// read the Kubernetes store; the router asks the pool manager over HTTP on a miss.
import { randomBytes } from 'node:crypto';
import { createRequire } from 'node:module';
import { hostname } from 'node:os';
import { API_VERSION, DATAPLANE_KINDS } from '../api/index.js';
import { loadKubeConfig, type ClusterOptions } from './kube.js';
import { portOf } from './port.js';

const { version } = createRequire(import.meta.url)('spore/package.json') as { version: string };

export interface DataplaneCommandOptions extends ClusterOptions {
  port?: string;
  host: string;
  namespace?: string;
  poolmgr?: string;
  watchNamespace?: string;
}


/** In a pod with neither flag, the pod's service account. */
const cluster = (o: DataplaneCommandOptions): ClusterOptions => ({ kubeconfig: o.kubeconfig, inCluster: o.inCluster || (!o.kubeconfig && Boolean(process.env.KUBERNETES_SERVICE_HOST)) });
const namespaceOf = (o: DataplaneCommandOptions) => o.namespace ?? process.env.SPORE_NAMESPACE ?? 'spore-system';
const say = (line: string) => process.stderr.write(`spore: ${line}\n`);

/** The store of a component: the kinds it reads (its role allows no more). */
async function openStore(o: DataplaneCommandOptions, component: keyof typeof DATAPLANE_KINDS) {
  const kubeconfig = await loadKubeConfig(cluster(o));
  const { KubeStore } = await import('../store/kubernetes.js');
  const kinds = DATAPLANE_KINDS[component].map((kind) => ({ apiVersion: API_VERSION, kind }));
  const watchNamespaces = o.watchNamespace?.split(',').map((n) => n.trim()).filter(Boolean);
  return { kubeconfig, watchNamespaces, store: await KubeStore.open({ kubeconfig, namespace: namespaceOf(o), kinds, stages: false, watchNamespaces, report: say }) };
}

function onStop(stop: () => Promise<void>): void {
  let stopping = false;
  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    process.once(signal, () => {
      if (stopping) return;
      stopping = true;
      void stop().then(
        () => process.exit(0),
        (err) => {
          say(`stopping: ${(err as Error).message}`);
          process.exit(1);
        },
      );
    });
  }
}

export async function poolmgrCommand(o: DataplaneCommandOptions): Promise<void> {
  const port = portOf(o.port ?? process.env.PORT ?? '8081', o.port ? '--port' : 'PORT');
  const namespace = namespaceOf(o);
  const { kubeconfig, store } = await openStore(o, 'poolmgr');
  const { Metrics, PoolManager } = await import('../dataplane/index.js');
  const { PodProvider } = await import('../dataplane/poolmgr/pod-provider.js');
  const { poolServer } = await import('../dataplane/poolmgr/server.js');
  const { ensureCredential } = await import('../dataplane/poolmgr/credential.js');
  const env = process.env;
  const provider = new PodProvider({
    kubeconfig,
    client: store.client,
    namespace,
    images: {
      node: env.SPORE_RUNTIME_NODE_IMAGE ?? `ghcr.io/spore-dev/runtime-node:${version}`,
      python: env.SPORE_RUNTIME_PYTHON_IMAGE ?? `ghcr.io/spore-dev/runtime-python:${version}`,
      fetcher: env.SPORE_FETCHER_IMAGE ?? `ghcr.io/spore-dev/spore:${version}`,
    },
    report: say,
  });
  const metrics = new Metrics({ defaultMetrics: true });
  const poolmgr = new PoolManager({ store, provider, metrics, report: say });
  const credential = await ensureCredential(store.client, namespace);
  await poolmgr.start();
  const server = poolServer({ poolmgr, metrics, credential });
  const url = await server.listen({ port, host: o.host });
  process.stdout.write(`spore poolmgr listening on ${url} (pods in namespace ${namespace} of ${store.client.server})\n`);
  onStop(async () => {
    // first the pool manager: its waiting borrows are answered (503), so the server's close does not wait for them
    await poolmgr.shutdown(); // its pods stay, for the next pool manager to adopt
    await server.close();
    await store.close();
  });
}

export async function routerCommand(o: DataplaneCommandOptions): Promise<void> {
  const port = portOf(o.port ?? process.env.PORT ?? '8080', o.port ? '--port' : 'PORT');
  const poolmgrUrl = (o.poolmgr ?? process.env.SPORE_POOLMGR_URL)?.replace(/\/+$/, '');
  if (!poolmgrUrl) throw new Error('give the pool manager\'s address: --poolmgr URL (or SPORE_POOLMGR_URL)');
  if (!/^https?:\/\//.test(poolmgrUrl)) throw new Error(`--poolmgr ${poolmgrUrl}: expected an http:// or https:// URL`);
  const { kubeconfig, store, watchNamespaces } = await openStore(o, 'router');
  const { AsyncCalls, Metrics, Router, Workflows } = await import('../dataplane/index.js');
  const { WorkflowMetrics } = await import('../dataplane/workflows/metrics.js');
  const { KubeWorkflowRuns } = await import('../store/kube-workflow-runs.js');
  const { KubeInvocations, MAX_BODY_BYTES } = await import('../store/kube-invocations.js');
  const { stdoutLogs, startClusterTriggers } = await import('../dataplane/triggers/cluster.js');
  const { RemotePools } = await import('../dataplane/router/remote-pools.js');
  const { readCredential } = await import('../dataplane/poolmgr/credential.js');
  const credential = await readCredential(store.client, namespaceOf(o));
  const pools = new RemotePools({ url: poolmgrUrl, credential, refreshCredential: () => readCredential(store.client, namespaceOf(o), 0), store, report: say });
  const metrics = new Metrics({ defaultMetrics: true });
  // workflow runs and asynchronous calls as WorkflowRun and Invocation objects: executed by the router called, heartbeating (store/kube-owned.ts)
  const owned = { client: store.client, identity: `${hostname()}-${process.pid}-${randomBytes(3).toString('hex')}`, namespaces: watchNamespaces, report: say };
  const runs = new KubeWorkflowRuns(owned);
  const invocations = new KubeInvocations(owned);
  let router!: InstanceType<typeof Router>;
  const workflows = new Workflows({ store, runs, invoke: (c) => router.invoke(c), metrics: new WorkflowMetrics(metrics.registry), report: say });
  const calls = new AsyncCalls({ store: invocations, invoke: (c) => router.invoke(c), logs: stdoutLogs(), metrics, report: say, maxBodyBytes: MAX_BODY_BYTES });
  router = new Router({ store, poolmgr: pools, metrics, workflows, async: calls, report: say });
  const url = await router.listen(port, o.host);
  process.stdout.write(`spore router listening on ${url} (pool manager at ${poolmgrUrl})\n`);
  // queue triggers on every replica; timers and watches on the one holding the Lease (they call through this router, so once it serves)
  const triggers = await startClusterTriggers({ store, client: store.client, kubeconfig, namespace: namespaceOf(o), router, metrics, report: say });
  // runs and calls whose router died (heartbeat stale), or handed over by `spore invocations retry`:
  // taken over now, then every 10 s by the replica holding the Lease (each by one replica: guarded writes)
  await Promise.all([workflows.start(), calls.start()]);
  const resuming = setInterval(() => {
    if (!triggers.elector.leading) return;
    workflows.resume().catch((err: Error) => say(`resuming workflow runs: ${err.message}`));
    calls.resume().catch((err: Error) => say(`resuming asynchronous calls: ${err.message}`));
  }, 10_000);
  onStop(async () => {
    clearInterval(resuming);
    await triggers.close(); // no new firing or message; the Lease is released for the next replica
    await Promise.all([workflows.close(), calls.close()]); // runs under way stop taking steps and stay running, for another replica; calls finish (bounded) or run again
    await router.close(); // calls in flight finish (bounded)
    await Promise.all([runs.close(), invocations.close()]); // their heartbeat set to 0: taken over at once
    await pools.close();
    await store.close();
  });
}
