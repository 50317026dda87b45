// `spore list --kubeconfig PATH`: what the local `spore list` shows, read from a
// cluster's API server (its `spore router` serves no /_spore/*: it faces the
// public). The spore.dev objects of every namespace (or one), each trigger with
// the dataplane's `Active` condition and the reconciler's `Ready`, and the pool
// manager's pods in the platform namespace: those specialized for a function
// (its instances) and the generic ones of an Environment (its warm pool).
import { API_VERSION, MAIN_STAGE, POOL_POD_LABEL, STAGE_LABEL, calleeOf } from '../api/index.js';
import { parseSchedule } from '../api/schedule.js';
import { POD_LABELS } from '../dataplane/poolmgr/pod-provider.js';
import { INSTALL_CRDS, KubeClient, KubeError } from '../store/kube-client.js';
import { loadKubeConfig } from './kube.js';
import { printData, type Format } from './output.js';

export interface ClusterListOptions {
  kubeconfig: string;
  /** The pool manager's namespace, where the pods are. */
  poolNamespace: string;
  /** Only this namespace's objects (default: every namespace). */
  namespace?: string;
  output?: Format;
}

/** A condition as shown: null when the object has none of that type yet. */
type Shown = { status: string; reason?: string; message?: string } | null;

interface Pod {
  pod: string;
  /** ready, terminating, or the pod's phase (pending, running, failed …). */
  state: string;
  ageSeconds: number;
}

export interface ClusterStatus {
  functions: { namespace: string; name: string; environment: string; executor: string; instances: Pod[] }[];
  routes: { stage: string; namespace: string; trigger: string; methods: string[]; path: string; host?: string; functions: { name: string; weight: number }[]; ready: Shown }[];
  timers: { namespace: string; name: string; function: string; cron: string; timeZone: string; nextRun?: string | null; active: Shown; ready: Shown }[];
  queues: { namespace: string; name: string; broker: string; topic: string; function: string; active: Shown; ready: Shown }[];
  watches: { namespace: string; name: string; resource: string; function: string; active: Shown; ready: Shown }[];
  environments: { namespace: string; name: string; warm: number; starting: number; pods: Pod[] }[];
}

const KINDS = ['Function', 'HttpTrigger', 'TimerTrigger', 'QueueTrigger', 'WatchTrigger', 'Environment'] as const;

function condition(o: any, type: string): Shown {
  const c = (o.status?.conditions as any[] | undefined)?.find((x) => x.type === type);
  return c ? { status: c.status, ...(c.reason ? { reason: c.reason } : {}), ...(c.message ? { message: c.message } : {}) } : null;
}

/** The next firing of a cron, as the router's timer computes it; an `@every` interval counts from when its router scheduled it, unknown here (undefined). */
function nextRun(cron: string, timeZone: string): string | null | undefined {
  try {
    const s = parseSchedule(cron, timeZone);
    return s.kind === 'cron' ? (s.cron.nextRun()?.toISOString() ?? null) : undefined;
  } catch {
    return undefined; // refused by the dataplane too: its Active condition says why
  }
}

function podOf(p: any, now: number): Pod {
  const ready = (p.status?.conditions as any[] | undefined)?.some((c) => c.type === 'Ready' && c.status === 'True');
  const state = p.metadata.deletionTimestamp ? 'terminating' : ready ? 'ready' : String(p.status?.phase ?? 'Pending').toLowerCase();
  return { pod: p.metadata.name, state, ageSeconds: Math.max(0, Math.round((now - Date.parse(p.metadata.creationTimestamp)) / 1000)) };
}

const byName = (a: { metadata: any }, b: { metadata: any }) => `${a.metadata.namespace}/${a.metadata.name}`.localeCompare(`${b.metadata.namespace}/${b.metadata.name}`);

