// The fetcher as it runs in a pool pod: `spore fetcher` and a runtime as two
// processes sharing folders (the pod's volumes), the runtime taking its
// credential from the env with no stdin, the fetcher specializing it over
// loopback HTTP: Spore's Node and Python runtimes, and a Fission-style
// environment server that knows nothing of Spore.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import Fastify from 'fastify';
import { request } from 'undici';
import { afterEach, describe, expect, it } from 'vitest';
import { builtinCommand } from '../../dataplane/poolmgr/process-provider.js';
import type { Specialization } from '../../dataplane/poolmgr/specialization.js';
import { archiveRoutes } from '../../reconciler/archive-server.js';
import { freePort, tempDir } from '../helpers.js';
import { archiveOf, rawArchiveFn, waitFor } from './harness.js';

const BIN = fileURLToPath(new URL('../../bin/spore.js', import.meta.url));
const FISSION_ENV = fileURLToPath(new URL('../fixtures/fission-env/server.mjs', import.meta.url));
const TOKEN = randomBytes(16).toString('hex');
const TOKEN_HEADER = 'x-spore-instance-token';

const running: ChildProcess[] = [];
const closers: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const p of running.splice(0)) p.kill('SIGKILL');
  for (const c of closers.splice(0)) await c();
});


/** A child process whose output is kept. */
function start(command: string[], env: Record<string, string>): { proc: ChildProcess; output: () => string } {
  const proc = spawn(command[0], command.slice(1), { env: { PATH: process.env.PATH!, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  running.push(proc);
  let out = '';
  proc.stdout!.on('data', (c) => (out += c));
  proc.stderr!.on('data', (c) => (out += c));
  return { proc, output: () => out };
}

type Runtime = 'node' | 'python' | 'fission';
const commandOf = (runtime: Runtime) => (runtime === 'fission' ? [process.execPath, FISSION_ENV] : builtinCommand(runtime));

/** A pod's volumes and its runtime container (credential in env, no stdin), listening on 127.0.0.1. */
async function runtimeContainer(runtime: Runtime) {
  const mounts = { SPORE_MOUNT_USERFUNC: tempDir('spore-userfunc-'), SPORE_MOUNT_SECRETS: tempDir('spore-secrets-'), SPORE_MOUNT_CONFIGS: tempDir('spore-configs-') };
  const port = await freePort();
  const rt = start(commandOf(runtime), { ...mounts, PORT: String(port), HOST: '127.0.0.1', SPORE_INSTANCE_TOKEN: TOKEN });
  await waitFor(`the ${runtime} runtime to listen`, () => rt.output().includes('listening'));
  return { mounts, port, url: `http://127.0.0.1:${port}`, ...rt };
}

/** A pod: the runtime container and `spore fetcher` beside it. */
async function pod(runtime: Runtime) {
  const rt = await runtimeContainer(runtime);
  const port = await freePort();
  const fetcher = start([process.execPath, BIN, 'fetcher', '--runtime-port', String(rt.port)], { ...rt.mounts, PORT: String(port), HOST: '127.0.0.1', SPORE_INSTANCE_TOKEN: TOKEN });
  const url = `http://127.0.0.1:${port}`;
  await waitFor('the fetcher to answer /healthz', () => request(`${url}/healthz`).then((r) => r.body.text().then(() => r.statusCode === 200), () => false));
  return { runtime: rt, fetcher, url };
}

/** A Specialization of `files` (inline), as the pool manager sends it. */
function specialization(files: Record<string, string>, o: Partial<Specialization> = {}): Specialization {
  const a = archiveOf(files);
  return {
    function: { namespace: 'default', name: 'hello' },
    package: { namespace: 'default', name: 'hello', archive: { sha256: a.sha256, size: a.size, inline: a.bytes.toString('base64') } },
    entrypoint: '',
    env: { GREETING: 'hi' },
    secrets: [{ namespace: 'default', name: 'db', data: { password: Buffer.from('hunter2').toString('base64') } }],
    configMaps: [{ namespace: 'default', name: 'settings', data: { colour: Buffer.from('blue').toString('base64') } }],
    timeoutSeconds: 30,
    ...o,
  };
}

async function specialize(url: string, body: unknown, token: string | null = TOKEN) {
  const res = await request(`${url}/specialize`, { method: 'POST', headers: { 'content-type': 'application/json', ...(token === null ? {} : { [TOKEN_HEADER]: token }) }, body: JSON.stringify(body) });
  const text = await res.body.text();
  return { status: res.statusCode, body: JSON.parse(text) as { specialized?: boolean; error?: string; reason?: string } };
}

async function get(url: string, headers: Record<string, string> = { [TOKEN_HEADER]: TOKEN }) {
  const res = await request(url, { headers });
  return { status: res.statusCode, body: await res.body.text() };
}

const NODE_READER = {
  'index.mjs': `import { readFileSync } from 'node:fs';
export default () => new Response([
  readFileSync(process.env.SPORE_SECRETS_DIR + '/default/db/password', 'utf8'),
  readFileSync(process.env.SPORE_CONFIGS_DIR + '/default/settings/colour', 'utf8'),
  process.env.GREETING,
  String(process.env.SPORE_INSTANCE_TOKEN),
].join(' '));`,
};

const PYTHON_READER = {
  'main.py': `import os
def main():
    read = lambda p: open(p).read()
    return " ".join([read(os.environ["SPORE_SECRETS_DIR"] + "/default/db/password"), read(os.environ["SPORE_CONFIGS_DIR"] + "/default/settings/colour"), os.environ["GREETING"], str(os.environ.get("SPORE_INSTANCE_TOKEN"))])
`,
};

describe('spore fetcher', () => {
  it("specializes Spore's Node runtime in a pod: code, Secrets and ConfigMaps at Fission's paths, then /v2/specialize; once only", async () => {
    const p = await pod('node');
    expect(await specialize(p.url, specialization(NODE_READER))).toEqual({ status: 200, body: { specialized: true } });
    expect(await get(`${p.runtime.url}/`)).toEqual({ status: 200, body: 'hunter2 blue hi undefined' });
    const { SPORE_MOUNT_SECRETS: secrets, SPORE_MOUNT_CONFIGS: configs, SPORE_MOUNT_USERFUNC: userfunc } = p.runtime.mounts;
    expect(statSync(join(secrets, 'default', 'db', 'password')).mode & 0o777).toBe(0o400);
    expect(statSync(join(configs, 'default', 'settings', 'colour')).mode & 0o777).toBe(0o400);
    expect(statSync(join(secrets, 'default')).mode & 0o777).toBe(0o700);
    expect(readdirSync(userfunc)).toEqual([`hello-${specialization(NODE_READER).package.archive.sha256.slice(0, 12)}`]);
    expect(p.fetcher.output()).toMatch(/specialize function default\/hello package default\/hello \(sha256 [0-9a-f]{12}\): ok in \d+ ms/);
    const again = await specialize(p.url, specialization(NODE_READER));
    expect(again).toEqual({ status: 409, body: { reason: 'AlreadySpecialized', error: 'this pod is already specialized: a pod serves one function for life' } });
  });

  it("specializes Spore's Python runtime the same way", async () => {
    const p = await pod('python');
    expect(await specialize(p.url, specialization(PYTHON_READER, { entrypoint: 'main.main' }))).toEqual({ status: 200, body: { specialized: true } });
    expect(await get(`${p.runtime.url}/`)).toEqual({ status: 200, body: 'hunter2 blue hi None' });
  });

  it('specializes a Fission-style environment server unchanged, its function reading the Secret at /secrets/<namespace>/<name>/<key>', async () => {
    const p = await pod('fission');
    const files = {
      'hello.js': `const { readFileSync } = require('node:fs');
const secrets = process.env.SPORE_MOUNT_SECRETS || '/secrets';
const configs = process.env.SPORE_MOUNT_CONFIGS || '/configs';
module.exports.handler = async (context) => ({ status: 200, body: context.request.method + ' ' + readFileSync(secrets + '/default/db/password', 'utf8') + ' ' + readFileSync(configs + '/default/settings/colour', 'utf8') });`,
    };
    expect(await specialize(p.url, specialization(files, { entrypoint: 'hello.handler' }))).toEqual({ status: 200, body: { specialized: true } });
    expect(await get(`${p.runtime.url}/`, {})).toEqual({ status: 200, body: 'GET hunter2 blue' });
  });

  it("fetches a Package by URL from the reconciler's archive server, and says a relative URL needs --archive-url", async () => {
    const archiveDir = tempDir('spore-archives-');
    const a = archiveOf({ 'index.mjs': `export default () => new Response('from a URL');` });
    writeFileSync(join(archiveDir, `${a.sha256}.tgz`), a.bytes);
    const server = Fastify();
    archiveRoutes(server, archiveDir);
    const base = await server.listen({ port: 0, host: '127.0.0.1' });
    closers.push(() => server.close());
    const p = await pod('node');
    const relative = specialization({}, { package: { namespace: 'default', name: 'hello', archive: { sha256: a.sha256, size: a.size, url: `archives/${a.sha256}.tgz` } } });
    const r = await specialize(p.url, relative);
    expect(r.status).toBe(500);
    expect(r.body.reason).toBe('BadPackage');
    expect(r.body.error).toContain(`Package default/hello: cannot fetch spec.archive.url archives/${a.sha256}.tgz`);
    expect(r.body.error).toContain('start the reconciler with --archive-url');
    const byUrl = specialization({}, { package: { namespace: 'default', name: 'hello', archive: { sha256: a.sha256, size: a.size, url: `${base}/archives/${a.sha256}.tgz` } } });
    expect((await specialize(p.url, byUrl)).status).toBe(200);
    expect(await get(`${p.runtime.url}/`)).toEqual({ status: 200, body: 'from a URL' });
  });

  it('refuses a bad package, a caller without the credential, a malformed body and an entrypoint the runtime cannot load; the pod stays generic and a good request then works', async () => {
    const p = await pod('node');
    const good = specialization(NODE_READER);
    const wrongSum = { ...good, package: { ...good.package, archive: { ...good.package.archive, sha256: 'f'.repeat(64) } } };
    const bad = await specialize(p.url, wrongSum);
    expect(bad.status).toBe(500);
    expect(bad.body).toEqual({ reason: 'BadPackage', error: `Package default/hello: checksum mismatch: the archive's sha256 is not spec.archive.sha256 (${'f'.repeat(64)}); refusing to run it` });
    const unsafeArchive = (rawArchiveFn('evil', [{ path: '../x', data: 'escaped' }])[0] as any).spec.archive;
    const unsafe = await specialize(p.url, { ...good, package: { ...good.package, archive: unsafeArchive } });
    expect(unsafe.status).toBe(500);
    expect(unsafe.body.reason).toBe('BadPackage');
    expect(unsafe.body.error).toContain('unsafe archive, refusing to extract it: ../x: path leaves the code folder');

    expect(await specialize(p.url, good, null)).toMatchObject({ status: 401, body: { reason: 'Unauthorized' } });
    expect(await specialize(p.url, good, 'not-the-token')).toMatchObject({ status: 401, body: { reason: 'Unauthorized' } });
    const malformed = await specialize(p.url, { ...good, package: { ...good.package, archive: { ...good.package.archive, sha256: 'xyz' } }, timeoutSeconds: 'soon' });
    expect(malformed.status).toBe(400);
    expect(malformed.body.reason).toBe('BadRequest');
    expect(malformed.body.error).toContain('body.package.archive.sha256: must match pattern');
    expect(malformed.body.error).toContain('body.timeoutSeconds: must be integer');
    const escaping = await specialize(p.url, { ...good, secrets: [{ namespace: '..', name: 'db', data: {} }] });
    expect(escaping.status).toBe(400);
    expect(escaping.body.error).toContain('body.secrets[0].namespace: must match pattern');

    const refused = await specialize(p.url, { ...good, entrypoint: 'nope' });
    expect(refused.status).toBe(500);
    expect(refused.body.reason).toBe('SpecializationFailed');
    expect(refused.body.error).toMatch(/^function default\/hello: cannot load the function: /);
    // nothing half-done: no code folder, the runtime still generic
    expect(readdirSync(p.runtime.mounts.SPORE_MOUNT_USERFUNC)).toEqual([]);
    expect(JSON.parse((await get(`${p.runtime.url}/healthz`)).body)).toMatchObject({ specialized: false });
    expect(p.fetcher.output()).toContain('failed in');

    expect(await specialize(p.url, { ...good, entrypoint: 'index' })).toEqual({ status: 200, body: { specialized: true } });
    expect((await get(`${p.runtime.url}/`)).body).toBe('hunter2 blue hi undefined');
  });

  it('answers one of two concurrent specializations, and 409 to the other', async () => {
    const p = await pod('node');
    const both = await Promise.all([specialize(p.url, specialization(NODE_READER)), specialize(p.url, specialization(NODE_READER))]);
    expect(both.map((r) => r.status).sort()).toEqual([200, 409]);
  });

  it('refuses to start without SPORE_INSTANCE_TOKEN', () => {
    const r = spawnSync(process.execPath, [BIN, 'fetcher', '--port', '0'], { env: { PATH: process.env.PATH! }, encoding: 'utf8' });
    expect(r.status).not.toBe(0);
    expect(r.stderr).toContain('SPORE_INSTANCE_TOKEN is not set: the fetcher takes its credential from it');
  });
});

describe.each(['node', 'python'] as const)('the %s runtime with its credential in the env', (runtime) => {
  it('stays up without stdin, answers only with the credential, and hides it from the function', async () => {
    const rt = await runtimeContainer(runtime);
    expect((await get(`${rt.url}/healthz`, {})).status).toBe(403);
    expect((await get(`${rt.url}/healthz`, { [TOKEN_HEADER]: 'wrong' })).status).toBe(403);
    expect(await get(`${rt.url}/healthz`)).toMatchObject({ status: 200 });
    const code = tempDir('spore-code-');
    const files = runtime === 'node'
      ? { 'index.mjs': `export default () => new Response(String(process.env.SPORE_INSTANCE_TOKEN) + ' ' + Object.values(process.env).includes(${JSON.stringify(TOKEN)}));` }
      : { 'main.py': `import os\ndef main():\n    return str(os.environ.get("SPORE_INSTANCE_TOKEN")) + " " + str(${JSON.stringify(TOKEN)} in os.environ.values())\n` };
    for (const [name, text] of Object.entries(files)) writeFileSync(join(code, name), text);
    const res = await request(`${rt.url}/v2/specialize`, { method: 'POST', headers: { [TOKEN_HEADER]: TOKEN, 'content-type': 'application/json' }, body: JSON.stringify({ filepath: code, functionName: runtime === 'node' ? 'index' : 'main.main' }) });
    expect(res.statusCode).toBe(202);
    await res.body.dump();
    expect(await get(`${rt.url}/`)).toEqual({ status: 200, body: runtime === 'node' ? 'undefined false' : 'None False' });
    expect(rt.proc.exitCode).toBe(null);
  });
});
