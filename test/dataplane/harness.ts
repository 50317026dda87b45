// A real dataplane (router, pool manager, runtime processes) over a real SQLite
// file in a temp folder, and builders for the objects it serves.
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { Header } from 'tar';
import { request } from 'undici';
import type { KubeConfig } from '@kubernetes/client-node';
import type { KubeObject } from '../../api/index.js';
import { packArchive } from '../../constructs/archive.js';
import { startDataplane, type Dataplane } from '../../dataplane/index.js';
import { SqliteStore } from '../../store/index.js';
import { tempDir } from '../helpers.js';

const API = 'spore.dev/v1alpha1';

export const environment = (name: string, runtime: 'node' | 'python', poolSize = 1, namespace?: string): KubeObject => ({
  apiVersion: API,
  kind: 'Environment',
  metadata: { name, namespace },
  spec: { runtime: { name: runtime }, poolSize },
});

export function archiveOf(files: Record<string, string>) {
  return packArchive(Object.entries(files).map(([path, text]) => ({ path, data: Buffer.from(text) })));
}

export interface FnOptions {
  env?: string;
  entrypoint?: string;
  executor?: Record<string, unknown>;
  vars?: Record<string, string>;
  namespace?: string;
  /** Route to add: a path, or full HttpTrigger spec fields. */
  route?: string | Record<string, unknown>;
}

/** A Package (inline) and a Function serving `files`, with an optional route. */
export function fn(name: string, files: Record<string, string>, o: FnOptions = {}): KubeObject[] {
  const a = archiveOf(files);
  const metadata = { name, namespace: o.namespace };
  const objects: KubeObject[] = [
    { apiVersion: API, kind: 'Package', metadata, spec: { archive: { sha256: a.sha256, size: a.size, inline: a.bytes.toString('base64') } } },
    {
      apiVersion: API,
      kind: 'Function',
      metadata,
      spec: {
        environment: { name: o.env ?? 'node' },
        package: { name },
        entrypoint: o.entrypoint,
        executor: o.executor ?? {},
        env: o.vars ? Object.entries(o.vars).map(([k, v]) => ({ name: k, value: v })) : undefined,
      },
    },
  ];
  if (o.route) {
    const spec = typeof o.route === 'string' ? { path: o.route } : o.route;
    objects.push({ apiVersion: API, kind: 'HttpTrigger', metadata: { name: `${name}-route`, namespace: o.namespace }, spec: { methods: ['GET', 'POST'], function: { name }, ...spec } });
  }
  return objects;
}

/** A Node function answering with its pid after an optional ?sleep=ms, printing a line first. */
export const PID_FN = {
  'index.mjs': `export default async (req) => {
    const url = new URL(req.url);
    const ms = Number(url.searchParams.get('sleep') ?? 0);
    console.log('serving ' + url.pathname);
    await new Promise((r) => setTimeout(r, ms));
    return new Response(String(process.pid));
  };`,
};

export interface Harness {
  store: SqliteStore;
  dp: Dataplane;
  url: string;
  dir: string;
  reports: string[];
  apply(objects: KubeObject[]): Promise<void>;
  get(path: string, init?: Parameters<typeof request>[1]): Promise<{ status: number; body: string; headers: Record<string, any> }>;
  close(): Promise<void>;
}

export async function harness(o: { queueSize?: number; bodyLimit?: number; stateDir?: string; maxInstancesPerFunction?: number; secretsDir?: string; kubeconfig?: KubeConfig } = {}): Promise<Harness> {
  const dir = o.stateDir ?? tempDir('spore-dp-');
  const store = new SqliteStore(join(dir, 'spore.db'));
  const reports: string[] = [];
  const dp = await startDataplane({ store, stateDir: dir, port: 0, queueSize: o.queueSize, maxInstancesPerFunction: o.maxInstancesPerFunction, bodyLimit: o.bodyLimit, secretsDir: o.secretsDir, kubeconfig: o.kubeconfig, report: (m) => reports.push(m) });
  return {
    store,
    dp,
    url: dp.url,
    dir,
    reports,
    async apply(objects) {
      await store.apply(objects);
      await dp.router.reload();
    },
    async get(path, init) {
      const res = await request(`${dp.url}${path}`, init);
      return { status: res.statusCode, body: await res.body.text(), headers: res.headers };
    },
    async close() {
      await dp.close();
      await store.close();
    },
  };
}

export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

