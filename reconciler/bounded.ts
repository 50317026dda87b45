// Running a step's program (npm ci, the app's synth) as its own process group,
// bounded in time and stoppable: when the bound passes or the signal fires, the
// whole group is killed — the program and whatever it started. Each run carries
// its owner in its environment, so that what a killed (-9) owner left running
// is found and stopped when the owner starts again.
import { spawn } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';

/** Inherited by everything a run starts: `<owner pid>:<owner name>`. */
const OWNER_ENV = 'SPORE_RUN_OWNER';

export interface BoundedOptions {
  cwd: string;
  env?: NodeJS.ProcessEnv;
  /** Through `sh -c` (a command line from the user's config) rather than argv. */
  shell?: boolean;
  timeoutMs: number;
  signal?: AbortSignal;
  onOutput?: (chunk: string) => void;
  /** Names the owner (e.g. its state folder) for `stopLeftovers`. */
  owner?: string;
}

export interface BoundedResult {
  /** Exit code; null when killed. */
  code: number | null;
  /** stdout and stderr, interleaved as they came. */
  output: string;
  ended: 'exited' | 'timed out' | 'stopped';
}

/** Resolves when the program ends, however it ends; rejects only when it cannot start. */
export function runBounded(command: string, args: string[], o: BoundedOptions): Promise<BoundedResult> {
  if (o.signal?.aborted) return Promise.resolve({ code: null, output: '', ended: 'stopped' });
  return new Promise((resolve, reject) => {
    const env = { ...(o.env ?? process.env), ...(o.owner ? { [OWNER_ENV]: `${process.pid}:${o.owner}` } : {}) };
    const child = spawn(command, args, { cwd: o.cwd, env, shell: o.shell, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    let output = '';
    let ended: BoundedResult['ended'] = 'exited';
    const done = () => {
      clearTimeout(timer);
      o.signal?.removeEventListener('abort', stop);
    };
    const take = (c: Buffer) => {
      output += c;
      o.onOutput?.(c.toString());
    };
    child.stdout.on('data', take);
    child.stderr.on('data', take);
    const kill = (why: BoundedResult['ended']) => {
      ended = why;
      try {
        process.kill(-child.pid!, 'SIGKILL');
      } catch {
        // already gone
      }
      // not waiting for 'close': a process that left the group may hold the pipes open
      done();
      resolve({ code: null, output, ended });
    };
    const stop = () => kill('stopped');
    o.signal?.addEventListener('abort', stop, { once: true });
    const timer = setTimeout(() => kill('timed out'), o.timeoutMs);
    child.on('error', (err) => {
      done();
      reject(err);
    });
    child.on('close', (code) => {
      done();
      if (ended === 'exited') resolve({ code, output, ended });
    });
  });
}

/**
 * Kills the processes that runs of `owner` started from a process that is no
 * longer alive (a reconciler killed with -9 cannot stop its npm ci or synth).
 * Reads /proc: elsewhere it finds nothing. Returns how many it stopped.
 */
export function stopLeftovers(owner: string): number {
  let stopped = 0;
  let pids: string[];
  try {
    pids = readdirSync('/proc').filter((n) => /^\d+$/.test(n));
  } catch {
    return 0;
  }
  for (const pid of pids) {
    let environ: string;
    try {
      environ = readFileSync(`/proc/${pid}/environ`, 'latin1');
    } catch {
      continue; // gone, or not ours to read
    }
    const entry = environ.split('\0').find((e) => e.startsWith(`${OWNER_ENV}=`));
    const m = entry && /^[^=]+=(\d+):(.*)$/.exec(entry);
    if (!m || m[2] !== owner || Number(m[1]) === process.pid || alive(Number(m[1]))) continue;
    try {
      process.kill(Number(pid), 'SIGKILL');
      stopped++;
    } catch {
      // gone meanwhile
    }
  }
  return stopped;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
