// Workflows: what the engine adds to a function call. spore up's dataplane
// (startDataplane over SQLite: every run and each of its tasks is written to
// the store as it starts and ends) in a process of its own, a Node function
// `noop` answering the JSON it is sent.
//   overhead: a workflow of 10 sequential tasks, each calling noop with the
//             previous task's output, vs 10 sequential POSTs of noop through
//             the router (/_fn/default/noop), one keep-alive connection, in
//             turn, BENCH_ROUNDS rounds of BENCH_WF_RUNS runs (and 10× as many
//             calls): ms per run vs ms per 10 calls, (run − calls) / 10 per task,
//             and the same in the dataplane process's CPU time.
//   throughput: a 3-task workflow (a → b → c) vs noop directly, each loaded by
//             autocannon (BENCH_WF_CONNECTIONS connections, BENCH_WF_SECONDS s),
//             in turn, BENCH_ROUNDS rounds: runs/s ÷ req/s per round, and the
//             dataplane's CPU time per run and per call.
// BENCH_ONLY=overhead|throughput runs one part.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import autocannon from 'autocannon';
import { Pool, request } from 'undici';
import { API, NODE_ENV, cpuMs, dataplane, fmt, inTurn, median, nodeFunction, scope } from './util.mjs';

const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const RUNS = Number(process.env.BENCH_WF_RUNS ?? 60);
const CONNECTIONS = Number(process.env.BENCH_WF_CONNECTIONS ?? 16);
const SECONDS = Number(process.env.BENCH_WF_SECONDS ?? 3);
const ONLY = process.env.BENCH_ONLY;
const LONG = 10; // tasks of the overhead part's workflow
const BODY = JSON.stringify({ n: 1 });

// answers what it is sent, as it was sent (JSON stays JSON: the next task gets a value)
const NOOP = `export default async (req) => new Response(await req.text(), { headers: { 'content-type': req.headers.get('content-type') ?? 'text/plain' } });\n`;

const metadata = (name) => ({ name, namespace: 'default' });

async function objects() {
  /** Tasks t1 → t2 → … → tn, each calling noop with the output before it. */
  const chain = (n) =>
    Object.fromEntries(
      Array.from({ length: n }, (_, i) => [`t${i + 1}`, i === 0 ? { run: 'noop', inputs: '{$.Invocation.Inputs.default}' } : { run: 'noop', inputs: `{$.Tasks.t${i}.Output}`, requires: [`t${i}`] }]),
    );
  return [
    NODE_ENV,
    ...(await nodeFunction('noop', NOOP)),
    { apiVersion: API, kind: 'Workflow', metadata: metadata('chain10'), spec: { output: `t${LONG}`, tasks: chain(LONG) } },
    { apiVersion: API, kind: 'Workflow', metadata: metadata('chain3'), spec: { output: 't3', tasks: chain(3) } },
  ];
}

const POST = { method: 'POST', headers: { 'content-type': 'application/json' }, body: BODY };

/** One POST on `client`, its answer checked: the JSON sent, back. */
async function call(client, path) {
  const res = await client.request({ path, ...POST });
  const text = await res.body.text();
  if (res.statusCode !== 200 || JSON.stringify(JSON.parse(text)) !== BODY) throw new Error(`POST ${path}: ${res.statusCode} ${text.slice(0, 300)}`);
}

/**
 * `count` workflow runs one after another vs 10 × `count` direct calls, on one
 * keep-alive connection, in turn: wall ms and the dataplane's CPU ms, per run
 * and per 10 calls (the instance's CPU is the same 10 calls either way).
 */
async function overhead(s, dp) {
  const client = new Pool(dp.url, { connections: 1 });
  s.defer(() => client.close());
  const timed = async (count, path, calls) => {
    const [t0, c0] = [performance.now(), cpuMs(dp.pid)];
    for (let i = 0; i < count * calls; i++) await call(client, path);
    return { ms: (performance.now() - t0) / count, cpu: (cpuMs(dp.pid) - c0) / count };
  };
  const wf = (count) => timed(count, `/_fn/default/chain${LONG}`, 1);
  const direct = (count) => timed(count, '/_fn/default/noop', LONG);
  await direct(50); // JIT, the instance, the connection
  await wf(50);
  const rounds = (await inTurn(ROUNDS, { direct: () => direct(RUNS), wf: () => wf(RUNS) })).map((r) => ({ wf: r.wf.ms, direct: r.direct.ms, perTask: (r.wf.ms - r.direct.ms) / LONG, ratio: r.wf.ms / r.direct.ms, cpuWf: r.wf.cpu, cpuDirect: r.direct.cpu, cpuPerTask: (r.wf.cpu - r.direct.cpu) / LONG }));
  const mid = (k) => median(rounds.map((r) => r[k]));
  return { rounds, ...Object.fromEntries(Object.keys(rounds[0]).map((k) => [k, mid(k)])) };
}

