// Running a step's program (npm ci, the app's synth) as its own process group,
// bounded in time and stoppable: when the bound passes or the signal fires, the
// whole group is killed — the program and whatever it started. Each run carries
// its owner in its environment, so that what a killed (-9) owner left running
// is found and stopped when the owner starts again.
import { spawn } from 'node:child_process';
import { ownerEnv } from '../api/process-owner.js';

/** See api/process-owner.ts: the one mechanism for owners' leftovers. */
export { stopLeftovers } from '../api/process-owner.js';

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

/** Spore's own secrets, which a repository's code (its npm scripts, its synth) has no business reading. */
const SECRETS = ['SPORE_API_TOKEN', 'SPORE_WEBHOOK_SECRET'];

/** Resolves when the program ends, however it ends; rejects only when it cannot start. */
export function runBounded(command: string, args: string[], o: BoundedOptions): Promise<BoundedResult> {
  if (o.signal?.aborted) return Promise.resolve({ code: null, output: '', ended: 'stopped' });
  return new Promise((resolve, reject) => {
    const env = { ...(o.env ?? process.env), ...(o.owner ? ownerEnv(o.owner) : {}) };
    for (const name of SECRETS) delete env[name];
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
