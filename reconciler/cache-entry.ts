// Entries of the deploy-time caches (npm installs, Python builds): made in a
// staging folder, marked complete, then moved into place whole, so that a
// crash never leaves a half entry in use. Shared between processes.
import { randomBytes } from 'node:crypto';
import { existsSync, readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

const COMPLETE = '.spore-complete';

/** Whether the entry is there and whole. */
export const isComplete = (entry: string) => existsSync(join(entry, COMPLETE));

/** A staging folder name beside `entry`: old ones are swept by their age. */
export const stagingFor = (entry: string) => `${entry}.partial-${Date.now()}-${randomBytes(4).toString('hex')}`;

/**
 * Marks the staging folder complete and moves it into place. An entry already
 * there that is complete (another process sharing the cache won the race) is
 * as good as ours and is never removed: something may be using it. An
 * incomplete one is a leftover and is moved aside first. Throws the rename's
 * error when the entry cannot be kept.
 */
export function keepEntry(staging: string, entry: string): void {
  writeFileSync(join(staging, COMPLETE), new Date().toISOString());
  for (let attempt = 0; ; attempt++) {
    try {
      renameSync(staging, entry);
      return;
    } catch (err) {
      if (isComplete(entry)) return;
      const code = (err as NodeJS.ErrnoException).code;
      if (attempt > 0 || (code !== 'ENOTEMPTY' && code !== 'EEXIST')) throw err;
      const aside = stagingFor(entry);
      try {
        renameSync(entry, aside);
      } catch {
        // gone already, or replaced by a complete one: the next rename tells
      }
      rmSync(aside, { recursive: true, force: true });
    }
  }
}

/**
 * Removes staging folders old enough that nothing can still be writing them
 * (killed mid-install). By age, not by process: processes in other containers
 * may share the cache.
 */
export function sweepStaging(cacheRoot: string): void {
  if (!existsSync(cacheRoot)) return;
  const before = Date.now() - 2 * 60 * 60_000; // well past the install bounds
  for (const name of readdirSync(cacheRoot)) {
    const m = /\.partial-(\d+)-[0-9a-f]+$/.exec(name);
    if (m && Number(m[1]) < before) rmSync(join(cacheRoot, name), { recursive: true, force: true });
  }
}
