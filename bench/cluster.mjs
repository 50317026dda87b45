// Spore on a cluster, against the tests' real kube-apiserver and etcd
// (test/cluster/harness.ts): push → objects applied through a signed webhook
// (`spore reconciler --kubeconfig` as a child process); a no-op sync of a
// 200-function app (time, API requests); and the dataplane's lookups from the
// informer cache next to SQLite holding the same objects; and the dataplane
// on the cluster (`spore poolmgr` + `spore router`, pool pods run by the test
// node agent as local processes) next to spore up's (child processes): cold
// start and warm calls. BENCH_VERBOSE=1 prints its phases and what the
// reconcilers and stores report. BENCH_ONLY=dataplane (or sync, or push) runs
// that section alone.
import { execFile, execFileSync } from 'node:child_process';
import { createHmac, randomBytes } from 'node:crypto';
import { accessSync, constants, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { KubeConfig } from '@kubernetes/client-node';
import yaml from 'js-yaml';
import { Bench } from 'tinybench';
import { request } from 'undici';
import { packArchive } from '../lib/api/archive.js';
import { API_VERSION, POOL_POD_LABEL, allCrds } from '../lib/api/index.js';
import { ProcessProvider } from '../lib/dataplane/index.js';
import { POD_LABELS, RUNTIME_PORT } from '../lib/dataplane/poolmgr/pod-provider.js';
import { GitSource } from '../lib/reconciler/git-source.js';
import { Reconciler } from '../lib/reconciler/reconciler.js';
import { SqliteStore } from '../lib/store/index.js';
import { KindCache } from '../lib/store/kind-cache.js';
import { KubeClient } from '../lib/store/kube-client.js';
import { KubeHistory } from '../lib/store/kube-history.js';
import { KubeStore } from '../lib/store/kubernetes.js';
import { ROOT, firstCall, fmt, freePort, latencies, median, percentile, scope, side, startProcess, waitFor } from './util.mjs';

const PUSH_FUNCTIONS = 10;
const NOOP_FUNCTIONS = 200;
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const SYNCS = 10;
const READ_ROUNDS = 3;
const READ_MS = 400; // per task and round: the four tasks of a round run one after another
const SECRET = 'bench-secret';
const DP_FUNCTIONS = Number(process.env.BENCH_FUNCTIONS ?? 8); // first calls per path
const DP_POOL = 3;
const DP_SECONDS = Number(process.env.BENCH_SECONDS ?? 3); // per target and round
const DP_CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 32);
const DP_SEQUENTIAL = 500;
const SECTIONS = ['dataplane', 'sync', 'push'];
const ONLY = process.env.BENCH_ONLY;
const BIN = join(ROOT, 'bin/spore.js');
const exec = promisify(execFile);
const quiet = process.env.BENCH_VERBOSE ? (line) => console.error(line) : () => {};
const git = (cwd, ...args) => execFileSync('git', args, { cwd, stdio: 'pipe' }).toString().trim();

/** A step that must end: a hang becomes an error that names it (a bound, not a measure). */
function within(what, seconds, promise) {
  let timer;
  const late = new Promise((_, reject) => (timer = setTimeout(() => reject(new Error(`${what}: not done after ${seconds} s`)), seconds * 1000)));
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
}

/** The harness's binaries: KUBEBUILDER_ASSETS, else build-assets.sh's cache (as test/cluster/assets.ts finds them). */
function missingAssets() {
  const dir = process.env.KUBEBUILDER_ASSETS || execFileSync('bash', [join(ROOT, 'test/cluster/build-assets.sh'), '--dir'], { encoding: 'utf8' }).trim();
  const missing = ['etcd', 'kube-apiserver'].filter((b) => {
    try {
      accessSync(join(dir, b), constants.X_OK);
      return false;
    } catch {
      return true;
    }
  });
  return missing.length ? `no ${missing.join(' or ')} in ${dir}: build them with test/cluster/build-assets.sh (needs Go), or set KUBEBUILDER_ASSETS` : undefined;
}

/** The API server, started in `dir` (stopped when `s` closes, also after a failed or interrupted start). */
async function startCluster(s, dir) {
  // bounded (the harness gives the servers 180 s to answer): a hang is an error, and its npm is stopped
  const npm = (...args) => exec('npm', ['run', '--silent', 'cluster', '--', ...args], { cwd: ROOT, maxBuffer: 1 << 24, timeout: 240_000 });
  s.defer(async () => {
    if (existsSync(join(dir, 'pids.json'))) await npm('stop', dir);
  });
  const { stdout } = await npm('start', dir).catch((err) => {
    throw new Error(`npm run cluster -- start ${dir} failed${err.killed ? ' (no answer in 240 s)' : ''}: ${err.stderr || err.message}`);
  });
  return stdout.trim().split('\n').pop();
}

