// Shared bits of the benchmarks: processes and their cleanup, load, waiting,
// percentiles, instances specialized as the pool manager does it, spore up's
// dataplane in a process of its own, a queue trigger against HTTP.
import { spawn } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { createServer } from 'node:net';
import { join } from 'node:path';
import autocannon from 'autocannon';
import { Pool, request } from 'undici';

export const ROOT = new URL('..', import.meta.url).pathname;
export const API = 'spore.dev/v1alpha1';
export const NODE_ENV = { apiVersion: API, kind: 'Environment', metadata: { name: 'node', namespace: 'default' }, spec: { runtime: { name: 'node' } } };
export const PYTHON_ENV = { apiVersion: API, kind: 'Environment', metadata: { name: 'python', namespace: 'default' }, spec: { runtime: { name: 'python' } } };

export function percentile(values, p) {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

export const median = (values) => percentile(values, 50);

export async function waitFor(what, probe, timeoutMs = 60_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

// Everything a benchmark starts is registered here, so that it is stopped when
// the benchmark ends, fails, or the bench is interrupted (run.mjs).
const open = new Set();

/**
 * A stack of things to undo; close() runs them last first and never throws.
 * Closing twice (the benchmark's own finally and an interrupt) is one close:
 * both wait for it, and the undo steps keep their order.
 */
export function scope() {
  const undo = [];
  let closing;
  const s = {
    defer(fn) {
      undo.push(fn);
    },
    close() {
      return (closing ??= (async () => {
        open.delete(s);
        while (undo.length) await Promise.resolve().then(undo.pop()).catch((err) => console.error(`bench cleanup: ${err.message}`));
      })());
    },
  };
  open.add(s);
  return s;
}

export const closeAll = () => Promise.all([...open].map((s) => s.close()));

/** Starts a process (stopped when `s` closes) and resolves with the first match of `ready` in its output. */
export function startProcess(s, cmd, args, ready, env = {}) {
  const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, ...env } });
  const exited = new Promise((r) => child.once('exit', r));
  s.defer(() => stop(child, exited));
  let out = '';
  const matched = new Promise((resolve, reject) => {
    const on = (c) => {
      out += c;
      const m = ready?.exec(out);
      if (m) resolve(m);
    };
    child.stdout.on('data', on);
    child.stderr.on('data', on);
    child.once('error', (err) => reject(new Error(`${cmd}: ${err.message}`)));
    child.once('exit', (code) => reject(new Error(`${cmd} exited (${code}) before it was ready:\n${out}`)));
  });
  matched.catch(() => {}); // a caller that never waits for it still gets the exit through stop()
  return { child, matched, output: () => out };
}

/** SIGTERM, then SIGKILL after 3 s; resolves when the process is gone. */
async function stop(child, exited) {
  if (child.exitCode !== null || child.signalCode !== null || !child.pid) return;
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 3000);
  await exited;
  clearTimeout(timer);
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/** autocannon against one URL: req/s (average), latency p50/p99 in ms, failed responses. */
export function cannon(url, { connections, duration, headers = {} }) {
  return new Promise((resolve, reject) => {
    autocannon({ url, connections, duration, headers, pipelining: 1 }, (err, r) =>
      err ? reject(err) : resolve({ rps: r.requests.average, p50: r.latency.p50, p99: r.latency.p99, errors: r.errors + r.timeouts + r.non2xx }),
    );
  });
}

/**
 * Loads every target in turn (autocannon), `rounds` times (the order rotated each round);
 * per target: the median round's req/s and latency, the median of its
 * per-round ratios to the first target (the floor), and for a target with a
 * `pid` the median CPU that process spent per answer, in µs.
 */
export async function side(targets, { connections, duration, rounds: count }) {
  for (const t of targets) await latencies(t.url, 200, t.headers); // warm (JIT, connections, instances)
  const rounds = [];
  for (let i = 0; i < count; i++) {
    const order = targets.map((_, k) => (k + i) % targets.length);
    const round = [];
    for (const k of order) {
      const { pid } = targets[k];
      const before = pid && cpuMs(pid);
      round[k] = await cannon(targets[k].url, { connections, duration, headers: targets[k].headers });
      if (pid) round[k].cpuUs = ((cpuMs(pid) - before) * 1000) / (round[k].rps * duration);
    }
    rounds.push(round);
  }
  return targets.map((t, k) => {
    const ratios = rounds.map((r) => r[k].rps / r[0].rps);
    const mid = [...rounds].sort((a, b) => a[k].rps - b[k].rps)[Math.floor(rounds.length / 2)][k];
    const cpuUs = t.pid ? median(rounds.map((r) => r[k].cpuUs)) : undefined;
    return { ...t, ...mid, cpuUs, ratio: median(ratios), ratios, errors: rounds.reduce((n, r) => n + r[k].errors, 0) };
  });
}

