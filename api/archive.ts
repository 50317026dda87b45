// Deterministic code archives: the same files give the same bytes on every run
// (sorted entries, fixed mtime, owner and modes), so the same commit synthesizes
// byte-identical Packages and their checksums only change with the code. The
// synth packs them; the deploy-time build reads and packs them again.
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { closeSync, constants, fstatSync, lstatSync, openSync, readdirSync, readFileSync, readSync, statSync } from 'node:fs';
import { join, posix, relative, sep } from 'node:path';
import { Readable } from 'node:stream';
import { createGunzip, gzipSync } from 'node:zlib';
import { Header, Parser, Pax, type ReadEntry } from 'tar';

export interface ArchiveEntry {
  /** Path inside the archive, `/`-separated and relative. */
  path: string;
  data: Buffer;
  executable?: boolean;
}

export interface Archive {
  bytes: Buffer;
  sha256: string;
  size: number;
}

const EPOCH = new Date(0);
const BLOCK = 512;

function header(entry: ArchiveEntry): Buffer {
  const fields = { path: entry.path, mode: entry.executable ? 0o755 : 0o644, size: entry.data.length, mtime: EPOCH, type: 'File' as const, uid: 0, gid: 0, uname: '', gname: '' };
  const block = Buffer.alloc(BLOCK);
  const needsPax = new Header(fields).encode(block, 0);
  // paths longer than ustar holds go in a PAX extended header before the entry
  return needsPax ? Buffer.concat([new Pax({ path: entry.path, mtime: EPOCH }).encode(), block]) : block;
}

const safePath = (path: string) => !!path && !path.startsWith('/') && !path.split('/').some((s) => s === '..' || s === '');

/** Packs entries into a gzip-compressed tar, sorted by path, with fixed metadata. */
export function packArchive(entries: readonly ArchiveEntry[]): Archive {
  const sorted = [...entries].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  const parts: Buffer[] = [];
  for (let i = 0; i < sorted.length; i++) {
    const entry = sorted[i];
    if (!safePath(entry.path)) throw new Error(`archive entry "${entry.path}" must be a relative path without ".." or empty segments`);
    if (i > 0 && sorted[i - 1].path === entry.path) throw new Error(`archive entry "${entry.path}" appears twice`);
    parts.push(header(entry), entry.data, Buffer.alloc((BLOCK - (entry.data.length % BLOCK)) % BLOCK));
  }
  parts.push(Buffer.alloc(BLOCK * 2));
  // gzip's header carries no name and a zero mtime when compressing a buffer,
  // but it records the operating system: fix it, so every platform gives the same bytes
  const bytes = gzipSync(Buffer.concat(parts), { level: 9 });
  bytes[9] = 3; // Unix
  return { bytes, sha256: createHash('sha256').update(bytes).digest('hex'), size: bytes.length };
}

export interface ReadDirectoryOptions {
  /** Names of files or folders skipped at any depth; `*.ext` matches by suffix. */
  exclude?: readonly string[];
}

/**
 * Reads every regular file under `dir` as archive entries. Symbolic links to
 * files are stored as the file they point to; links to folders are refused, so
 * an archive never depends on what lies outside the folder's tree shape.
 */
export function readDirectory(dir: string, options: ReadDirectoryOptions = {}): ArchiveEntry[] {
  const patterns = options.exclude ?? [];
  const excluded = (name: string) => patterns.some((p) => (p.startsWith('*') ? name.endsWith(p.slice(1)) : name === p));
  const entries: ArchiveEntry[] = [];
  const walk = (folder: string) => {
    for (const name of readdirSync(folder).sort()) {
      if (excluded(name)) continue;
      const full = join(folder, name);
      const rel = relative(dir, full).split(sep).join(posix.sep);
      const link = lstatSync(full);
      const stat = link.isSymbolicLink() ? statSync(full, { throwIfNoEntry: false }) : link;
      if (!stat) throw new Error(`${rel} is a broken symbolic link`);
      if (stat.isDirectory()) {
        if (link.isSymbolicLink()) throw new Error(`${rel} is a symbolic link to a folder; archives hold files only`);
        walk(full);
      } else if (stat.isFile()) {
        entries.push({ path: rel, data: readFileSync(full), executable: (stat.mode & 0o111) !== 0 });
      }
    }
  };
  walk(dir);
  return entries;
}