/** The spore.dev CRDs, applied server-side as `spore crds | kubectl apply --server-side -f -` does, each Established. */
async function installCrds(client) {
  const crds = allCrds();
  for (const crd of crds) {
    await client.request('PATCH', `/apis/apiextensions.k8s.io/v1/customresourcedefinitions/${crd.metadata.name}`, { query: { fieldManager: 'spore', force: 'true' }, body: crd, contentType: 'application/apply-patch+yaml' });
  }
  for (const crd of crds) {
    await waitFor(`CRD ${crd.metadata.name} Established`, async () => {
      const c = await client.request('GET', `/apis/apiextensions.k8s.io/v1/customresourcedefinitions/${crd.metadata.name}`);
      return c.status?.conditions?.some((x) => x.type === 'Established' && x.status === 'True');
    }, 30_000);
  }
}

/** An app's rendered manifests (--manifests): one Environment; a Package (inline archive), Function and HttpTrigger per function. */
function manifests(ns, count, round) {
  const meta = (name) => ({ name, namespace: ns });
  const docs = [{ apiVersion: API_VERSION, kind: 'Environment', metadata: meta('node'), spec: { runtime: { name: 'node' } } }];
  const shas = {};
  for (let i = 0; i < count; i++) {
    const f = `fn-${i}`;
    const archive = packArchive([{ path: 'index.mjs', data: Buffer.from(`export default () => new Response(${JSON.stringify(`${f} round ${round}`)});\n`) }]);
    shas[f] = archive.sha256;
    docs.push(
      { apiVersion: API_VERSION, kind: 'Package', metadata: meta(f), spec: { archive: { sha256: archive.sha256, size: archive.size, inline: archive.bytes.toString('base64') } } },
      { apiVersion: API_VERSION, kind: 'Function', metadata: meta(f), spec: { environment: { name: 'node' }, package: { name: f } } },
      { apiVersion: API_VERSION, kind: 'HttpTrigger', metadata: meta(f), spec: { path: `/${f}`, function: { name: f } } },
    );
  }
  return { yaml: docs.map((d) => yaml.dump(d)).join('---\n'), shas, objects: docs.length };
}

/** A Git repository (reached as file://) whose dist/ holds the app; commit() writes, commits and returns the commit. */
function repository(dir) {
  mkdirSync(join(dir, 'dist'), { recursive: true });
  git(dir, 'init', '--quiet', '--initial-branch=main');
  return (text, msg) => {
    writeFileSync(join(dir, 'dist', 'app.yaml'), text);
    git(dir, 'add', '-A');
    git(dir, '-c', 'user.name=bench', '-c', 'user.email=bench@example.com', 'commit', '--quiet', '-m', msg);
    return git(dir, 'rev-parse', 'HEAD');
  };
}

/** Counts a client's requests by verb and resource (`client.requests` is the total); calls go through unchanged. */
function tally(client) {
  const counts = new Map();
  const original = client.request.bind(client);
  client.request = (method, path, o = {}) => {
    const m = /^\/apis?(?:\/[^/]+)?\/v[^/]+(?:\/namespaces\/[^/]+)?\/([^/]+)(?:\/[^/]+)?(\/status)?$/.exec(path);
    const key = `${method} ${m ? m[1] + (m[2] ?? '') : 'discovery'}${o.query?.dryRun ? ' (dry run)' : ''}`;
    counts.set(key, (counts.get(key) ?? 0) + 1);
    return original(method, path, o);
  };
  return () => {
    const out = Object.fromEntries([...counts].sort((a, b) => b[1] - a[1]));
    counts.clear();
    return out;
  };
}

async function createNamespace(client, name) {
  await client.request('POST', '/api/v1/namespaces', { body: { apiVersion: 'v1', kind: 'Namespace', metadata: { name } } });
}

const synced = (rec, sha) => {
  const main = rec.status()[0];
  if (main.liveRevision !== sha) throw new Error(`the sync of ${sha.slice(0, 12)} failed: ${JSON.stringify(main.lastAttempt?.error ?? main)}`);
};

/**
 * A no-op sync of 200 functions (time, API requests), then the read path: the
 * informer cache of the same KubeStore next to a SqliteStore the same
 * repository was synced into.
 */
