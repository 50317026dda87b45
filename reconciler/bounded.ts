// Running a step's program (npm ci, the app's synth) as its own process group,
// bounded in time and stoppable: when the bound passes or the signal fires, the
// whole group is killed — the program and whatever it started.
import { spawn } from 'node:child_process';

export interface BoundedOptions {
  cwd: string;
  env?: NodeJS.ProcessEnv;
  /** Through `sh -c` (a command line from the user's config) rather than argv. */
  shell?: boolean;
  timeoutMs: number;
  signal?: AbortSignal;
  onOutput?: (chunk: string) => void;
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
    const child = spawn(command, args, { cwd: o.cwd, env: o.env ?? process.env, shell: o.shell, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
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
