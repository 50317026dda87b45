// What the reconciler does when things around it fail: a registry that is
// down for a while, a shutdown in the middle of a render, two installs of the
// same lockfile at once.
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, readlinkSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, describe, expect, it } from 'vitest';
import { packArchive } from '../../constructs/archive.js';
import { installDependencies } from '../../reconciler/install.js';
import { alive, waitFor } from '../dataplane/harness.js';
import { tempDir } from '../helpers.js';
import { INSTALL_BOUND_MS, mainTs } from './gitrepo.js';
import { mainStage, reconcilerHarness, v } from './harness.js';

const { setup, template } = reconcilerHarness();

/** A package tarball served over HTTP (standing in for the registry), which can be taken down and brought back on the same port. */
class TarballServer {
  readonly tgz: Buffer;
  private server?: Server;
  port = 0;

  constructor(tag: string) {
    // packed here, not by `npm pack` (which puts it in npm's cache); a new tag is a new integrity
    this.tgz = packArchive([
      { path: 'package/package.json', data: Buffer.from(JSON.stringify({ name: 'flaky', version: '1.0.0', main: 'index.js' })) },
      { path: 'package/index.js', data: Buffer.from(`module.exports = ${JSON.stringify(tag)};\n`) },
    ]).bytes;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}/flaky-1.0.0.tgz`;
  }

  get integrity(): string {
    return `sha512-${createHash('sha512').update(this.tgz).digest('base64')}`;
  }

  async up(): Promise<void> {
    this.server = createServer((_req, res) => res.writeHead(200, { 'content-type': 'application/octet-stream' }).end(this.tgz));
    await new Promise<void>((r) => this.server!.listen(this.port, '127.0.0.1', r));
    this.port = (this.server.address() as { port: number }).port;
  }

  async down(): Promise<void> {
    await new Promise((r) => this.server?.close(r));
  }

  /** package.json and lockfile of `base` plus this tarball, written by hand so that npm never fetched (or cached) it. */
  withDependency(pkgJson: string, lockJson: string): { 'package.json': string; 'package-lock.json': string } {
    const pkg = JSON.parse(pkgJson);
    pkg.dependencies = { ...pkg.dependencies, flaky: this.url };
    const lock = JSON.parse(lockJson);
    lock.packages[''].dependencies = { ...lock.packages[''].dependencies, flaky: this.url };
    lock.packages['node_modules/flaky'] = { version: '1.0.0', resolved: this.url, integrity: this.integrity };
    return { 'package.json': JSON.stringify(pkg, null, 2), 'package-lock.json': JSON.stringify(lock, null, 2) };
  }
}

const servers: TarballServer[] = [];
const npmEnv = { ...process.env };
afterEach(async () => {
  for (const s of servers.splice(0)) await s.down();
  process.env.npm_config_fetch_retries = npmEnv.npm_config_fetch_retries;
  if (npmEnv.npm_config_fetch_retries === undefined) delete process.env.npm_config_fetch_retries;
});

describe('reconciler resilience', () => {
  it('tries a revision again, with a backoff, when npm ci could not reach the registry', async () => {
    process.env.npm_config_fetch_retries = '0'; // npm's own retries would only slow the test
    const flaky = new TarballServer(`v${Date.now()}`);
    servers.push(flaky);
    await flaky.up();
    await flaky.down(); // the port is known; the "registry" is now down
    // long enough that the heal below comes before the first retry, even on a loaded machine
    const e = await setup({ retryBaseMs: 5_000 });
    const good = e.repo.commit('v1', v('v1'));
    await e.rec.start();
    const files = flaky.withDependency(readFileSync(join(template(), 'package.json'), 'utf8'), readFileSync(join(template(), 'package-lock.json'), 'utf8'));
    const sha = e.repo.commit('v2 with flaky', { ...v('v2'), ...files });
    await e.rec.poll('poll');
    expect(mainStage(e)).toMatchObject({ liveRevision: good, lastAttempt: { revision: sha, result: 'failed', error: { step: 'install', attempts: 1 } } });
    expect(mainStage(e).lastAttempt!.error!.message).toMatch(/ECONNREFUSED/);
    expect(mainStage(e).retry).toMatchObject({ revision: sha, attempts: 1 });
    expect(e.lines.join('\n')).toMatch(/trying again in 5s \(attempt 2 of 6\)/);

    // healing the live revision meanwhile does not cancel the retry
    await e.store.delete({ apiVersion: 'spore.dev/v1alpha1', kind: 'Function', name: 'hello' });
    await e.rec.poll('poll');
    expect((await e.get('/hello')).body).toBe('v1 hello');
    expect(mainStage(e).retry?.revision).toBe(sha);

    await flaky.up(); // back, same port: no new commit needed
    await waitFor('the revision synced on a retry', async () => (await e.rec.poll('poll'), mainStage(e).liveRevision === sha), INSTALL_BOUND_MS);
    expect((await e.get('/hello')).body).toBe('v2 hello');
    expect(mainStage(e).retry).toBeUndefined();
  }, INSTALL_BOUND_MS); // the new lockfile installs all of spore's dependencies

  it('stops a running render on close, records no failure, and tries the revision again after a restart', async () => {
    const e = await setup();
    e.repo.commit('v1', v('v1'));
    await e.rec.start();
    const pidFile = join(tempDir('spore-pid-'), 'pid');
    const hang = `import { writeFileSync } from 'node:fs';\nwriteFileSync(${JSON.stringify(pidFile)}, String(process.pid));\nawait new Promise((r) => setTimeout(r, 600_000));\n`;
    const slow = e.repo.commit('slow', { ...v('v2'), 'main.ts': hang + mainTs(['hello']) });
    const polling = e.rec.poll('poll');
    const pid = Number(await waitFor('the synth running', () => existsSync(pidFile) && readFileSync(pidFile, 'utf8'), 60_000));
    await e.rec.close();
    await polling.catch(() => {});
    await waitFor('the synth killed', () => !alive(pid));
    expect(e.rec.history().map((h) => h.revision)).not.toContain(slow);
    await expect(e.rec.poll('poll')).rejects.toThrow('the reconciler is shutting down');
    expect((await e.get('/hello')).body).toBe('v1 hello');
    const rec = await e.restart({ renderTimeoutMs: 5_000 });
    expect(mainStage(e).lastAttempt?.revision).not.toBe(slow); // not marked failed…
    await rec.poll('poll');
    expect(mainStage(e).lastAttempt).toMatchObject({ revision: slow, error: { step: 'render' } }); // …so the next start tries it
  });

  it('rejects a render that outlasts its bound, and kills it', async () => {
    const e = await setup();
    e.repo.commit('v1', v('v1'));
    await e.rec.start();
    const rec = await e.restart({ renderTimeoutMs: 10_000 }); // the bound only for the hanging revision
    const pidFile = join(tempDir('spore-pid-'), 'pid');
    const hang = `import { writeFileSync } from 'node:fs';\nwriteFileSync(${JSON.stringify(pidFile)}, String(process.pid));\nawait new Promise((r) => setTimeout(r, 600_000));\n`;
    const slow = e.repo.commit('slow', { ...v('v2'), 'main.ts': hang + mainTs(['hello']) });
    await rec.poll('poll');
    expect(mainStage(e).lastAttempt).toMatchObject({ revision: slow, result: 'failed', error: { step: 'render', message: 'synth did not finish within 10s (npx tsx main.ts)' } });
    await waitFor('the synth killed', () => !alive(Number(readFileSync(pidFile, 'utf8'))));
    expect((await e.get('/hello')).body).toBe('v1 hello');
  });

  it('backs off healing when the store refuses the write, instead of recording a failure at every poll', async () => {
    const e = await setup({ retryBaseMs: 60_000 });
    e.repo.commit('v1', v('v1'));
    await e.rec.start();
    // the store itself fails writes of this object (a real SQLite error, as a full disk would give)
    const db = new Database(join(e.state, 'spore.db'));
    db.exec(`CREATE TRIGGER refuse BEFORE INSERT ON objects WHEN NEW.name = 'hello' AND NEW.kind = 'Function' BEGIN SELECT RAISE(ABORT, 'disk says no'); END`);
    await e.store.delete({ apiVersion: 'spore.dev/v1alpha1', kind: 'Function', name: 'hello' });
    await e.rec.poll('poll');
    expect(e.rec.history()[0]).toMatchObject({ trigger: 'poll: drift', result: 'failed', error: { step: 'apply', message: 'disk says no' } });
    const failures = e.rec.history().length;
    await e.rec.poll('poll');
    await e.rec.poll('poll');
    expect(e.rec.history()).toHaveLength(failures); // waiting out the backoff, not failing again
    expect(mainStage(e).healAfter).toMatchObject({ attempts: 1 });
    db.exec('DROP TRIGGER refuse');
    db.close();
    await e.rec.poll('sync', { force: true }); // a forced sync does not wait
    expect((await e.get('/hello')).body).toBe('v1 hello');
  });

  it('shares one cache entry between two installs of the same lockfile at once, and sweeps what a killed install left', async () => {
    const flaky = new TarballServer(`c${Date.now()}`);
    servers.push(flaky);
    await flaky.up();
    const cache = tempDir('spore-cache-');
    const stale = join(cache, '0123456789abcdef01234567.partial-1000-0badf00d'); // from 1970: long dead
    mkdirSync(join(stale, 'node_modules'), { recursive: true });
    const files = flaky.withDependency(JSON.stringify({ name: 'app', version: '1.0.0' }), JSON.stringify({ name: 'app', version: '1.0.0', lockfileVersion: 3, requires: true, packages: { '': { name: 'app', version: '1.0.0' } } }));
    const checkouts = [tempDir('spore-co-'), tempDir('spore-co-')];
    for (const dir of checkouts) for (const [f, text] of Object.entries(files)) writeFileSync(join(dir, f), text);
    const results = await Promise.all(checkouts.map((dir) => installDependencies(dir, cache)));
    expect(results.map((r) => r.key)).toEqual([results[0].key, results[0].key]);
    expect(readdirSync(cache)).toEqual([results[0].key]); // one entry; no staging folder left, the stale one swept
    for (const dir of checkouts) {
      expect(readlinkSync(join(dir, 'node_modules', 'flaky'))).toBe(join(cache, results[0].key!, 'tree', 'node_modules', 'flaky'));
      expect(readFileSync(join(dir, 'node_modules', 'flaky', 'index.js'), 'utf8')).toContain('module.exports');
    }
    // settings that change what npm installs are part of the key
    writeFileSync(join(checkouts[0], '.npmrc'), 'omit=dev\n');
    expect((await installDependencies(checkouts[0], cache)).key).not.toBe(results[0].key);
  });
});