async function noop(s, base, kc, client) {
  const appNs = 'bench-noop';
  const system = 'bench-noop-system';
  for (const ns of [appNs, system]) await createNamespace(client, ns);
  const dir = join(base, 'noop');
  const commit = repository(join(dir, 'repo'));
  const app = manifests(appNs, NOOP_FUNCTIONS, 0);
  const sha = commit(app.yaml, '200 functions');
  const url = `file://${join(dir, 'repo')}`;

  const store = await within('KubeStore.open', 120, KubeStore.open({ kubeconfig: kc, namespace: system, report: quiet }));
  s.defer(() => store.close());
  const history = await within('KubeHistory.open', 60, KubeHistory.open(store.client, system, 'noop', quiet));
  const byKind = tally(store.client);
  const rec = new Reconciler({ store, history, source: new GitSource(url, join(dir, 'mirror')), workDir: join(dir, 'work'), archiveDir: join(dir, 'archives'), app: 'noop', mode: 'manifests', namespace: system, pollMs: 3_600_000, report: quiet });
  s.defer(() => rec.close());
  // each sync counted with the history's writes it caused (the history writes through the store's client)
  const sync = async (trigger) => {
    const before = store.client.requests;
    const t = performance.now();
    await within(`a sync (${trigger})`, 300, rec.poll(trigger).then(() => history.flush()));
    return { ms: performance.now() - t, requests: store.client.requests - before, byKind: byKind() };
  };
  byKind();
  const first = await sync('push');
  quiet(`cluster: first sync ${fmt(first.ms, 0)} ms`);
  synced(rec, sha);
  const records = rec.history(undefined, 500).length;
  const syncs = [];
  for (let i = 0; i < SYNCS; i++) syncs.push(await sync('sync'));
  const recorded = rec.history(undefined, 500).length - records;

  // the same repository synced into SQLite: the same objects, as `spore up --git` holds them
  const local = new SqliteStore(join(dir, 'spore.db'));
  s.defer(() => local.close());
  const localRec = new Reconciler({ store: local, history: local, source: new GitSource(url, join(dir, 'local-mirror')), workDir: join(dir, 'local-work'), archiveDir: join(dir, 'local-archives'), app: 'noop', mode: 'manifests', pollMs: 3_600_000, report: quiet });
  s.defer(() => localRec.close());
  await within('the sync into SQLite', 300, localRec.poll('push'));
  synced(localRec, sha);
  quiet('cluster: read path');
  const read = await readPath(store, local, appNs);
  return { functions: NOOP_FUNCTIONS, objects: app.objects, first, syncs, recorded, read };
}

/** The dataplane's lookups (router.ts): a Function by ref, every HttpTrigger. Rounds of tinybench, the stores side by side. */
async function readPath(kube, local, ns) {
  const triggers = { apiVersion: API_VERSION, kind: 'HttpTrigger' };
  for (const [name, store] of [['KubeStore', kube], ['SqliteStore', local]]) {
    const n = (await store.list(triggers)).length;
    if (n !== NOOP_FUNCTIONS) throw new Error(`${name} holds ${n} HttpTriggers, not ${NOOP_FUNCTIONS}`);
  }
  const refs = Array.from({ length: NOOP_FUNCTIONS }, (_, i) => ({ apiVersion: API_VERSION, kind: 'Function', namespace: ns, name: `fn-${i}` }));
  const getter = (store) => {
    let i = 0;
    return async () => {
      if (!(await store.get(refs[i++ % refs.length]))) throw new Error('a Function is missing');
    };
  };
  const rounds = [];
  for (let r = 0; r < READ_ROUNDS; r++) {
    const bench = new Bench({ time: READ_MS, warmupTime: 50, throws: true });
    // the stores in turn, the order swapped each round
    const pair = r % 2 ? [['sqlite', local], ['kube', kube]] : [['kube', kube], ['sqlite', local]];
    for (const [name, store] of pair) bench.add(`get ${name}`, getter(store));
    for (const [name, store] of pair) bench.add(`list ${name}`, () => store.list(triggers));
    await bench.run();
    // ops/s as calls ÷ time (1000 / the mean latency), not tinybench's mean of per-call rates
    rounds.push(Object.fromEntries(bench.tasks.map((t) => [t.name, 1000 / t.result.period])));
  }
  const op = (what) => {
    const kubeOps = rounds.map((x) => x[`${what} kube`]);
    const sqliteOps = rounds.map((x) => x[`${what} sqlite`]);
    return { kube: median(kubeOps), sqlite: median(sqliteOps), ratios: rounds.map((x) => x[`${what} kube`] / x[`${what} sqlite`]) };
  };
  return { get: op('get'), list: op('list') };
}

