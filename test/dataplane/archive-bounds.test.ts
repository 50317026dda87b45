// Every archive input is bounded: unpacked size and entries (bombs), the
// archive's own size (never read past what the Package declares), and where it
// may come from (no FIFOs, devices, links or paths out). Real tar/gzip streams,
// real files and FIFOs, a real HTTP server on loopback, a real dataplane.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { createGzip } from 'node:zlib';
import { Header } from 'tar';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { archiveLimitsFromEnv, readArchive, type ArchiveLimits } from '../../api/archive.js';
import type { KubeObject } from '../../api/index.js';
import { PackageFetcher, type PackageError } from '../../dataplane/index.js';
import { prepareObjects, type PrepareOptions } from '../../reconciler/prepare.js';
import type { StoredObject } from '../../store/index.js';
import { tempDir } from '../helpers.js';
import { archiveOf, environment, harness } from './harness.js';

const MiB = 1024 ** 2;
const SMALL: ArchiveLimits = { maxArchiveBytes: MiB, maxUnpackedBytes: MiB, maxFiles: 10 };

/** A .tgz streamed through gzip: one header per file, then its zeros, written 1 MiB at a time so the test's own memory stays small. */
async function tgz(files: { path: string; size: number }[]): Promise<Buffer> {
  const gz = createGzip({ level: 1 });
  const out: Buffer[] = [];
  gz.on('data', (c: Buffer) => out.push(c));
  const done = new Promise((r) => gz.on('end', r));
  const zeros = Buffer.alloc(MiB);
  const write = async (b: Buffer) => {
    if (!gz.write(b)) await new Promise((r) => gz.once('drain', r));
  };
  for (const f of files) {
    const block = Buffer.alloc(512);
    new Header({ path: f.path, mode: 0o644, size: f.size, mtime: new Date(0), type: 'File' }).encode(block, 0);
    await write(block);
    for (let left = f.size; left > 0; left -= MiB) await write(left >= MiB ? zeros : Buffer.alloc(left));
    if (f.size % 512) await write(Buffer.alloc(512 - (f.size % 512)));
  }
  await write(Buffer.alloc(1024));
  gz.end();
  await done;
  return Buffer.concat(out);
}

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const pkg = (name: string, archive: Record<string, unknown>): StoredObject => ({ apiVersion: 'spore.dev/v1alpha1', kind: 'Package', metadata: { name, namespace: 'default' }, spec: { archive } }) as unknown as StoredObject;
const failure = (p: Promise<unknown>) => p.then(() => expect.fail('expected a refusal'), (err: PackageError) => err);

let bomb: Buffer; // 256 MiB of zeros in one file, about 256 KiB packed
beforeAll(async () => {
  bomb = await tgz([{ path: 'zeros.bin', size: 256 * MiB }]);
});

