// Spore as a user outside this repository gets it: `spore init` packs it into
// a new app's vendor/ folder, and the packed package installs and serves.
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { cpSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { installDependencies } from '../reconciler/install.js';
import { waitFor } from './dataplane/harness.js';
import { tempDir } from './helpers.js';
import { appTemplate, depsCache, handler, INSTALL_BOUND_MS, mainTs, templateReady } from './reconciler/gitrepo.js';

const BIN = new URL('../bin/spore.js', import.meta.url).pathname;
const children: ChildProcess[] = [];
afterAll(() => {
  for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
});
beforeAll(templateReady, INSTALL_BOUND_MS);

describe('spore outside its repository', () => {
  it('spore init makes an app that depends on spore packed into its own vendor/ folder', () => {
    const dir = join(tempDir('spore-init-'), 'my-app');
    const r = spawnSync(process.execPath, [BIN, 'init', dir], { encoding: 'utf8' });
    expect(r.stderr).toBe('');
    expect(r.stdout).toContain(`created app "my-app" in ${dir}`);
    const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8'));
    expect(pkg).toMatchObject({ name: 'my-app', type: 'module', dependencies: { spore: expect.stringMatching(/^file:vendor\/spore-[\d.]+\.tgz$/) } });
    expect(pkg.scripts.synth).toBe('CDK8S_CHECK_UPGRADE=false cdk8s synth');
    const packed = execFileSync('tar', ['-tzf', join(dir, pkg.dependencies.spore.slice('file:'.length))], { encoding: 'utf8' }).split('\n');
    for (const f of ['package/bin/spore.js', 'package/lib/cli/main.js', 'package/lib/constructs/index.js', 'package/dataplane/runtimes/node/server.mjs', 'package/dataplane/runtimes/python/server.py', 'package/examples/main.ts']) expect(packed).toContain(f);
    for (const f of ['main.ts', 'cdk8s.yaml', 'functions/hello.ts', 'functions/python-hello/main.py', '.gitignore']) expect(existsSync(join(dir, f)), f).toBe(true);
    expect(existsSync(join(dir, '.spore'))).toBe(false); // nothing of the example's state comes along

    const again = spawnSync(process.execPath, [BIN, 'init', dir], { encoding: 'utf8' });
    expect(again.status).toBe(1);
    expect(again.stderr).toContain(`${dir} is not empty`);
  });

  it('the packed spore installs in a folder outside the repository and serves it with spore up', async () => {
    const dir = tempDir('spore-outside-'); // under the system's temp folder: no checkout of spore above it
    for (const f of ['package.json', 'package-lock.json', 'cdk8s.yaml', 'vendor']) cpSync(join(appTemplate(), f), join(dir, f), { recursive: true });
    writeFileSync(join(dir, 'main.ts'), mainTs(['hello']));
    cpSync(join(appTemplate(), 'cdk8s.yaml'), join(dir, 'cdk8s.yaml'));
    execFileSync('mkdir', ['-p', join(dir, 'functions')]);
    writeFileSync(join(dir, 'functions', 'hello.ts'), handler('from the packed spore'));
    await installDependencies(dir, depsCache()); // the run's cache: spore from vendor/, its dependencies from the registry
    const child = spawn(process.execPath, [join(dir, 'node_modules', 'spore', 'bin', 'spore.js'), 'up', dir, '--port', '0', '--state-dir', tempDir('spore-state-')], { stdio: ['ignore', 'pipe', 'pipe'] });
    children.push(child);
    let out = '';
    child.stdout!.on('data', (c) => (out += c));
    child.stderr!.on('data', (c) => (out += c));
    const url = await waitFor('serving', () => /serving on (http:\/\/\S+)\n/.exec(out)?.[1], 60_000).catch((err: Error) => {
      throw new Error(`${err.message}; spore up said:\n${out}`);
    });
    expect(await (await request(`${url}/hello`)).body.text()).toBe('from the packed spore');
    child.kill('SIGTERM');
  });
});
