// `spore invocations [--failed]`: the asynchronous calls; `spore invocations
// retry ID` queues a failed one again. Of the running spore up (its
// /_spore/invocations), or with --kubeconfig of a cluster, read from its
// Invocation objects (a retry hands the call to the router holding the Lease).
import { request } from 'undici';
import type { Invocation } from '../store/index.js';
import { failure, getJson, type TargetOptions } from './client.js';
import { loadKubeConfig } from './kube.js';
import { printData, type Format } from './output.js';
import { findTarget } from './target.js';

export interface InvocationsOptions extends TargetOptions {
  output?: Format;
  failed?: boolean;
  state?: string;
  limit?: string;
  kubeconfig?: string;
}

type Call = Pick<Invocation, 'id' | 'namespace' | 'function' | 'state' | 'attempts' | 'status' | 'error' | 'created'>;

/** Where the calls are: spore up's API, or a cluster's Invocation objects. */
interface Calls {
  list(state: string | undefined, limit: string | undefined): Promise<Call[]>;
  /** Queues a failed call again; throws, saying why, when it is not found or not failed. */
  retry(id: string): Promise<void>;
  close(): void;
}

function upCalls(o: InvocationsOptions): Calls {
  const base = findTarget(o);
  return {
    list: (state, limit) => getJson(`${base}/_spore/invocations?${new URLSearchParams({ ...(state ? { state } : {}), ...(limit ? { limit } : {}) })}`),
    retry: async (id) => {
      const url = `${base}/_spore/invocations/${encodeURIComponent(id)}/retry`;
      const res = await request(url, { method: 'POST' }).catch((err) => {
        throw new Error(`cannot reach ${url}: ${(err as Error).message}`);
      });
      const body = await res.body.text();
      if (res.statusCode >= 400) throw failure(url, res.statusCode, body);
    },
    close: () => {},
  };
}

const STATES = ['queued', 'running', 'succeeded', 'failed'];

async function clusterCalls(kubeconfig: string): Promise<Calls> {
  const { INSTALL_CRDS, KubeClient } = await import('../store/kube-client.js');
  const { KubeInvocations } = await import('../store/kube-invocations.js');
  const client = new KubeClient(await loadKubeConfig({ kubeconfig }));
  const { view } = await import('../dataplane/triggers/async.js');
  const calls = new KubeInvocations({ client, identity: 'spore-cli' });
  // a cluster without the kind answers 404 for its collection
  const served = <T>(p: Promise<T>) =>
    p.catch((err: { status?: number }) => {
      throw err.status === 404 ? new Error(`the cluster at ${client.server} has no Invocation objects (spore.dev/v1alpha1): install the spore.dev CRDs first (${INSTALL_CRDS})`) : err;
    });
  return {
    list: (state, limit) => {
      // what spore up's API checks, checked here
      if (state !== undefined && !STATES.includes(state)) throw new Error(`--state ${state}: expected one of ${STATES.join(', ')}`);
      const n = limit === undefined ? undefined : Number(limit);
      if (n !== undefined && !(Number.isInteger(n) && n > 0)) throw new Error(`--limit ${limit}: expected a positive whole number`);
      // shown as spore up's API shows a call: neither its body nor its headers (the caller's credentials)
      return served(calls.listInvocations({ state: state as Invocation['state'] | undefined, limit: n })).then((l) => l.map(view));
    },
    retry: async (id) => {
      const call = await served(calls.getInvocation(id));
      if (!call) throw new Error(`no asynchronous call ${id} on the cluster (finished calls are kept for a while: the last 1000 that succeeded, 10000 that failed, per namespace)`);
      if (call.state !== 'failed') throw new Error(`asynchronous call ${id} is ${call.state}, not failed: only a failed call is retried`);
      if (!(await calls.retryInvocation(id))) throw new Error(`asynchronous call ${id} changed while it was being queued again: look at it again (spore invocations --kubeconfig …)`);
    },
    close: () => {
      void calls.close();
      client.close();
    },
  };
}

export async function invocationsCommand(action: string | undefined, id: string | undefined, o: InvocationsOptions): Promise<void> {
  if (action !== undefined && action !== 'retry') throw new Error(`spore invocations: unknown action "${action}" (give none to list, or retry ID)`);
  if (action === 'retry' && !id) throw new Error('spore invocations retry ID: give the id of a failed call (spore invocations --failed lists them)');
  const source = o.kubeconfig ? await clusterCalls(o.kubeconfig) : upCalls(o);
  try {
    if (action === 'retry') {
      await source.retry(id!);
      process.stdout.write(`asynchronous call ${id} queued again${o.kubeconfig ? ': the router holding the Lease runs it within 10 s' : ''}\n`);
      return;
    }
    const state = o.failed ? 'failed' : o.state;
    const calls = await source.list(state, o.limit);
    if (printData(calls, o.output)) return;
    if (!calls.length) return void process.stdout.write(`no asynchronous calls${state ? ` ${state}` : ''}\n`);
    const out = ['ID                                    FUNCTION                  STATE      ATTEMPTS  STATUS  AGE     ERROR'];
    for (const c of calls) {
      const age = `${Math.round((Date.now() - c.created) / 1000)}s`;
      out.push(`${c.id.padEnd(37)} ${`${c.namespace}/${c.function}`.padEnd(25)} ${c.state.padEnd(10)} ${String(c.attempts).padEnd(9)} ${String(c.status ?? '-').padEnd(7)} ${age.padEnd(7)} ${c.error ?? ''}`);
    }
    process.stdout.write(out.join('\n') + '\n');
  } finally {
    source.close();
  }
}
