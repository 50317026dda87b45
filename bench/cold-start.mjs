// Cold start as a user sees it: the first call of a never-called function
// through the router, served from a warm pool (fetch, verify, extract,
// specialize, call), on a new connection as a first `curl` opens one; Node and
// Python functions. Against it: spawning a fresh node:http process and calling
// it once, the least a process per first call costs.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { packArchive } from '../lib/api/archive.js';
import { startDataplane } from '../lib/dataplane/index.js';
import { SqliteStore } from '../lib/store/index.js';
import { API, firstCall, fmt, percentile, scope, startProcess, waitFor } from './util.mjs';

const FUNCTIONS = Number(process.env.BENCH_FUNCTIONS ?? 12); // per runtime
const POOL = 3;

const RUNTIMES = {
  node: { file: 'index.mjs', entrypoint: 'index', code: (text) => `export default () => new Response(${JSON.stringify(text)});\n` },
  python: { file: 'main.py', entrypoint: 'main.main', code: (text) => `def main(request):\n    return ${JSON.stringify(text)}\n` },
};

function objects(runtime, i) {
  const name = `${runtime}-${i}`;
  const r = RUNTIMES[runtime];
  const a = packArchive([{ path: r.file, data: Buffer.from(r.code(name)) }]);
  return [
    { apiVersion: API, kind: 'Package', metadata: { name }, spec: { archive: { sha256: a.sha256, size: a.size, inline: a.bytes.toString('base64') } } },
    { apiVersion: API, kind: 'Function', metadata: { name }, spec: { environment: { name: runtime }, package: { name }, entrypoint: r.entrypoint } },
  ];
}

// a fresh process per first call: node:http answering a short text, started, called once
const FRESH = `require('node:http').createServer((req, res) => res.end('fresh')).listen(0, '127.0.0.1', function () { console.log('on http://127.0.0.1:' + this.address().port); });`;

export async function coldStart() {
  const s = scope();
  try {
    const dir = mkdtempSync(join(tmpdir(), 'spore-cold-'));
    s.defer(async () => rmSync(dir, { recursive: true, force: true }));
    const store = new SqliteStore(join(dir, 'spore.db'));
    s.defer(() => store.close());
    const envs = Object.keys(RUNTIMES).map((name) => ({ apiVersion: API, kind: 'Environment', metadata: { name }, spec: { runtime: { name }, poolSize: POOL } }));
    await store.apply([...envs, ...Object.keys(RUNTIMES).flatMap((rt) => Array.from({ length: FUNCTIONS }, (_, i) => objects(rt, i)).flat())]);
    const said = []; // the dataplane's messages, to explain a pool that does not fill
    const dp = await startDataplane({ store, stateDir: dir, port: 0, report: (m) => said.push(m) });
    s.defer(() => dp.close());

    // each call waits for its pool to be full again, as between a user's first calls
    const pooled = async (runtime) => {
      const times = [];
      const full = () => dp.poolmgr.snapshot().environments.find((e) => e.name === runtime)?.warm === POOL;
      for (let i = 0; i < FUNCTIONS; i++) {
        await waitFor(`a full ${runtime} warm pool`, full, 30_000).catch((err) => {
          const why = said.filter((m) => m.includes(runtime)).slice(-2);
          throw new Error(`${err.message}${why.length ? `; the dataplane said: ${why.join(' | ')}` : ''}`);
        });
        const r = await firstCall(`${dp.url}/_fn/default/${runtime}-${i}`);
        if (r.status !== 200 || r.body !== `${runtime}-${i}`) throw new Error(`${runtime}-${i} answered ${r.status} ${r.body}`);
        times.push(r.ms);
      }
      return times;
    };
    const node = await pooled('node');
    let python;
    try {
      python = await pooled('python');
    } catch (err) {
      python = err;
    }

    const fresh = [];
    for (let i = 0; i < FUNCTIONS; i++) {
      const t = performance.now();
      const p = scope();
      try {
        const [, url] = await startProcess(p, process.execPath, ['-e', FRESH], /on (http:\/\/\S+)\n/).matched;
        const r = await firstCall(url);
        if (r.body !== 'fresh') throw new Error(`fresh node:http answered ${r.status} ${r.body}`);
        fresh.push(performance.now() - t);
      } finally {
        await p.close();
      }
    }
    const stats = (times) => ({ p50: percentile(times, 50), p90: percentile(times, 90) });
    return { failed: python instanceof Error, functions: FUNCTIONS, node: stats(node), python: python instanceof Error ? { error: python.message } : stats(python), all: python instanceof Error ? undefined : stats([...node, ...python]), fresh: stats(fresh) };
  } finally {
    await s.close();
  }
}

export function report(r) {
  const line = (label, x) => `  ${label.padEnd(42)} p50 ${fmt(x.p50).padStart(6)} ms  p90 ${fmt(x.p90).padStart(6)} ms  p50 ${fmt(x.p50 / r.fresh.p50)}× fresh`;
  const target = (x) => `target p50 <= 15 ms${x.p50 <= 15 ? '' : '  (not met)'}`;
  return [
    `cold start as a user sees it: the first call of each of ${r.functions} never-called Node and ${r.functions} Python functions, through the router,`,
    `from a warm pool of ${POOL} per runtime, a new connection per call; "× fresh" = p50 ÷ the p50 of spawning a fresh node:http process and calling it once:`,
    `${line('Node functions, from the warm pool', r.node)}  ${target(r.node)}`,
    r.python.error ? `  Python functions: not measured: ${r.python.error}` : `${line('Python functions, from the warm pool', r.python)}  ${target(r.python)}`,
    ...(r.all ? [`${line('all of them', r.all)}  ${target(r.all)}`] : []),
    `${line('fresh node:http process, called once', r.fresh)}  the reference`,
  ].join('\n');
}
