// On a cluster the dataplane downloads Package archives from the reconciler's
// server (GET /archives/<sha256>.tgz), and prepare points Package URLs there.
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { KubeObject } from '../../api/index.js';
import { packArchive } from '../../constructs/archive.js';
import { buildPackages } from '../../reconciler/build.js';
import { GitSource } from '../../reconciler/git-source.js';
import { PrepareError, prepareObjects } from '../../reconciler/prepare.js';
import { Reconciler, type ReconcilerOptions } from '../../reconciler/reconciler.js';
import { reconcilerServer } from '../../reconciler/server.js';
import { SqliteStore } from '../../store/index.js';
import { environment, harness } from '../dataplane/harness.js';
import { tempDir } from '../helpers.js';

const API = 'spore.dev/v1alpha1';
const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** A function's archive over the 256 KiB that fit in etcd (random bytes do not compress). */
const big = packArchive([
  { path: 'index.mjs', data: Buffer.from(`export default () => new Response('served from the reconciler')`) },
  { path: 'blob.bin', data: randomBytes(300 * 1024) },
]);

const pkg = (name: string, archive: { sha256: string; size: number; url: string }): KubeObject => ({ apiVersion: API, kind: 'Package', metadata: { name }, spec: { archive } });
const fnOf = (name: string): KubeObject[] => [
  { apiVersion: API, kind: 'Function', metadata: { name }, spec: { environment: { name: 'node' }, package: { name } } },
  { apiVersion: API, kind: 'HttpTrigger', metadata: { name }, spec: { methods: ['GET'], path: `/${name}`, function: { name } } },
];

/** A rendered output with `archive` at `url` (relative), as the synth writes it. */
function rendered(url: string, archive = big): string {
  const outdir = tempDir('spore-render-');
  mkdirSync(join(outdir, url, '..'), { recursive: true });
  writeFileSync(join(outdir, url), archive.bytes);
  return outdir;
}

let state: string;
let archiveDir: string;
let store: SqliteStore;
let rec: Reconciler;
let server: FastifyInstance;
let base: string;

/** A reconciler that is never started: only its server and options matter here. */
const reconciler = (o: Partial<ReconcilerOptions> = {}) =>
  new Reconciler({ ...{ store, history: store }, source: new GitSource(join(state, 'no-repo'), join(state, 'mirror')), workDir: join(state, 'work'), archiveDir, app: 'shop', report: () => {}, ...o });

beforeAll(async () => {
  state = tempDir('spore-archives-');
  archiveDir = join(state, 'archives');
  store = new SqliteStore(join(state, 'spore.db'));
  rec = reconciler();
  server = reconcilerServer({ reconciler: rec, apiToken: 'tok3n', report: () => {} });
  base = await server.listen({ port: 0, host: '127.0.0.1' });
  mkdirSync(archiveDir, { recursive: true });
  writeFileSync(join(archiveDir, `${big.sha256}.tgz`), big.bytes);
});
afterAll(async () => {
  await server.close();
  await rec.close();
  await store.close();
});

const get = async (path: string, method: 'GET' | 'HEAD' = 'GET') => {
  const res = await request(`${base}${path}`, { method });
  return { status: res.statusCode, headers: res.headers, body: Buffer.from(await res.body.arrayBuffer()) };
};
/** Sends the path as it is (undici resolves `..` before sending). */
const raw = (path: string) =>
  new Promise<{ status: number; body: string }>((done, fail) => {
    http.get({ host: '127.0.0.1', port: new URL(base).port, path }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (c) => (body += c)).on('end', () => done({ status: res.statusCode!, body }));
    }).on('error', fail);
  });
const message = (r: { body: Buffer }) => JSON.parse(r.body.toString()).message as string;

describe('GET /archives/<sha256>.tgz', () => {
  it('serves the archive without the API token, its bytes hashing to its name, with content-addressed headers', async () => {
    const r = await get(`/archives/${big.sha256}.tgz`);
    expect(r.status).toBe(200);
    expect(sha256(r.body)).toBe(big.sha256);
    expect(r.headers).toMatchObject({
      'content-type': 'application/gzip',
      'content-length': String(big.size),
      etag: `"${big.sha256}"`,
      'cache-control': 'public, max-age=31536000, immutable',
    });
    expect((await get('/status')).status).toBe(401); // the API still needs it
  });

  it('answers HEAD with the headers and no body', async () => {
    const r = await get(`/archives/${big.sha256}.tgz`, 'HEAD');
    expect(r.status).toBe(200);
    expect(r.headers).toMatchObject({ 'content-type': 'application/gzip', 'content-length': String(big.size), etag: `"${big.sha256}"` });
    expect(r.body.length).toBe(0);
  });

  it('refuses names that are not <sha256>.tgz, saying the form expected', async () => {
    for (const name of ['..%2Fspore.db', '..%2F..%2Fetc%2Fpasswd', 'abc.tgz', `${big.sha256.toUpperCase()}.tgz`, `${big.sha256}.tgz.partial-1`, big.sha256]) {
      const r = await get(`/archives/${name}`);
      expect(r.status, name).toBe(400);
      expect(message(r)).toBe(`archive name "${decodeURIComponent(name)}": expected <sha256>.tgz, the sha256 in 64 lowercase hex digits`);
    }
    // a path that climbs out is no archive name, and the API behind it stays closed
    for (const path of ['/archives/../status', '/archives/%2e%2e/status', '/archives/x/../../status']) {
      const climb = await raw(path);
      expect(climb.status, path).toBe(404);
      expect(climb.body, path).not.toContain('stage');
    }
  });

  it('says which archive is missing, and never follows a link out of the archive folder', async () => {
    const missing = 'c'.repeat(64);
    const r = await get(`/archives/${missing}.tgz`);
    expect(r.status).toBe(404);
    expect(message(r)).toBe(`no archive ${missing}.tgz: the reconciler has not rendered it`);

    const secret = join(state, 'secret.tgz');
    writeFileSync(secret, 'not for pods');
    const linked = 'd'.repeat(64);
    symlinkSync(secret, join(archiveDir, `${linked}.tgz`));
    const l = await get(`/archives/${linked}.tgz`);
    expect(l.status).toBe(404);
    expect(message(l)).toBe(`archive ${linked}.tgz is a symbolic link; only regular files are served`);
    expect(l.body.toString()).not.toContain('not for pods');
  });
});

