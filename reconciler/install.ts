// Installing a revision's dependencies: `npm ci` once per lockfile, in a cache
// keyed by the hash of package.json, package-lock.json, .npmrc and what the
// lockfile takes from the repository (the package.json of linked folders and
// workspaces; the bytes of file: tarballs), then linked into each checkout.
// Revisions that change none of them install nothing.
//
// npm ci runs in a copy of the part of the checkout the lockfile needs, laid
// out as in the checkout, so its relative paths resolve there as they do in the
// repository. The checkout's node_modules links into the cache entry, except
// npm's links to local folders, which point at the checkout's own folders: a
// change to a workspace's code needs no new install. A path outside the
// repository cannot be installed by anyone who has only the repository: it is
// refused by name.
import { createHash, randomBytes } from 'node:crypto';
import { copyFileSync, cpSync, existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, readlinkSync, realpathSync, renameSync, rmSync, statSync, symlinkSync, utimesSync } from 'node:fs';
import { dirname, isAbsolute, join, relative, resolve, sep } from 'node:path';
import { runBounded } from './bounded.js';
import { isComplete, keepEntry, stagingFor, sweepStaging } from './cache-entry.js';

export class InstallError extends Error {
  constructor(
    message: string,
    /** The registry or the network failed: the same lockfile may install later. */
    readonly transient = false,
  ) {
    super(message);
    this.name = 'InstallError';
  }
}

export interface InstallOptions {
  /** @default 600000 ms */
  timeoutMs?: number;
  onProgress?: (line: string) => void;
  /** Kills npm (and what it started) and fails the install. */
  signal?: AbortSignal;
  /** See runBounded. */
  owner?: string;
  /** The repository's root: the lockfile's local paths must lie inside it. @default the app folder */
  root?: string;
}

const INPUTS = ['package.json', 'package-lock.json', '.npmrc'];
/** npm failures that are the network or the registry, not the lockfile: the same install may pass later. */
const UNREACHABLE = /\b(ECONNREFUSED|ECONNRESET|ETIMEDOUT|ESOCKETTIMEDOUT|EAI_AGAIN|ENOTFOUND|ENETUNREACH|EHOSTUNREACH|E429|E5\d\d)\b|socket hang up|network connectivity/i;

/**
 * Links installed dependencies into the checkout: at the folder of the
 * lockfile that serves `dir` (its own, or a workspace root's above it), and
 * into each linked folder npm gave a node_modules of its own. Returns whether
 * the cache already had them.
 */
export async function installDependencies(dir: string, cacheRoot: string, options: InstallOptions = {}): Promise<{ cached: boolean; key?: string }> {
  const root = realpathSync(resolve(options.root ?? dir));
  const app = realpathSync(resolve(dir));
  const lockDir = lockfileFor(app, root);
  if (!lockDir) {
    if (!existsSync(join(dir, 'package.json'))) return { cached: true };
    throw new InstallError('the repository has a package.json but no package-lock.json: commit the lockfile (npm ci installs from it)');
  }
  const at = relative(root, lockDir); // where the lockfile sits in the repository, '' at its root
  const locals = localPaths(lockDir, root);
  // Linked folders (workspaces, file: folders) are used from the checkout itself, so only what npm
  // installs for them is part of the key: their package.json. What is copied (tarballs, or folders
  // with install-links) is keyed by its bytes.
  const hash = createHash('sha256').update('spore-install-v3\0').update(at).update('\0');
  for (const f of INPUTS) hash.update(existsSync(join(lockDir, f)) ? readFileSync(join(lockDir, f)) : '').update('\0');
  for (const l of locals) {
    hash.update(`${l.link ? 'link' : 'copy'} ${l.path}\0`);
    if (l.link) hash.update(existsSync(join(root, l.path, 'package.json')) ? readFileSync(join(root, l.path, 'package.json')) : '');
    else hashTree(hash, join(root, l.path), root);
    hash.update('\0');
  }
  const key = hash.digest('hex').slice(0, 24);
  const target = join(cacheRoot, key);
  const complete = () => isComplete(target);
  const cached = complete();
  if (!cached) {
    const release = await lockEntry(target, complete, options);
    try {
      if (!complete()) {
        sweepStaging(cacheRoot);
        const staging = stagingFor(target);
        const lockCopy = join(staging, 'tree', at);
        mkdirSync(lockCopy, { recursive: true });
        try {
          for (const f of INPUTS) if (existsSync(join(lockDir, f))) copyFileSync(join(lockDir, f), join(lockCopy, f));
          for (const l of locals) cpSync(join(root, l.path), join(staging, 'tree', l.path), { recursive: true, verbatimSymlinks: true, filter: (src) => !/[\\/](node_modules|\.git)$/.test(src) });
          await npmCi(lockCopy, options);
          try {
            keepEntry(staging, target);
          } catch (err) {
            throw new InstallError(`cannot keep the installed dependencies in ${target}: ${(err as Error).message}`);
          }
        } finally {
          rmSync(staging, { recursive: true, force: true });
        }
      }
    } finally {
      release();
    }
  }
  for (const rel of [at, ...locals.filter((l) => l.link).map((l) => l.path)]) {
    const installed = join(target, 'tree', rel, 'node_modules');
    if (existsSync(installed) && lstatSync(join(root, rel)).isDirectory()) linkModules(installed, join(root, rel, 'node_modules'));
  }
  return { cached, key };
}

