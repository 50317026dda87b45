// Push → new code serving, through a signed webhook: a 10-function repository
// (dependencies already cached), the reconciler and the dataplane in one
// process, as `spore up --git` runs them. Each round changes every function.
import { execFileSync } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { request } from 'undici';
import { startDataplane } from '../lib/dataplane/index.js';
import { GitSource } from '../lib/reconciler/git-source.js';
import { Reconciler } from '../lib/reconciler/reconciler.js';
import { reconcilerServer } from '../lib/reconciler/server.js';
import { SqliteStore } from '../lib/store/index.js';
import { ROOT, fmt, percentile, waitFor } from './util.mjs';

const FUNCTIONS = 10;
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5);
const SECRET = 'bench-secret';
const git = (cwd, ...args) => execFileSync('git', args, { cwd, stdio: 'pipe' }).toString().trim();

function write(dir, files) {
  for (const [path, text] of Object.entries(files)) {
    mkdirSync(join(dir, path, '..'), { recursive: true });
    writeFileSync(join(dir, path), text);
  }
}

const names = Array.from({ length: FUNCTIONS }, (_, i) => `fn-${i}`);
const mainTs = `import { App, Chart } from 'cdk8s';
import { Environment, NodeFunction } from 'spore';
const app = new App();
const chart = new Chart(app, 'bench');
const node = Environment.node(chart, 'node', { poolSize: 3 });
${names.map((n) => `new NodeFunction(chart, '${n}', { environment: node, entry: 'functions/${n}.ts' }).addRoute('GET', '/${n}');`).join('\n')}
app.synth();
`;
const code = (round) => Object.fromEntries(names.map((n) => [`functions/${n}.ts`, `export default () => new Response('${n} round ${round}');\n`]));

export async function push() {
  const base = mkdtempSync(join(tmpdir(), 'spore-push-'));
  const state = join(base, 'state');
  // spore as a user's repository holds it: packed, under vendor/, with a lockfile
  const work = join(base, 'work');
  mkdirSync(join(work, 'vendor'), { recursive: true });
  const tarball = JSON.parse(execFileSync('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', join(work, 'vendor'), ROOT], { stdio: ['ignore', 'pipe', 'pipe'] }).toString())[0].filename;
  write(work, { 'package.json': JSON.stringify({ name: 'bench', private: true, type: 'module', dependencies: { spore: `file:vendor/${tarball}`, cdk8s: '^2.70.106', constructs: '^10.8.1', tsx: '^4.23.15' } }) });
  execFileSync('npm', ['install', '--package-lock-only', '--no-audit', '--no-fund', '--loglevel=error'], { cwd: work, stdio: 'pipe' });
  const remote = join(base, 'origin.git');
  git(base, 'init', '--quiet', '--bare', '--initial-branch=main', remote);
  git(base, 'init', '--quiet', '--initial-branch=main', work);
  git(work, 'remote', 'add', 'origin', remote);
  write(work, { 'cdk8s.yaml': 'language: typescript\napp: npx tsx main.ts\n', '.gitignore': 'node_modules/\n', 'main.ts': mainTs, ...code(0) });
  const commit = (msg) => {
    git(work, 'add', '-A');
    git(work, '-c', 'user.name=bench', '-c', 'user.email=bench@example.com', 'commit', '--quiet', '-m', msg);
    git(work, 'push', '--quiet', 'origin', 'HEAD:main');
  };
  commit('round 0');

  const store = new SqliteStore(join(state, 'spore.db'));
  const dp = await startDataplane({ store, stateDir: state, port: 0, report: () => {} });
  const rec = new Reconciler({ store, source: new GitSource(`file://${remote}`, join(state, 'mirror')), workDir: join(state, 'work'), archiveDir: join(state, 'archives'), app: 'bench', pollMs: 3_600_000, report: () => {} });
  const server = reconcilerServer({ reconciler: rec, webhookSecret: SECRET, report: () => {} });
  await server.listen({ port: 0, host: '127.0.0.1' });
  const hook = `http://127.0.0.1:${server.server.address().port}/webhook`;
  const times = [];
  const steps = [];
  try {
    await rec.start(); // first sync: installs the dependencies into the cache
    for (const n of names) await (await request(`${dp.url}/${n}`)).body.text(); // warm instances, as a live app has
    for (let round = 1; round <= ROUNDS; round++) {
      write(work, code(round));
      commit(`round ${round}`);
      const t = performance.now();
      const payload = JSON.stringify({ ref: 'refs/heads/main' });
      const res = await request(hook, { method: 'POST', headers: { 'content-type': 'application/json', 'x-github-event': 'push', 'x-hub-signature-256': `sha256=${createHmac('sha256', SECRET).update(payload).digest('hex')}` }, body: payload });
      await res.body.text();
      if (res.statusCode !== 202) throw new Error(`webhook answered ${res.statusCode}`);
      await waitFor(`round ${round} served`, async () => {
        const r = await request(`${dp.url}/fn-${FUNCTIONS - 1}`);
        return (await r.body.text()) === `fn-${FUNCTIONS - 1} round ${round}`;
      }, 60_000);
      times.push(performance.now() - t);
      steps.push(rec.history(undefined, 1)[0].timings);
    }
  } finally {
    await rec.close();
    await server.close();
    await dp.close();
    await store.close();
  }
  return { functions: FUNCTIONS, rounds: times, p50: percentile(times, 50), max: Math.max(...times), steps: steps[Math.floor(steps.length / 2)] };
}

export function report(r) {
  return [
    `push → new code serving, webhook, ${r.functions}-function repository, dependencies cached (${r.rounds.length} pushes):`,
    `  p50 ${fmt(r.p50, 0)} ms, max ${fmt(r.max, 0)} ms (target <= 2000 ms); each: ${r.rounds.map((t) => fmt(t, 0)).join(', ')} ms`,
    `  steps of the middle push (ms): ${Object.entries(r.steps ?? {}).map(([k, v]) => `${k} ${v}`).join(', ')}`,
  ].join('\n');
}