/** The 3-task workflow vs noop directly, each loaded by autocannon in turn. */
async function throughput(s, { url, pid }) {
  const load = async (path) => {
    const c0 = cpuMs(pid);
    const r = await autocannon({ url: `${url}${path}`, connections: CONNECTIONS, duration: SECONDS, pipelining: 1, ...POST });
    const errors = r.errors + r.timeouts + r.non2xx;
    if (errors) throw new Error(`${errors} failed responses from ${path}`);
    return { rps: r.requests.total / r.duration, cpu: (cpuMs(pid) - c0) / r.requests.total }; // answers per second, the dataplane's CPU ms per answer
  };
  for (let i = 0; i < 100; i++) await (await request(`${url}/_fn/default/chain3`, POST)).body.text(); // warm
  const rounds = (await inTurn(ROUNDS, { direct: () => load('/_fn/default/noop'), wf: () => load('/_fn/default/chain3') })).map((r) => ({ wf: r.wf.rps, direct: r.direct.rps, ratio: r.wf.rps / r.direct.rps, perCall: (3 * r.wf.rps) / r.direct.rps, cpuWf: r.wf.cpu, cpuDirect: r.direct.cpu }));
  const mid = (k) => median(rounds.map((r) => r[k]));
  return { rounds, ...Object.fromEntries(Object.keys(rounds[0]).map((k) => [k, mid(k)])) };
}

/** Runs ended per state, from the dataplane's /metrics. */
async function runsCounted(url) {
  const text = await (await request(`${url}/metrics`)).body.text();
  const out = {};
  for (const m of text.matchAll(/^spore_workflow_runs_total\{([^}]*)\} (\S+)$/gm)) {
    const state = /state="(\w+)"/.exec(m[1])?.[1];
    out[state] = (out[state] ?? 0) + Number(m[2]);
  }
  return out;
}

export async function workflows() {
  const s = scope();
  try {
    const dir = mkdtempSync(join(tmpdir(), 'spore-bench-workflows-'));
    s.defer(async () => rmSync(dir, { recursive: true, force: true }));
    const dp = await dataplane(s, dir, await objects());
    const result = {};
    // a part that fails is said; the other still runs
    const part = (run) =>
      run(s, dp).catch((err) => ({ error: `${err.stack ?? err.message}\nthe dataplane said:\n${dp.output().slice(-2000)}` }));
    if (!ONLY || ONLY === 'overhead') result.overhead = await part(overhead);
    if (!ONLY || ONLY === 'throughput') result.throughput = await part(throughput);
    result.runs = await runsCounted(dp.url);
    result.failed = Boolean(result.overhead?.error || result.throughput?.error);
    return result;
  } finally {
    await s.close();
  }
}

const signed = (x) => (x >= 0 ? '+' : '') + fmt(x, 3);

export function report(r) {
  const lines = [];
  const list = (rounds, f) => rounds.map(f).join(', ');
  if (r.overhead?.error) lines.push(`workflow overhead: FAILED: ${r.overhead.error}`);
  else if (r.overhead) {
    const o = r.overhead;
    lines.push(
      `workflow overhead: a workflow of ${LONG} sequential tasks each calling a no-op Node function (every run and task written to SQLite as it starts and ends),`,
      `vs ${LONG} sequential POSTs of the same function through the router (/_fn/default/noop), one keep-alive connection, in turn, ${ROUNDS} rounds of ${RUNS} runs (median):`,
      `  ${fmt(o.wf)} ms per run vs ${fmt(o.direct)} ms per ${LONG} calls: ${signed(o.perTask)} ms per task, ${fmt(o.ratio)}× (rounds: per task ${list(o.rounds, (x) => signed(x.perTask))} ms; ${list(o.rounds, (x) => fmt(x.ratio))}×)`,
      `  the dataplane's CPU: ${fmt(o.cpuWf)} ms per run vs ${fmt(o.cpuDirect)} ms per ${LONG} calls: ${signed(o.cpuPerTask)} ms per task (rounds ${list(o.rounds, (x) => signed(x.cpuPerTask))} ms)`,
    );
  }
  if (r.throughput?.error) lines.push(`workflow throughput: FAILED: ${r.throughput.error}`);
  else if (r.throughput) {
    const t = r.throughput;
    lines.push(
      `workflow throughput: a 3-task workflow (a → b → c, the no-op function, runs and tasks written to SQLite) vs the function called directly,`,
      `autocannon ${CONNECTIONS} connections × ${SECONDS} s each, in turn, ${ROUNDS} rounds (median):`,
      `  ${fmt(t.wf, 0)} runs/s vs ${fmt(t.direct, 0)} req/s: ${fmt(t.ratio)}× direct (rounds ${list(t.rounds, (x) => fmt(x.ratio))}); per function call (3 per run) ${fmt(t.perCall)}× (rounds ${list(t.rounds, (x) => fmt(x.perCall))})`,
      `  the dataplane's CPU: ${fmt(t.cpuWf)} ms per run vs ${fmt(t.cpuDirect)} ms per call`,
    );
  }
  if (r.runs) lines.push(`  runs ended (spore_workflow_runs_total): ${Object.entries(r.runs).map(([k, v]) => `${v} ${k}`).join(', ') || 'none'}`);
  return lines.join('\n');
}