/** CPU time a process has used, in ms (user + system, /proc/PID/stat in clock ticks of 10 ms). */
export function cpuMs(pid) {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return (Number(f[11]) + Number(f[12])) * 10;
}

/** Sequential calls on one keep-alive connection, returning each call's latency in milliseconds. */
export async function latencies(url, count, headers = {}) {
  const out = [];
  for (let i = 0; i < count; i++) {
    const t = performance.now();
    const res = await request(url, { headers }).catch((err) => {
      throw new Error(`${url} (call ${i + 1}): ${err.message}`);
    });
    await res.body.text();
    if (res.statusCode !== 200) throw new Error(`${url}: ${res.statusCode}`);
    out.push(performance.now() - t);
  }
  return out;
}

/** One call on a new connection (as a first `curl` makes it): status, content-type, body, milliseconds. */
export function firstCall(url, headers = {}) {
  const t = performance.now();
  return new Promise((resolve, reject) => {
    const req = http.get(url, { agent: false, headers }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode, type: res.headers['content-type'], body, ms: performance.now() - t }));
      res.on('error', reject);
    });
    req.on('error', (err) => reject(new Error(`${url}: ${err.message}`)));
  });
}

/**
 * A runtime instance of `environment` specialized with an archive, as the pool
 * manager does it (extracted into the instance's folder, owned by its user),
 * and the headers that call it as the router does (its credential).
 */
export async function specialized(s, provider, environment, bytes, entrypoint) {
  const { PackageFetcher } = await import('../lib/dataplane/index.js');
  const said = []; // what the runtime wrote, to explain a start that fails
  const instance = await provider.start(environment, { onLog: (l) => said.push(l.line) }).catch((err) => {
    throw new Error(`starting a ${environment.metadata.name} runtime instance: ${err.message}${said.length ? `; it wrote: ${said.slice(-5).join(' | ')}` : ''}`);
  });
  s.defer(() => instance.kill());
  const code = join(instance.workDir, 'code');
  await new PackageFetcher({ archiveDir: instance.workDir }).extract(bytes, code, 'bench', instance.owner);
  const headers = { 'x-spore-instance-token': instance.token };
  const res = await request(`${instance.url}/v2/specialize`, { method: 'POST', headers: { ...headers, 'content-type': 'application/json' }, body: JSON.stringify({ filepath: code, functionName: entrypoint }) });
  const text = await res.body.text();
  if (res.statusCode !== 200 && res.statusCode !== 202) throw new Error(`specializing a ${environment.metadata.name} instance with ${entrypoint}: ${res.statusCode} ${text}`);
  return { instance, headers };
}

/** Resident memory of a process, in MB (VmRSS), and its name. */
export function rss(pid) {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  return { mb: Number(/^VmRSS:\s+(\d+) kB/m.exec(status)[1]) / 1024, name: /^Name:\s+(.*)$/m.exec(status)[1] };
}

export const fmt = (n, d = 2) => n.toFixed(d);

// spore up's dataplane (cli/up.ts without the render) over the SQLite file in BENCH_DIR
const DATAPLANE = `import { startDataplane } from ${JSON.stringify(new URL('../lib/dataplane/index.js', import.meta.url).href)};
import { SqliteStore } from ${JSON.stringify(new URL('../lib/store/index.js', import.meta.url).href)};
const dir = process.env.BENCH_DIR;
const store = new SqliteStore(dir + '/spore.db');
const dp = await startDataplane({ store, stateDir: dir, port: 0, report: (m) => console.error('spore: ' + m) });
console.log('dataplane on ' + dp.url);
process.once('SIGTERM', () => dp.close().finally(() => (store.close(), process.exit(0))));
`;