/**
 * A node_modules of links into the cache entry's, except npm's own links to
 * local folders: those are made again, with the same relative target, so that
 * they reach the checkout's folders, not the cache's copies of them.
 */
function linkModules(installed: string, dest: string): void {
  rmSync(dest, { recursive: true, force: true });
  mkdirSync(dest);
  const link = (name: string) => {
    const from = join(installed, name);
    symlinkSync(lstatSync(from).isSymbolicLink() ? readlinkSync(from) : from, join(dest, name));
  };
  for (const name of readdirSync(installed)) {
    if (!name.startsWith('@')) link(name);
    else {
      mkdirSync(join(dest, name));
      for (const sub of readdirSync(join(installed, name))) link(join(name, sub));
    }
  }
}

/** The nearest folder from `dir` up to `root` holding a package-lock.json that installs `dir` (its own, or its workspace root's). */
function lockfileFor(dir: string, root: string): string | undefined {
  for (let d = dir; ; d = resolve(d, '..')) {
    if (existsSync(join(d, 'package-lock.json'))) {
      if (d === dir) return d;
      const lock = readLock(d);
      if (lock.packages?.[relative(d, dir).split(sep).join('/')]) return d; // dir is one of its workspaces
    }
    if (d === root || !d.startsWith(root + sep)) return undefined;
  }
}

/**
 * One install per entry at a time, across processes sharing the cache: the
 * others wait for it (a lock folder) and then find the entry complete. The
 * holder touches the lock while it works; one left untouched for 30 s was left
 * by a killed install and is taken over (moved aside under a unique name, so
 * two waiters cannot both take it).
 */
