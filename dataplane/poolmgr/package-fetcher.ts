// Getting a Package's code into an instance's folder: fetch (inline or URL),
// verify the sha256, refuse archives whose entries would land outside the
// folder (zip-slip), that hold devices or links out, or that pass the limits
// (archive size, unpacked size, entries), then extract.
import { createHash } from 'node:crypto';
import { chownSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join, posix } from 'node:path';
import * as tar from 'tar';
import { request } from 'undici';
import { ArchiveError, archiveLimitsFromEnv, readArchiveFile, walkArchive, type ArchiveLimits, type ArchiveRejection } from '../../api/archive.js';
import { archiveUrlProblem } from '../../api/rules.js';

export class PackageError extends Error {
  constructor(
    message: string,
    readonly reason?: ArchiveRejection,
  ) {
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

/** A Package as the store holds it, or as a specialization request carries it. */
export interface PackageSource {
  metadata: { namespace?: string; name: string };
  spec?: unknown;
}

export interface PackageFetcherOptions {
  /** Where relative archive URLs (archives/<sha256>.tgz) are found; none in a pod, where only absolute URLs can be fetched. */
  archiveDir?: string;
  /** Verified archives kept in memory, by sha256. @default 64 */
  cacheEntries?: number;
  /** Bytes of verified archives kept in memory. @default 256 MiB */
  cacheBytes?: number;
  /** @default archiveLimitsFromEnv(): the SPORE_* variables, else DEFAULT_ARCHIVE_LIMITS */
  limits?: ArchiveLimits;
  /** Told of every archive refused, with the reason (for the metric). */
  onRejected?: (reason: ArchiveRejection) => void;
}

export class PackageFetcher {
  private readonly cache = new Map<string, Buffer>();
  private cached = 0;
  readonly limits: ArchiveLimits;

  constructor(private readonly options: PackageFetcherOptions) {
    this.limits = options.limits ?? archiveLimitsFromEnv();
  }

  /** The archive bytes of a Package, verified against its sha256. */
  async bytes(pkg: PackageSource): Promise<Buffer> {
    const archive = (pkg.spec as { archive: ArchiveSpec }).archive;
    const name = `Package ${pkg.metadata.namespace}/${pkg.metadata.name}`;
    const hit = this.cache.get(archive.sha256);
    if (hit) return hit;
    const refuse = (message: string, reason: ArchiveRejection) => this.refuse(new PackageError(`${name}: ${message}`, reason));
    if (archive.size > this.limits.maxArchiveBytes) {
      throw refuse(`spec.archive.size is ${archive.size} bytes, more than the ${this.limits.maxArchiveBytes} an archive may have (SPORE_ARCHIVE_MAX_BYTES); refusing to fetch it`, 'archive_size');
    }
    let bytes: Buffer;
    if (archive.inline !== undefined) bytes = Buffer.from(archive.inline, 'base64');
    else if (archive.url) bytes = await this.download(archive.url, name, archive.size);
    else throw new PackageError(`${name} has neither inline bytes nor a URL`);
    if (bytes.length !== archive.size) throw refuse(`the archive is ${bytes.length < archive.size ? 'shorter' : 'longer'} than spec.archive.size (${archive.size} bytes); refusing to run it`, 'archive_size');
    const sha = createHash('sha256').update(bytes).digest('hex');
    // the actual checksum is not said: it would tell what lies at a URL the Package was not meant to read
    if (sha !== archive.sha256) throw refuse(`checksum mismatch: the archive's sha256 is not spec.archive.sha256 (${archive.sha256}); refusing to run it`, 'checksum');
    this.cache.set(archive.sha256, bytes);
    this.cached += bytes.length;
    while (this.cache.size > (this.options.cacheEntries ?? 64) || (this.cache.size > 1 && this.cached > (this.options.cacheBytes ?? 256 * 1024 ** 2))) {
      const [oldest, old] = this.cache.entries().next().value!;
      this.cache.delete(oldest);
      this.cached -= old.length;
    }
    return bytes;
  }

  private refuse(err: PackageError): PackageError {
    if (err.reason) this.options.onRejected?.(err.reason);
    return err;
  }

  private async download(url: string, name: string, limit: number): Promise<Buffer> {
    const problem = archiveUrlProblem(url);
    if (problem) throw this.refuse(new PackageError(`${name}: spec.archive.url: ${problem}`, 'url'));
    try {
      if (/^https?:\/\//i.test(url)) {
        const res = await request(url, { maxRedirections: 3, headersTimeout: 30_000, bodyTimeout: 60_000 });
        if (res.statusCode !== 200) {
          await res.body.dump();
          throw new Error(`HTTP ${res.statusCode}`);
        }
        // the response's own size is never said: it would tell what lies at the URL
        const tooLong = () => new ArchiveError(`the response is longer than spec.archive.size (${limit} bytes)`, 'archive_size');
        if (Number(res.headers['content-length'] ?? 0) > limit) {
          res.body.destroy();
          throw tooLong();
        }
        const chunks: Buffer[] = [];
        let received = 0;
        for await (const chunk of res.body) {
          received += chunk.length;
          if (received > limit) {
            res.body.destroy();
            throw tooLong();
          }
          chunks.push(chunk);
        }
        return Buffer.concat(chunks);
      }
      if (this.options.archiveDir === undefined) {
        throw new Error("a relative URL names a file in the reconciler's state folder, which a pod cannot read: start the reconciler with --archive-url so that Packages carry an absolute URL");
      }
      // archives/<sha>.tgz is kept as <sha>.tgz in the archive folder
      return readArchiveFile(join(this.options.archiveDir, url.split('/').pop()!), limit);
    } catch (err) {
      const reason = err instanceof ArchiveError ? err.reason : undefined;
      throw this.refuse(new PackageError(`${name}: cannot fetch spec.archive.url ${url}: ${(err as Error).message}`, reason));
    }
  }

  /** Writes and checks the archive, then extracts it into `dir` (which must be empty or new), its files owned by `owner` if given. */
  async extract(bytes: Buffer, dir: string, name: string, owner?: { uid: number; gid: number }): Promise<void> {
    // checked whole before anything is written: a refused archive leaves nothing behind
    const problems: string[] = [];
    try {
      await walkArchive(bytes, this.limits, (entry) => {
        const problem = unsafe(entry.path, entry.type, entry.linkpath);
        if (problem) problems.push(problem);
      });
    } catch (err) {
      const e = err as ArchiveError;
      const limit = e.reason === 'unpacked_size' ? ' (SPORE_UNPACKED_MAX_BYTES)' : e.reason === 'files' ? ' (SPORE_UNPACKED_MAX_FILES)' : '';
      throw this.refuse(new PackageError(`${name}: refusing to extract the archive: ${e.message}${limit}`, e.reason ?? 'invalid'));
    }
    if (problems.length) throw this.refuse(new PackageError(`${name}: unsafe archive, refusing to extract it: ${problems.slice(0, 5).join('; ')}`, 'unsafe_entry'));
    mkdirSync(dir, { recursive: true });
    if (owner) chownSync(dir, owner.uid, owner.gid);
    const file = `${dir}.tgz`;
    writeFileSync(file, bytes);
    try {
      await tar.x({ file, cwd: dir, strict: true, preservePaths: false, ...(owner ? { uid: owner.uid, gid: owner.gid } : { preserveOwner: false }) });
    } catch (err) {
      throw new PackageError(`${name}: cannot extract the archive: ${(err as Error).message}`);
    } finally {
      rmSync(file, { force: true });
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
