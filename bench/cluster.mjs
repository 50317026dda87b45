// Spore on a cluster, against the tests' real kube-apiserver and etcd
// (test/cluster/harness.ts): push → objects applied through a signed webhook
// (`spore reconciler --kubeconfig` as a child process); a no-op sync of a
// 200-function app (time, API requests); and the dataplane's lookups from the
// informer cache next to SQLite holding the same objects. BENCH_VERBOSE=1
// prints its phases and what the reconcilers and stores report.
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
import { API_VERSION, allCrds } from '../lib/api/index.js';
import { GitSource } from '../lib/reconciler/git-source.js';
import { Reconciler } from '../lib/reconciler/reconciler.js';
import { SqliteStore } from '../lib/store/index.js';
import { KubeClient } from '../lib/store/kube-client.js';
import { KubeHistory } from '../lib/store/kube-history.js';
import { KubeStore } from '../lib/store/kubernetes.js';
import { ROOT, fmt, freePort, median, percentile, scope, startProcess, waitFor } from './util.mjs';

const PUSH_FUNCTIONS = 10;
const NOOP_FUNCTIONS = 200;
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const SYNCS = 10;
const READ_ROUNDS = 3;
const READ_MS = 400; // per task and round: the four tasks of a round run one after another
const SECRET = 'bench-secret';
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

export async function cluster(others = {}) {
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
    // the 200-function app first: its read path compares stores holding the same objects, none of the push app's
    quiet('cluster: the 200-function app');
    const sync = await noop(s, base, kc, client);
    quiet('cluster: push → applied');
    const push = await pushApplied(s, base, kc, client, kubeconfig);
    return { version, push, sync, localPush: others.push?.p50 };
  } finally {
    await s.close();
  }
}

const ms = (n) => `${fmt(n, n < 10 ? 1 : 0)} ms`;
const kinds = (byKind) => Object.entries(byKind).map(([k, n]) => `${k} ${n}`).join(', ') || 'none';

export function report(r) {
  if (r.unavailable) return `cluster: not measured: ${r.unavailable}`;
  const { push, sync } = r;
  const noopMs = sync.syncs.map((x) => x.ms);
  const noopReq = sync.syncs.map((x) => x.requests);
  const local = r.localPush === undefined ? '' : `; the local push → serving (push, above) ${ms(r.localPush)} p50`;
  const { get, list } = sync.read;
  return [
    `cluster: Spore on a real kube-apiserver ${r.version} + etcd (the tests' harness, npm run cluster), the spore.dev CRDs installed.`,
    `push → applied, webhook, ${push.functions} functions (${push.objects} objects, manifests mode; spore reconciler --kubeconfig as a child process), ${push.rounds.length} pushes:`,
    `  every Package on the API server with its new archive (seen by a watch): p50 ${ms(push.p50)}, max ${ms(push.max)}; each: ${push.rounds.map((t) => fmt(t, 0)).join(', ')} ms${local}`,
    `  steps of the middle push (the reconciler's, ms): ${Object.entries(push.steps ?? {}).map(([k, v]) => `${k} ${v}`).join(', ')}`,
    `sync of ${sync.functions} functions (${sync.objects} objects), in-process KubeStore + KubeHistory + Reconciler (manifests); API requests counted by the store's client, which the history shares:`,
    `  first (full) sync: ${ms(sync.first.ms)}, ${sync.first.requests} API requests (${kinds(sync.first.byKind)})`,
    `  no-op sync, reconciler.poll('sync') × ${sync.syncs.length}: p50 ${ms(median(noopMs))}, max ${ms(Math.max(...noopMs))}; API requests per sync p50 ${median(noopReq)}, max ${Math.max(...noopReq)} (${kinds(sync.syncs.at(-1).byKind)}); history records written ${sync.recorded}`,
    `read path, the dataplane's lookups over ${sync.functions} functions, ops/s (tinybench, ${READ_ROUNDS} rounds × ${READ_MS} ms per task, the median round; "× SQLite": the cache's ops/s ÷ SQLite's in the same round, the median of the rounds):`,
    `  get(Function):          informer cache ${fmt(get.kube, 0)}, SQLite ${fmt(get.sqlite, 0)} ops/s: ${fmt(median(get.ratios))}× SQLite (rounds ${get.ratios.map((x) => fmt(x)).join(', ')})`,
    `  list(HttpTrigger), ${sync.functions}: informer cache ${fmt(list.kube, 0)}, SQLite ${fmt(list.sqlite, 0)} ops/s: ${fmt(median(list.ratios))}× SQLite (rounds ${list.ratios.map((x) => fmt(x)).join(', ')})`,
  ].join('\n');
}