/** Push → objects applied: `spore reconciler --kubeconfig` following a 10-function repository, a signed webhook per push. */
async function pushApplied(s, base, kc, client, kubeconfig) {
  const appNs = 'bench-push';
  const system = 'bench-push-system';
  for (const ns of [appNs, system]) await createNamespace(client, ns);
  const dir = join(base, 'push');
  const commit = repository(join(dir, 'repo'));
  let app = manifests(appNs, PUSH_FUNCTIONS, 0);
  let sha = commit(app.yaml, 'round 0');

  // a watch on the Packages (the store's informer): the clock stops when the last one has its new archive
  const watcher = await within('KubeStore.open', 120, KubeStore.open({ kubeconfig: kc, namespace: system, kinds: [{ apiVersion: API_VERSION, kind: 'Package' }], report: quiet }));
  s.defer(() => watcher.close());
  const applied = (shas) => new Promise((resolve, reject) => {
    const check = async () => {
      const live = await watcher.list({ apiVersion: API_VERSION, kind: 'Package', namespace: appNs });
      if (Object.entries(shas).every(([name, h]) => live.find((p) => p.metadata.name === name)?.spec.archive.sha256 === h)) done(resolve);
    };
    const timer = setTimeout(() => done(() => reject(new Error('the Packages did not get their new archives within 60 s'))), 60_000);
    const unwatch = watcher.watch(() => void check());
    const done = (then) => (clearTimeout(timer), unwatch(), then());
    void check();
  });

  const port = await freePort();
  const token = randomBytes(16).toString('hex');
  const state = join(dir, 'state');
  const proc = startProcess(s, process.execPath, [BIN, 'reconciler', '--kubeconfig', kubeconfig, '--git', `file://${join(dir, 'repo')}`, '--manifests', '--webhook-secret', SECRET, '--reconciler-port', String(port), '--namespace', system, '--app', 'bench', '--poll', '1h', '--state-dir', state], /reconciler on http/, { SPORE_API_TOKEN: token });
  const api = async (path) => {
    const res = await request(`http://127.0.0.1:${port}${path}`, { headers: { authorization: `Bearer ${token}` } });
    return res.body.json();
  };
  // between pushes, the reconciler finishes (its history and Stage written) and is idle
  const idleAt = (revision) => waitFor(`the reconciler synced ${revision.slice(0, 12)}`, async () => {
    const main = (await api('/status'))[0];
    if (main.state === 'failed') throw new Error(`the reconciler failed: ${JSON.stringify(main.failure)}\n${proc.output()}`);
    return main.state === 'synced' && main.liveRevision === revision;
  }, 60_000);
  await within('spore reconciler starting', 120, proc.matched);
  await applied(app.shas);
  await idleAt(sha);

  const times = [];
  for (let round = 1; round <= ROUNDS; round++) {
    app = manifests(appNs, PUSH_FUNCTIONS, round);
    sha = commit(app.yaml, `round ${round}`);
    const done = applied(app.shas);
    const t = performance.now();
    const payload = JSON.stringify({ ref: 'refs/heads/main' });
    const res = await request(`http://127.0.0.1:${port}/webhook`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-github-event': 'push', 'x-hub-signature-256': `sha256=${createHmac('sha256', SECRET).update(payload).digest('hex')}` }, body: payload });
    await res.body.text();
    if (res.statusCode !== 202) throw new Error(`the webhook answered ${res.statusCode}`);
    await done;
    times.push(performance.now() - t);
    await idleAt(sha);
  }
  const pushes = (await api(`/history?limit=${ROUNDS}`)).reverse(); // oldest first
  return { functions: PUSH_FUNCTIONS, objects: app.objects, rounds: times, p50: percentile(times, 50), max: Math.max(...times), steps: pushes[Math.floor(pushes.length / 2)]?.timings };
}

// spore up's dataplane (cli/up.ts without the render) over the SQLite file in BENCH_DIR
const LOCAL_DATAPLANE = `import { startDataplane } from ${JSON.stringify(new URL('../lib/dataplane/index.js', import.meta.url).href)};
import { SqliteStore } from ${JSON.stringify(new URL('../lib/store/index.js', import.meta.url).href)};
const dir = process.env.BENCH_DIR;
const store = new SqliteStore(dir + '/spore.db');
const dp = await startDataplane({ store, stateDir: dir, port: 0 });
console.log('local dataplane on ' + dp.url);
process.once('SIGTERM', () => dp.close().finally(() => (store.close(), process.exit(0))));
`;

/** The dataplane's function: a tiny Node package answering its own name; a new Function per first call, so each is a cold start. */
function dataplaneObjects(ns) {
  const meta = (name) => ({ name, namespace: ns });
  const docs = [{ apiVersion: API_VERSION, kind: 'Environment', metadata: meta('node'), spec: { runtime: { name: 'node' }, poolSize: DP_POOL } }];
  for (let i = 0; i < DP_FUNCTIONS; i++) {
    const f = `fn-${i}`;
    const archive = packArchive([{ path: 'index.mjs', data: Buffer.from(`export default () => new Response(${JSON.stringify(f)});\n`) }]);
    docs.push(
      { apiVersion: API_VERSION, kind: 'Package', metadata: meta(f), spec: { archive: { sha256: archive.sha256, size: archive.size, inline: archive.bytes.toString('base64') } } },
      { apiVersion: API_VERSION, kind: 'Function', metadata: meta(f), spec: { environment: { name: 'node' }, package: { name: f } } },
    );
  }
  return docs;
}

/** Pods deleted (the node agent stops their processes), then the namespaces: no controller here deletes a namespace's pods for it. */
async function deleteNamespaces(client, pods, namespaces) {
  await client.request('DELETE', `/api/v1/namespaces/${pods}/pods`, { query: { gracePeriodSeconds: '1' } });
  await waitFor(`the pods of ${pods} deleted`, async () => (await client.request('GET', `/api/v1/namespaces/${pods}/pods`)).items.length === 0, 60_000);
  for (const ns of namespaces) await client.request('DELETE', `/api/v1/namespaces/${ns}`);
}

/** Creation → Ready of every pool pod, as a watch of the pool manager's namespace sees them (ms, in order of readiness). */
function podReadiness(kc, client, namespace) {
  const added = new Map(); // pod → when the watch showed it; gone once it was Ready
  const times = [];
  const cache = new KindCache(kc, client, 'v1', 'Pod', `/api/v1/namespaces/${namespace}/pods`, ({ type, object }) => {
    const name = object.metadata.name;
    if (type === 'ADDED') added.set(name, performance.now());
    if (added.has(name) && object.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True')) {
      times.push(performance.now() - added.get(name));
      added.delete(name);
    }
  }, quiet, `${POOL_POD_LABEL.name}=${POOL_POD_LABEL.value}`);
  return { ready: cache.ready, times, stop: () => cache.stop() };
}

/**
 * The same functions served two ways, side by side: on the cluster (objects
 * applied with a KubeStore; `spore poolmgr` and `spore router` as child
 * processes; instances are pool pods with the fetcher sidecar, run by the test
 * node as local processes) and locally (startDataplane over SQLite in a child
 * process, as spore up runs it; instances are its child processes). Cold: each
 * first call waits for a full pool, so it measures specialization + first
 * call, not pod creation. Warm: fn-0 through either router, and its pod's
 * runtime called directly.
 */
async function dataplane(s, base, kc, client, kubeconfig) {
  const appNs = 'bench-dp';
  const system = 'bench-dp-system';
  for (const ns of [appNs, system]) await createNamespace(client, ns);
  // last: after the pool manager stopped (it would start the pods again)
  s.defer(() => deleteNamespaces(client, system, [appNs, system]));
  // the node agent makes `default` (as the controller manager would): pods are refused before it
  await waitFor(`namespace ${system}'s default ServiceAccount`, () => client.request('GET', `/api/v1/namespaces/${system}/serviceaccounts/default`).then(() => true, () => false), 60_000);
  const docs = dataplaneObjects(appNs);
  const watched = podReadiness(kc, client, system);
  s.defer(() => watched.stop());
  await within('the pod watch', 60, watched.ready);
  const store = await within('KubeStore.open', 120, KubeStore.open({ kubeconfig: kc, namespace: system, kinds: ['Environment', 'Package', 'Function'].map((kind) => ({ apiVersion: API_VERSION, kind })), stages: false, report: quiet }));
  s.defer(() => store.close());
  await store.apply(docs);

  // the cluster's path: the two commands, as the chart runs them (one credential between them)
  const credential = randomBytes(16).toString('hex');
  const common = ['--kubeconfig', kubeconfig, '--namespace', system, '--watch-namespace', appNs, '--host', '127.0.0.1', '--port', '0'];
  const poolmgr = startProcess(s, process.execPath, [BIN, 'poolmgr', ...common], /spore poolmgr listening on (\S+)/, { SPORE_POOLMGR_CREDENTIAL: credential });
  const poolmgrUrl = (await within('spore poolmgr starting', 120, poolmgr.matched))[1];
  const router = startProcess(s, process.execPath, [BIN, 'router', ...common, '--poolmgr', poolmgrUrl], /spore router listening on (\S+)/, { SPORE_POOLMGR_CREDENTIAL: credential });
  const routerUrl = (await within('spore router starting', 120, router.matched))[1];
  const podWarm = async () => {
    const res = await request(`${poolmgrUrl}/v1/status`, { headers: { authorization: `Bearer ${credential}` } });
    const status = await res.body.json();
    return status.environments?.find((e) => e.namespace === appNs && e.name === 'node')?.warm ?? 0;
  };

  // the local path: the same objects in SQLite, spore up's dataplane in a process of its own, as spore router has one
  const dir = join(base, 'dataplane');
  mkdirSync(dir);
  const local = new SqliteStore(join(dir, 'spore.db'));
  s.defer(() => local.close());
  await local.apply(docs);
  writeFileSync(join(dir, 'local.mjs'), LOCAL_DATAPLANE);
  const up = startProcess(s, process.execPath, [join(dir, 'local.mjs')], /local dataplane on (\S+)\n/, { BENCH_DIR: dir });
  const dp = { url: (await within('the local dataplane starting', 60, up.matched))[1] };
  const localWarm = async () => {
    const res = await request(`${dp.url}/_spore/status`);
    const status = await res.body.json();
    return status.environments?.find((e) => e.namespace === appNs && e.name === 'node')?.warm ?? 0;
  };

  // cold: the paths in turn, each first call from a full pool
  const first = async (path, url, warmCount, fn) => {
    await waitFor(`a full ${path} pool (${DP_POOL} warm)`, async () => (await warmCount()) >= DP_POOL, 120_000).catch((err) => {
      throw new Error(`${err.message}${path === 'pod' ? `; spore poolmgr said:\n${poolmgr.output().slice(-2000)}` : ''}`);
    });
    const r = await firstCall(`${url}/_fn/${appNs}/${fn}`);
    if (r.status !== 200 || r.body !== fn) throw new Error(`${fn} through the ${path} path answered ${r.status} ${r.body.slice(0, 300)}`);
    return r.ms;
  };
  const cold = { pod: [], process: [] };
  for (let i = 0; i < DP_FUNCTIONS; i++) {
    const pair = i % 2 ? [['process', dp.url, localWarm], ['pod', routerUrl, podWarm]] : [['pod', routerUrl, podWarm], ['process', dp.url, localWarm]];
    for (const [path, url, warmCount] of pair) cold[path].push(await first(path, url, warmCount, `fn-${i}`));
    quiet(`cluster: dataplane: fn-${i} first call: pod ${fmt(cold.pod[i], 1)} ms, process ${fmt(cold.process[i], 1)} ms`);
  }
  const podReady = [...watched.times];

  // a process instance's start, for the pod's creation → Ready (spore up's provider, as the local pool starts them)
  const provider = new ProcessProvider({ workRoot: join(dir, 'starts') });
  s.defer(() => provider.shutdown());
  const env = (await local.list({ apiVersion: API_VERSION, kind: 'Environment', namespace: appNs }))[0];
  const processStart = [];
  for (let i = 0; i < DP_FUNCTIONS; i++) {
    const t = performance.now();
    const instance = await provider.start(env);
    processStart.push(performance.now() - t);
    await instance.kill();
  }

  // warm: fn-0's pod, found by its label, called as the router calls it (its credential from its Secret)
  const pods = await client.request('GET', `/api/v1/namespaces/${system}/pods`, { query: { labelSelector: `${POD_LABELS.function}=fn-0` } });
  const pod = pods.items.find((p) => !p.metadata.deletionTimestamp);
  if (!pod) throw new Error(`no pod in ${system} is labelled ${POD_LABELS.function}=fn-0: the pod path did not serve fn-0 from a pod`);
  const secret = await client.request('GET', `/api/v1/namespaces/${system}/secrets/${pod.metadata.name}-credential`);
  const token = Buffer.from(secret.data.token, 'base64').toString();
  const targets = [
    { key: 'direct', label: "the pod's runtime, direct (pod IP, its token)", url: `http://${pod.status.podIP}:${RUNTIME_PORT}/`, headers: { 'x-spore-instance-token': token } },
    { key: 'pod', label: 'spore router → pod', url: `${routerUrl}/_fn/${appNs}/fn-0` },
    { key: 'process', label: "local router → process (spore up's dataplane)", url: `${dp.url}/_fn/${appNs}/fn-0` },
  ];
  for (const t of targets) {
    const res = await request(t.url, { headers: t.headers });
    const text = await res.body.text();
    if (res.statusCode !== 200 || text !== 'fn-0') throw new Error(`${t.label} (${t.url}) answered ${res.statusCode} ${text.slice(0, 300)}, not "fn-0"`);
  }
  quiet('cluster: dataplane: warm rounds');
  const warm = await side(targets, { connections: DP_CONNECTIONS, duration: DP_SECONDS, rounds: ROUNDS });
  // one call at a time: the latency each hop adds
  const sequential = {};
  for (const t of targets) sequential[t.key] = median(await latencies(t.url, DP_SEQUENTIAL, t.headers));
  return { functions: DP_FUNCTIONS, cold, podReady, processStart, warm, sequential };
}

export async function cluster(others = {}) {
  if (ONLY && !SECTIONS.includes(ONLY)) throw new Error(`BENCH_ONLY=${ONLY}: the cluster bench's sections are ${SECTIONS.join(', ')}`);
  const missing = missingAssets();
  if (missing) return { failed: true, unavailable: missing };
  const base = mkdtempSync(join(tmpdir(), 'spore-bench-cluster-'));
  const s = scope();
  s.defer(async () => rmSync(base, { recursive: true, force: true }));
  try {
    quiet('cluster: starting the API server');
    const kubeconfig = await startCluster(s, join(base, 'cluster'));
    const kc = new KubeConfig();
    kc.loadFromFile(kubeconfig);
    const client = new KubeClient(kc);
    s.defer(async () => client.close());
    quiet('cluster: installing the CRDs');
    await installCrds(client);
    const version = (await client.request('GET', '/version')).gitVersion;
    const run = (name) => !ONLY || ONLY === name;
    const dp = run('dataplane') ? (quiet('cluster: the dataplane, pods and processes'), await dataplane(s, base, kc, client, kubeconfig)) : undefined;
    // the 200-function app before the push app: its read path compares stores holding the same objects, none of the push app's
    const sync = run('sync') ? (quiet('cluster: the 200-function app'), await noop(s, base, kc, client)) : undefined;
    const push = run('push') ? (quiet('cluster: push → applied'), await pushApplied(s, base, kc, client, kubeconfig)) : undefined;
    return { version, push, sync, dataplane: dp, localPush: others.push?.p50 };
  } finally {
    await s.close();
  }
}

const ms = (n) => `${fmt(n, n < 10 ? 1 : 0)} ms`;
const kinds = (byKind) => Object.entries(byKind).map(([k, n]) => `${k} ${n}`).join(', ') || 'none';

export function report(r) {
  if (r.unavailable) return `cluster: not measured: ${r.unavailable}`;
  const { push, sync, dataplane: dp } = r;
  const lines = [`cluster: Spore on a real kube-apiserver ${r.version} + etcd (the tests' harness, npm run cluster), the spore.dev CRDs installed${ONLY ? `; only the ${ONLY} section (BENCH_ONLY)` : ''}.`];
  if (dp) lines.push(...dataplaneReport(dp));
  if (push) {
    const local = r.localPush === undefined ? '' : `; the local push → serving (push, above) ${ms(r.localPush)} p50`;
    lines.push(
      `push → applied, webhook, ${push.functions} functions (${push.objects} objects, manifests mode; spore reconciler --kubeconfig as a child process), ${push.rounds.length} pushes:`,
      `  every Package on the API server with its new archive (seen by a watch): p50 ${ms(push.p50)}, max ${ms(push.max)}; each: ${push.rounds.map((t) => fmt(t, 0)).join(', ')} ms${local}`,
      `  steps of the middle push (the reconciler's, ms): ${Object.entries(push.steps ?? {}).map(([k, v]) => `${k} ${v}`).join(', ')}`,
    );
  }
  if (sync) {
    const noopMs = sync.syncs.map((x) => x.ms);
    const noopReq = sync.syncs.map((x) => x.requests);
    const { get, list } = sync.read;
    lines.push(
      `sync of ${sync.functions} functions (${sync.objects} objects), in-process KubeStore + KubeHistory + Reconciler (manifests); API requests counted by the store's client, which the history shares:`,
      `  first (full) sync: ${ms(sync.first.ms)}, ${sync.first.requests} API requests (${kinds(sync.first.byKind)})`,
      `  no-op sync, reconciler.poll('sync') × ${sync.syncs.length}: p50 ${ms(median(noopMs))}, max ${ms(Math.max(...noopMs))}; API requests per sync p50 ${median(noopReq)}, max ${Math.max(...noopReq)} (${kinds(sync.syncs.at(-1).byKind)}); history records written ${sync.recorded}`,
      `read path, the dataplane's lookups over ${sync.functions} functions, ops/s (tinybench, ${READ_ROUNDS} rounds × ${READ_MS} ms per task, the median round; "× SQLite": the cache's ops/s ÷ SQLite's in the same round, the median of the rounds):`,
      `  get(Function):          informer cache ${fmt(get.kube, 0)}, SQLite ${fmt(get.sqlite, 0)} ops/s: ${fmt(median(get.ratios))}× SQLite (rounds ${get.ratios.map((x) => fmt(x)).join(', ')})`,
      `  list(HttpTrigger), ${sync.functions}: informer cache ${fmt(list.kube, 0)}, SQLite ${fmt(list.sqlite, 0)} ops/s: ${fmt(median(list.ratios))}× SQLite (rounds ${list.ratios.map((x) => fmt(x)).join(', ')})`,
    );
  }
  return lines.join('\n');
}

function dataplaneReport(dp) {
  const p = (times, q) => percentile(times, q);
  const podP50 = p(dp.cold.pod, 50);
  const procP50 = p(dp.cold.process, 50);
  const cold = (label, times, note) => `    ${label.padEnd(48)} p50 ${ms(p(times, 50)).padStart(7)}  p90 ${ms(p(times, 90)).padStart(7)}  ${note}`;
  const by = Object.fromEntries(dp.warm.map((t) => [t.key, t]));
  const width = Math.max(...dp.warm.map((t) => t.label.length));
  const warmRow = (t, note) => `    ${t.label.padEnd(width)} ${fmt(t.rps, 0).padStart(6)} req/s  p50 ${String(t.p50).padStart(2)} ms  p99 ${String(t.p99).padStart(3)} ms  ${fmt(t.ratio).padStart(4)}× direct${t.key === 'direct' ? '' : ` (rounds ${t.ratios.map((x) => fmt(x)).join(', ')})`}${note ? `  ${note}` : ''}${t.errors ? `  ${t.errors} failed responses!` : ''}`;
  // both divided by the same round's direct figure: their quotient is the rounds' pod ÷ process
  const podVsProcess = by.pod.ratios.map((x, i) => x / by.process.ratios[i]);
  const sq = dp.sequential;
  return [
    `dataplane: the pod path (spore poolmgr + spore router as child processes; pool pods with the runtime and Spore's fetcher sidecar, run by the test`,
    `node agent as local processes on 127.0.1.N, so no kubelet, image or CNI cost) next to the process path (spore up's dataplane over SQLite in a`,
    `process of its own: instances are its child processes), the same Node function:`,
    `  cold start: the first call of each of ${dp.functions} never-called functions per path through its router, a new connection per call, each from a full pool of ${DP_POOL}`,
    `  (so specialization + first call, not pod creation); the paths in turn:`,
    cold('pod path: router → pool manager → fetcher → pod', dp.cold.pod, `p50 ${fmt(podP50 / procP50)}× the process path`),
    cold('process path (spore up)', dp.cold.process, 'the reference'),
    `    (p90 of ${dp.functions} calls is about the slowest: a path's first call, which also warms its router's and pool manager's code)`,
    `  what the pool hides: a pool pod's creation → Ready (the pool manager's namespace watched), ${dp.podReady.length} pods: p50 ${ms(p(dp.podReady, 50))}, max ${ms(Math.max(...dp.podReady))};`,
    `    a process instance's start → listening (ProcessProvider.start), ${dp.processStart.length} starts: p50 ${ms(p(dp.processStart, 50))}: pod ${fmt(p(dp.podReady, 50) / p(dp.processStart, 50))}× process`,
    `  warm: fn-0, ${DP_CONNECTIONS} connections × ${DP_SECONDS} s per target, ${ROUNDS} rounds taking the targets in turn (autocannon); req/s, p50, p99: the median round;`,
    `  "× direct": req/s ÷ the pod's runtime called directly in the same round, the median of the rounds:`,
    warmRow(by.direct, 'the floor'),
    warmRow(by.pod),
    warmRow(by.process),
    `    spore router → pod ÷ local router → process: ${fmt(median(podVsProcess))}× (rounds ${podVsProcess.map((x) => fmt(x)).join(', ')})`,
    `  one call at a time (${DP_SEQUENTIAL} each, one keep-alive connection), p50: pod direct ${fmt(sq.direct, 3)} ms, spore router → pod ${fmt(sq.pod, 3)} ms (+${fmt(sq.pod - sq.direct, 3)} ms), local router → process ${fmt(sq.process, 3)} ms`,
  ];
}
