// Processes Spore starts (npm ci, a synth, a function's instance) carry their
// owner in their environment, and everything they start inherits it — even what
// leaves the process group (setsid, a double fork). So an owner can stop all
// that one run started, and what an owner killed with -9 left running is found
// in /proc and stopped when the owner starts again. (Only where /proc is: elsewhere
// nothing is found; a process that clears its own environment is not found.)
import { readdirSync, readFileSync } from 'node:fs';

/** `<owner pid>:<owner name>`, e.g. the owner's state folder. */
export const OWNER_ENV = 'SPORE_RUN_OWNER';
/** Names one run of an owner (e.g. an instance), for `stopRun`. */
export const RUN_ENV = 'SPORE_RUN_ID';

/** The variables that mark a process (and all it starts) as `owner`'s, optionally as one of its runs. */
export function ownerEnv(owner: string, run?: string): Record<string, string> {
  return { [OWNER_ENV]: `${process.pid}:${owner}`, ...(run ? { [RUN_ENV]: run } : {}) };
}

/**
 * Kills the processes that runs of `owner` started from a process that is no
 * longer alive (a Spore killed with -9 cannot stop what it started). Returns how many it stopped.
 */
export function stopLeftovers(owner: string): number {
  return killMarked(owner, (ownerPid) => ownerPid !== process.pid && !alive(ownerPid));
}

/** Kills every process that carries this process's mark for `owner` and `run`. Returns how many it stopped. */
export function stopRun(owner: string, run: string): number {
  return killMarked(owner, (ownerPid, r) => ownerPid === process.pid && r === run);
}

// Scans again until a scan finds nothing: a process may start another between
// a scan and its kill (bounded, for a fork bomb).
function killMarked(owner: string, which: (ownerPid: number, run: string | undefined) => boolean): number {
  let stopped = 0;
  for (let round = 0; round < 20; round++) {
    const found = marked(owner, which);
    if (!found.length) break;
    for (const pid of found) {
      try {
        process.kill(pid, 'SIGKILL');
        stopped++;
      } catch {
        // gone meanwhile
      }
    }
  }
  return stopped;
}

function marked(owner: string, which: (ownerPid: number, run: string | undefined) => boolean): number[] {
  let pids: string[];
  try {
    pids = readdirSync('/proc').filter((n) => /^\d+$/.test(n));
  } catch {
    return [];
  }
  const found: number[] = [];
  for (const pid of pids) {
    if (Number(pid) === process.pid) continue;
    let environ: string[];
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
      if (stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) === 'Z') continue; // dead already, not yet reaped
      environ = readFileSync(`/proc/${pid}/environ`, 'latin1').split('\0');
    } catch {
      continue; // gone, or not ours to read
    }
    const m = /^[^=]+=(\d+):(.*)$/.exec(environ.find((e) => e.startsWith(`${OWNER_ENV}=`)) ?? '');
    if (!m || m[2] !== owner) continue;
    const run = environ.find((e) => e.startsWith(`${RUN_ENV}=`))?.slice(RUN_ENV.length + 1);
    if (which(Number(m[1]), run)) found.push(Number(pid));
  }
  return found;
}

/** Whether a process exists (one of another user's counts). */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
