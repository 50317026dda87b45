// `spore logs FN --kubeconfig PATH`: a function's logs on a cluster, read from
// its pods through the Kubernetes API (pods/<name>/log of each pod's runtime
// container, with the kubelet's timestamps), printed as the local `spore logs`
// prints them: time, instance (the pod), request id (from the runtimes'
// \x1e<id>\x1f framing), line. Logs live as long as the pods: a pod deleted
// when idle takes its logs with it. The API does not say which stream a line
// came from, so stderr lines are not marked.
import type { Readable } from 'node:stream';
import { POD_LABELS } from '../dataplane/poolmgr/pod-provider.js';
import { KindCache } from '../store/kind-cache.js';
import { KubeClient, KubeError } from '../store/kube-client.js';
import { loadKubeConfig } from './kube.js';

export interface ClusterLogsOptions {
  kubeconfig: string;
  /** The pool manager's namespace, where the pods are. */
  poolNamespace: string;
  follow?: boolean;
  /** Only lines of the last this many ms. */
  sinceMs?: number;
}

/** The container the function runs in (pod-provider.ts names it so). */
const RUNTIME = 'runtime';
/** A line logged while serving a request (dataplane/runtimes: \x1e<request id>\x1f<line>). */
const TAG = /^\x1e([^\x1f]*)\x1f(.*)$/s;

interface Entry {
  /** The kubelet's RFC3339Nano time, its fraction padded to 9 digits: sorts as text. */
  key: string;
  text: string;
}

/** A `<time> <line>` of the API's log (timestamps=true) as the local format's line. */
function entry(pod: string, raw: string): Entry | undefined {
  const space = raw.indexOf(' ');
  const time = raw.slice(0, space);
  const ms = Date.parse(time);
  if (space < 0 || Number.isNaN(ms)) return undefined; // not a log line (the kubelet prefixes every one)
  const [, whole, fraction = ''] = /^(.*?:\d\d)(?:\.(\d+))?Z$/.exec(time) ?? [, time];
  const m = TAG.exec(raw.slice(space + 1));
  const [line, rid] = m ? [m[2], m[1] ? ` ${m[1]}` : ''] : [raw.slice(space + 1), ''];
  return { key: `${whole}.${fraction.padEnd(9, '0')}`, text: `${new Date(ms).toISOString()} ${pod}${rid} ${line}\n` };
}

/** Calls `onLine` for each line of a stream (a last one without its newline too); resolves at its end. */
function eachLine(stream: Readable, onLine: (line: string) => void): Promise<void> {
  stream.setEncoding('utf8');
  let partial = '';
  stream.on('data', (chunk: string) => {
    const parts = (partial + chunk).split('\n');
    partial = parts.pop()!;
    for (const l of parts) onLine(l);
  });
  return new Promise((resolve) => {
    const done = () => {
      if (partial) onLine(partial);
      partial = '';
      resolve();
    };
    stream.once('end', done);
    stream.once('close', done);
    stream.once('error', done);
  });
}

const runtimeRunning = (pod: any) => pod.status?.containerStatuses?.some((c: any) => c.name === RUNTIME && c.state?.running);
const say = (line: string) => process.stderr.write(`spore: ${line}\n`);

export async function clusterLogsCommand(namespace: string, name: string, o: ClusterLogsOptions): Promise<void> {
  const kc = await loadKubeConfig({ kubeconfig: o.kubeconfig });
  const client = new KubeClient(kc);
  const collection = `/api/v1/namespaces/${encodeURIComponent(o.poolNamespace)}/pods`;
  const selector = `${POD_LABELS.function}=${name},${POD_LABELS.functionNamespace}=${namespace}`;
  const log = (pod: string, query: Record<string, string | undefined>, signal?: AbortSignal) =>
    client.stream(`${collection}/${encodeURIComponent(pod)}/log`, { query: { container: RUNTIME, timestamps: 'true', ...query }, signal });
  const sinceSeconds = o.sinceMs === undefined ? undefined : String(Math.max(1, Math.ceil(o.sinceMs / 1000)));
  const none = () => process.stderr.write(`no instances of ${namespace}/${name} are running on the cluster; logs live as long as the function's pods\n`);

  // listed first in both modes: a wrong kubeconfig or an unreachable cluster fails here, clearly
  const list = await client.request<{ items: any[] }>('GET', collection, { query: { labelSelector: selector } }).catch((err) => {
    if (err instanceof KubeError && err.status !== 0) throw new Error(`listing the pods of ${namespace}/${name} in namespace ${o.poolNamespace}: ${err.message}`);
    throw err;
  });

  if (!o.follow) {
    const pods = list.items.filter(runtimeRunning);
    if (!pods.length) {
      client.close();
      none();
      return;
    }
    // every pod's log, then all lines in time order
    const entries = (await Promise.all(pods.map(async (p) => {
      const found: Entry[] = [];
      try {
        await eachLine(await log(p.metadata.name, { sinceSeconds }), (l) => {
          const e = entry(p.metadata.name, l);
          if (e) found.push(e);
        });
      } catch (err) {
        say(`pod ${p.metadata.name}: ${(err as Error).message}`); // gone meanwhile, or its runtime not started
      }
      return found;
    }))).flat();
    entries.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
    for (const e of entries) process.stdout.write(e.text);
    client.close();
    return;
  }

  // follow every pod of the function, as they come (a pool pod is relabelled for it when specialized);
  // a stream ends with its container: a restarted one is followed again from after the last line shown
  if (!list.items.some(runtimeRunning)) none();
  const followed = new Map<string, { streaming: boolean; last?: Entry; ms?: number }>();
  const follow = async (pod: any) => {
    const podName: string = pod.metadata.name;
    const state = followed.get(pod.metadata.uid) ?? { streaming: false };
    followed.set(pod.metadata.uid, state);
    if (state.streaming || !runtimeRunning(pod)) return;
    state.streaming = true;
    try {
      const query = state.ms !== undefined ? { sinceTime: new Date(state.ms).toISOString().replace(/\.\d+Z$/, 'Z') } : { sinceSeconds };
      await eachLine(await log(podName, { follow: 'true', ...query }), (l) => {
        const e = entry(podName, l);
        if (!e || (state.last && e.key <= state.last.key)) return; // shown already, before a restart
        state.last = e;
        state.ms = Date.parse(l.slice(0, l.indexOf(' ')));
        process.stdout.write(e.text);
      });
    } catch (err) {
      if (!(err instanceof KubeError && err.status === 404)) say(`pod ${podName}: ${(err as Error).message}`);
    }
    state.streaming = false;
  };
  const pods = new KindCache(kc, client, 'v1', 'Pod', collection, (e) => {
    if (e.type === 'DELETED') followed.delete((e.object.metadata as any).uid);
    else void follow(e.object);
  }, say, selector);
  await pods.ready;
  await new Promise(() => {}); // until interrupted
}
