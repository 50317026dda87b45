// Installing a revision's dependencies: `npm ci` once per lockfile, in a cache
// keyed by the hash of package.json and package-lock.json, then linked into
// each checkout. Revisions that do not change the lockfile install nothing.
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync, readFileSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export class InstallError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'InstallError';
  }
}

export interface InstallOptions {
  /** @default 600000 ms */
  timeoutMs?: number;
  onProgress?: (line: string) => void;
}

/** Links installed dependencies into `dir`; returns whether the cache already had them. */
export async function installDependencies(dir: string, cacheRoot: string, options: InstallOptions = {}): Promise<{ cached: boolean; key?: string }> {
  const pkg = join(dir, 'package.json');
  if (!existsSync(pkg)) return { cached: true };
  const lock = join(dir, 'package-lock.json');
  if (!existsSync(lock)) throw new InstallError('the repository has a package.json but no package-lock.json: commit the lockfile (npm ci installs from it)');
  const key = createHash('sha256').update(readFileSync(pkg)).update('\0').update(readFileSync(lock)).digest('hex').slice(0, 24);
  const target = join(cacheRoot, key);
  const done = join(target, '.spore-complete');
  let cached = existsSync(done);
  if (!cached) {
    const staging = `${target}.partial-${process.pid}-${Date.now()}`;
    mkdirSync(staging, { recursive: true });
    for (const f of ['package.json', 'package-lock.json', '.npmrc']) if (existsSync(join(dir, f))) copyFileSync(join(dir, f), join(staging, f));
    try {
      await run('npm', ['ci', '--no-audit', '--no-fund', '--loglevel=error'], staging, options);
    } catch (err) {
      rmSync(staging, { recursive: true, force: true });
      throw err;
    }
    writeFileSync(join(staging, '.spore-complete'), new Date().toISOString());
    rmSync(target, { recursive: true, force: true });
    renameSync(staging, target); // whole or not at all: a crash never leaves a half cache entry in use
  }
  rmSync(join(dir, 'node_modules'), { recursive: true, force: true });
  symlinkSync(join(target, 'node_modules'), join(dir, 'node_modules'), 'dir');
  return { cached, key };
}

function run(cmd: string, args: string[], cwd: string, options: InstallOptions): Promise<void> {
  const timeoutMs = options.timeoutMs ?? 600_000;
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd, stdio: ['ignore', 'pipe', 'pipe'], detached: true, env: { ...process.env, npm_config_update_notifier: 'false' } });
    let out = '';
    const take = (c: Buffer) => {
      out += c;
      for (const line of c.toString().split('\n')) if (line.trim()) options.onProgress?.(line);
    };
    child.stdout.on('data', take);
    child.stderr.on('data', take);
    const timer = setTimeout(() => {
      try {
        process.kill(-child.pid!, 'SIGKILL');
      } catch {
        // gone
      }
      reject(new InstallError(`npm ci did not finish within ${timeoutMs / 1000}s`));
    }, timeoutMs);
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(new InstallError(`cannot run npm: ${err.message}`));
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      if (code === 0) resolve();
      else reject(new InstallError(`npm ci failed (exit code ${code}):\n${summarizeNpm(out)}`));
    });
  });
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
