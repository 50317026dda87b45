// Installing a revision's dependencies: `npm ci` once per lockfile, in a cache
// keyed by the hash of package.json, package-lock.json, .npmrc and every local
// path the lockfile installs from (file: folders and tarballs, links,
// workspaces), then linked into each checkout. Revisions that change none of
// them install nothing.
//
// npm ci runs in a copy of the part of the checkout the lockfile needs, laid
// out as in the checkout, so its relative paths resolve there as they do in the
// repository, and the links npm makes to them (`node_modules/lib -> ../lib`)
// resolve inside the cache entry. A path outside the repository cannot be
// installed by anyone who has only the repository: it is refused by name.
import { createHash, randomBytes } from 'node:crypto';
import { copyFileSync, cpSync, existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, readlinkSync, renameSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { dirname, isAbsolute, join, relative, resolve, sep } from 'node:path';
import { runBounded } from './bounded.js';

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
const COMPLETE = '.spore-complete';

/**
 * Links installed dependencies into the checkout: at the folder of the
 * lockfile that serves `dir` (its own, or a workspace root's above it), and
 * into each linked folder npm gave a node_modules of its own. Returns whether
 * the cache already had them.
 */
export async function installDependencies(dir: string, cacheRoot: string, options: InstallOptions = {}): Promise<{ cached: boolean; key?: string }> {
  const root = resolve(options.root ?? dir);
  const lockDir = lockfileFor(resolve(dir), root);
  if (!lockDir) {
    if (!existsSync(join(dir, 'package.json'))) return { cached: true };
    throw new InstallError('the repository has a package.json but no package-lock.json: commit the lockfile (npm ci installs from it)');
  }
  const at = relative(root, lockDir); // where the lockfile sits in the repository, '' at its root
  const locals = localPaths(lockDir, root);
  const hash = createHash('sha256').update('spore-install-v2\0').update(at).update('\0');
  for (const f of INPUTS) hash.update(existsSync(join(lockDir, f)) ? readFileSync(join(lockDir, f)) : '').update('\0');
  for (const rel of locals) hashTree(hash.update(rel).update('\0'), join(root, rel));
  const key = hash.digest('hex').slice(0, 24);
  const target = join(cacheRoot, key);
  const complete = () => existsSync(join(target, COMPLETE));
  const cached = complete();
  if (!cached) {
    const release = await lockEntry(target, complete, options);
    try {
      if (!complete()) {
        sweepPartials(cacheRoot);
        const staging = `${target}.partial-${Date.now()}-${randomBytes(4).toString('hex')}`;
        const lockCopy = join(staging, 'tree', at);
        mkdirSync(lockCopy, { recursive: true });
        try {
          for (const f of INPUTS) if (existsSync(join(lockDir, f))) copyFileSync(join(lockDir, f), join(lockCopy, f));
          for (const rel of locals) cpSync(join(root, rel), join(staging, 'tree', rel), { recursive: true, verbatimSymlinks: true, filter: (src) => !/[\\/](node_modules|\.git)$/.test(src) });
          await npmCi(lockCopy, options);
          writeFileSync(join(staging, COMPLETE), new Date().toISOString());
          keep(staging, target);
        } finally {
          rmSync(staging, { recursive: true, force: true });
        }
      }
    } finally {
      release();
    }
  }
  for (const rel of [at, ...locals]) {
    const installed = join(target, 'tree', rel, 'node_modules');
    if (!existsSync(installed) || !lstatSync(join(root, rel)).isDirectory()) continue;
    rmSync(join(root, rel, 'node_modules'), { recursive: true, force: true });
    symlinkSync(installed, join(root, rel, 'node_modules'), 'dir');
  }
  return { cached, key };
}

/**
 * One install per entry at a time, across processes sharing the cache: the
 * others wait for it (a lock folder) and then find the entry complete. A lock
 * older than the install bound was left by a killed install and is taken over.
 */
async function lockEntry(target: string, complete: () => boolean, options: InstallOptions): Promise<() => void> {
  const lock = `${target}.lock`;
  const staleMs = (options.timeoutMs ?? 600_000) + 60_000;
  mkdirSync(dirname(target), { recursive: true });
  for (let said = false; ; ) {
    try {
      mkdirSync(lock);
      return () => rmSync(lock, { recursive: true, force: true });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    if (complete()) return () => {};
    try {
      if (Date.now() - statSync(lock).mtimeMs > staleMs) rmSync(lock, { recursive: true, force: true });
    } catch {
      // released meanwhile
    }
    if (!said) options.onProgress?.('waiting for another install of the same dependencies');
    said = true;
    if (options.signal?.aborted) throw new InstallError('npm ci was stopped');
    await new Promise((r) => setTimeout(r, 250));
  }
}

/** The nearest folder from `dir` up to `root` holding a package-lock.json (npm workspaces keep one at their root). */
function lockfileFor(dir: string, root: string): string | undefined {
  for (let d = dir; ; d = resolve(d, '..')) {
    if (existsSync(join(d, 'package-lock.json'))) return d;
    if (d === root || !d.startsWith(root + sep)) return undefined;
  }
}

/**
 * The local paths a lockfile (npm 7+, `packages`) installs from, relative to
 * the repository's root: linked folders and workspaces (`link: true`) and
 * `file:` tarballs. Each must be in the repository.
 */
export function localPaths(dir: string, root: string): string[] {
  let lock: { packages?: Record<string, { resolved?: string; link?: boolean }> };
  try {
    lock = JSON.parse(readFileSync(join(dir, 'package-lock.json'), 'utf8'));
  } catch (err) {
    throw new InstallError(`package-lock.json is not valid JSON: ${(err as Error).message}`);
  }
  const paths = new Set<string>();
  for (const [key, entry] of Object.entries(lock.packages ?? {})) {
    const from = entry?.link ? entry.resolved : entry?.resolved?.startsWith('file:') ? entry.resolved.slice('file:'.length) : undefined;
    if (!from) continue;
    const name = key.replace(/^.*node_modules\//, '');
    const rel = relative(root, resolve(dir, from));
    if (rel.startsWith('..') || isAbsolute(rel)) {
      throw new InstallError(
        `package-lock.json installs "${name}" from ${from}, which is outside the repository: the reconciler has only the repository's files. ` +
          `Put it inside the repository (npm pack ${from} --pack-destination vendor, commit the .tgz and depend on "file:vendor/<the .tgz>"), or use a registry or git dependency.`,
      );
    }
    if (!existsSync(join(root, rel))) throw new InstallError(`package-lock.json installs "${name}" from ${from}, which is not in this revision of the repository (is it committed?)`);
    paths.add(rel.split(sep).join('/'));
  }
  return [...paths].sort();
}

/** Names, modes and bytes of everything under `path` (node_modules and .git left out), in a stable order. */
function hashTree(hash: ReturnType<typeof createHash>, path: string): void {
  const st = lstatSync(path);
  if (st.isSymbolicLink()) hash.update(`link ${readlinkSync(path)}\0`);
  else if (st.isFile()) hash.update(`file ${st.mode & 0o111 ? 'x' : '-'} ${st.size}\0`).update(readFileSync(path));
  else if (st.isDirectory()) {
    for (const name of readdirSync(path).sort()) {
      if (name === 'node_modules' || name === '.git') continue;
      hash.update(`${name}\0`);
      hashTree(hash, join(path, name));
    }
  }
}

/**
 * Moves a finished install into place: whole or not at all, so a crash never
 * leaves a half entry in use. An entry already there that is complete (another
 * reconciler sharing the cache won the race) is as good as ours and is never
 * removed: something may be rendering with it. An incomplete one is a leftover
 * and is moved aside first.
 */
function keep(staging: string, target: string): void {
  for (let attempt = 0; ; attempt++) {
    try {
      renameSync(staging, target);
      return;
    } catch (err) {
      if (existsSync(join(target, COMPLETE))) return;
      const code = (err as NodeJS.ErrnoException).code;
      if (attempt > 0 || (code !== 'ENOTEMPTY' && code !== 'EEXIST')) throw new InstallError(`cannot keep the installed dependencies in ${target}: ${(err as Error).message}`);
      const aside = `${target}.partial-${Date.now()}-${randomBytes(4).toString('hex')}`;
      try {
        renameSync(target, aside);
      } catch {
        // gone already, or replaced by a complete one: the next rename tells
      }
      rmSync(aside, { recursive: true, force: true });
    }
  }
}

/**
 * Removes staging folders old enough that no install can still be writing
 * them (killed mid-install). By age, not by process: reconcilers in other
 * containers may share the cache.
 */
function sweepPartials(cacheRoot: string): void {
  if (!existsSync(cacheRoot)) return;
  const before = Date.now() - 2 * 60 * 60_000; // well past the install bound
  for (const name of readdirSync(cacheRoot)) {
    const m = /\.partial-(\d+)-[0-9a-f]+$/.exec(name);
    if (m && Number(m[1]) < before) rmSync(join(cacheRoot, name), { recursive: true, force: true });
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