/** spore up's dataplane in a process of its own (stopped when `s` closes), serving `objects` from a SQLite file in `dir`, written first. */
export async function dataplane(s, dir, objects) {
  const { SqliteStore } = await import('../lib/store/index.js');
  mkdirSync(dir, { recursive: true });
  const store = new SqliteStore(join(dir, 'spore.db'));
  await store.apply(objects);
  await store.close();
  writeFileSync(join(dir, 'dataplane.mjs'), DATAPLANE);
  const dp = startProcess(s, process.execPath, [join(dir, 'dataplane.mjs')], /dataplane on (http:\/\/\S+)\n/, { BENCH_DIR: dir });
  return { url: (await dp.matched)[1], pid: dp.child.pid, output: dp.output };
}

/** The Package (its archive inline: index.mjs holding `source`) and the Node Function of that name, with these env variables. */
export async function nodeFunction(name, source, env = {}) {
  const { packArchive } = await import('../lib/api/archive.js');
  const a = packArchive([{ path: 'index.mjs', data: Buffer.from(source) }]);
  const metadata = { name, namespace: 'default' };
  return [
    { apiVersion: API, kind: 'Package', metadata, spec: { archive: { sha256: a.sha256, size: a.size, inline: a.bytes.toString('base64') } } },
    { apiVersion: API, kind: 'Function', metadata, spec: { environment: { name: 'node' }, package: { name }, env: Object.entries(env).map(([k, v]) => ({ name: k, value: v })) } },
  ];
}

/** A function answering "ok" to whatever it is sent: the queue benchmarks' target. */
export const SINK = `export default async (req) => { await req.arrayBuffer(); return new Response('ok'); };\n`;

/**
 * Runs each of `parts` (name → async function) in turn, `count` rounds, the
 * order rotated each round (so a noisy neighbour hurts all alike): per round,
 * name → what its function returned.
 */
export async function inTurn(count, parts) {
  const names = Object.keys(parts);
  const rounds = [];
  for (let i = 0; i < count; i++) {
    const round = {};
    for (let k = 0; k < names.length; k++) {
      const name = names[(k + i) % names.length];
      round[name] = await parts[name]();
    }
    rounds.push(round);
  }
  return rounds;
}

/**
 * Exactly `amount` requests over `connections` keep-alive connections, each
 * sending its next once answered: req/s, timed here (autocannon's `amount` runs
 * end at its 1 s tick, which would round a 1.3 s run up to 2 s).
 */
export async function httpAmount(url, init, amount, connections) {
  const { origin, pathname } = new URL(url);
  const pool = new Pool(origin, { connections });
  let sent = 0;
  let errors = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: connections }, async () => {
      while (sent++ < amount) {
        const res = await pool.request({ path: pathname, ...init });
        await res.body.text();
        if (res.statusCode !== 200) errors++;
      }
    }),
  );
  const rps = amount / ((performance.now() - t0) / 1000);
  await pool.close();
  return { rps, errors };
}

/**
 * A queue trigger against HTTP, both calling the function behind `route`:
 * `send(count)` puts `count` messages on the queue (acknowledged by the broker)
 * and `handled()` says how many the trigger is done with so far; a round times
 * `messages` of them from the first send until all are handled (polled every
 * `pollMs`), and as many POSTs of the same body through `route` over
 * `connections` keep-alive connections, in turn. msg/s ÷ req/s per round, and
 * the medians.
 */
export async function queueVsHttp({ route, send, handled, messages, connections, rounds: count, pollMs = 50 }) {
  const post = { method: 'POST', body: 'message', headers: { 'content-type': 'text/plain' } };
  for (let i = 0; i < 200; i++) await (await request(route, post)).body.text(); // cold start, JIT
  const through = async (n) => {
    const before = await handled();
    const t0 = performance.now();
    await send(n);
    let done;
    while ((done = (await handled()) - before) < n) {
      if (performance.now() - t0 > 120_000) throw new Error(`the queue trigger handled ${done} of ${n} messages in 120 s`);
      await new Promise((r) => setTimeout(r, pollMs));
    }
    return n / ((performance.now() - t0) / 1000);
  };
  const http = async (n) => {
    const r = await httpAmount(route, post, n, connections);
    if (r.errors) throw new Error(`${r.errors} failed responses from ${route}`);
    return r.rps;
  };
  // a round of each first, unmeasured: with only a few hundred calls to warm, the first round read half the later ones
  await through(messages);
  await http(messages);
  const rounds = await inTurn(count, { http: () => http(messages), queue: () => through(messages) });
  const ratios = rounds.map((r) => r.queue / r.http);
  return { rounds, ratios, ratio: median(ratios), queue: median(rounds.map((r) => r.queue)), http: median(rounds.map((r) => r.http)) };
}