async function lockEntry(target: string, complete: () => boolean, options: InstallOptions): Promise<() => void> {
  const lock = `${target}.lock`;
  mkdirSync(dirname(target), { recursive: true });
  for (let said = false; ; ) {
    try {
      mkdirSync(lock);
      const beat = setInterval(() => {
        const now = new Date();
        try {
          utimesSync(lock, now, now);
        } catch {
          // taken over: the install goes on; keepEntry() settles who wins
        }
      }, 5_000);
      return () => {
        clearInterval(beat);
        rmSync(lock, { recursive: true, force: true });
      };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    if (complete()) return () => {};
    try {
      if (Date.now() - statSync(lock).mtimeMs > STALE_LOCK_MS) {
        const aside = `${lock}.stale-${randomBytes(4).toString('hex')}`;
        renameSync(lock, aside);
        rmSync(aside, { recursive: true, force: true });
        continue;
      }
    } catch {
      // released or taken meanwhile
    }
    if (!said) options.onProgress?.('waiting for another install of the same dependencies');
    said = true;
    if (options.signal?.aborted) throw new InstallError('npm ci was stopped');
    await new Promise((r) => setTimeout(r, 250));
  }
}

const STALE_LOCK_MS = 30_000;

type Lockfile = { packages?: Record<string, { resolved?: string; link?: boolean }> };

function readLock(dir: string): Lockfile {
  try {
    return JSON.parse(readFileSync(join(dir, 'package-lock.json'), 'utf8')) as Lockfile;
  } catch (err) {
    throw new InstallError(`${join(dir, 'package-lock.json')} is not valid JSON: ${(err as Error).message}`);
  }
}

/**
 * The local paths a lockfile (npm 7+, `packages`) installs from, relative to
 * the repository's root: linked folders and workspaces (`link: true`) and
 * `file:` tarballs (or folders, with install-links). Each must be in the
 * repository, symbolic links followed.
 */
export function localPaths(dir: string, root: string): { path: string; link: boolean }[] {
  const paths = new Map<string, boolean>();
  for (const [key, entry] of Object.entries(readLock(dir).packages ?? {})) {
    const from = entry?.link ? entry.resolved : entry?.resolved?.startsWith('file:') ? entry.resolved.slice('file:'.length) : undefined;
    if (!from) continue;
    const name = key.replace(/^.*node_modules\//, '');
    const full = resolve(dir, from);
    if (!inside(full, root)) {
      throw new InstallError(
        `package-lock.json installs "${name}" from ${from}, which is outside the repository: the reconciler has only the repository's files. ` +
          `Put it inside the repository (npm pack ${from} --pack-destination vendor, commit the .tgz and depend on "file:vendor/<the .tgz>"), or use a registry or git dependency.`,
      );
    }
    if (!existsSync(full)) throw new InstallError(`package-lock.json installs "${name}" from ${from}, which is not in this revision of the repository (is it committed?)`);
    if (!inside(realpathSync(full), root)) throw new InstallError(`package-lock.json installs "${name}" from ${from}, a link that leads outside the repository`);
    paths.set(relative(root, full).split(sep).join('/'), Boolean(entry.link));
  }
  return [...paths].sort(([a], [b]) => (a < b ? -1 : 1)).map(([path, link]) => ({ path, link }));
}

const inside = (path: string, root: string) => {
  const rel = relative(root, path);
  return !rel.startsWith('..') && !isAbsolute(rel);
};

/** Names, modes and bytes of everything under `path` (node_modules and .git left out), in a stable order; links must stay in the repository. */
function hashTree(hash: ReturnType<typeof createHash>, path: string, root: string): void {
  const st = lstatSync(path);
  if (st.isSymbolicLink()) {
    if (!inside(resolve(dirname(path), readlinkSync(path)), root)) throw new InstallError(`${relative(root, path)} is a link that leads outside the repository`);
    hash.update(`link ${readlinkSync(path)}\0`);
  } else if (st.isFile()) hash.update(`file ${st.mode & 0o111 ? 'x' : '-'} ${st.size}\0`).update(readFileSync(path));
  else if (st.isDirectory()) {
    for (const name of readdirSync(path).sort()) {
      if (name === 'node_modules' || name === '.git') continue;
      hash.update(`${name}\0`);
      hashTree(hash, join(path, name), root);
    }
  }
}

async function npmCi(cwd: string, options: InstallOptions): Promise<void> {
  const timeoutMs = options.timeoutMs ?? 600_000;
  const onOutput = (chunk: string) => chunk.split('\n').forEach((line) => line.trim() && options.onProgress?.(line));
  const env = { ...process.env, npm_config_update_notifier: 'false' };
  const r = await runBounded('npm', ['ci', '--no-audit', '--no-fund', '--loglevel=error'], { cwd, env, timeoutMs, signal: options.signal, onOutput, owner: options.owner }).catch((err: Error) => {
    throw new InstallError(`cannot run npm: ${err.message}`);
  });
  if (r.ended === 'stopped') throw new InstallError('npm ci was stopped');
  if (r.ended === 'timed out') throw new InstallError(`npm ci did not finish within ${timeoutMs / 1000}s`, true);
  if (r.code !== 0) throw new InstallError(`npm ci failed (exit code ${r.code}):\n${summarizeNpm(r.output)}`, UNREACHABLE.test(r.output));
}

/** npm's own words about what failed, without the usage text it appends. */
export function summarizeNpm(output: string): string {
  const lines: string[] = [];
  for (const raw of output.split('\n')) {
    const line = raw.replace(/^npm (error|ERR!)\s?/, '').trimEnd();
    if (/^(Clean install a project|Usage:|A complete log of this run)/.test(line)) break;
    if (line.trim()) lines.push(line);
  }
  return lines.slice(0, 12).join('\n');
}
