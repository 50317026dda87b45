// The triggers of a router on a cluster (`spore router`), which may run as
// several replicas. Queue triggers run on every replica: each trigger's durable
// consumer (NATS) or consumer group (Kafka) is shared on the broker, which
// spreads the messages among them.
// Timers and watch triggers run only on the replica holding the Lease
// TRIGGERS_LEASE (leader.ts), so each schedule fires once and each change is
// sent once; their state (a catchUp timer's last firing, a watch's
// resourceVersion) is kept in a ConfigMap (kube-state.ts), so the next leader
// goes on where the last one was.
import { hostname } from 'node:os';
import { randomBytes } from 'node:crypto';
import type { KubeConfig } from '@kubernetes/client-node';
import type { KubeClient } from '../../store/kube-client.js';
import type { LogEntry, ResourceStore } from '../../store/index.js';
import { LogSink } from '../logs.js';
import type { Metrics } from '../metrics.js';
import type { Router } from '../router/router.js';
import { TriggerConditions } from './conditions.js';
import { KubeTriggerState } from './kube-state.js';
import { LeaderElector } from './leader.js';
import { Queues } from './queues.js';
import { Timers } from './timers.js';
import { Watches } from './watches.js';

export const TRIGGERS_LEASE = 'spore-triggers';

export interface ClusterTriggersOptions {
  store: ResourceStore;
  client: KubeClient;
  kubeconfig: KubeConfig;
  /** The platform namespace: the Lease and the state ConfigMap. */
  namespace: string;
  router: Router;
  /** The router's: the triggers' counters on its /metrics. */
  metrics?: Metrics;
  report: (message: string) => void;
}

export interface ClusterTriggers {
  elector: LeaderElector;
  queues: Queues;
  close(): Promise<void>;
}

/** A trigger's or an asynchronous call's log lines (the call it made, its outcome) on the router's stdout: on a cluster functions' logs are their pods'. */
export const stdoutLogs = () => new LogSink({
  appendLogs: (entries: readonly LogEntry[]) => {
    for (const e of entries) process.stdout.write(`${new Date(e.time).toISOString()} ${e.namespace}/${e.function} ${e.instance}${e.requestId ? ` [${e.requestId}]` : ''}: ${e.line}\n`);
  },
  queryLogs: () => [],
});

export async function startClusterTriggers(o: ClusterTriggersOptions): Promise<ClusterTriggers> {
  const { store, router, metrics, report } = o;
  const logs = stdoutLogs();
  // each trigger's state as its Active condition: queues' by every replica (the last to change wins), timers' and watches' by the leader
  const conditions = new TriggerConditions(store, report);
  const queues = new Queues({ store, router, logs, metrics, conditions, report });
  await queues.start();
  let led: { timers: Timers; watches: Watches; state?: KubeTriggerState; conditions: TriggerConditions } | undefined;
  const elector = new LeaderElector({
    client: o.client,
    namespace: o.namespace,
    name: TRIGGERS_LEASE,
    // the pod's name (its hostname), and what tells two processes of one host apart
    identity: `${hostname()}-${process.pid}-${randomBytes(3).toString('hex')}`,
    report,
    onStart: async () => {
      // read now, not at start: the last leader wrote it
      const state = await KubeTriggerState.load(o.client, o.namespace, { report }).catch((err: Error) => {
        report(`timers and watches run without their kept state (catchUp and resume are not honoured): ${err.message}`);
        return undefined;
      });
      // what it wrote while it led before is no guide: another leader wrote since, or the trigger was made anew
      const conditions = new TriggerConditions(store, report);
      const timers = new Timers({ store, state, router, logs, metrics, conditions, report });
      const watches = new Watches({ store, router, logs, kubeconfig: o.kubeconfig, state, metrics, conditions, report });
      led = { timers, watches, state, conditions };
      await timers.start();
      await watches.start();
    },
    onStop: async () => {
      const l = led;
      led = undefined;
      if (!l) return;
      // no firing and no watch from here on; the calls in flight finish (bounded)
      await Promise.all([l.timers.close(), l.watches.close()]);
      await Promise.all([l.state?.flush(), l.conditions.flush()]);
    },
  });
  elector.start();
  return {
    elector,
    queues,
    close: async () => {
      await Promise.all([elector.close(), queues.close()]);
      await conditions.flush();
      logs.flush();
    },
  };
}