/** Bounds on one code archive, so that no package can fill the memory or the disk. */
export interface ArchiveLimits {
  /** The .tgz itself (what spec.archive.size may say). */
  maxArchiveBytes: number;
  /** Its unpacked tar stream: every file's bytes and headers. */
  maxUnpackedBytes: number;
  /** Entries: files, folders and links. */
  maxFiles: number;
}

/** Sized for functions: code and its dependencies, not data sets. */
export const DEFAULT_ARCHIVE_LIMITS: Readonly<ArchiveLimits> = { maxArchiveBytes: 256 * 1024 ** 2, maxUnpackedBytes: 512 * 1024 ** 2, maxFiles: 100_000 };

/** The variables that set the limits (on `spore up` and in the dataplane and reconciler containers). */
export const ARCHIVE_LIMIT_VARIABLES: Readonly<Record<keyof ArchiveLimits, string>> = {
  maxArchiveBytes: 'SPORE_ARCHIVE_MAX_BYTES',
  maxUnpackedBytes: 'SPORE_UNPACKED_MAX_BYTES',
  maxFiles: 'SPORE_UNPACKED_MAX_FILES',
};

const UNITS: Record<string, number> = { '': 1, Ki: 1024, Mi: 1024 ** 2, Gi: 1024 ** 3 };

/** The limits set by SPORE_* variables (sizes in bytes, or with Ki, Mi or Gi), the defaults for the others; throws on a malformed value. */
export function archiveLimitsFromEnv(env: Record<string, string | undefined> = process.env): ArchiveLimits {
  const limits = { ...DEFAULT_ARCHIVE_LIMITS };
  for (const [key, name] of Object.entries(ARCHIVE_LIMIT_VARIABLES) as [keyof ArchiveLimits, string][]) {
    const raw = env[name]?.trim();
    if (!raw) continue;
    const m = /^(\d+)(Ki|Mi|Gi)?$/.exec(raw);
    if (!m || (key === 'maxFiles' && m[2]) || Number(m[1]) < 1) throw new Error(`${name}="${raw}" must be a positive whole number${key === 'maxFiles' ? '' : ' of bytes, or with Ki, Mi or Gi (512Mi)'}`);
    limits[key] = Number(m[1]) * UNITS[m[2] ?? ''];
  }
  return limits;
}

/** Why an archive was refused: a small fixed set, fit for a metric label. */
export type ArchiveRejection = 'archive_size' | 'unpacked_size' | 'files' | 'not_a_file' | 'url' | 'checksum' | 'unsafe_entry' | 'invalid';

export class ArchiveError extends Error {
  constructor(
    message: string,
    readonly reason: ArchiveRejection,
  ) {
    super(message);
    this.name = 'ArchiveError';
  }
}

/**
 * Reads an archive file of exactly `size` bytes without following a final
 * symbolic link and without blocking on a FIFO (opened non-blocking, then
 * refused as not a regular file, as are devices). Never reads past `size`: a
 * file of another size is refused, saying only the declared size, so an error
 * tells nothing about files it was not meant to read.
 */
export function readArchiveFile(path: string, size: number): Buffer {
  let fd: number;
  try {
    fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ELOOP') throw new ArchiveError(`${path} is a symbolic link; archives must be regular files`, 'not_a_file');
    throw new ArchiveError(code === 'ENOENT' ? `${path} does not exist` : `cannot open ${path}: ${(err as Error).message}`, 'invalid');
  }
  try {
    const stat = fstatSync(fd);
    if (!stat.isFile()) throw new ArchiveError(`${path} is not a regular file (a FIFO, device, socket or folder); archives must be regular files`, 'not_a_file');
    if (stat.size !== size) throw new ArchiveError(`${path} is ${stat.size > size ? 'longer' : 'shorter'} than spec.archive.size (${size} bytes)`, 'archive_size');
    const bytes = Buffer.alloc(size);
    let read = 0;
    while (read < size) {
      const n = readSync(fd, bytes, read, size - read, read);
      if (n === 0) throw new ArchiveError(`${path} is shorter than spec.archive.size (${size} bytes)`, 'archive_size');
      read += n;
    }
    if (readSync(fd, Buffer.alloc(1), 0, 1, size) !== 0) throw new ArchiveError(`${path} is longer than spec.archive.size (${size} bytes)`, 'archive_size');
    return bytes;
  } finally {
    closeSync(fd);
  }
}

const GZIP = [0x1f, 0x8b];
const ZSTD = [0x28, 0xb5, 0x2f, 0xfd];
const startsWith = (b: Buffer, magic: number[]) => magic.every((x, i) => b[i] === x);

