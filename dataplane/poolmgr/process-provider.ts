// Instances as child processes of runtime servers (the local target).
import { spawn } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { chownSync, mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { request } from 'undici';
import { localPython, parseQuantity } from '../../api/index.js';
import { ownerEnv, stopLeftovers, stopRun } from '../../api/process-owner.js';
import type { StoredObject } from '../../store/index.js';
import { readLines } from '../logs.js';
import { InstanceCgroups, type InstanceLimits } from './cgroup.js';
import { InstanceUsers } from './instance-users.js';
import { InstanceSandbox } from './sandbox.js';
import { PackageFetcher } from './package-fetcher.js';
import { INSTANCE_TOKEN, type Instance, type InstanceProvider, type LogLine, type StartOptions } from './provider.js';
import { specializeInFolder } from './specialize-folder.js';

// The runtimes are programs, not compiled: from sources (dataplane/poolmgr)
// and from the build (lib/dataplane/poolmgr) they are in dataplane/runtimes.
const RUNTIMES_DIR = fileURLToPath(new URL('../runtimes/', import.meta.url)).replace('/lib/dataplane/', '/dataplane/');

const RUNTIME_FILES = { node: 'node/server.mjs', python: 'python/server.py' } as const;

/**
 * Node's flags for its runtime (the image's CMD has the same). V8's memory
 * reducer runs full collections in an instance that sits idle, as a warm one
 * does; that drops the hidden classes node's own optimized code was built on,
 * and the code rebuilt when the calls come measured 0.68–0.75 × a bare server,
 * 0.82–0.86 × with this flag, with the same memory after load (README, footnote ⁴
 * of the benchmarks).
 */
export const NODE_RUNTIME_FLAGS = ['--no-memory-reducer'] as const;

/** The command of each built-in runtime (its program in `dir`). */
export function builtinCommand(name: string, dir = RUNTIMES_DIR): string[] {
  if (name === 'node') return [process.execPath, ...NODE_RUNTIME_FLAGS, join(dir, RUNTIME_FILES.node)];
  if (name === 'python') return [localPython(), '-u', join(dir, RUNTIME_FILES.python)];
  throw new Error(`unknown built-in runtime "${name}"`);
}

/** The limits an Environment sets on each instance. */
function limitsOf(environment: StoredObject): InstanceLimits {
  const limits = (environment.spec as { resources?: { limits?: { memory?: string; cpu?: string } } }).resources?.limits;
  return { memoryBytes: parseQuantity(limits?.memory), cpus: parseQuantity(limits?.cpu) };
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}

const TAG = /^\x1e([^\x1f]*)\x1f(.*)$/s;
const ANNOUNCE = /^spore-runtime listening on [\d.:]+:(\d+)$/;

/** A local instance: a process, with a folder of its own holding its code, Secrets and ConfigMaps. */
export interface ProcessInstance extends Instance {
  readonly pid?: number;
  readonly workDir: string;
  /** The user it runs as, when not Spore's own: files put in `workDir` for it are its. */
  readonly owner?: { uid: number; gid: number };
}

export interface ProcessProviderOptions {
  /** Where instances get their folders. */
  workRoot: string;
  /** Fetches and verifies Package archives (specialization). @default one reading relative URLs from workRoot */
  fetcher?: PackageFetcher;
  /** How long a new process may take to answer its health check. @default 10000 ms */
  startTimeoutMs?: number;
  /** Grace between SIGTERM and SIGKILL. @default 2000 ms */
  killGraceMs?: number;
  /** Called when a line longer than the bound is cut, with the bytes dropped. */
  onLineCut?: (droppedBytes: number) => void;
  /** Told once per Environment of a limit this host cannot enforce. */
  report?: (message: string) => void;
  /** The folder (holding workRoot) a sandboxed instance must not see, e.g. the state folder. @default workRoot */
  hide?: string;
}

// Instances' folders sit inside the app's folder (its state folder): without a
// package.json of their own, Node would read the app's "type" for a function's
// .js files. One with no "type" lets Node decide per file by its syntax, as Fission does.
const INSTANCES_PACKAGE_JSON = '{ "description": "function instances: .js files are CommonJS unless they use ES module syntax" }\n';

export class ProcessProvider implements InstanceProvider {
  private readonly kills = new Set<() => Promise<void>>();
  /** An instance's life is bounded by a cgroup where Spore may make one, else by its process group; both by the owner mark. */
  private readonly cgroups = InstanceCgroups.detect();
  /** Set when Spore is root: each instance runs as a user of its own, its folder under `users.root`. */
  private readonly users: InstanceUsers | undefined;
  /** Where instances get their folders. */
  private readonly root: string;
  private readonly runtimesDir: string;
  private readonly told = new Set<string>();
  /** Set when Spore is not root and may make namespaces: each instance in its own (sandbox.ts). */
  private readonly sandbox = InstanceSandbox.detect();
  private readonly fetcher: PackageFetcher;

  constructor(private readonly options: ProcessProviderOptions) {
    this.fetcher = options.fetcher ?? new PackageFetcher({ archiveDir: options.workRoot });
    this.users = InstanceUsers.detect(options.workRoot);
    this.root = this.users?.root ?? resolve(options.workRoot);
    if (!this.users && !this.sandbox) options.report?.('instances run as your user, with no sandbox (Spore is not root and this system does not let it make namespaces): a function can read what you can, Spore\'s state folder included');
    this.runtimesDir = this.users?.runtimes(RUNTIMES_DIR, Object.values(RUNTIME_FILES)) ?? RUNTIMES_DIR;
    mkdirSync(this.root, { recursive: true });
    writeFileSync(join(this.root, 'package.json'), INSTANCES_PACKAGE_JSON, { mode: 0o644 });
    // what the instances of a Spore killed with -9 left running
    stopLeftovers(options.workRoot);
    void this.cgroups?.sweep().catch(() => {}); // best effort: the marks were stopped above
    // and the folders they left: no instance of ours exists yet (one Spore per state folder)
    for (const entry of readdirSync(this.root, { withFileTypes: true })) {
      if (entry.isDirectory() && entry.name !== 'runtimes') rmSync(join(this.root, entry.name), { recursive: true, force: true });
    }
  }

  async start(environment: StoredObject, options: StartOptions = {}): Promise<ProcessInstance> {
    const runtime = (environment.spec as { runtime: { name?: string; command?: string[] } }).runtime;
    const given = runtime.command ?? (runtime.name ? builtinCommand(runtime.name, this.runtimesDir) : undefined);
    if (!given) throw new Error(`Environment ${environment.metadata.name} has no local command (set runtime.name or runtime.command)`);
    const command = this.users ? InstanceUsers.runnable(given) : given;
    // Built-in runtimes bind a port of their own choosing and announce it, so
    // two instances starting at once can never race for the same port.
    const announces = !runtime.command;
    const port = announces ? 0 : await freePort();
    const id = randomUUID().slice(0, 8);
    const workDir = join(this.root, id);
    mkdirSync(workDir, { recursive: true, mode: 0o700 });
    const owner = this.users?.next();
    if (owner) chownSync(workDir, owner.uid, owner.gid);
    const limits = limitsOf(environment);
    const cgroup = this.cgroups?.create(id, limits);
    this.tell(environment, limits, cgroup?.enforced ?? { memory: false, cpu: false });
    // With a cgroup, a shell (still root) moves itself in, then drops to the instance's user;
    // without one, the process starts as that user.
    const dropped = owner && cgroup ? ['setpriv', `--reuid=${owner.uid}`, `--regid=${owner.gid}`, '--clear-groups', '--inh-caps=-all', '--', ...command] : command;
    // the state folder, unless the runtime's own program lives in it (say `--state-dir .` in an app that holds spore): then the instances' folders only
    const wide = this.options.hide ? resolve(this.options.hide) : undefined;
    const hide = wide && workDir.startsWith(`${wide}/`) && !command.some((part) => part.startsWith(`${wide}/`)) ? wide : this.root;
    const contained = this.sandbox ? this.sandbox.wrap(dropped, { hide, workDir, packageJson: INSTANCES_PACKAGE_JSON }) : dropped;
    const argv = cgroup ? InstanceCgroups.wrap(cgroup, contained) : contained;
    const child = spawn(argv[0], argv.slice(1), {
      ...(owner && !cgroup ? { uid: owner.uid, gid: owner.gid } : {}),
      cwd: workDir,
      // the owner mark lets kill() find what left the group, and the next start find what a killed Spore left
      // nothing of Spore's or the host's environment (tokens, secrets, paths): the function's own env and what a runtime needs
      env: { PATH: process.env.PATH ?? '/usr/local/bin:/usr/bin:/bin', HOME: workDir, LANG: process.env.LANG ?? 'C.UTF-8', ...options.env, PORT: String(port), HOST: '127.0.0.1', SPORE_INSTANCE: id, ...ownerEnv(this.options.workRoot, id) },
      stdio: ['pipe', 'pipe', 'pipe'], // our end of stdin closing tells the runtime to exit
      detached: true, // its own process group, killed whole
    });
    const exited = new Promise<{ code: number | null; signal: string | null }>((resolve) => {
      child.once('exit', (code, signal) => resolve({ code, signal }));
      child.once('error', () => resolve({ code: null, signal: null }));
    });
    let announce: ((port: number) => void) | undefined;
    const announced = new Promise<number>((resolve) => (announce = resolve));
    const emit = (stream: LogLine['stream']) => (line: string) => {
      const a = announce && stream === 'stdout' ? ANNOUNCE.exec(line) : null;
      if (a) {
        announce!(Number(a[1]));
        announce = undefined; // only the runtime's first line announces; later ones are the function's
        return;
      }
      const m = TAG.exec(line);
      options.onLog?.(m ? { stream, line: m[2], requestId: m[1] || undefined } : { stream, line });
    };
    readLines(child.stdout!, emit('stdout'), this.options.onLineCut);
    readLines(child.stderr!, emit('stderr'), this.options.onLineCut);
    child.stdin!.on('error', () => {}); // the child may be gone already
    // the credential travels on stdin, which only we hold: not in the environment, which /proc shows
    const token = randomBytes(24).toString('base64url');
    child.stdin!.write(`${token}\n`);

    const grace = this.options.killGraceMs ?? 2000;
    let killing: Promise<void> | undefined;
    const signalGroup = (signal: NodeJS.Signals) => {
      try {
        process.kill(-child.pid!, signal);
      } catch {
        // the group is empty
      }
    };
    const kill = () =>
      (killing ??= (async () => {
        if (child.pid && child.exitCode === null && child.signalCode === null) {
          signalGroup('SIGTERM');
          const timer = setTimeout(() => signalGroup('SIGKILL'), grace);
          await exited;
          clearTimeout(timer);
        }
        // whatever the runtime started goes with it: its group, its cgroup, and what carries its mark
        if (child.pid) signalGroup('SIGKILL');
        if (cgroup) await InstanceCgroups.kill(cgroup);
        stopRun(this.options.workRoot, id);
        rmSync(workDir, { recursive: true, force: true });
        if (owner) this.users!.release(owner);
        this.kills.delete(kill);
      })());
    this.kills.add(kill);
    void exited.then(kill); // a runtime that dies on its own takes what it started too
    try {
      const timeoutMs = this.options.startTimeoutMs ?? 10_000;
      const actual = announces ? await this.within(announced, exited, timeoutMs) : port;
      const url = `http://127.0.0.1:${actual}`;
      await this.waitHealthy(url, id, token, exited, timeoutMs);
      // Fission's layout in the instance's folder: code/, secrets/<namespace>/<name>/<key>, configs/…
      const specialize: Instance['specialize'] = (request) =>
        specializeInFolder(request, { fetcher: this.fetcher, codeDir: join(workDir, 'code'), secretsDir: join(workDir, 'secrets'), configsDir: join(workDir, 'configs'), runtimeUrl: url, token, owner });
      return { id, url, pid: child.pid, startedAt: Date.now(), exited, workDir, kill, token, owner, specialize, memoryLimited: () => (cgroup ? InstanceCgroups.oomKilled(cgroup) : false) };
    } catch (err) {
      await kill();
      throw err;
    }
  }

  /** Says once per Environment which of its limits this host does not enforce. */
  private tell(environment: StoredObject, limits: InstanceLimits, enforced: { memory: boolean; cpu: boolean }): void {
    const missing = [limits.memoryBytes && !enforced.memory ? 'memory' : '', limits.cpus && !enforced.cpu ? 'cpu' : ''].filter(Boolean);
    const key = `${environment.metadata.namespace}/${environment.metadata.name}:${missing.join(',')}`;
    if (!missing.length || this.told.has(key)) return;
    this.told.add(key);
    this.options.report?.(`Environment ${environment.metadata.namespace}/${environment.metadata.name}: its ${missing.join(' and ')} limit is not enforced on this host (no writable ${missing.join('/')} cgroup for Spore; run Spore as root on a cgroup host, or on a cluster)`);
  }

  /** The announced port, unless the process exits or takes too long first. */
  private within(announced: Promise<number>, exited: Promise<{ code: number | null; signal: string | null }>, timeoutMs: number): Promise<number> {
    let timer: NodeJS.Timeout | undefined;
    return Promise.race([
      announced,
      exited.then((e) => Promise.reject(new Error(`runtime exited while starting (code ${e.code}, signal ${e.signal})`))),
      new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`runtime did not start within ${timeoutMs} ms`)), timeoutMs))),
    ]).finally(() => clearTimeout(timer));
  }

  private async waitHealthy(url: string, id: string, token: string, exited: Promise<{ code: number | null; signal: string | null }>, timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    let gone: { code: number | null; signal: string | null } | undefined;
    void exited.then((e) => (gone = e));
    for (let delay = 2; ; delay = Math.min(delay * 2, 100)) {
      if (gone) throw new Error(`runtime exited while starting (code ${gone.code}, signal ${gone.signal})`);
      try {
        const res = await request(`${url}/healthz`, { headers: { [INSTANCE_TOKEN]: token }, headersTimeout: 1000, bodyTimeout: 1000 });
        const body = (await res.body.json().catch(() => ({}))) as { instance?: string };
        // a runtime that says who it is must be this one (not another process on a reused port)
        if (res.statusCode === 200 && (body.instance === undefined || body.instance === id)) return;
      } catch {
        // not listening yet
      }
      if (Date.now() > deadline) throw new Error(`runtime did not answer its health check within ${timeoutMs} ms`);
      await new Promise((r) => setTimeout(r, delay));
    }
  }

  async shutdown(): Promise<void> {
    await Promise.all([...this.kills].map((kill) => kill()));
    // the instances' root outside the state folder (as root) goes too: a shared temp folder keeps nothing of ours
    if (this.users) rmSync(this.root, { recursive: true, force: true });
  }
}
