// Bounds a function cannot push past: the bytes of a log line and of a
// function's stored log, and the life of what its instance starts.
import { spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { InstanceCgroups } from '../../dataplane/poolmgr/cgroup.js';
import { environment, fn, harness, waitFor, type Harness } from './harness.js';

let h: Harness | undefined;
afterEach(async () => {
  await h?.close();
  h = undefined;
});

const MiB = 1024 * 1024;
const logsOf = (name: string) => h!.store.queryLogs({ function: name, limit: 100_000 });

describe('log bounds', () => {
  it('cuts a 200 MiB line at 16 KiB with a marker, and Spore never holds the line', async () => {
    h = await harness();
    // 200 MiB written in 1 MiB chunks: the function never holds the line either
    const big = { 'index.mjs': `export default async () => { const mib = 'x'.repeat(1 << 20); for (let i = 0; i < 200; i++) process.stdout.write(mib); process.stdout.write('\\nafter the big line\\n'); return new Response('printed'); };` };
    await h.apply([environment('node', 'node'), ...fn('big', big, { route: '/big' })]);
    await h.get('/healthz');
    const before = process.memoryUsage().rss;
    let peak = before;
    const sampler = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 5);
    try {
      expect((await h.get('/big')).body).toBe('printed');
      await waitFor('the line after the big one', () => logsOf('big').some((l) => l.line === 'after the big line'), 60_000);
    } finally {
      clearInterval(sampler);
    }
    const lines = logsOf('big');
    const cut = lines.find((l) => l.line.startsWith('xxx'))!;
    expect(cut.line).toBe(`${'x'.repeat(16384)} … [line cut at 16384 bytes]`);
    // RSS grew by less than half the line (it grew by more than the line before lines were bounded)
    expect(peak - before).toBeLessThan(100 * MiB);
    const dbBytes = ['spore.db', 'spore.db-wal'].map((f) => join(h!.dir, f)).filter(existsSync).reduce((n, f) => n + statSync(f).size, 0);
    expect(dbBytes).toBeLessThan(8 * MiB);
    const metrics = (await h.get('/metrics')).body;
    expect(metrics).toContain('spore_log_lines_cut_total 1');
    expect(metrics).toContain(`spore_log_bytes_dropped_total ${200 * MiB - 16384}`);
  });

  it("keeps only the newest lines within a function's 8 MiB of logs", async () => {
    h = await harness();
    // 1,000 lines of 12,000 bytes: 12 MB, each line numbered
    const chatty = { 'index.mjs': `export default async () => { for (let i = 0; i < 1000; i++) console.log(String(i).padStart(4, '0') + 'y'.repeat(11996)); return new Response('done'); };` };
    await h.apply([environment('node', 'node'), ...fn('chatty', chatty, { route: '/chatty' })]);
    expect((await h.get('/chatty')).body).toBe('done');
    await waitFor('the last line', () => logsOf('chatty').some((l) => l.line.startsWith('0999')));
    const lines = logsOf('chatty').filter((l) => /^\d{4}y/.test(l.line));
    const bytes = lines.reduce((n, l) => n + Buffer.byteLength(l.line), 0);
    expect(bytes).toBeLessThanOrEqual(8 * MiB);
    expect(bytes).toBeGreaterThan(8 * MiB - 12_000); // dropped only what the budget needed
    const numbers = lines.map((l) => Number(l.line.slice(0, 4)));
    expect(numbers.at(-1)).toBe(999);
    expect(numbers).toEqual(numbers.map((_, i) => 999 - numbers.length + 1 + i)); // the newest, none missing
  });
});

// Children a function leaves behind: one detached (its own process group), one
// that called setsid(), and (found only by a cgroup) one that also cleared its environment.
const SPAWNER = {
  'index.mjs': `import { spawn } from 'node:child_process';
  export default async () => {
    const opts = { stdio: 'ignore' };
    const marked = [spawn('sleep', ['600'], { ...opts, detached: true }), spawn('setsid', ['sleep', '600'], opts)];
    const unmarked = [spawn('env', ['-i', 'setsid', 'sleep', '600'], opts)];
    for (const c of [...marked, ...unmarked]) c.unref();
    return Response.json({ marked: marked.map((c) => c.pid), unmarked: unmarked.map((c) => c.pid), folder: process.cwd() });
  };`,
};