describe('unpacking is bounded', () => {
  it('refuses a decompression bomb after unpacking at most the limit: nothing is extracted, memory stays small', async () => {
    const rejected: string[] = [];
    const fetcher = new PackageFetcher({ archiveDir: tempDir(), limits: SMALL, onRejected: (r) => rejected.push(r) });
    const dir = join(tempDir('spore-bomb-'), 'code');
    const before = process.memoryUsage().rss;
    const err = await failure(fetcher.extract(bomb, dir, 'Package default/bomb'));
    const grown = process.memoryUsage().rss - before;
    expect(err.message).toBe('Package default/bomb: refusing to extract the archive: it unpacks to more than 1048576 bytes (SPORE_UNPACKED_MAX_BYTES)');
    expect(existsSync(dir)).toBe(false);
    expect(readdirSync(join(dir, '..'))).toEqual([]); // not even the .tgz
    expect(rejected).toEqual(['unpacked_size']);
    expect(grown).toBeLessThan(64 * MiB); // the bomb unpacks to 256 MiB
  });

  it('refuses an archive with more entries than allowed', async () => {
    const fetcher = new PackageFetcher({ archiveDir: tempDir(), limits: SMALL });
    const dir = join(tempDir('spore-many-'), 'code');
    const many = await tgz(Array.from({ length: 50 }, (_, i) => ({ path: `f${i}.txt`, size: 1 })));
    const err = await failure(fetcher.extract(many, dir, 'Package default/many'));
    expect(err.message).toBe('Package default/many: refusing to extract the archive: it holds more than 10 entries (SPORE_UNPACKED_MAX_FILES)');
    expect(existsSync(dir)).toBe(false);
    // within the limits the same fetcher extracts
    await fetcher.extract(await tgz([{ path: 'ok.txt', size: 3 }]), dir, 'Package default/ok');
    expect(readdirSync(dir)).toEqual(['ok.txt']);
  });

  it('bounds the deploy-time build reading a source archive into memory', async () => {
    const before = process.memoryUsage().rss;
    await expect(readArchive(bomb, { limits: SMALL })).rejects.toMatchObject({ reason: 'unpacked_size', message: 'it unpacks to more than 1048576 bytes' });
    expect(process.memoryUsage().rss - before).toBeLessThan(64 * MiB);
    const many = await tgz(Array.from({ length: 11 }, (_, i) => ({ path: `f${i}`, size: 0 })));
    await expect(readArchive(many, { limits: SMALL })).rejects.toMatchObject({ reason: 'files', message: 'it holds more than 10 entries' });
  });

  it('takes the limits from SPORE_* variables and says which one is malformed', () => {
    expect(archiveLimitsFromEnv({ SPORE_UNPACKED_MAX_BYTES: '64Mi', SPORE_UNPACKED_MAX_FILES: '500', SPORE_ARCHIVE_MAX_BYTES: '1000' })).toEqual({ maxUnpackedBytes: 64 * MiB, maxFiles: 500, maxArchiveBytes: 1000 });
    expect(archiveLimitsFromEnv({})).toEqual({ maxArchiveBytes: 256 * MiB, maxUnpackedBytes: 512 * MiB, maxFiles: 100_000 });
    expect(() => archiveLimitsFromEnv({ SPORE_UNPACKED_MAX_BYTES: 'lots' })).toThrow('SPORE_UNPACKED_MAX_BYTES="lots" must be a positive whole number of bytes, or with Ki, Mi or Gi (512Mi)');
  });
});

