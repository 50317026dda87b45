// Getting a Package's code into an instance's folder: fetch (inline or URL),
// verify the sha256, refuse archives whose entries would land outside the
// folder (zip-slip) or that hold devices or links out, then extract.
import { createHash } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { isAbsolute, join, posix } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as tar from 'tar';
import { request } from 'undici';
import type { StoredObject } from '../../store/index.js';

export class PackageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'PackageError';
  }
}

interface ArchiveSpec {
  sha256: string;
  size: number;
  inline?: string;
  url?: string;
}

export interface PackageFetcherOptions {
  /** Where relative archive URLs (archives/<sha256>.tgz) are found. */
  archiveDir: string;
  /** Verified archives kept in memory, by sha256. @default 64 */
  cacheEntries?: number;
}

export class PackageFetcher {
  private readonly cache = new Map<string, Buffer>();

  constructor(private readonly options: PackageFetcherOptions) {}

  /** The archive bytes of a Package, verified against its sha256. */
  async bytes(pkg: StoredObject): Promise<Buffer> {
    const archive = (pkg.spec as { archive: ArchiveSpec }).archive;
    const name = `Package ${pkg.metadata.namespace}/${pkg.metadata.name}`;
    const hit = this.cache.get(archive.sha256);
    if (hit) return hit;
    let bytes: Buffer;
    if (archive.inline !== undefined) bytes = Buffer.from(archive.inline, 'base64');
    else if (archive.url) bytes = await this.download(archive.url, name, archive.size);
    else throw new PackageError(`${name} has neither inline bytes nor a URL`);
    if (bytes.length !== archive.size) throw new PackageError(`${name}: the archive has ${bytes.length} bytes, the Package says ${archive.size}; refusing to run it`);
    const sha = createHash('sha256').update(bytes).digest('hex');
    if (sha !== archive.sha256) throw new PackageError(`${name}: checksum mismatch: the archive's sha256 is ${sha}, the Package says ${archive.sha256}; refusing to run it`);
    this.cache.set(archive.sha256, bytes);
    if (this.cache.size > (this.options.cacheEntries ?? 64)) this.cache.delete(this.cache.keys().next().value!);
    return bytes;
  }

  private async download(url: string, name: string, limit: number): Promise<Buffer> {
    try {
      if (/^https?:\/\//.test(url)) {
        const res = await request(url, { maxRedirections: 3, headersTimeout: 30_000, bodyTimeout: 60_000 });
        if (res.statusCode !== 200) {
          await res.body.dump();
          throw new Error(`HTTP ${res.statusCode}`);
        }
        const declared = Number(res.headers['content-length'] ?? 0);
        if (declared > limit) {
          res.body.destroy();
          throw new Error(`it is ${declared} bytes, the Package says ${limit}`);
        }
        const chunks: Buffer[] = [];
        let received = 0;
        for await (const chunk of res.body) {
          received += chunk.length;
          if (received > limit) {
            res.body.destroy();
            throw new Error(`it is larger than the ${limit} bytes the Package says`);
          }
          chunks.push(chunk);
        }
        return Buffer.concat(chunks);
      }
      if (url.startsWith('file://')) return await readFile(fileURLToPath(url));
      if (isAbsolute(url) || url.split('/').includes('..')) throw new Error('a relative archive URL must stay inside the archive folder');
      return await readFile(join(this.options.archiveDir, url.split('/').pop()!)); // archives/<sha>.tgz is kept as <sha>.tgz
    } catch (err) {
      throw new PackageError(`${name}: cannot fetch ${url}: ${(err as Error).message}`);
    }
  }

  /** Writes and checks the archive, then extracts it into `dir` (which must be empty or new). */
  async extract(bytes: Buffer, dir: string, name: string): Promise<void> {
    mkdirSync(dir, { recursive: true });
    const file = `${dir}.tgz`;
    writeFileSync(file, bytes);
    const problems: string[] = [];
    try {
      await tar.t({
        file,
        strict: true,
        onReadEntry: (entry) => {
          const problem = unsafe(entry.path, entry.type, entry.linkpath);
          if (problem) problems.push(problem);
        },
      });
    } catch (err) {
      throw new PackageError(`${name}: the archive is not a valid .tgz: ${(err as Error).message}`);
    }
    if (problems.length) throw new PackageError(`${name}: unsafe archive, refusing to extract it: ${problems.slice(0, 5).join('; ')}`);
    try {
      await tar.x({ file, cwd: dir, strict: true, preservePaths: false, preserveOwner: false });
    } catch (err) {
      throw new PackageError(`${name}: cannot extract the archive: ${(err as Error).message}`);
    }
  }
}

const ALLOWED = new Set(['File', 'OldFile', 'ContiguousFile', 'Directory', 'SymbolicLink', 'Link', 'ExtendedHeader', 'GlobalExtendedHeader', 'NextFileHasLongPath', 'NextFileHasLongLinkpath']);

/** Why an entry may not be extracted, or undefined if it is safe. */
export function unsafe(path: string, type: string, linkpath?: string): string | undefined {
  if (!ALLOWED.has(type)) return `${path}: entries of type ${type} are not allowed`;
  const escapes = (p: string, base = '.') => {
    if (p.startsWith('/') || /^[A-Za-z]:/.test(p)) return true;
    return posix.normalize(posix.join(base, p)).split('/')[0] === '..';
  };
  if (escapes(path)) return `${path}: path leaves the code folder`;
  if ((type === 'SymbolicLink' || type === 'Link') && linkpath !== undefined) {
    // links may not climb at all: through other links, `..` can lead anywhere
    if (linkpath.startsWith('/') || linkpath.split('/').includes('..')) return `${path}: link to ${linkpath} may leave the code folder`;
  }
  return undefined;
}
