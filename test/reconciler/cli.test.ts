// `spore up --git` as a user runs it, and the reconciler's verbs against it.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { request } from 'undici';
import { afterAll, describe, expect, it } from 'vitest';
import { waitFor } from '../dataplane/harness.js';
import { tempDir } from '../helpers.js';
import { appTemplate, handler, mainTs, Repo } from './gitrepo.js';

const BIN = new URL('../../bin/spore.js', import.meta.url).pathname;
const children: ChildProcess[] = [];
afterAll(() => children.forEach((c) => c.exitCode === null && c.kill('SIGKILL')));
const cli = (state: string, ...args: string[]) => spawnSync(process.execPath, [BIN, ...args, '--state-dir', state], { encoding: 'utf8' });
const get = async (url: string) => (await (await request(url)).body.text());

describe('spore up --git', () => {
  it('serves the branch and answers status, history, diff, sync and rollback', async () => {
    const state = tempDir('spore-upgit-');
    const repo = new Repo(appTemplate(join(state, 'work', 'deps')));
    const one = repo.commit('first', { 'main.ts': mainTs(['hello']), 'functions/hello.ts': handler('v1') });
    writeFileSync(join(state, 'up.json'), '{}', { mode: 0o644 }); // left by an earlier run: must not keep its mode
    const child = spawn(process.execPath, [BIN, 'up', '--git', repo.url, '--state-dir', state, '--port', '0', '--poll', '1h'], { stdio: ['ignore', 'pipe', 'pipe'] });
    children.push(child);
    let out = '';
    child.stdout!.on('data', (c) => (out += c));
    child.stderr!.on('data', (c) => (out += c));
    const url = await waitFor('serving', () => /serving on (http:\/\/\S+)\n/.exec(out)?.[1], 60_000);
    await waitFor('v1 applied', () => out.includes(`${one.slice(0, 12)} applied`), 120_000);
    expect(await get(`${url}/hello`)).toBe('v1');

    const two = repo.commit('second', { 'functions/hello.ts': handler('v2'), 'functions/bye.ts': handler('bye'), 'main.ts': mainTs(['hello', 'bye']) });
    const diff = cli(state, 'diff');
    expect(diff.status).toBe(0);
    expect(diff.stdout).toContain(`revision ${two}`);
    expect(diff.stdout).toMatch(/plan: 3 to create, 1 to update, 0 to prune, 3 unchanged/);
    expect(diff.stdout).toContain('+ Function/default/bye (wave 1)');
    expect(await get(`${url}/hello`)).toBe('v1'); // diff applies nothing

    const sync = cli(state, 'sync');
    expect(sync.status).toBe(0);
    expect(sync.stdout).toContain(`live:     ${two.slice(0, 12)}`);
    expect(await get(`${url}/hello`)).toBe('v2');

    const history = cli(state, 'history');
    expect(history.stdout.split('\n')[0]).toMatch(new RegExp(`main ${two.slice(0, 12)} succeeded \\+3 ~1 -0 =3 \\d+ms \\(sync\\) Dev <dev@example.com> "second"`));

    const rollback = cli(state, 'rollback');
    expect(rollback.stdout).toBe(`rolled back main to ${one.slice(0, 12)}; pinned until the next push or spore sync\n`);
    expect(await get(`${url}/hello`)).toBe('v1');
    const status = cli(state, 'status');
    expect(status.stdout).toContain(`live:     ${one.slice(0, 12)} (pinned by a rollback)`);

    repo.commit('broken', { 'main.ts': 'this is not typescript (' });
    cli(state, 'sync');
    const after = cli(state, 'status');
    expect(after.stdout).toContain(`live:     ${one.slice(0, 12)}`);
    expect(after.stdout).toMatch(/failed at render: synth failed/);
    expect(await get(`${url}/hello`)).toBe('v1');

    expect(cli(state, 'rollback', 'feedface').stderr).toContain('spore: no good sync of feedface in stage main to roll back to');

    // the API is the CLI's: its token is in up.json (owner-only), not for any local process
    const info = JSON.parse(readFileSync(join(state, 'up.json'), 'utf8'));
    expect(statSync(join(state, 'up.json')).mode & 0o077).toBe(0);
    expect((await request(`${info.reconcilerUrl}/sync`, { method: 'POST' })).statusCode).toBe(401);
    const withUrl = spawnSync(process.execPath, [BIN, 'status', '--url', info.reconcilerUrl], { encoding: 'utf8', env: { ...process.env, SPORE_API_TOKEN: info.apiToken } });
    expect(withUrl.stdout).toContain(`live:     ${one.slice(0, 12)}`);
    child.kill('SIGTERM');
    expect(await new Promise((r) => child.once('exit', r))).toBe(0);
  });
});