/** Reads everything in a few requests: each kind's list, and the pool's pods. */
export async function clusterStatus(client: KubeClient, o: Pick<ClusterListOptions, 'namespace' | 'poolNamespace'>): Promise<ClusterStatus> {
  if (o.namespace) {
    // a list in a namespace that does not exist is merely empty: said instead
    await client.request('GET', `/api/v1/namespaces/${encodeURIComponent(o.namespace)}`).catch((err) => {
      throw err instanceof KubeError && err.status === 404 ? new Error(`namespace ${o.namespace} does not exist on the cluster at ${client.server}`) : err;
    });
  }
  const list = async (kind: string) => {
    const path = await client.collection(API_VERSION, kind, o.namespace).catch((err) => {
      if (err instanceof KubeError && err.status === 404) throw new Error(`the cluster at ${client.server} does not serve ${kind} (${API_VERSION}): install Spore's CRDs first (${INSTALL_CRDS})`);
      throw err;
    });
    return ((await client.request<{ items: any[] }>('GET', path)).items ?? []).sort(byName);
  };
  const podsPath = `/api/v1/namespaces/${encodeURIComponent(o.poolNamespace)}/pods`;
  const [[functions, routes, timers, queues, watches, environments], pods] = await Promise.all([
    Promise.all(KINDS.map(list)),
    client.request<{ items: any[] }>('GET', podsPath, { query: { labelSelector: `${POOL_POD_LABEL.name}=${POOL_POD_LABEL.value}` } }).then(
      (l) => l.items,
      (err) => {
        throw err instanceof KubeError && err.status !== 0 ? new Error(`listing the pool's pods in namespace ${o.poolNamespace} (--pool-namespace): ${err.message}`) : err;
      },
    ),
  ]);
  const now = Date.now();
  const label = (p: any, l: string): string | undefined => p.metadata.labels?.[l];
  pods.sort(byName);
  const instancesOf = (ns: string, name: string) => pods.filter((p) => label(p, POD_LABELS.function) === name && label(p, POD_LABELS.functionNamespace) === ns).map((p) => podOf(p, now));
  // a generic pod has no function yet: specializing relabels it out of its Environment's pool
  const warmOf = (ns: string, name: string) => pods.filter((p) => !label(p, POD_LABELS.function) && label(p, POD_LABELS.environment) === name && label(p, POD_LABELS.environmentNamespace) === ns).map((p) => podOf(p, now));
  const id = (x: any) => ({ namespace: x.metadata.namespace as string, name: x.metadata.name as string });
  return {
    functions: functions.map((f) => ({ ...id(f), environment: f.spec.environment.name, executor: f.spec.executor?.type ?? 'pool', instances: instancesOf(f.metadata.namespace, f.metadata.name) })),
    routes: routes.map((r) => ({
      stage: r.metadata.labels?.[STAGE_LABEL] ?? MAIN_STAGE,
      namespace: r.metadata.namespace,
      trigger: r.metadata.name,
      methods: r.spec.methods ?? ['GET'],
      path: r.spec.path ?? `${r.spec.prefix}/*`,
      ...(r.spec.host ? { host: r.spec.host } : {}),
      functions: r.spec.functions ?? [{ name: calleeOf(r.spec), weight: 100 }],
      ready: condition(r, 'Ready'),
    })),
    timers: timers.map((t) => {
      const timeZone = t.spec.timeZone ?? 'UTC';
      return { ...id(t), function: calleeOf(t.spec), cron: t.spec.cron, timeZone, nextRun: nextRun(t.spec.cron, timeZone), active: condition(t, 'Active'), ready: condition(t, 'Ready') };
    }),
    queues: queues.map((q) => ({ ...id(q), broker: q.spec.broker.kind, topic: q.spec.topic, function: calleeOf(q.spec), active: condition(q, 'Active'), ready: condition(q, 'Ready') })),
    watches: watches.map((w) => ({ ...id(w), resource: `${w.spec.resource.kind} (${w.spec.resource.apiVersion ?? 'v1'})`, function: calleeOf(w.spec), active: condition(w, 'Active'), ready: condition(w, 'Ready') })),
    environments: environments.map((e) => {
      const warm = warmOf(e.metadata.namespace, e.metadata.name);
      return { ...id(e), warm: warm.filter((p) => p.state === 'ready').length, starting: warm.filter((p) => p.state !== 'ready' && p.state !== 'terminating').length, pods: warm };
    }),
  };
}

/** `active=True Scheduled`, with the message when it says more than the reason; `active=-` when there is none yet. */
function shown(name: string, c: Shown): string {
  if (!c) return `${name}=-`;
  const why = [c.reason, c.message && c.message.toLowerCase() !== c.reason?.toLowerCase() ? `(${c.message})` : ''].filter(Boolean).join(' ');
  return `${name}=${c.status}${why ? ` ${why}` : ''}`;
}

/** The local `spore list`'s layout, with conditions where the local one has its live counters. */
export function formatClusterStatus(s: ClusterStatus): string {
  const out: string[] = ['FUNCTIONS'];
  const at = (x: { namespace: string; name: string }) => `${x.namespace}/${x.name}`.padEnd(32);
  for (const f of s.functions) {
    out.push(`  ${at(f)} env=${f.environment} executor=${f.executor} instances=${f.instances.length} ready=${f.instances.filter((i) => i.state === 'ready').length}`);
    for (const i of f.instances) out.push(`    instance ${i.pod} ${i.state} age=${i.ageSeconds}s`);
  }
  out.push('ROUTES');
  for (const r of s.routes) {
    const to = r.functions.map((f) => (r.functions.length > 1 ? `${f.name} ${f.weight}%` : f.name)).join(', ');
    out.push(`  ${r.methods.join(',').padEnd(10)} ${r.path}${r.host ? ` host=${r.host}` : ''} → ${to} (${r.namespace}/${r.trigger}${r.stage === MAIN_STAGE ? '' : `, stage ${r.stage}`}) ${shown('ready', r.ready)}`);
  }
  out.push('TIMERS');
  for (const t of s.timers) out.push(`  ${at(t)} "${t.cron}" ${t.timeZone} → ${t.function} next=${t.nextRun === undefined ? '-' : (t.nextRun ?? 'never')} ${shown('active', t.active)} ${shown('ready', t.ready)}`);
  out.push('QUEUES');
  for (const q of s.queues) out.push(`  ${at(q)} ${q.broker} ${q.topic} → ${q.function} ${shown('active', q.active)} ${shown('ready', q.ready)}`);
  out.push('WATCHES');
  for (const w of s.watches) out.push(`  ${at(w)} ${w.resource} → ${w.function} ${shown('active', w.active)} ${shown('ready', w.ready)}`);
  out.push('ENVIRONMENTS');
  for (const e of s.environments) out.push(`  ${at(e)} warm=${e.warm} starting=${e.starting}`);
  return out.join('\n') + '\n';
}

export async function clusterListCommand(o: ClusterListOptions): Promise<void> {
  const client = new KubeClient(await loadKubeConfig({ kubeconfig: o.kubeconfig }));
  try {
    const status = await clusterStatus(client, o);
    if (!printData(status, o.output)) process.stdout.write(formatClusterStatus(status));
  } finally {
    client.close();
  }
}
