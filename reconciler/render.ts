// Rendering an app: run the program its cdk8s.yaml names, with the output sent
// to a folder of our choosing, and read back what it wrote.
import { existsSync, readFileSync, rmSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import yaml from 'js-yaml';
import { runBounded } from './bounded.js';
import { loadManifests } from './manifests.js';

export class RenderError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'RenderError';
  }
}

export interface RenderOptions {
  /** Bound on the whole render. @default 120000 ms */
  timeoutMs?: number;
  /** Kills the synth (and what it started) and fails the render. */
  signal?: AbortSignal;
  /** See runBounded. */
  owner?: string;
}

/** A word for `sh`: single-quoted, so no character in a path is special. */
const shellWord = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;

/** The `app` command of an app folder's cdk8s.yaml. */
export function appCommand(appDir: string): string {
  const file = join(appDir, 'cdk8s.yaml');
  if (!existsSync(file)) throw new RenderError(`${appDir} has no cdk8s.yaml (it names the program that synthesizes the app)`);
  let config: unknown;
  try {
    config = yaml.load(readFileSync(file, 'utf8'));
  } catch (err) {
    throw new RenderError(`${file}: ${(err as Error).message}`);
  }
  const app = (config as { app?: unknown } | null)?.app;
  if (typeof app !== 'string' || !app.trim()) throw new RenderError(`${file} has no "app" command (e.g. app: npx tsx main.ts)`);
  return app;
}

/** What a user needs from a failed synth: the validation list, or the error, without Node's stack frames. */
export function summarize(output: string): string {
  const lines = output.split('\n').filter((l) => !/^\s+at /.test(l) && !/^Node\.js v\d/.test(l));
  const start = lines.findIndex((l) => l.includes('Validation failed with the following errors'));
  const picked = start >= 0 ? lines.slice(start).filter((l) => l.startsWith('  [') || l.includes('Validation failed')) : lines;
  return picked.map((l) => l.replace(/^Error: /, '')).join('\n').trim();
}

/**
 * `npx tsx main.ts` with tsx installed in the app is `node_modules/.bin/tsx
 * main.ts`, without npx's own half second of start-up.
 */
export function localCommand(command: string, appDir: string): string {
  const m = /^npx\s+([\w@./-]+)(\s.*)?$/.exec(command.trim());
  if (!m || m[1].startsWith('-')) return command;
  const bin = join(appDir, 'node_modules', '.bin', m[1]);
  return existsSync(bin) ? `${shellWord(bin)}${m[2] ?? ''}` : command;
}

/** Runs the app's synth into `outdir` (emptied first) and returns the objects it wrote. */
export async function renderApp(appDir: string, outdir: string, options: RenderOptions = {}) {
  const app = appCommand(appDir); // what the user wrote, for messages
  const command = localCommand(app, appDir);
  rmSync(outdir, { recursive: true, force: true });
  mkdirSync(outdir, { recursive: true });
  const timeoutMs = options.timeoutMs ?? 120_000;
  const r = await runBounded(command, [], { cwd: appDir, shell: true, env: { ...process.env, CDK8S_OUTDIR: outdir }, timeoutMs, signal: options.signal, owner: options.owner }).catch((err: Error) => {
    throw new RenderError(`cannot run "${app}": ${err.message}`);
  });
  if (r.ended === 'stopped') throw new RenderError('synth was stopped');
  if (r.ended === 'timed out') throw new RenderError(`synth did not finish within ${timeoutMs / 1000}s (${app})`);
  if (r.code !== 0) throw new RenderError(`synth failed (${app}, exit code ${r.code}):\n${summarize(r.output)}`);
  return loadManifests([outdir]);
}
