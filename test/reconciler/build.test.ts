// The reconciler's build step with real pip and real PyPI: a revision's Python
// requirements are installed into its package before apply; one that does not
// install is rejected at `build` and the previous revision keeps serving; an
// index that cannot be reached is tried again like a registry that is down.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { buildPackages } from '../../reconciler/build.js';
import { waitFor } from '../dataplane/harness.js';
import { spore, tempDir } from '../helpers.js';
import { mainStage, reconcilerHarness } from './harness.js';

const { setup } = reconcilerHarness();

const MAIN = `import { App, Chart } from 'cdk8s';
import { Environment, PythonFunction } from 'spore';
const app = new App();
const chart = new Chart(app, 'shop');
const python = Environment.python(chart, 'python', { poolSize: 1 });
new PythonFunction(chart, 'py', { environment: python, path: 'functions/py' }).addRoute('GET', '/py');
app.synth();
`;

/** A revision: the app, and a function answering with its text and the version of six it imports. */
const rev = (text: string, requirements: string) => ({
  'main.ts': MAIN,
  'functions/py/main.py': `import six\n\ndef main():\n    return {"text": ${JSON.stringify(text)}, "six": six.__version__}\n`,
  'functions/py/requirements.txt': requirements,
});

const pipEnv = { ...process.env };
afterEach(() => {
  for (const k of ['PIP_INDEX_URL', 'PIP_RETRIES', 'PIP_FIND_LINKS']) {
    if (pipEnv[k] === undefined) delete process.env[k];
    else process.env[k] = pipEnv[k];
  }
});

/** A local port nothing listens on: an index that is down. */
async function deadPort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const { port } = s.address() as { port: number };
  await new Promise((r) => s.close(r));
  return port;
}

describe('reconciler build step', () => {
  it("installs requirements before apply, rejects a revision whose requirements do not install at step build with pip's message, and reuses installs", async () => {
    const e = await setup();
    const v1 = e.repo.commit('v1', rev('v1', 'six==1.15.0\n'));
    await e.rec.start();
    expect(mainStage(e).liveRevision).toBe(v1);
    expect(JSON.parse((await e.get('/py')).body)).toEqual({ text: 'v1', six: '1.15.0' });
    expect(e.rec.history()[0].timings?.build).toBeGreaterThanOrEqual(0);
    const pkg = (await e.store.list()).find((o) => o.kind === 'Package')!.spec as any;
    expect(pkg.archive.url).toBe(`archives/${pkg.archive.sha256}.tgz`);
    expect(pkg.build).toMatchObject({ requirements: 'requirements.txt', sourceSha256: expect.stringMatching(/^[0-9a-f]{64}$/) });
    expect(pkg.build.sourceSha256).not.toBe(pkg.archive.sha256);
    expect(existsSync(join(e.state, 'archives', `${pkg.archive.sha256}.tgz`))).toBe(true);

    const bad = e.repo.commit('a package that does not exist', rev('v2', 'spore-no-such-package-9f3a==1.0.0\n'));
    await e.rec.poll('poll');
    const st = mainStage(e);
    expect(st.liveRevision).toBe(v1);
    expect(st.lastAttempt).toMatchObject({ revision: bad, result: 'failed', error: { step: 'build', object: 'Package/default/py' } });
    expect(st.lastAttempt!.error!.message).toMatch(/^pip install -r requirements\.txt failed \(exit code 1\):\n/);
    expect(st.lastAttempt!.error!.message).toContain('ERROR: No matching distribution found for spore-no-such-package-9f3a==1.0.0');
    expect(st.lastAttempt!.error!.message).not.toMatch(/\n\s+at /); // pip's words, not a stack
    expect(st.retry).toBeUndefined(); // the index answered: trying again would not help
    expect(e.rec.history()[0]).toMatchObject({ revision: bad, result: 'failed', error: { step: 'build' } });
    expect(JSON.parse((await e.get('/py')).body)).toEqual({ text: 'v1', six: '1.15.0' });

    // only main.py changes: nothing installed, and the same requirements give the same dependencies
    const v3 = e.repo.commit('v3', rev('v3', 'six==1.15.0\n'));
    const before = e.lines.length;
    await e.rec.poll('poll');
    expect(mainStage(e).liveRevision).toBe(v3);
    expect(JSON.parse((await e.get('/py')).body)).toEqual({ text: 'v3', six: '1.15.0' });
    const said = e.lines.slice(before).join('\n');
    expect(said).toMatch(/Package\/default\/py: dependencies from the cache/);
    expect(said).not.toContain('pip:');

    // the same revision built again is the same package: nothing to update, no drift
    const again = await e.rec.poll('sync', { force: true });
    expect(again.find((s) => s.stage === 'main')?.lastAttempt?.result).toBe('succeeded');
    expect(e.rec.history()[0].counts).toMatchObject({ create: 0, update: 0, prune: 0 });
  });

  it('tries a revision again when pip could not reach the index', async () => {
    const e = await setup({ retryBaseMs: 200 });
    const v1 = e.repo.commit('v1', rev('v1', 'six==1.15.0\n'));
    await e.rec.start();
    expect(mainStage(e).liveRevision).toBe(v1);
    process.env.PIP_INDEX_URL = `http://127.0.0.1:${await deadPort()}/simple`;
    process.env.PIP_RETRIES = '1'; // one retry: pip says it could not connect, without waiting long
    delete process.env.PIP_FIND_LINKS;
    const v2 = e.repo.commit('v2', rev('v2', 'six==1.14.0\n'));
    await e.rec.poll('poll');
    expect(mainStage(e)).toMatchObject({ liveRevision: v1, lastAttempt: { revision: v2, result: 'failed', error: { step: 'build', attempts: 1 } } });
    expect(mainStage(e).lastAttempt!.error!.message).toContain('No matching distribution found for six==1.14.0');
    expect(mainStage(e).retry).toMatchObject({ revision: v2, attempts: 1 });
    expect((await e.get('/py')).body).toContain('"v1"');

    for (const k of ['PIP_INDEX_URL', 'PIP_RETRIES']) delete process.env[k]; // the index is back
    await waitFor('the revision synced on a retry', async () => (await e.rec.poll('poll'), mainStage(e).liveRevision === v2), 120_000);
    expect(JSON.parse((await e.get('/py')).body)).toEqual({ text: 'v2', six: '1.14.0' });
  });

  it('refuses to build from an archive holding a link, before running anything', async () => {
    const src = tempDir('spore-src-');
    writeFileSync(join(src, 'main.py'), 'def main():\n    return "x"\n');
    writeFileSync(join(src, 'requirements.txt'), 'six==1.15.0\n');
    symlinkSync('/etc/passwd', join(src, 'secrets'));
    const file = join(tempDir('spore-tgz-'), 'src.tgz');
    execFileSync('tar', ['-czf', file, '-C', src, 'main.py', 'requirements.txt', 'secrets']);
    const bytes = readFileSync(file);
    const pkg = spore('Package', 'py', { archive: { sha256: createHash('sha256').update(bytes).digest('hex'), size: bytes.length, inline: bytes.toString('base64') }, build: { requirements: 'requirements.txt' } }, 'default');
    const cacheDir = tempDir('spore-pycache-');
    await expect(buildPackages([pkg as any], { archiveDir: tempDir('spore-archives-'), cacheDir })).rejects.toMatchObject({
      object: 'Package/default/py',
      message: 'the source archive: unsafe archive: secrets: entries of type SymbolicLink are not allowed',
    });
    expect(readdirSync(cacheDir)).toEqual([]); // pip never ran
  });
});
