// Installing a checkout's dependencies where its lockfile's paths resolve:
// file: folders, workspaces and vendored tarballs inside the repository; a
// path outside it refused by name. Real npm, no registry needed.
import { execFileSync } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { InstallError, installDependencies } from '../../reconciler/install.js';
import { tempDir } from '../helpers.js';
import { mainStage, reconcilerHarness, v } from './harness.js';

const { setup, template } = reconcilerHarness();

function write(root: string, files: Record<string, string>): void {
  for (const [path, text] of Object.entries(files)) {
    mkdirSync(join(root, path, '..'), { recursive: true });
    writeFileSync(join(root, path), text);
  }
}

const pkg = (name: string, extra: object = {}) => JSON.stringify({ name, version: '1.0.0', main: 'index.js', ...extra });
const lock = (dir: string) => execFileSync('npm', ['install', '--package-lock-only', '--offline', '--no-audit', '--no-fund', '--loglevel=error'], { cwd: dir, stdio: 'pipe' });
/** What Node resolves from a folder of the checkout, as the app's synth would. */
const run = (dir: string, code: string) => execFileSync(process.execPath, ['-e', code], { cwd: dir, encoding: 'utf8' });

describe('installing dependencies', () => {
  it('installs file: folders, workspaces and vendored tarballs from inside the repository; a linked folder is used from the checkout', async () => {
    const repo = tempDir('spore-repo-');
    // a tarball made with npm pack, committed under vendor/ (how the README says to depend on spore)
    const src = tempDir('spore-tarball-src-');
    write(src, { 'package.json': pkg('tarred'), 'index.js': "module.exports = 'from a tarball';\n" });
    mkdirSync(join(repo, 'app', 'vendor'), { recursive: true });
    execFileSync('npm', ['pack', '--pack-destination', join(repo, 'app', 'vendor')], { cwd: src, stdio: 'pipe' });
    write(repo, {
      'lib/greet/package.json': pkg('greet'),
      'lib/greet/index.js': "module.exports = (n) => 'hello ' + n;\n",
      'app/packages/words/package.json': pkg('words'),
      'app/packages/words/index.js': "module.exports = ['a', 'b'];\n",
      // the app is a folder of the repository; its lockfile reaches outside the app (../lib) but not outside the repository
      'app/package.json': JSON.stringify({ name: 'app', version: '1.0.0', workspaces: ['packages/*'], dependencies: { greet: 'file:../lib/greet', tarred: 'file:vendor/tarred-1.0.0.tgz' } }),
    });
    lock(join(repo, 'app'));
    const cache = tempDir('spore-cache-');
    const first = await installDependencies(join(repo, 'app'), cache, { root: repo });
    expect(first.cached).toBe(false);
    const probe = "console.log([require('greet')('ada'), require('tarred'), require('words').join()].join('|'))";
    expect(run(join(repo, 'app'), probe)).toBe('hello ada|from a tarball|a,b\n');

    // a fresh checkout of the same revision: from the cache
    const again = tempDir('spore-repo-');
    execFileSync('cp', ['-a', `${repo}/lib`, `${repo}/app`, again]);
    execFileSync('rm', ['-rf', join(again, 'app', 'node_modules')]);
    expect(await installDependencies(join(again, 'app'), cache, { root: again })).toEqual({ cached: true, key: first.key });
    expect(run(join(again, 'app'), probe)).toBe('hello ada|from a tarball|a,b\n');

    // the linked folder's code changed and the lockfile did not: nothing to install, and the code is the checkout's
    write(again, { 'lib/greet/index.js': "module.exports = (n) => 'bonjour ' + n;\n" });
    expect(await installDependencies(join(again, 'app'), cache, { root: again })).toEqual({ cached: true, key: first.key });
    expect(run(join(again, 'app'), probe)).toBe('bonjour ada|from a tarball|a,b\n');
    expect(run(join(repo, 'app'), probe)).toBe('hello ada|from a tarball|a,b\n'); // the first checkout is its own
    // what npm installs for it changed: a new install
    write(again, { 'lib/greet/package.json': pkg('greet', { description: 'now with a description' }) });
    expect((await installDependencies(join(again, 'app'), cache, { root: again })).key).not.toBe(first.key);
    expect(run(join(again, 'app'), probe)).toBe('bonjour ada|from a tarball|a,b\n');
  });

  it('refuses a lockfile path outside the repository, naming the package and the fix', async () => {
    const outside = tempDir('spore-outside-');
    write(outside, { 'shared/package.json': pkg('shared'), 'shared/index.js': 'module.exports = 1;\n' });
    const repo = join(outside, 'repo');
    write(repo, { 'package.json': JSON.stringify({ name: 'app', version: '1.0.0', dependencies: { shared: 'file:../shared' } }) });
    lock(repo);
    const err = await installDependencies(repo, tempDir('spore-cache-'), { root: repo }).catch((e) => e);
    expect(err).toBeInstanceOf(InstallError);
    expect(err.message).toContain('package-lock.json installs "shared" from ../shared, which is outside the repository');
    expect(err.message).toContain('npm pack ../shared --pack-destination vendor');
  });

  it('refuses a link in the repository that leads outside it', async () => {
    const outside = tempDir('spore-outside-');
    write(outside, { 'shared/package.json': pkg('shared'), 'shared/index.js': 'module.exports = 1;\n' });
    const repo = tempDir('spore-repo-');
    write(repo, { 'package.json': JSON.stringify({ name: 'app', version: '1.0.0', dependencies: { shared: 'file:lib' } }) });
    execFileSync('ln', ['-s', join(outside, 'shared'), join(repo, 'lib')]);
    lock(repo);
    const err = await installDependencies(repo, tempDir('spore-cache-'), { root: repo }).catch((e) => e);
    expect(err).toBeInstanceOf(InstallError);
    expect(err.message).toContain('package-lock.json installs "shared" from lib, a link that leads outside the repository');
  });

  it('takes over the lock a killed install left, instead of waiting for it', async () => {
    const repo = tempDir('spore-repo-');
    write(repo, { 'lib/greet/package.json': pkg('greet'), 'lib/greet/index.js': 'module.exports = 1;\n', 'package.json': JSON.stringify({ name: 'app', version: '1.0.0', dependencies: { greet: 'file:lib/greet' } }) });
    lock(repo);
    const cache = tempDir('spore-cache-');
    const { key } = await installDependencies(repo, cache, { root: repo });
    rmSync(join(cache, key!), { recursive: true });
    // a lock untouched for a minute: its holder is gone
    mkdirSync(join(cache, `${key}.lock`));
    const old = new Date(Date.now() - 60_000);
    utimesSync(join(cache, `${key}.lock`), old, old);
    const lines: string[] = [];
    expect(await installDependencies(repo, cache, { root: repo, onProgress: (l) => lines.push(l) })).toEqual({ cached: false, key });
    expect(readdirSync(cache)).toEqual([key]);
  });

  it('rejects such a revision in the reconciler at install, and keeps serving the last good one', async () => {
    const e = await setup();
    const good = e.repo.commit('v1', v('v1'));
    await e.rec.start();
    const app = JSON.parse(readFileSync(join(template(), 'package.json'), 'utf8'));
    const lockfile = JSON.parse(readFileSync(join(template(), 'package-lock.json'), 'utf8'));
    app.dependencies.mylib = 'file:../mylib';
    lockfile.packages[''].dependencies = app.dependencies;
    lockfile.packages['node_modules/mylib'] = { resolved: '../mylib', link: true };
    const bad = e.repo.commit('depend on a folder next to the repository', { ...v('v2'), 'package.json': JSON.stringify(app), 'package-lock.json': JSON.stringify(lockfile) });
    await e.rec.poll('poll');
    expect(mainStage(e)).toMatchObject({ liveRevision: good, lastAttempt: { revision: bad, result: 'failed', error: { step: 'install' } } });
    expect(mainStage(e).lastAttempt!.error!.message).toContain('installs "mylib" from ../mylib, which is outside the repository');
    expect((await e.get('/hello')).body).toBe('v1 hello');
  });
});