describe('archive reads are bounded by the declared size and confined to the archive folder', () => {
  let server: http.Server;
  let base: string;
  let requests = 0;
  let streamed = 0;
  beforeAll(async () => {
    // answers every request with a body far longer than any Package declares, claiming a size of its own
    server = http.createServer(async (_req, res) => {
      requests++;
      res.writeHead(200, { 'content-type': 'application/octet-stream' });
      const chunk = Buffer.alloc(64 * 1024, 1);
      for (let i = 0; i < 4096 && !res.destroyed; i++) {
        streamed += chunk.length;
        if (!res.write(chunk)) {
          await new Promise<void>((r) => {
            const go = () => (res.off('drain', go).off('close', go), r());
            res.on('drain', go).on('close', go);
          });
        }
      }
      res.end();
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(() => new Promise((r) => server.close(r)));

  it('stops reading a response longer than spec.archive.size and does not tell its size', async () => {
    const fetcher = new PackageFetcher({ archiveDir: tempDir(), limits: SMALL });
    const err = await failure(fetcher.bytes(pkg('long', { sha256: 'a'.repeat(64), size: 1000, url: `${base}/a.tgz` })));
    expect(err.message).toBe(`Package default/long: cannot fetch spec.archive.url ${base}/a.tgz: the response is longer than spec.archive.size (1000 bytes)`);
    expect(streamed).toBeLessThan(4096 * 64 * 1024); // the server was cut off, not read to its end
  });

  it('refuses a declared size above the limit without fetching anything', async () => {
    const fetcher = new PackageFetcher({ archiveDir: tempDir(), limits: SMALL });
    const before = requests;
    const err = await failure(fetcher.bytes(pkg('huge', { sha256: 'a'.repeat(64), size: 5 * 1024 ** 3, url: `${base}/huge.tgz` })));
    expect(err.message).toBe('Package default/huge: spec.archive.size is 5368709120 bytes, more than the 1048576 an archive may have (SPORE_ARCHIVE_MAX_BYTES); refusing to fetch it');
    expect(requests).toBe(before);
  });

  it('refuses a FIFO, whether named by file:// or placed in the archive folder, without blocking on it', async () => {
    const archiveDir = tempDir('spore-archives-');
    const fifo = join(archiveDir, `${'c'.repeat(64)}.tgz`);
    execFileSync('mkfifo', [fifo]);
    const rejected: string[] = [];
    const fetcher = new PackageFetcher({ archiveDir, limits: SMALL, onRejected: (r) => rejected.push(r) });
    const byFile = await failure(fetcher.bytes(pkg('fifo', { sha256: 'c'.repeat(64), size: 100, url: pathToFileURL(fifo).href })));
    expect(byFile.message).toBe(`Package default/fifo: spec.archive.url: "${pathToFileURL(fifo).href}": archive URLs are https://, http:// or a path beside the manifests (archives/<sha256>.tgz); file: is not allowed`);
    const inFolder = await failure(fetcher.bytes(pkg('fifo', { sha256: 'c'.repeat(64), size: 100, url: `archives/${'c'.repeat(64)}.tgz` })));
    expect(inFolder.message).toBe(`Package default/fifo: cannot fetch spec.archive.url archives/${'c'.repeat(64)}.tgz: ${fifo} is not a regular file (a FIFO, device, socket or folder); archives must be regular files`);
    expect(rejected).toEqual(['url', 'not_a_file']);
  });

  it('refuses an archive file longer than its declared size, and a symbolic link in the archive folder', async () => {
    const archiveDir = tempDir('spore-archives-');
    const a = archiveOf({ 'index.mjs': 'export default () => new Response("hi")' });
    writeFileSync(join(archiveDir, `${a.sha256}.tgz`), Buffer.concat([a.bytes, Buffer.alloc(10 * MiB)]));
    const fetcher = new PackageFetcher({ archiveDir, limits: SMALL });
    const err = await failure(fetcher.bytes(pkg('long', { sha256: a.sha256, size: a.size, url: `archives/${a.sha256}.tgz` })));
    expect(err.message).toBe(`Package default/long: cannot fetch spec.archive.url archives/${a.sha256}.tgz: ${join(archiveDir, `${a.sha256}.tgz`)} is longer than spec.archive.size (${a.size} bytes)`);
    symlinkSync('/etc/hostname', join(archiveDir, 'link.tgz'));
    const link = await failure(fetcher.bytes(pkg('link', { sha256: a.sha256, size: a.size, url: 'archives/link.tgz' })));
    expect(link.message).toBe(`Package default/link: cannot fetch spec.archive.url archives/link.tgz: ${join(archiveDir, 'link.tgz')} is a symbolic link; archives must be regular files`);
  });
});

describe('prepare copies only archives inside the rendered output', () => {
  const objects = (url: string, size: number, sha256 = 'd'.repeat(64)): KubeObject[] => [
    environment('node', 'node'),
    { apiVersion: 'spore.dev/v1alpha1', kind: 'Package', metadata: { name: 'p' }, spec: { archive: { sha256, size, url } } },
  ];
  const prepare = (outdir: string, list: KubeObject[]) => {
    const archiveDir = tempDir('spore-archives-');
    const options = { outdir, archiveDir, inventory: {}, allowCommands: true } as PrepareOptions;
    return { archiveDir, run: () => prepareObjects(list, options) };
  };

  it('refuses a ".." URL, naming the object and field, and copies nothing', () => {
    const outdir = tempDir('spore-out-');
    const { archiveDir, run } = prepare(outdir, objects('../../../../etc/hostname', 10));
    expect(run).toThrow('Package/default/p: spec.archive.url: "../../../../etc/hostname" must be a plain relative path inside the manifests\' folder');
    expect(readdirSync(archiveDir)).toEqual([]);
  });

  it('refuses a folder that links out of the output, a FIFO, and a file longer than declared', () => {
    const outside = tempDir('spore-outside-');
    writeFileSync(join(outside, 'x.tgz'), 'secret!!!!');
    const linked = tempDir('spore-out-');
    symlinkSync(outside, join(linked, 'archives'));
    expect(prepare(linked, objects('archives/x.tgz', 10)).run).toThrow(`spec.archive.url: archives/x.tgz: leads out of the rendered output ${linked} through a symbolic link`);

    const withFifo = tempDir('spore-out-');
    mkdirSync(join(withFifo, 'archives'));
    execFileSync('mkfifo', [join(withFifo, 'archives', 'f.tgz')]);
    expect(prepare(withFifo, objects('archives/f.tgz', 10)).run).toThrow(`spec.archive.url: archives/f.tgz: ${join(withFifo, 'archives', 'f.tgz')} is not a regular file (a FIFO, device, socket or folder); archives must be regular files`);

    const long = tempDir('spore-out-');
    mkdirSync(join(long, 'archives'));
    writeFileSync(join(long, 'archives', 'l.tgz'), Buffer.alloc(MiB));
    const { archiveDir, run } = prepare(long, objects('archives/l.tgz', 10));
    expect(run).toThrow(`spec.archive.url: archives/l.tgz: ${join(long, 'archives', 'l.tgz')} is longer than spec.archive.size (10 bytes)`);
    expect(readdirSync(archiveDir)).toEqual([]);

    // an archive of the declared size is copied
    const a = archiveOf({ 'index.mjs': 'export default () => new Response("hi")' });
    writeFileSync(join(long, 'archives', `${a.sha256}.tgz`), a.bytes);
    const copied = prepare(long, objects(`archives/${a.sha256}.tgz`, a.size, a.sha256));
    copied.run();
    expect(readdirSync(copied.archiveDir)).toEqual([`${a.sha256}.tgz`]);
    expect(sha(readFileSync(join(copied.archiveDir, `${a.sha256}.tgz`)))).toBe(a.sha256);
  });
});

describe('a served function', () => {
  it('answers a bomb with a clear 500 and counts it in spore_archive_rejected_total', async () => {
    const small = await tgz([{ path: 'index.mjs', size: 2 * MiB }]); // zeros, about 2 KiB packed
    process.env.SPORE_UNPACKED_MAX_BYTES = '1Mi';
    const h = await harness().finally(() => delete process.env.SPORE_UNPACKED_MAX_BYTES);
    try {
      await h.apply([
        environment('node', 'node'),
        { apiVersion: 'spore.dev/v1alpha1', kind: 'Package', metadata: { name: 'bomb' }, spec: { archive: { sha256: sha(small), size: small.length, inline: small.toString('base64') } } },
        { apiVersion: 'spore.dev/v1alpha1', kind: 'Function', metadata: { name: 'bomb' }, spec: { environment: { name: 'node' }, package: { name: 'bomb' } } },
      ]);
      const r = await h.get('/_fn/default/bomb');
      expect(r.status).toBe(500);
      expect(JSON.parse(r.body)).toMatchObject({ error: 'BadPackage', message: 'Package default/bomb: refusing to extract the archive: it unpacks to more than 1048576 bytes (SPORE_UNPACKED_MAX_BYTES)' });
      expect((await h.get('/metrics')).body).toContain('spore_archive_rejected_total{reason="unpacked_size"} 1');
    } finally {
      await h.close();
    }
  });
});
