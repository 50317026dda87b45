// kill -9 of `spore reconciler` in the middle of a sync, then a restart: the
// store holds one revision or the other, never a mix, and it converges.
import { spawn, type ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SqliteStore } from '../../store/index.js';
import { waitFor } from '../dataplane/harness.js';
import { tempDir } from '../helpers.js';
import { appTemplate, depsCache, handler, INSTALL_BOUND_MS, mainTs, Repo, templateReady } from './gitrepo.js';

const BIN = new URL('../../bin/spore.js', import.meta.url).pathname;
const children: ChildProcess[] = [];
afterAll(() => children.forEach((c) => c.exitCode === null && c.kill('SIGKILL')));

function reconciler(url: string, state: string) {
  const child = spawn(process.execPath, [BIN, 'reconciler', '--git', url, '--state-dir', state, '--deps-cache', depsCache(), '--poll', '1s'], { stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  let out = '';
  child.stdout!.on('data', (c) => (out += c));
  child.stderr!.on('data', (c) => (out += c));
  return { child, output: () => out, exited: new Promise((r) => child.once('exit', r)) };
}

const version = (tag: string, fns: string[]) => ({ 'main.ts': mainTs(fns), ...Object.fromEntries(fns.map((f) => [`functions/${f}.ts`, handler(`${tag} ${f}`)])) });
const V1 = ['a', 'b', 'c', 'd'];
const V2 = ['c', 'd', 'e', 'f', 'g'];

/** The functions the store holds for the app, and whether every one has its package and route. */
async function served(state: string): Promise<string[]> {
  const store = new SqliteStore(join(state, 'spore.db'));
  try {
    const fns = (await store.list({ kind: 'Function' })).map((f) => f.metadata.name).sort();
    for (const f of fns) {
      expect(await store.get({ apiVersion: 'spore.dev/v1alpha1', kind: 'Package', name: f }), `package of ${f}`).toBeDefined();
      expect(await store.get({ apiVersion: 'spore.dev/v1alpha1', kind: 'HttpTrigger', name: `${f}-route` }), `route of ${f}`).toBeDefined();
    }
    return fns;
  } finally {
    await store.close();
  }
}

/** Processes started by a run of one of these (dead) reconcilers, found by the owner each run carries in its environment. */
function leftovers(owners: number[]): number[] {
  const found: number[] = [];
  for (const pid of readdirSync('/proc').filter((n) => /^\d+$/.test(n))) {
    try {
      const env = readFileSync(`/proc/${pid}/environ`, 'latin1').split('\0');
      if (env.some((e) => owners.some((o) => e.startsWith(`SPORE_RUN_OWNER=${o}:`)))) found.push(Number(pid));
    } catch {
      // gone
    }
  }
  return found;
}

beforeAll(templateReady, INSTALL_BOUND_MS);

describe('a reconciler killed mid-sync', () => {
  it('leaves one whole revision, and converges after a restart', async () => {
    const state = tempDir('spore-crash-');
    const template = appTemplate();
    const repo = new Repo(template);
    repo.commit('v1', version('v1', V1));
    let r = reconciler(repo.url, state);
    await waitFor('v1 applied', () => /main: \w+ applied/.test(r.output()), 120_000);
    r.child.kill('SIGTERM');
    await r.exited;
    expect(await served(state)).toEqual(V1);

    const killed: number[] = [];
    let live = V1;
    for (const [i, delay] of [0, 150, 400, 900, 1500].entries()) {
      // a new revision each time, so that every start has a sync to be killed in (a fast one may finish first)
      const next = i % 2 === 0 ? V2 : V1;
      repo.commit(`v${i + 2}`, version(`v${i + 2}`, next));
      r = reconciler(repo.url, state);
      await waitFor('a sync under way', () => r.output().includes('syncing'), 60_000);
      await new Promise((res) => setTimeout(res, delay));
      r.child.kill('SIGKILL');
      killed.push(r.child.pid!);
      await r.exited;
      const now = await served(state);
      expect([live, next], `killed ${delay} ms into the sync`).toContainEqual(now);
      live = now;
    }
    repo.commit('last', version('last', V2));
    r = reconciler(repo.url, state);
    await waitFor('the last reconciler up', () => r.output().includes('spore: following'), 60_000);
    await waitFor('v2 applied', async () => JSON.stringify(await served(state)) === JSON.stringify(V2), 120_000);
    // the synth or npm ci a killed reconciler left running was stopped by the restart
    await waitFor('no leftover of a killed reconciler', () => leftovers(killed).length === 0);
    r.child.kill('SIGTERM');
    expect(await r.exited).toBe(0);
  });
});
