// Deterministic code archives: the same files give the same bytes on every run
// (sorted entries, fixed mtime, owner and modes), so the same commit synthesizes
// byte-identical Packages and their checksums only change with the code. The
// synth packs them; the deploy-time build reads and packs them again.
import { createHash } from 'node:crypto';
import { lstatSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join, posix, relative, sep } from 'node:path';
import { gzipSync } from 'node:zlib';
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

export interface ReadArchiveOptions {
  /** Refuses archives whose files add up to more. @default 1 GiB */
  maxBytes?: number;
}

/**
 * Reads a .tgz into entries, in memory: only regular files (folders are
 * implied by paths), each at a relative path that stays inside the archive.
 * Links, devices and paths leading out are refused, not skipped, so that what
 * is packed again is everything the archive held.
 */
export function readArchive(bytes: Buffer, options: ReadArchiveOptions = {}): Promise<ArchiveEntry[]> {
  const limit = options.maxBytes ?? 1024 ** 3;
  const entries: ArchiveEntry[] = [];
  const problems: string[] = [];
  let total = 0;
  return new Promise((resolve, reject) => {
    const parser = new Parser({ strict: true });
    parser.on('entry', (entry: ReadEntry) => {
      const path = entry.path.replace(/^(\.\/)+/, '').replace(/\/$/, '');
      if (entry.type === 'Directory' && (path === '.' || path === '' || safePath(path))) return entry.resume();
      if (!['File', 'OldFile', 'ContiguousFile'].includes(entry.type)) problems.push(`${entry.path}: entries of type ${entry.type} are not allowed`);
      else if (!safePath(path)) problems.push(`${entry.path}: path leaves the archive`);
      else if ((total += entry.size) > limit) problems.push(`the files add up to more than ${limit} bytes`);
      if (problems.length) return entry.resume();
      const chunks: Buffer[] = [];
      entry.on('data', (c: Buffer) => chunks.push(c));
      entry.on('end', () => entries.push({ path, data: Buffer.concat(chunks), executable: ((entry.mode ?? 0o644) & 0o111) !== 0 }));
    });
    parser.on('error', (err: Error) => reject(new Error(`not a valid .tgz: ${err.message}`)));
    parser.on('end', () => (problems.length ? reject(new Error(`unsafe archive: ${problems.slice(0, 5).join('; ')}`)) : resolve(entries)));
    parser.end(bytes);
  });
}