/**
 * Reads a .tgz (or a plain tar) entry by entry, giving each to `onEntry` (its
 * data flows to listeners added there, then is dropped). Stops as soon as the
 * unpacked stream passes `maxUnpackedBytes` or the entries pass `maxFiles`: a
 * bomb is refused after unpacking at most the limit, in small chunks, and
 * nothing is written anywhere.
 */
export async function walkArchive(bytes: Buffer, limits: Pick<ArchiveLimits, 'maxUnpackedBytes' | 'maxFiles'>, onEntry: (entry: ReadEntry) => void): Promise<void> {
  const source = startsWith(bytes, GZIP) ? Readable.from([bytes]).pipe(createGunzip()) : Readable.from([bytes]);
  const parser = new Parser({ strict: true });
  let failure: ArchiveError | undefined;
  const fail = (err: ArchiveError) => (failure ??= err);
  let entries = 0;
  parser.on('entry', (entry: ReadEntry) => {
    if (++entries > limits.maxFiles) fail(new ArchiveError(`it holds more than ${limits.maxFiles} entries`, 'files'));
    if (!failure) onEntry(entry);
    entry.resume();
  });
  parser.on('error', (err: Error) => fail(new ArchiveError(`not a valid .tgz: ${err.message}`, 'invalid')));
  // resolves on the event, or as soon as the parser fails, so a failure never leaves us waiting
  const settled = (event: string) =>
    new Promise<void>((resolve) => {
      const done = () => {
        parser.off(event, done).off('error', done).off('abort', done);
        resolve();
      };
      parser.on(event, done).on('error', done).on('abort', done);
    });
  let unpacked = 0;
  let head = Buffer.alloc(0);
  try {
    for await (const chunk of source as AsyncIterable<Buffer>) {
      unpacked += chunk.length;
      if (unpacked > limits.maxUnpackedBytes) fail(new ArchiveError(`it unpacks to more than ${limits.maxUnpackedBytes} bytes`, 'unpacked_size'));
      if (head.length < ZSTD.length) {
        head = Buffer.concat([head, chunk]);
        // the parser would decompress an inner layer itself, past our count
        if (head.length >= ZSTD.length && (startsWith(head, GZIP) || startsWith(head, ZSTD))) fail(new ArchiveError('it is compressed twice', 'invalid'));
      }
      if (failure) break;
      if (!parser.write(chunk)) await settled('drain');
      if (failure) break;
    }
  } catch (err) {
    fail(new ArchiveError(`not a valid .tgz: ${(err as Error).message}`, 'invalid'));
  }
  if (!failure) {
    const ended = settled('end');
    parser.end();
    await ended;
  }
  source.destroy();
  if (failure) {
    parser.abort(failure);
    throw failure;
  }
}

export interface ReadArchiveOptions {
  /** Refuses archives whose unpacked stream is larger or that hold more entries. @default DEFAULT_ARCHIVE_LIMITS */
  limits?: Pick<ArchiveLimits, 'maxUnpackedBytes' | 'maxFiles'>;
}

/**
 * Reads a .tgz into entries, in memory: only regular files (folders are
 * implied by paths), each at a relative path that stays inside the archive.
 * Links, devices and paths leading out are refused, not skipped, so that what
 * is packed again is everything the archive held. Bounded as walkArchive is.
 */
export async function readArchive(bytes: Buffer, options: ReadArchiveOptions = {}): Promise<ArchiveEntry[]> {
  const entries: ArchiveEntry[] = [];
  const problems: string[] = [];
  await walkArchive(bytes, options.limits ?? DEFAULT_ARCHIVE_LIMITS, (entry) => {
    const path = entry.path.replace(/^(\.\/)+/, '').replace(/\/$/, '');
    if (entry.type === 'Directory' && (path === '.' || path === '' || safePath(path))) return;
    if (!['File', 'OldFile', 'ContiguousFile'].includes(entry.type)) problems.push(`${entry.path}: entries of type ${entry.type} are not allowed`);
    else if (!safePath(path)) problems.push(`${entry.path}: path leaves the archive`);
    if (problems.length) return;
    const chunks: Buffer[] = [];
    entry.on('data', (c: Buffer) => chunks.push(c));
    entry.on('end', () => entries.push({ path, data: Buffer.concat(chunks), executable: ((entry.mode ?? 0o644) & 0o111) !== 0 }));
  });
  if (problems.length) throw new ArchiveError(`unsafe archive: ${problems.slice(0, 5).join('; ')}`, 'unsafe_entry');
  return entries;
}
