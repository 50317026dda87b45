// The dataplane, assembled: a router and a pool manager over a store and an
// instance provider (child processes here; pods on Kubernetes).
import { join } from 'node:path';
import type { InvocationStore, LogStore, ResourceStore, WorkflowRunStore } from '../store/index.js';
import { LogSink } from './logs.js';
import { Metrics } from './metrics.js';
import { PackageFetcher } from './poolmgr/package-fetcher.js';
import { PoolManager } from './poolmgr/poolmgr.js';
import { ProcessProvider } from './poolmgr/process-provider.js';
import type { InstanceProvider } from './poolmgr/provider.js';
import { Router } from './router/router.js';
import { AsyncCalls } from './triggers/async.js';
import { TriggerConditions } from './triggers/conditions.js';
import { Queues } from './triggers/queues.js';
import { Timers, type TimerState } from './triggers/timers.js';
import { Watches } from './triggers/watches.js';
import { Workflows } from './workflows/engine.js';
import { WorkflowMetrics } from './workflows/metrics.js';
import type { KubeConfig } from '@kubernetes/client-node';

export { DataplaneError } from './errors.js';
export { Metrics } from './metrics.js';
export { PoolManager, type Lease, type FunctionSnapshot } from './poolmgr/poolmgr.js';
export { NODE_RUNTIME_FLAGS, ProcessProvider, builtinCommand, type ProcessInstance } from './poolmgr/process-provider.js';
export { PackageFetcher, PackageError } from './poolmgr/package-fetcher.js';
export type { Instance, InstanceProvider } from './poolmgr/provider.js';
export { Router, REQUEST_ID } from './router/router.js';
export { RouteTable } from './router/route-table.js';
export { Timers, schedule, type TimerInfo } from './triggers/timers.js';
export { Queues, type QueueInfo } from './triggers/queues.js';
export { Watches, type WatchInfo } from './triggers/watches.js';
export { AsyncCalls, ATTEMPTS as ASYNC_ATTEMPTS } from './triggers/async.js';
export { Workflows, type RunResult } from './workflows/engine.js';

export interface DataplaneOptions {
  /** With `invocations` (SQLite's), asynchronous calls are taken; with `workflowRuns`, Workflows run. */
  store: ResourceStore & LogStore & { invocations?: InvocationStore; workflowRuns?: WorkflowRunStore } & Partial<TimerState>;
  /** Holds instances' folders (instances/) and fetched archives (archives/). */
  stateDir: string;
  port?: number;
  host?: string;
  provider?: InstanceProvider;
  /** Calls that may wait per function before 429. @default 100 */
  queueSize?: number;
  /** Instances one function may have at most on this host. @default 4 per CPU */
  maxInstancesPerFunction?: number;
  bodyLimit?: number;
  /** Folder of the Secrets functions name: `<namespace>/<name>/<key>` files, as Fission mounts them in a pod. */
  secretsDir?: string;
  /** The cluster WatchTriggers watch (`spore up --kubeconfig`); without it they are inactive, and said so. */
  kubeconfig?: KubeConfig;
  /** Serve /_spore/* for the CLI. @default true */
  admin?: boolean;
  report?: (message: string) => void;
}

export interface Dataplane {
  url: string;
  router: Router;
  poolmgr: PoolManager;
  metrics: Metrics;
  timers: Timers;
  queues: Queues;
  watches: Watches;
  workflows?: Workflows;
  close(): Promise<void>;
}

export async function startDataplane(o: DataplaneOptions): Promise<Dataplane> {
  const metrics = new Metrics({ defaultMetrics: true });
  const logs = new LogSink(o.store);
  const onLineCut = (dropped: number) => {
    metrics.logLinesCut.inc();
    metrics.logBytesDropped.inc(dropped);
  };
  const fetcher = new PackageFetcher({ archiveDir: join(o.stateDir, 'archives'), onRejected: (reason) => metrics.archivesRejected.inc({ reason }) });
  const provider = o.provider ?? new ProcessProvider({ workRoot: join(o.stateDir, 'instances'), hide: o.stateDir, fetcher, onLineCut, report: o.report });
  const poolmgr = new PoolManager({ store: o.store, provider, fetcher, metrics, logs, queueSize: o.queueSize, maxInstancesPerFunction: o.maxInstancesPerFunction, report: o.report, secretsDir: o.secretsDir });
  await poolmgr.start();
  let timers: Timers | undefined;
  let queues: Queues | undefined;
  let watches: Watches | undefined;
  const admin = { logs: o.store, status: async () => ({ timers: timers?.list() ?? [], queues: (await queues?.status()) ?? [], watches: watches?.list() ?? [] }) };
  let router!: Router;
  const calls = o.store.invocations ? new AsyncCalls({ store: o.store.invocations, invoke: (c) => router.invoke(c), logs, metrics, report: o.report }) : undefined;
  const workflows = o.store.workflowRuns ? new Workflows({ store: o.store, runs: o.store.workflowRuns, invoke: (c) => router.invoke(c), metrics: new WorkflowMetrics(metrics.registry), report: o.report }) : undefined;
  router = new Router({ store: o.store, poolmgr, metrics, admin: o.admin === false ? undefined : admin, async: calls, workflows, bodyLimit: o.bodyLimit, report: o.report });
  let url: string;
  try {
    url = await router.listen(o.port ?? 8080, o.host ?? '127.0.0.1');
  } catch (err) {
    await poolmgr.shutdown();
    throw err;
  }
  // timers call through the router (in-process), so they start once it serves
  const state = o.store.readState && o.store.writeState ? { readState: o.store.readState.bind(o.store), writeState: o.store.writeState.bind(o.store) } : undefined;
  // each trigger's state also as its Active condition, in the store
  const conditions = new TriggerConditions(o.store, o.report ?? ((m) => process.stderr.write(`spore: ${m}\n`)));
  timers = new Timers({ store: o.store, state, router, logs, metrics, conditions, report: o.report });
  await timers.start();
  queues = new Queues({ store: o.store, router, logs, metrics, conditions, report: o.report });
  await queues.start();
  watches = new Watches({ store: o.store, router, logs, kubeconfig: o.kubeconfig, state, metrics, conditions, report: o.report });
  await watches.start();
  const watching = watches;
  await calls?.start(); // calls left running by a stop run again
  await workflows?.start(); // runs left under way go on
  const started = timers;
  const consuming = queues;
  let closing: Promise<void> | undefined;
  return {
    url,
    router,
    poolmgr,
    metrics,
    timers: started,
    queues: consuming,
    watches: watching,
    workflows,
    close: () =>
      (closing ??= (async () => {
        // no new firing or message; the calls in flight finish (bounded) while the router still serves
        await Promise.all([started.close(), consuming.close(), watching.close(), calls?.close(), workflows?.close()]);
        await conditions.flush(); // written before the store closes
        await router.close(); // in-flight calls finish (bounded), then instances go
        await poolmgr.shutdown();
        logs.flush();
      })()),
  };
}