describe('prepare with archiveUrl', () => {
  it('points relative archive URLs at the reconciler, kept under their sha256 in the archive folder', () => {
    const dir = tempDir('spore-served-');
    const outdir = rendered('code/app.tgz'); // a hand-written manifest may name its archive anything
    const [p] = prepareObjects([pkg('api', { sha256: big.sha256, size: big.size, url: 'code/app.tgz' })], {
      outdir,
      archiveDir: dir,
      archiveUrl: 'http://spore-reconciler.spore-system:8082/',
      inventory: {},
      allowCommands: false,
    });
    expect((p.spec as any).archive).toEqual({ sha256: big.sha256, size: big.size, url: `http://spore-reconciler.spore-system:8082/archives/${big.sha256}.tgz` });
    expect(sha256(readFileSync(join(dir, `${big.sha256}.tgz`)))).toBe(big.sha256);
  });

  it('leaves relative URLs as they are without it (spore up)', () => {
    const url = `archives/${big.sha256}.tgz`;
    const [p] = prepareObjects([pkg('api', { sha256: big.sha256, size: big.size, url })], { outdir: rendered(url), archiveDir: tempDir(), inventory: {}, allowCommands: false });
    expect((p.spec as any).archive.url).toBe(url);
  });

  it('refuses a file whose sha256 is not the Package\'s: served under that name, it would replace another archive', () => {
    const wrong = 'e'.repeat(64);
    const o = { outdir: rendered(`archives/${wrong}.tgz`), archiveDir: tempDir(), archiveUrl: base, inventory: {}, allowCommands: false };
    const err = (() => {
      try {
        prepareObjects([pkg('api', { sha256: wrong, size: big.size, url: `archives/${wrong}.tgz` })], o);
      } catch (e) {
        return e as PrepareError;
      }
    })();
    expect(err).toBeInstanceOf(PrepareError);
    expect(err).toMatchObject({ object: 'Package/default/api', message: `spec.archive.url: archives/${wrong}.tgz: the file's sha256 is ${big.sha256}, spec.archive.sha256 says ${wrong}` });
  });

  it('builds a Python package from its served source, the built archive served too', async () => {
    const source = packArchive([
      { path: 'main.py', data: Buffer.from('def main(): return "ok"\n') },
      { path: 'requirements.txt', data: Buffer.from('# nothing to install\n') },
    ]);
    const url = `archives/${source.sha256}.tgz`;
    const [p] = prepareObjects([{ ...pkg('py', { sha256: source.sha256, size: source.size, url }), spec: { archive: { sha256: source.sha256, size: source.size, url }, build: { requirements: 'requirements.txt' } } }], {
      outdir: rendered(url, source),
      archiveDir,
      archiveUrl: base,
      inventory: {},
      allowCommands: false,
    });
    expect((p.spec as any).archive.url).toBe(`${base}/archives/${source.sha256}.tgz`);
    const { objects } = await buildPackages([p], { archiveDir, archiveUrl: base, cacheDir: join(state, 'python') });
    const built = (objects[0].spec as any).archive;
    expect((objects[0].spec as any).build.sourceSha256).toBe(source.sha256); // built (nothing to install: the same files)
    expect(built.url).toBe(`${base}/archives/${built.sha256}.tgz`);
    const r = await get(`/archives/${built.sha256}.tgz`);
    expect(r.status).toBe(200);
    expect(sha256(r.body)).toBe(built.sha256);
  });

  it('refuses a reconciler started with an archive URL that is not http(s)://host', () => {
    expect(() => reconciler({ archiveUrl: 'spore-reconciler:8082' })).toThrow(
      'archive URL "spore-reconciler:8082": expected the reconciler\'s address as the dataplane reaches it, http(s)://host[:port][/path] (e.g. http://spore-reconciler.spore-system:8082)',
    );
  });
});

describe('the dataplane downloads a served archive', () => {
  it('specializes an instance from it, and refuses one whose sha256 the Package does not give', async () => {
    const outdir = rendered(`archives/${big.sha256}.tgz`);
    const served = prepareObjects([pkg('big', { sha256: big.sha256, size: big.size, url: `archives/${big.sha256}.tgz` })], { outdir, archiveDir, archiveUrl: base, inventory: {}, allowCommands: false });
    const h = await harness();
    try {
      // the dataplane's own archive folder is empty: the bytes can only come from the reconciler
      await h.apply([environment('node', 'node'), ...served, ...fnOf('big')]);
      const ok = await h.get('/big');
      expect(ok).toMatchObject({ status: 200, body: 'served from the reconciler' });

      const wrong = sha256(Buffer.from('another archive'));
      await h.apply([pkg('tampered', { sha256: wrong, size: big.size, url: `${base}/archives/${big.sha256}.tgz` }), ...fnOf('tampered')]);
      const bad = await h.get('/tampered');
      expect(bad.status).toBe(500);
      expect(JSON.parse(bad.body).message).toBe(`Package default/tampered: checksum mismatch: the archive's sha256 is not spec.archive.sha256 (${wrong}); refusing to run it`);
    } finally {
      await h.close();
    }
  });
});
