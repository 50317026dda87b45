// The Argo CD flow end to end: `spore publish` commits the example app's
// rendered manifests onto the branch `rendered`, and a reconciler that only
// syncs manifests (as Argo CD does: --manifests, nothing runs) serves them.
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { cpSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { request } from 'undici';
import { afterAll, describe, expect, it } from 'vitest';
import { waitFor } from './dataplane/harness.js';
import { tempDir } from './helpers.js';

const ROOT = new URL('..', import.meta.url).pathname;
const BIN = join(ROOT, 'bin/spore.js');
const children: ChildProcess[] = [];
const dirs: string[] = [];
afterAll(() => {
  for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

const git = (cwd: string, ...args: string[]) => execFileSync('git', args, { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim();
const spore = (...args: string[]) => spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', env: { ...process.env, CDK8S_CHECK_UPGRADE: 'false' } });

/** `cp -r examples my-app` + git init: inside the checkout, so `spore` resolves as in a user's app that installed it. */
function exampleRepo(): string {
  const dir = mkdtempSync(join(ROOT, 'test', '.apps-publish-'));
  dirs.push(dir);
  for (const f of ['main.ts', 'cdk8s.yaml', 'package.json', 'tsconfig.json', '.gitignore', 'functions']) cpSync(join(ROOT, 'examples', f), join(dir, f), { recursive: true });
  git(dir, 'init', '--quiet', '--initial-branch=main');
  git(dir, 'add', '-A');
  git(dir, '-c', 'user.name=Dev', '-c', 'user.email=dev@example.com', 'commit', '--quiet', '-m', 'my app');
  return dir;
}

describe('spore publish (rendered manifests for Argo CD)', () => {
  it('commits the rendered manifests onto a branch that a manifests-only sync serves', async () => {
    const dir = exampleRepo();
    const source = git(dir, 'rev-parse', 'HEAD');
    const first = spore('publish', dir);
    expect(first.stderr).toBe('');
    expect(first.status).toBe(0);
    expect(first.stdout).toMatch(new RegExp(`objects rendered from ${source.slice(0, 12)}; branch rendered: committed [0-9a-f]{12}`));
    expect(git(dir, 'ls-tree', '-r', '--name-only', 'rendered').split('\n')).toContain('shop.k8s.yaml');
    expect(git(dir, 'log', '-1', '--format=%s', 'rendered')).toBe(`Rendered from ${source.slice(0, 12)}: my app`);
    expect(git(dir, 'status', '--porcelain')).toBe(''); // the user's work tree and index are untouched
    expect(spore('publish', dir).stdout).toContain('branch rendered: unchanged at');

    const state = tempDir('spore-argo-');
    const child = spawn(process.execPath, [BIN, 'up', '--git', `file://${dir}`, '--branch', 'rendered', '--manifests', '--path', '.', '--port', '0', '--poll', '1h', '--state-dir', state], { stdio: ['ignore', 'pipe', 'pipe'] });
    children.push(child);
    let out = '';
    child.stdout!.on('data', (c) => (out += c));
    child.stderr!.on('data', (c) => (out += c));
    const url = await waitFor('serving', () => /serving on (http:\/\/\S+)\n/.exec(out)?.[1], 60_000);
    await waitFor('the rendered branch applied', () => / applied/.test(out), 60_000);
    expect(await (await request(`${url}/hello/ada`)).body.text()).toBe('Hello, ada!\n');
    child.kill('SIGTERM');
  });

  it('refuses an app that is not in a Git repository, the branch the user has checked out, or an app whose synth fails, and commits nothing', () => {
    const loose = tempDir('spore-loose-');
    writeFileSync(join(loose, 'cdk8s.yaml'), 'app: node main.js\n');
    const r = spore('publish', loose);
    expect(r.status).toBe(1);
    expect(r.stderr).toContain('is not in a Git repository');

    const dir = exampleRepo();
    const onMain = spore('publish', dir, '--branch', 'main'); // the branch the user works on
    expect(onMain.status).toBe(1);
    expect(onMain.stderr).toContain('--branch main is checked out in a work tree of this repository');
    expect(git(dir, 'status', '--porcelain')).toBe('');
    writeFileSync(join(dir, 'main.ts'), `throw new Error('broken app');\n`);
    const broken = spore('publish', dir);
    expect(broken.status).toBe(1);
    expect(broken.stderr).toContain('broken app');
    expect(spawnSync('git', ['rev-parse', '--verify', '--quiet', 'refs/heads/rendered'], { cwd: dir }).status).not.toBe(0);
  });
});
