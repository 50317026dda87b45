// Finding the running `spore up` the CLI talks to: --url, else the state folder's up.json.
import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';

export interface UpInfo {
  url: string;
  pid: number;
  appDir: string;
}

export const UP_FILE = 'up.json';

export function findTarget(options: { url?: string; stateDir?: string }): string {
  if (options.url) return options.url.replace(/\/$/, '');
  const stateDir = resolve(options.stateDir ?? '.spore');
  const file = join(stateDir, UP_FILE);
  if (!existsSync(file)) throw new Error(`no running "spore up" found (${file} does not exist); start one, or pass --url or --state-dir`);
  const info = JSON.parse(readFileSync(file, 'utf8')) as UpInfo;
  try {
    process.kill(info.pid, 0);
  } catch {
    throw new Error(`the "spore up" recorded in ${file} (pid ${info.pid}) is not running`);
  }
  return info.url;
}

/** `ns/name` or `name` (namespace default). */
export function splitName(fn: string, namespace?: string): { namespace: string; name: string } {
  const [a, b] = fn.split('/');
  return b === undefined ? { namespace: namespace ?? 'default', name: a } : { namespace: a, name: b };
}