export async function waitFor<T>(what: string, probe: () => T | Promise<T>, timeoutMs = 15_000): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v) return v as NonNullable<T>;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * A Package and Function whose archive is written entry by entry, exactly as
 * given (hostile paths and links included), with a correct checksum.
 */
export function rawArchiveFn(name: string, entries: { path: string; data?: string; type?: 'File' | 'SymbolicLink'; linkpath?: string }[]): KubeObject[] {
  const blocks = entries.map(({ path, data = '', type = 'File', linkpath }) => {
    const block = Buffer.alloc(512);
    new Header({ path, mode: 0o644, size: data.length, mtime: new Date(0), type, linkpath }).encode(block, 0);
    return Buffer.concat([block, Buffer.from(data), Buffer.alloc((512 - (data.length % 512)) % 512)]);
  });
  const bytes = gzipSync(Buffer.concat([...blocks, Buffer.alloc(1024)]));
  const sha256 = createHash('sha256').update(bytes).digest('hex');
  return [
    { apiVersion: API, kind: 'Package', metadata: { name }, spec: { archive: { sha256, size: bytes.length, inline: bytes.toString('base64') } } },
    { apiVersion: API, kind: 'Function', metadata: { name }, spec: { environment: { name: 'node' }, package: { name } } },
  ];
}

/**
 * A file a function appends a JSON line to per event (its path for the
 * function's OUT env), writable by instances that run as other users, and its
 * lines read back; `flag` is a path in the same folder for a function to test.
 */
export function recordFile<T = Record<string, any>>(): { out: string; flag: string; lines: () => T[] } {
  const dir = tempDir('spore-record-');
  chmodSync(dir, 0o777);
  const out = join(dir, 'calls.jsonl');
  writeFileSync(out, '', { mode: 0o666 });
  chmodSync(out, 0o666);
  const lines = (): T[] => (existsSync(out) ? readFileSync(out, 'utf8').trim().split('\n').filter(Boolean).map((l) => JSON.parse(l) as T) : []);
  return { out, flag: join(dir, 'flag'), lines };
}

const ROOT = new URL('../..', import.meta.url).pathname;

/**
 * A dataplane over its SQLite file in `state`, in a process of its own as
 * spore up runs it (from lib/: build first), for the suites that kill it
 * mid-work. `start(objects)` applies the objects first (none: a restart). Its
 * output says `URL <url>`, then every 200 ms `STATE <queue consumers>`.
 * `kill()` ends any still running (register it in afterEach/afterAll).
 */
export function dataplaneProcess(state: string) {
  const script = join(state, 'up.mjs');
  writeFileSync(
    script,
    `import { startDataplane } from ${JSON.stringify(join(ROOT, 'lib/dataplane/index.js'))};
import { SqliteStore } from ${JSON.stringify(join(ROOT, 'lib/store/index.js'))};
const store = new SqliteStore(${JSON.stringify(join(state, 'spore.db'))});
const objects = JSON.parse(process.argv[2] ?? '[]');
if (objects.length) await store.apply(objects);
const dp = await startDataplane({ store, stateDir: ${JSON.stringify(state)}, port: 0, report: (m) => console.log(m) });
console.log('URL ' + dp.url);
setInterval(() => console.log('STATE ' + JSON.stringify(dp.queues.list())), 200);
`,
  );
  const children: ChildProcess[] = [];
  return {
    start(objects: KubeObject[] = []) {
      let out = '';
      const child = spawn(process.execPath, [script, JSON.stringify(objects)], { stdio: ['ignore', 'pipe', 'pipe'] });
      children.push(child);
      child.stdout!.on('data', (d) => (out += d));
      child.stderr!.on('data', (d) => (out += d));
      return {
        child,
        output: () => out,
        url: () => waitFor('the dataplane to serve', () => /URL (\S+)/.exec(out)?.[1], 60_000),
        /** Waits for the queue trigger `name` to consume. */
        consuming: (name: string, timeoutMs = 60_000) => waitFor(`queue trigger ${name} consuming`, () => (new RegExp(`"name":"${name}"[^}]*"state":"consuming"`).test(out) ? true : null), timeoutMs),
        /** SIGKILL, and its end. */
        kill: () => {
          child.kill('SIGKILL');
          return new Promise((r) => (child.exitCode === null ? child.once('exit', r) : r(undefined)));
        },
      };
    },
    kill() {
      for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
    },
  };
}
