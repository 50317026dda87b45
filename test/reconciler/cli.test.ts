// `spore up --git` as a user runs it, and the reconciler's verbs against it.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import yaml from 'js-yaml';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { waitFor } from '../dataplane/harness.js';
import { tempDir } from '../helpers.js';
import { appTemplate, depsCache, handler, INSTALL_BOUND_MS, mainTs, Repo, templateReady } from './gitrepo.js';

const BIN = new URL('../../bin/spore.js', import.meta.url).pathname;
const children: ChildProcess[] = [];
afterAll(() => children.forEach((c) => c.exitCode === null && c.kill('SIGKILL')));
const cli = (state: string, ...args: string[]) => spawnSync(process.execPath, [BIN, ...args, '--state-dir', state], { encoding: 'utf8' });
const json = (state: string, ...args: string[]) => JSON.parse(cli(state, ...args, '-o', 'json').stdout);
const get = async (url: string) => (await (await request(url)).body.text());

beforeAll(templateReady, INSTALL_BOUND_MS);

describe('spore up --git', () => {
  it('serves the branch and answers status, history, diff, sync and rollback', async () => {
    const state = tempDir('spore-upgit-');
    const repo = new Repo(appTemplate());
    const one = repo.commit('first', { 'main.ts': mainTs(['hello']), 'functions/hello.ts': handler('v1') });
    writeFileSync(join(state, 'up.json'), '{}', { mode: 0o644 }); // left by an earlier run: must not keep its mode
    const child = spawn(process.execPath, [BIN, 'up', '--git', repo.url, '--state-dir', state, '--deps-cache', depsCache(), '--port', '0', '--poll', '1h'], { stdio: ['ignore', 'pipe', 'pipe'] });
    children.push(child);
    let out = '';
    child.stdout!.on('data', (c) => (out += c));
    child.stderr!.on('data', (c) => (out += c));
    const url = await waitFor('serving', () => /serving on (http:\/\/\S+)\n/.exec(out)?.[1], 60_000);
    await waitFor('v1 applied', () => out.includes(`${one.slice(0, 12)} applied`), 120_000);
    expect(await get(`${url}/hello`)).toBe('v1');

    const two = repo.commit('second', { 'functions/hello.ts': handler('v2'), 'functions/bye.ts': handler('bye'), 'main.ts': mainTs(['hello', 'bye']) });
    const diff = cli(state, 'diff');
    expect(diff.status).toBe(1); // there are changes (kubectl diff's convention)
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

    const broken = repo.commit('broken', { 'main.ts': 'this is not typescript (' });
    expect(cli(state, 'sync').status).toBe(1);
    const after = cli(state, 'status');
    expect(after.status).toBe(1); // the head failed: still printed, and an error
    expect(after.stderr).toBe(`spore: main: ${broken.slice(0, 12)} failed at render\n`);
    expect(after.stdout).toContain(`live:     ${one.slice(0, 12)}`);
    expect(after.stdout).toMatch(/failed at render: synth failed/);
    expect(after.stdout).toContain('ERROR: Expected ";" but found "is"');
    expect(after.stdout).not.toMatch(/node:internal|triggerUncaughtException/); // Node's own source is not the user's error
    expect(await get(`${url}/hello`)).toBe('v1');

    // a construct's error: the user's message, without the line of cdk8s that threw it; history names who pushed it
    const missing = repo.commit('missing entry', { 'main.ts': mainTs(['hello', 'nosuch']) });
    expect(cli(state, 'sync').status).toBe(1);
    const failed = cli(state, 'status');
    expect(failed.stdout).toContain('[shop/nosuch] entry file "functions/nosuch.ts" not found');
    expect(failed.stdout).not.toContain('throw new Error');
    expect(cli(state, 'history', '--limit', '1').stdout).toMatch(
      new RegExp(`main ${missing.slice(0, 12)} failed at render: synth failed \\(npx tsx main\\.ts, exit code 1\\): Validation failed with the following errors: \\[shop/nosuch\\] entry file "functions/nosuch\\.ts" not found .* \\d+ms \\(sync\\) Dev <dev@example\\.com> "missing entry"\n$`),
    );

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

  it('status shows the step of a first sync, exits 1 when the head failed; diff shows fields; -o json|yaml print the data', async () => {
    const state = tempDir('spore-reconciler-cli-');
    const gate = join(state, 'gate');
    // a synth that waits for the test to let it finish, so that the first sync can be watched at its render
    const synth = (greeting: string) => `import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
while (!existsSync(${JSON.stringify(gate)})) await new Promise((r) => setTimeout(r, 50));
writeFileSync(join(process.env.CDK8S_OUTDIR, 'app.yaml'), 'apiVersion: v1\\nkind: ConfigMap\\nmetadata: {name: settings}\\ndata: {greeting: ${greeting}}\\n');
`;
    const repo = new Repo();
    const one = repo.commit('first', { 'cdk8s.yaml': 'app: node synth.mjs\n', 'synth.mjs': synth('hello') });
    const child = spawn(process.execPath, [BIN, 'reconciler', '--git', repo.url, '--state-dir', state, '--poll', '1h'], { stdio: ['ignore', 'pipe', 'pipe'] });
    children.push(child);

    const running = await waitFor('the first sync at its render', () => {
      const r = cli(state, 'status', '-o', 'json');
      return r.status === 0 && JSON.parse(r.stdout)[0]?.running?.step === 'render' ? JSON.parse(r.stdout)[0] : undefined;
    }, 60_000);
    expect(running).toMatchObject({ stage: 'main', state: 'syncing', running: { revision: one, trigger: 'start', step: 'render' } });
    expect(running.liveRevision).toBeUndefined();
    const syncing = cli(state, 'status');
    expect(syncing.status).toBe(0);
    expect(syncing.stdout).toContain('  state:    syncing\n  live:     -\n');
    expect(syncing.stdout).toMatch(new RegExp(`  syncing:  ${one.slice(0, 12)} \\(start\\): render for \\d+s, \\d+s in all\n`));

    writeFileSync(gate, '');
    await waitFor('the first sync', () => json(state, 'status')[0].state === 'synced', 60_000);
    const synced = cli(state, 'status');
    expect(synced.status).toBe(0);
    expect(synced.stdout).toContain(`  state:    synced: the head is live\n  live:     ${one.slice(0, 12)}\n`);

    // the user's own error, as their synth said it; the command and the status exit 1
    const two = repo.commit('prices', { 'synth.mjs': `console.error('synth: the price list is missing (prices.csv)');\nprocess.exit(3);\n` });
    const sync = cli(state, 'sync');
    expect(sync.status).toBe(1);
    expect(sync.stderr).toBe(`spore: main: ${two.slice(0, 12)} failed at render\n`);
    expect(sync.stdout).toContain('failed at render: synth failed (node synth.mjs, exit code 3):\n    synth: the price list is missing (prices.csv)\n');
    const status = cli(state, 'status', '-o', 'json');
    expect(status.status).toBe(1);
    expect(JSON.parse(status.stdout)[0]).toMatchObject({
      state: 'failed',
      liveRevision: one,
      head: two,
      failure: { revision: two, error: { step: 'render', message: 'synth failed (node synth.mjs, exit code 3):\nsynth: the price list is missing (prices.csv)' } },
    });
    const history = yaml.load(cli(state, 'history', '-o', 'yaml').stdout) as any[];
    expect(history.map((h) => [h.revision, h.result, h.author, h.message])).toEqual([
      [two, 'failed', 'Dev <dev@example.com>', 'prices'],
      [one, 'succeeded', 'Dev <dev@example.com>', 'first'],
    ]);
    expect(cli(state, 'history').stdout.split('\n')[0]).toMatch(
      new RegExp(`main ${two.slice(0, 12)} failed at render: synth failed \\(node synth\\.mjs, exit code 3\\): synth: the price list is missing \\(prices\\.csv\\) \\d+ms \\(sync\\) Dev <dev@example\\.com> "prices"$`),
    );
    const cannot = cli(state, 'diff');
    expect(cannot.status).toBe(2); // an error, not "changes"
    expect(cannot.stderr).toContain('synth failed (node synth.mjs, exit code 3)');

    // field by field, and exit 1 while there is something to change, 0 once synced
    const three = repo.commit('greet', { 'synth.mjs': synth('hi') });
    const diff = cli(state, 'diff');
    expect(diff.status).toBe(1);
    expect(diff.stdout).toMatch(
      new RegExp(`^revision ${three}\nplan: 0 to create, 1 to update, 0 to prune, 0 unchanged\n  ~ ConfigMap/default/settings \\(wave -?\\d+\\)\n      data\\.greeting: "hello" → "hi"\n$`),
    );
    const data = json(state, 'diff');
    expect(data).toEqual({
      revision: three,
      stage: 'main',
      counts: { create: 0, update: 1, prune: 0, unchanged: 0 },
      objects: [{ action: 'update', apiVersion: 'v1', kind: 'ConfigMap', namespace: 'default', name: 'settings', wave: expect.any(Number), fields: [{ path: 'data.greeting', old: 'hello', new: 'hi' }] }],
    });
    expect(cli(state, 'sync').status).toBe(0);
    const none = cli(state, 'diff');
    expect(none.status).toBe(0);
    expect(none.stdout).toBe(`revision ${three}\nplan: 0 to create, 0 to update, 0 to prune, 1 unchanged\n`);
    child.kill('SIGTERM');
    expect(await new Promise((r) => child.once('exit', r))).toBe(0);
  });
});
