// Installing a revision's dependencies: `npm ci` once per lockfile, in a cache
// keyed by the hash of package.json, package-lock.json and .npmrc, then linked
// into each checkout. Revisions that do not change them install nothing.
import { createHash, randomBytes } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
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
}

const INPUTS = ['package.json', 'package-lock.json', '.npmrc'];
/** npm failures that are the network or the registry, not the lockfile: the same install may pass later. */
const UNREACHABLE = /\b(ECONNREFUSED|ECONNRESET|ETIMEDOUT|ESOCKETTIMEDOUT|EAI_AGAIN|ENOTFOUND|ENETUNREACH|EHOSTUNREACH|E429|E5\d\d)\b|socket hang up|network connectivity/i;
const COMPLETE = '.spore-complete';

/** Links installed dependencies into `dir`; returns whether the cache already had them. */
export async function installDependencies(dir: string, cacheRoot: string, options: InstallOptions = {}): Promise<{ cached: boolean; key?: string }> {
  if (!existsSync(join(dir, 'package.json'))) return { cached: true };
  if (!existsSync(join(dir, 'package-lock.json'))) throw new InstallError('the repository has a package.json but no package-lock.json: commit the lockfile (npm ci installs from it)');
  const hash = createHash('sha256');
  for (const f of INPUTS) hash.update(existsSync(join(dir, f)) ? readFileSync(join(dir, f)) : '').update('\0');
  const key = hash.digest('hex').slice(0, 24);
  const target = join(cacheRoot, key);
  const complete = () => existsSync(join(target, COMPLETE));
  const cached = complete();
  if (!cached) {
    sweepPartials(cacheRoot);
    const staging = `${target}.partial-${Date.now()}-${randomBytes(4).toString('hex')}`;
    mkdirSync(staging, { recursive: true });
    try {
      for (const f of INPUTS) if (existsSync(join(dir, f))) copyFileSync(join(dir, f), join(staging, f));
      await npmCi(staging, options);
      writeFileSync(join(staging, COMPLETE), new Date().toISOString());
      keep(staging, target);
    } finally {
      rmSync(staging, { recursive: true, force: true });
    }
  }
  rmSync(join(dir, 'node_modules'), { recursive: true, force: true });
  symlinkSync(join(target, 'node_modules'), join(dir, 'node_modules'), 'dir');
  return { cached, key };
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
