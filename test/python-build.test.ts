// Python dependencies through `spore up`: requirements.txt installed into the
// function's package at deploy time by real pip from real PyPI, cached by the
// requirements and the interpreter; a requirement that does not install
// rejects the deploy with pip's words.
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { request } from 'undici';
import { afterAll, describe, expect, it } from 'vitest';
import { waitFor } from './dataplane/harness.js';
import { tempDir } from './helpers.js';
import { sporeUp } from './spore-up.js';

const ROOT = new URL('..', import.meta.url).pathname;
/** A release of six the host does not have (checked below), so that only the package's own copy can answer with it. */
const PINNED = '1.15.0';
const apps: string[] = [];
afterAll(() => {
  for (const a of apps) rmSync(a, { recursive: true, force: true });
});

const up = sporeUp(120_000);

/** An app folder inside the repository (so that it resolves `spore` and cdk8s) with one PythonFunction at GET /py. */
function pyApp(files: Record<string, string>): string {
  const dir = mkdtempSync(join(ROOT, 'test', '.apps-'));
  apps.push(dir);
  writeFileSync(join(dir, 'cdk8s.yaml'), 'language: typescript\napp: npx tsx main.ts\n');
  writeFileSync(
    join(dir, 'main.ts'),
    `import { App, Chart } from 'cdk8s';
import { Environment, PythonFunction } from 'spore';
const app = new App();
const chart = new Chart(app, 'app');
const python = Environment.python(chart, 'python', { poolSize: 1 });
new PythonFunction(chart, 'py', { environment: python, path: 'py' }).addRoute('GET', '/py');
app.synth();
`,
  );
  for (const [path, text] of Object.entries(files)) {
    mkdirSync(join(dir, path, '..'), { recursive: true });
    writeFileSync(join(dir, path), text);
  }
  return dir;
}

const mainPy = (text: string) => `import six\n\ndef main():\n    return {"text": ${JSON.stringify(text)}, "version": six.__version__, "file": six.__file__}\n`;

const getJson = async (url: string) => JSON.parse(await (await request(url)).body.text());

describe('Python dependencies (spore up)', () => {
  it('installs requirements.txt into the package: the pinned version serves from the package folder, and a code-only change installs nothing', async () => {
    const host = spawnSync(process.env.SPORE_PYTHON ?? 'python3', ['-c', 'import six; print(six.__version__)'], { encoding: 'utf8' });
    expect(host.status === 0 ? host.stdout.trim() : 'none', 'the host must not have the pinned six').not.toBe(PINNED);
    const dir = pyApp({ 'py/main.py': mainPy('v1'), 'py/requirements.txt': `six==${PINNED}\n` });
    const state = tempDir('spore-pybuild-');
    const u = up([dir, '--port', '0', '--watch', '--state-dir', state]);
    const url = await u.url();
    const first = await getJson(`${url}/py`);
    expect(first).toMatchObject({ text: 'v1', version: PINNED });
    // the instance's own folder: in the state folder, or (as root, each instance a user of its own) in /tmp/spore-instances-<hash>
    expect(first.file).toMatch(new RegExp(`^(${join(state, 'instances')}|${tmpdir()}/spore-instances-[0-9a-f]+)/[^/]+/code/six\\.py$`));
    expect(u.output()).toMatch(/Package\/default\/py: dependencies installed \(requirements\.txt, \w+-\d+\.\d+-[^)]+\) → archives\/[0-9a-f]{64}\.tgz/);
    const cache = join(state, 'cache', 'python');
    const entries = readdirSync(cache);
    expect(entries).toHaveLength(1);

    writeFileSync(join(dir, 'py/main.py'), mainPy('v2'));
    await waitFor('v2 served', async () => (await getJson(`${url}/py`)).text === 'v2', 120_000);
    expect(await getJson(`${url}/py`)).toMatchObject({ version: PINNED });
    expect(u.output()).toMatch(/Package\/default\/py: dependencies from the cache \(requirements\.txt/);
    expect(readdirSync(cache)).toEqual(entries);
    u.child.kill('SIGTERM');
    expect(await u.exited).toBe(0);
  });

  it('installs again when a file the requirements name (-r) changes', async () => {
    const dir = pyApp({ 'py/main.py': mainPy('v1'), 'py/requirements.txt': '-r base.txt\n', 'py/base.txt': `six==${PINNED}\n` });
    const u = up([dir, '--port', '0', '--watch', '--state-dir', tempDir('spore-pybuild-')]);
    const url = await u.url();
    expect(await getJson(`${url}/py`)).toMatchObject({ version: PINNED });
    writeFileSync(join(dir, 'py/base.txt'), 'six==1.14.0\n');
    await waitFor('six 1.14.0 served', async () => (await getJson(`${url}/py`)).version === '1.14.0', 120_000);
    u.child.kill('SIGTERM');
    expect(await u.exited).toBe(0);
  });

  it("refuses to deploy when the requirements do not install, with pip's message", async () => {
    const dir = pyApp({ 'py/main.py': mainPy('v1'), 'py/requirements.txt': `six==99.0.0\n` });
    const u = up([dir, '--port', '0', '--state-dir', tempDir('spore-pybuild-')]);
    expect(await Promise.race([u.exited, u.url().then(() => 'serving')])).toBe(1);
    expect(u.output()).toContain('cannot build Package/default/py: pip install -r requirements.txt failed (exit code 1):');
    expect(u.output()).toContain('ERROR: No matching distribution found for six==99.0.0');
    expect(u.output()).not.toContain('serving on');
  });
});
