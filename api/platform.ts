// What the platform chart (constructs/platform.ts) and the components it runs
// (cli/dataplane.ts, dataplane/) must agree on: what each reads, how the
// pool's pods are labelled, where the pool manager keeps its credential.
import type { KindName } from './kinds.js';

/** Spore's kinds each dataplane component reads on a cluster: its store watches these, its role may read them. */
export const DATAPLANE_KINDS = {
  router: ['HttpTrigger', 'Function', 'Package', 'Environment', 'TimerTrigger', 'QueueTrigger', 'WatchTrigger', 'Workflow'],
  poolmgr: ['Environment', 'Package', 'Function'],
} as const satisfies Record<string, readonly KindName[]>;

/** The label every pod of the pool manager carries (its selector, and the NetworkPolicy's). */
export const POOL_POD_LABEL = { name: 'app.kubernetes.io/managed-by', value: 'spore-poolmgr' } as const;

/** The Secret, in the platform namespace, holding the credential routers present to the pool manager. */
export const POOLMGR_CREDENTIAL_SECRET = 'spore-poolmgr';
