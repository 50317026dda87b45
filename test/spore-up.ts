// `spore up` as a user starts it, for the suites that need one: its own
// process, its output kept, killed (if still running) when the file's tests end.
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { afterAll } from 'vitest';
import { waitFor } from './dataplane/harness.js';

export const BIN = join(new URL('..', import.meta.url).pathname, 'bin/spore.js');

/** Registers the file's cleanup; `up(args)` starts `spore up ARGS`, `url()` waits (up to `boundMs`) for it to serve. */
export function sporeUp(boundMs = 60_000) {
  const children: ChildProcess[] = [];
  afterAll(() => {
    for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
  });
  return function up(args: string[]) {
    const child = spawn(process.execPath, [BIN, 'up', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    children.push(child);
    let out = '';
    child.stdout!.on('data', (c) => (out += c));
    child.stderr!.on('data', (c) => (out += c));
    const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
    return { child, output: () => out, exited, url: () => waitFor('spore up to serve', () => /serving on (http:\/\/\S+)\n/.exec(out)?.[1], boundMs) };
  };
}
