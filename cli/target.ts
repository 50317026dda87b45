// Finding the running `spore up` the CLI talks to: --url, else the state folder's up.json.
import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';

export interface UpInfo {
  url: string;
  /** Set when a reconciler runs (spore up --git, spore reconciler). */
  reconcilerUrl?: string;
  /** The reconciler API's bearer token (the file is readable by its owner only). */
  apiToken?: string;
  pid: number;
}

export const UP_FILE = 'up.json';

export function findTarget(options: { url?: string; stateDir?: string }): string {
  if (options.url) return options.url.replace(/\/$/, '');
  return findUp(options).url;
}

/** The reconciler's address and API token of the running spore up --git (or spore reconciler); with --url, the token is SPORE_API_TOKEN. */
export function findReconciler(options: { url?: string; stateDir?: string }): { url: string; token?: string } {
  if (options.url) return { url: options.url.replace(/\/$/, ''), token: process.env.SPORE_API_TOKEN };
  const info = findUp(options);
  if (!info.reconcilerUrl) throw new Error('the running "spore up" follows no Git repository (start it with --git URL)');
  return { url: info.reconcilerUrl, token: process.env.SPORE_API_TOKEN || info.apiToken };
}

function findUp(options: { stateDir?: string }): UpInfo {
  const stateDir = resolve(options.stateDir ?? '.spore');
  const file = join(stateDir, UP_FILE);
  if (!existsSync(file)) throw new Error(`no running "spore up" found (${file} does not exist); start one, or pass --url or --state-dir`);
  const info = JSON.parse(readFileSync(file, 'utf8')) as UpInfo;
  try {
    process.kill(info.pid, 0);
  } catch {
    throw new Error(`the "spore up" recorded in ${file} (pid ${info.pid}) is not running`);
  }
  return info;
}

/** `ns/name` or `name` (namespace default). */
export function splitName(fn: string, namespace?: string): { namespace: string; name: string } {
  const [a, b] = fn.split('/');
  return b === undefined ? { namespace: namespace ?? 'default', name: a } : { namespace: a, name: b };
}