/** Running, not a zombie waiting to be reaped. */
function running(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
    return stat[stat.lastIndexOf(')') + 2] !== 'Z';
  } catch {
    return false;
  }
}

const cgroups = InstanceCgroups.detect() !== undefined;
// what escaped by design (no cgroup here) is not left for 600 s
const started: number[] = [];
afterEach(() => {
  for (const pid of started.splice(0).filter(running)) process.kill(pid, 'SIGKILL');
});
const pidsOf = (body: string) => {
  const pids = JSON.parse(body) as { marked: number[]; unmarked: number[]; folder: string };
  started.push(...pids.marked, ...pids.unmarked);
  return pids;
};
/** The pids that must be gone: all of them where instances get a cgroup, else those that kept Spore's mark. */
const bounded = (p: { marked: number[]; unmarked: number[] }) => (cgroups ? [...p.marked, ...p.unmarked] : p.marked);

describe(`what an instance starts ends with it (${cgroups ? 'cgroup v2' : 'process group and owner mark'})`, () => {
  const sleeping = (pids: number[]) => pids.filter(running);

  it('when the instance is reaped for idleness', async () => {
    h = await harness();
    await h.apply([environment('node', 'node'), ...fn('spawner', SPAWNER, { route: '/spawn', executor: { idleTimeoutSeconds: 1 } })]);
    const pids = pidsOf((await h.get('/spawn')).body);
    expect(sleeping(bounded(pids))).toHaveLength(bounded(pids).length);
    await waitFor('the instance reaped', () => h!.dp.poolmgr.snapshot().functions.find((f) => f.name === 'spawner')?.instances.length === 0);
    await waitFor('its children gone', () => sleeping(bounded(pids)).length === 0);
  });

  it('when the dataplane closes', async () => {
    h = await harness();
    await h.apply([environment('node', 'node'), ...fn('spawner', SPAWNER, { route: '/spawn' })]);
    const pids = pidsOf((await h.get('/spawn')).body);
    expect(sleeping(bounded(pids))).toHaveLength(bounded(pids).length);
    await h.close();
    h = undefined;
    expect(sleeping(bounded(pids))).toEqual([]);
  });

  it('when Spore was killed with -9: its next start stops them', async () => {
    const first = await harness();
    const dir = first.dir;
    await first.close();
    // a Spore of its own, over the same state folder, killed with -9 after a call
    const script = `
      import { SqliteStore } from ${JSON.stringify(fileURLToPath(new URL('../../store/index.ts', import.meta.url)))};
      import { startDataplane } from ${JSON.stringify(fileURLToPath(new URL('../../dataplane/index.ts', import.meta.url)))};
      import { environment, fn } from ${JSON.stringify(fileURLToPath(new URL('./harness.ts', import.meta.url)))};
      const store = new SqliteStore(${JSON.stringify(join(dir, 'spore.db'))});
      const dp = await startDataplane({ store, stateDir: ${JSON.stringify(dir)}, port: 0 });
      await store.apply([environment('node', 'node'), ...fn('spawner', ${JSON.stringify(SPAWNER)}, { route: '/spawn' })]);
      await dp.router.reload();
      const res = await fetch(dp.url + '/spawn');
      process.stdout.write(await res.text() + '\\n');`;
    const tsx = fileURLToPath(new URL('../../node_modules/tsx/dist/esm/index.mjs', import.meta.url));
    const child = spawn(process.execPath, ['--import', tsx, '--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (c) => (out += c));
    const pids = pidsOf(await waitFor('the pids from the killed Spore', () => (out.includes('\n') ? out : undefined), 60_000));
    child.kill('SIGKILL');
    await new Promise((r) => child.once('exit', r));
    expect(sleeping(bounded(pids))).toHaveLength(bounded(pids).length);
    const instances = dirname(pids.folder); // <state>/instances, or /tmp/spore-instances-<hash> as root
    const leftFolders = readdirSync(instances, { withFileTypes: true }).filter((e) => e.isDirectory() && e.name !== 'runtimes').map((e) => e.name); // (runtimes: the copy of the runtimes' programs, as root)
    expect(leftFolders.length).toBeGreaterThan(0); // the killed Spore's instances' folders, code included
    h = await harness({ stateDir: dir });
    await waitFor('the leftovers stopped', () => sleeping(bounded(pids)).length === 0);
    const now = readdirSync(instances);
    expect(leftFolders.filter((f) => now.includes(f))).toEqual([]); // and their folders removed
  });
});
