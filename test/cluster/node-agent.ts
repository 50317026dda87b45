// TEST INFRASTRUCTURE, not part of Spore: a node agent for the tests' API
// server, which has no kubelet, no scheduler and no controller manager. For one
// Node (`spore-test-node`) it plays
//  - the scheduler: binds every pod without a node to it (pods/binding);
//  - the kubelet: runs each container of its pods as a local process, the
//    image mapped to a local command (images.json, plus SPORE_TEST_IMAGES),
//    on a loopback address of its own (127.0.1.N) as the pod IP, and writes the
//    pod's status (phase, podIP, containerStatuses, Ready from the readiness
//    probe); on deletion SIGTERM, the grace period (capped), SIGKILL, then the
//    pod is removed, as the kubelet finalizes it;
//  - the service account controller: a `default` ServiceAccount in every
//    namespace (the API server refuses pods in a namespace without one).
//  - the kubelet's log endpoint (kubelet-logs.ts): each container's output,
//    kept line by line with its time, served over HTTPS to the API server's
//    `pods/<name>/log` (its port in the Node's daemonEndpoints).
// No isolation (processes run as this user, in the repository root), no images,
// no CNI, no `previous` logs (a container's log runs on across its restarts),
// no liveness or startup probes, no init containers.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { KubeConfig, Watch } from '@kubernetes/client-node';
import { KubeClient, KubeError } from '../../store/kube-client.js';
import { ContainerLog, startLogServer, type LogServer } from './kubelet-logs.js';

export const NODE_NAME = 'spore-test-node';
/** Container processes run here, so that the image map's relative paths name the repository's files. */
export const REPO = new URL('../..', import.meta.url).pathname;
const DEFAULT_IMAGES = new URL('./images.json', import.meta.url).pathname;
/** The IP prefix of pods: 127.0.0.0/8 is loopback on Linux, so each address binds without setup. */
const POD_NET = '127.0.1.';

/** Image pattern (`*` matches anything) → the local command standing for the image's entrypoint. */
export type ImageMap = Record<string, string[]>;

export interface NodeAgentOptions {
  nodeName?: string;
  /** Tried before images.json and SPORE_TEST_IMAGES. */
  images?: ImageMap;
  /** The longest grace period given on deletion, in seconds (a pod may ask for 30). */
  graceCapSeconds?: number;
  log?: (line: string) => void;
}

interface Container {
  spec: any;
  log: ContainerLog;
  proc?: ChildProcess;
  state: any;
  lastState?: any;
  restarts: number;
  everStarted: boolean;
  ready: boolean;
  /** A restart, a retried start or the next probe. */
  timer?: NodeJS.Timeout;
  probeTimer?: NodeJS.Timeout;
  startedAt?: number;
}

interface PodRun {
  uid: string;
  namespace: string;
  name: string;
  pod: any;
  ip?: string;
  dir: string;
  containers: Container[];
  startTime: string;
  readySince: string;
  wasReady: boolean;
  stopping?: Promise<void>;
  writing?: Promise<void>;
  dirty: boolean;
}

/** The image map: the options' entries first, then SPORE_TEST_IMAGES (a JSON file), then images.json. */
export function loadImages(extra: ImageMap = {}): [RegExp, string, string[]][] {
  const read = (file: string): ImageMap => {
    try {
      return JSON.parse(readFileSync(file, 'utf8'));
    } catch (err) {
      throw new Error(`the test node's image map ${file} cannot be read: ${(err as Error).message}`);
    }
  };
  const all = [extra, process.env.SPORE_TEST_IMAGES ? read(process.env.SPORE_TEST_IMAGES) : {}, read(DEFAULT_IMAGES)];
  return all.flatMap((m) => Object.entries(m)).map(([pattern, argv]) => {
    if (!Array.isArray(argv) || argv.some((a) => typeof a !== 'string')) throw new Error(`the test node's image map: "${pattern}" must name an array of strings (a command), not ${JSON.stringify(argv)}`);
    return [new RegExp(`^${pattern.split('*').map((s) => s.replace(/[.+?^${}()|[\]\\]/g, '\\$&')).join('.*')}$`), pattern, argv];
  });
}

/** An error a container cannot start with until something changes: shown as its waiting reason. */
class Waiting extends Error {
  constructor(readonly reason: string, message: string) {
    super(message);
  }
}

const now = () => new Date().toISOString().replace(/\.\d+Z$/, 'Z');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Addresses some process listens on (other agents' pods, on a shared machine), from /proc/net/tcp. */
function listenedAddresses(): Set<string> {
  const seen = new Set<string>();
  try {
    for (const line of readFileSync('/proc/net/tcp', 'utf8').split('\n').slice(1)) {
      const [, local, , state] = line.trim().split(/\s+/);
      if (state !== '0A' || !local) continue; // 0A: LISTEN
      const hex = local.split(':')[0];
      seen.add([6, 4, 2, 0].map((i) => parseInt(hex.slice(i, i + 2), 16)).join('.')); // little-endian
    }
  } catch {
    // not Linux: no check
  }
  return seen;
}

export class NodeAgent {
  readonly nodeName: string;
  private readonly client: KubeClient;
  private readonly images: [RegExp, string, string[]][];
  private readonly graceCap: number;
  private readonly log: (line: string) => void;
  private readonly pods = new Map<string, PodRun>();
  private readonly binding = new Set<string>();
  private readonly accounts = new Set<string>();
  private readonly ips = new Set<string>();
  private nextIp = 1 + Math.floor(Math.random() * 254); // a random start makes two agents on one machine unlikely to race for one address
  private readonly dir = mkdtempSync(join(tmpdir(), 'spore-test-node-'));
  private readonly aborts = new Set<AbortController>();
  private heartbeat?: NodeJS.Timeout;
  private logServer?: LogServer;
  private stopped = false;
  private readonly killAll = () => {
    for (const run of this.pods.values()) for (const c of run.containers) if (c.proc?.pid) signalGroup(c.proc.pid, 'SIGKILL');
  };

  constructor(private readonly kc: KubeConfig, o: NodeAgentOptions = {}) {
    this.nodeName = o.nodeName ?? NODE_NAME;
    this.client = new KubeClient(kc);
    this.images = loadImages(o.images);
    this.graceCap = o.graceCapSeconds ?? 5;
    this.log = o.log ?? ((line) => console.error(`[${this.nodeName}] ${line}`));
  }

  /** Registers the Node (Ready) and starts watching namespaces and pods; resolves once both are listed. */
  async start(): Promise<void> {
    process.on('exit', this.killAll); // a test run that ends without stop() leaves no process behind
    this.logServer = await startLogServer(this.dir, (namespace, name, container) =>
      [...this.pods.values()].find((r) => r.namespace === namespace && r.name === name)?.containers.find((c) => c.spec.name === container)?.log);
    await this.client.request('POST', '/api/v1/nodes', {
      body: {
        apiVersion: 'v1', kind: 'Node',
        metadata: { name: this.nodeName, labels: { 'kubernetes.io/hostname': this.nodeName, 'kubernetes.io/os': 'linux', 'spore.dev/test-node': 'true' } },
      },
    }).catch((err) => {
      if (!(err instanceof KubeError && err.status === 409)) throw err;
    });
    await this.nodeStatus(true);
    this.heartbeat = setInterval(() => void this.nodeStatus(true).catch((err) => this.log(`node status: ${err.message}`)), 10_000);
    await Promise.all([
      this.informer('/api/v1/namespaces', (ns) => this.serviceAccount(ns), () => {}),
      this.informer('/api/v1/pods', (pod) => this.sync(pod), (uid) => void this.gone(uid)),
    ]);
  }

  /** Stops every container (grace capped), marks the Node not ready and stops watching. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    clearInterval(this.heartbeat);
    for (const a of this.aborts) a.abort();
    await Promise.all([...this.pods.values()].map((run) => this.stopContainers(run, this.graceCap)));
    this.logServer?.close();
    await this.nodeStatus(false).catch(() => {});
    process.off('exit', this.killAll);
    this.client.close();
    rmSync(this.dir, { recursive: true, force: true });
  }

  private async nodeStatus(ready: boolean): Promise<void> {
    const t = now();
    const resources = { cpu: '8', memory: '16Gi', pods: '110' };
    await this.client.request('PATCH', `/api/v1/nodes/${this.nodeName}/status`, {
      contentType: 'application/merge-patch+json',
      body: {
        status: {
          conditions: [{
            type: 'Ready', status: ready ? 'True' : 'False', reason: ready ? 'KubeletReady' : 'AgentStopped',
            message: ready ? 'the test node agent is running' : 'the test node agent stopped', lastHeartbeatTime: t, lastTransitionTime: t,
          }],
          addresses: [{ type: 'InternalIP', address: '127.0.0.1' }, { type: 'Hostname', address: this.nodeName }],
          // where the API server reaches this node's log endpoint (at the InternalIP: the harness prefers it)
          ...(this.logServer ? { daemonEndpoints: { kubeletEndpoint: { Port: this.logServer.port } } } : {}),
          capacity: resources, allocatable: resources,
          nodeInfo: { kubeletVersion: 'spore-test-node-agent', operatingSystem: 'linux', architecture: process.arch, containerRuntimeVersion: 'local-processes://', kubeProxyVersion: '', machineID: '', systemUUID: '', bootID: '', kernelVersion: '', osImage: '' },
        },
      },
    });
  }

  /**
   * List, then watch from the list's version; after the watch ends (or any
   * error), list again: a list is the whole state, so what it lacks is gone.
   * Resolves after the first list.
   */
  private informer(path: string, onObject: (o: any) => void, onGone: (uid: string) => void): Promise<void> {
    let first!: () => void;
    const listed = new Promise<void>((r) => (first = r));
    const seen = new Set<string>();
    void (async () => {
      while (!this.stopped) {
        try {
          const list = await this.client.request<{ items: any[]; metadata: { resourceVersion: string } }>('GET', path);
          const now = new Set(list.items.map((o) => o.metadata.uid as string));
          for (const uid of seen) if (!now.has(uid)) onGone(uid);
          seen.clear();
          for (const o of list.items) {
            seen.add(o.metadata.uid);
            onObject(o);
          }
          first();
          let watching: AbortController | undefined;
          await new Promise<void>((resolve) => {
            const abort = new Watch(this.kc).watch(path, { resourceVersion: list.metadata.resourceVersion, allowWatchBookmarks: true }, (type, o) => {
              if (type === 'ADDED' || type === 'MODIFIED') {
                seen.add(o.metadata.uid);
                onObject(o);
              } else if (type === 'DELETED') {
                seen.delete(o.metadata.uid);
                onGone(o.metadata.uid);
              } else if (type === 'ERROR') resolve(); // 410 Gone and the like: list again
            }, () => resolve());
            void abort.then((a) => {
              this.aborts.add((watching = a));
              if (this.stopped) a.abort();
            }, () => resolve());
          });
          watching?.abort();
          if (watching) this.aborts.delete(watching);
        } catch (err) {
          if (!this.stopped) this.log(`listing ${path}: ${(err as Error).message}`);
        }
        if (!this.stopped) await sleep(500);
      }
      first();
    })();
    return listed;
  }

  /** The service account controller's part: pods are refused in a namespace without `default`. */
  private serviceAccount(ns: any): void {
    const name = ns.metadata.name;
    if (this.accounts.has(name) || ns.metadata.deletionTimestamp) return;
    this.accounts.add(name);
    this.client.request('POST', `/api/v1/namespaces/${name}/serviceaccounts`, { body: { apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name: 'default' } } }).catch((err) => {
      if (err instanceof KubeError && err.status === 409) return;
      this.accounts.delete(name); // tried again on the next event or list
      this.log(`creating ServiceAccount ${name}/default: ${err.message}`);
    });
  }

  private sync(pod: any): void {
    if (this.stopped) return;
    const { uid, namespace, name, deletionTimestamp } = pod.metadata;
    if (!pod.spec.nodeName) {
      if (!deletionTimestamp) void this.bind(pod);
      return;
    }
    if (pod.spec.nodeName !== this.nodeName) return;
    const run = this.pods.get(uid);
    if (deletionTimestamp) return void this.finalize(pod, run);
    if (run) {
      run.pod = pod;
      return;
    }
    if (pod.status?.phase === 'Succeeded' || pod.status?.phase === 'Failed') return; // finished before this agent started
    const dir = join(this.dir, `${namespace}_${name}_${uid.slice(0, 8)}`);
    const fresh: PodRun = {
      uid, namespace, name, pod, dir, startTime: now(), readySince: now(), wasReady: false, dirty: false,
      containers: (pod.spec.containers as any[]).map((spec) => ({ spec, log: new ContainerLog(join(dir, `${spec.name}.log`)), restarts: 0, everStarted: false, ready: false, state: { waiting: { reason: 'ContainerCreating' } } })),
    };
    this.pods.set(uid, fresh);
    this.startPod(fresh);
  }

  /** The scheduler's part. */
  private async bind(pod: any): Promise<void> {
    const { uid, namespace, name } = pod.metadata;
    if (this.binding.has(uid)) return;
    this.binding.add(uid);
    try {
      await this.client.request('POST', `/api/v1/namespaces/${namespace}/pods/${name}/binding`, {
        body: { apiVersion: 'v1', kind: 'Binding', metadata: { name, namespace, uid }, target: { apiVersion: 'v1', kind: 'Node', name: this.nodeName } },
      });
    } catch (err) {
      this.binding.delete(uid);
      if (!(err instanceof KubeError && (err.status === 404 || err.status === 409))) this.log(`binding pod ${namespace}/${name}: ${(err as Error).message}`);
    }
  }

  private allocateIp(): string | undefined {
    const listened = listenedAddresses();
    for (let i = 0; i < 254; i++) {
      const ip = POD_NET + this.nextIp;
      this.nextIp = (this.nextIp % 254) + 1;
      if (!this.ips.has(ip) && !listened.has(ip)) {
        this.ips.add(ip);
        return ip;
      }
    }
    return undefined;
  }

  private startPod(run: PodRun): void {
    run.ip = this.allocateIp();
    mkdirSync(join(run.dir, 'volumes'), { recursive: true });
    for (const c of run.containers) this.startContainer(run, c);
    this.writeStatus(run);
  }

  /** A volume's folder on this machine: emptyDir a folder of the pod's, hostPath its path; other kinds are not mounted. */
  private volumePath(run: PodRun, name: string): string | undefined {
    const v = (run.pod.spec.volumes ?? []).find((v: any) => v.name === name);
    if (v?.emptyDir) {
      const dir = join(run.dir, 'volumes', name);
      mkdirSync(dir, { recursive: true });
      return dir;
    }
    return v?.hostPath?.path;
  }

  /** The command standing for the container: the image's mapped entrypoint + args, or the container's own command + args. */
  private argv(spec: any): string[] {
    const match = this.images.find(([re]) => re.test(spec.image));
    if (!match) throw new Waiting('ErrImagePull', `image "${spec.image}" is not in the test node's image map (test/cluster/images.json, or a JSON file named by SPORE_TEST_IMAGES): the test node agent runs local commands, not images`);
    const argv = [...(spec.command ?? match[2]), ...(spec.args ?? [])];
    if (!argv.length) throw new Waiting('CreateContainerConfigError', `image "${spec.image}" maps to no command in the test node's image map (pattern "${match[1]}"): the container must give its command`);
    return argv;
  }

  private async env(run: PodRun, spec: any): Promise<Record<string, string>> {
    const pod = run.pod;
    const env: Record<string, string> = { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? '/', HOSTNAME: pod.metadata.name, HOST: run.ip! };
    const port = spec.ports?.[0]?.containerPort;
    if (port) env.PORT = String(port);
    for (const m of spec.volumeMounts ?? []) {
      const path = this.volumePath(run, m.name);
      if (path) env[`SPORE_MOUNT_${m.mountPath.replace(/^\/+|\/+$/g, '').replace(/[^A-Za-z0-9]+/g, '_').toUpperCase()}`] = m.subPath ? join(path, m.subPath) : path;
    }
    const ns = pod.metadata.namespace;
    const read = async (kind: 'secrets' | 'configmaps', name: string, optional: boolean): Promise<Record<string, string> | undefined> => {
      try {
        const o = await this.client.request('GET', `/api/v1/namespaces/${ns}/${kind}/${name}`);
        if (kind === 'configmaps') return o.data ?? {};
        return Object.fromEntries(Object.entries(o.data ?? {}).map(([k, v]) => [k, Buffer.from(v as string, 'base64').toString('utf8')]));
      } catch (err) {
        if (!(err instanceof KubeError && err.status === 404)) throw err;
        if (optional) return undefined;
        throw new Waiting('CreateContainerConfigError', `${kind === 'secrets' ? 'secret' : 'configmap'} "${name}" not found`);
      }
    };
    for (const from of spec.envFrom ?? []) {
      const ref = from.secretRef ?? from.configMapRef;
      const data = await read(from.secretRef ? 'secrets' : 'configmaps', ref.name, !!ref.optional);
      for (const [k, v] of Object.entries(data ?? {})) env[(from.prefix ?? '') + k] = v;
    }
    const fields: Record<string, () => string | undefined> = {
      'metadata.name': () => pod.metadata.name, 'metadata.namespace': () => ns, 'metadata.uid': () => pod.metadata.uid,
      'spec.nodeName': () => this.nodeName, 'spec.serviceAccountName': () => pod.spec.serviceAccountName,
      'status.podIP': () => run.ip, 'status.podIPs': () => run.ip, 'status.hostIP': () => '127.0.0.1', 'status.hostIPs': () => '127.0.0.1',
    };
    for (const e of spec.env ?? []) {
      const f = e.valueFrom;
      if (!f) env[e.name] = e.value ?? '';
      else if (f.fieldRef) {
        const path: string = f.fieldRef.fieldPath;
        const m = /^metadata\.(labels|annotations)\['(.+)'\]$/.exec(path);
        const value = m ? pod.metadata[m[1]]?.[m[2]] ?? '' : fields[path]?.();
        if (value === undefined) throw new Waiting('CreateContainerConfigError', `env ${e.name}: fieldRef ${path} is not supported by the test node agent`);
        env[e.name] = value;
      } else if (f.secretKeyRef || f.configMapKeyRef) {
        const ref = f.secretKeyRef ?? f.configMapKeyRef;
        const data = await read(f.secretKeyRef ? 'secrets' : 'configmaps', ref.name, !!ref.optional);
        if (data && ref.key in data) env[e.name] = data[ref.key];
        else if (data && !ref.optional) throw new Waiting('CreateContainerConfigError', `couldn't find key ${ref.key} in ${f.secretKeyRef ? 'Secret' : 'ConfigMap'} ${ns}/${ref.name}`);
      } else throw new Waiting('CreateContainerConfigError', `env ${e.name}: ${Object.keys(f).join(', ')} is not supported by the test node agent`);
    }
    return env;
  }

  private async startContainer(run: PodRun, c: Container): Promise<void> {
    if (run.stopping) return;
    let argv: string[];
    let env: Record<string, string>;
    try {
      if (!run.ip) throw new Waiting('ContainerCreating', `no free pod IP left in ${POD_NET}0/24`);
      argv = this.argv(c.spec);
      env = await this.env(run, c.spec);
    } catch (err) {
      const waiting = err instanceof Waiting ? err : new Waiting('CreateContainerError', (err as Error).message);
      c.state = { waiting: { reason: waiting.reason, message: waiting.message } };
      // an image map does not change; a missing Secret may appear: tried again, as the kubelet does
      if (waiting.reason !== 'ErrImagePull') c.timer = setTimeout(() => void this.startContainer(run, c), 2_000);
      return this.writeStatus(run);
    }
    if (run.stopping) return;
    // its own process group, so that a stop reaches what the command started too; `stdin: true`
    // keeps stdin open (a pipe nobody writes to), as the container runtime does; else it is empty.
    // Its output comes through pipes, so that each line gets its time (the container's log)
    const proc = spawn(argv[0], argv.slice(1), { cwd: REPO, env, stdio: [c.spec.stdin ? 'pipe' : 'ignore', 'pipe', 'pipe'], detached: true });
    proc.stdin?.on('error', () => {});
    c.log.capture(proc.stdout!, proc.stderr!);
    c.proc = proc;
    c.startedAt = Date.now();
    const startedAt = now();
    proc.once('spawn', () => {
      c.everStarted = true;
      c.state = { running: { startedAt } };
      c.ready = !c.spec.readinessProbe;
      if (c.spec.readinessProbe) this.probe(run, c, proc, true, 0, 0);
      this.writeStatus(run);
    });
    proc.once('error', (err) => {
      if (proc.pid) return; // an error after spawning: the exit says it
      c.proc = undefined;
      this.exited(run, c, { exitCode: 128, reason: 'StartError', message: `${argv[0]}: ${err.message}`, startedAt, finishedAt: now() });
    });
    proc.once('exit', (code, signal) => {
      c.proc = undefined;
      const exitCode = code ?? 128 + (signal ? (({ SIGKILL: 9, SIGTERM: 15, SIGINT: 2 }) as Record<string, number>)[signal] ?? 0 : 0);
      this.exited(run, c, { exitCode, ...(signal ? { signal: exitCode - 128 } : {}), reason: exitCode === 0 ? 'Completed' : 'Error', startedAt, finishedAt: now(), containerID: `spore-test://${proc.pid}` });
    });
  }

  /** Restarts as the pod's restartPolicy says, after a back-off that doubles (1 s … 20 s; reset after a minute's run). */
  private exited(run: PodRun, c: Container, terminated: any): void {
    clearTimeout(c.probeTimer);
    c.ready = false;
    const policy = run.pod.spec.restartPolicy ?? 'Always';
    if (run.stopping || !(policy === 'Always' || (policy === 'OnFailure' && terminated.exitCode !== 0))) {
      c.state = { terminated };
      return this.writeStatus(run);
    }
    if (Date.now() - (c.startedAt ?? 0) > 60_000) c.restarts = 0;
    const backoff = Math.min(1_000 * 2 ** c.restarts, 20_000);
    c.lastState = { terminated };
    c.state = { waiting: { reason: 'CrashLoopBackOff', message: `back-off ${backoff / 1000}s restarting failed container=${c.spec.name} pod=${run.name}` } };
    c.timer = setTimeout(() => {
      c.restarts++;
      void this.startContainer(run, c);
    }, backoff);
    this.writeStatus(run);
  }

  /** The readiness probe: httpGet, tcpSocket or exec, every periodSeconds, with its thresholds. */
  private probe(run: PodRun, c: Container, proc: ChildProcess, first: boolean, successes: number, failures: number): void {
    const p = c.spec.readinessProbe;
    const delay = (first ? p.initialDelaySeconds ?? 0 : p.periodSeconds ?? 10) * 1000;
    c.probeTimer = setTimeout(async () => {
      if (c.proc !== proc || run.stopping) return;
      const ok = await this.check(run, c, p);
      if (c.proc !== proc || run.stopping) return;
      [successes, failures] = ok ? [successes + 1, 0] : [0, failures + 1];
      const ready = c.ready ? failures < (p.failureThreshold ?? 3) : successes >= (p.successThreshold ?? 1);
      if (ready !== c.ready) {
        c.ready = ready;
        this.writeStatus(run);
      }
      this.probe(run, c, proc, false, successes, failures);
    }, delay);
  }

  private check(run: PodRun, c: Container, p: any): Promise<boolean> {
    const timeout = (p.timeoutSeconds ?? 1) * 1000;
    const port = (spec: any) => (typeof spec.port === 'number' ? spec.port : c.spec.ports?.find((x: any) => x.name === spec.port)?.containerPort);
    return new Promise((resolve) => {
      if (p.httpGet) {
        const g = p.httpGet;
        const scheme = g.scheme === 'HTTPS' ? https : http;
        const req = scheme.get({ host: g.host ?? run.ip, port: port(g), path: g.path ?? '/', timeout, rejectUnauthorized: false, headers: Object.fromEntries((g.httpHeaders ?? []).map((h: any) => [h.name, h.value])) }, (res) => {
          res.resume();
          resolve((res.statusCode ?? 0) >= 200 && (res.statusCode ?? 0) < 400);
        });
        req.on('error', () => resolve(false));
        req.on('timeout', () => req.destroy());
      } else if (p.tcpSocket) {
        const s = net.connect({ host: p.tcpSocket.host ?? run.ip, port: port(p.tcpSocket), timeout }, () => {
          s.destroy();
          resolve(true);
        });
        s.on('error', () => resolve(false));
        s.on('timeout', () => s.destroy());
      } else if (p.exec) {
        const x = spawn(p.exec.command[0], p.exec.command.slice(1), { cwd: REPO, stdio: 'ignore', timeout });
        x.on('error', () => resolve(false));
        x.on('exit', (code) => resolve(code === 0));
      } else resolve(false);
    });
  }

  private phase(run: PodRun): string {
    if (run.containers.some((c) => !c.everStarted)) return 'Pending';
    if (run.containers.every((c) => c.state.terminated)) return run.containers.every((c) => c.state.terminated.exitCode === 0) ? 'Succeeded' : 'Failed';
    return 'Running';
  }

  /** Writes the pod's status (merge patch, its uid as precondition); writes never overlap, the last state wins. */
  private writeStatus(run: PodRun): void {
    run.dirty = true;
    if (run.writing || this.stopped) return;
    run.writing = (async () => {
      while (run.dirty && !run.stopping) {
        run.dirty = false;
        const phase = this.phase(run);
        const ready = phase === 'Running' && run.containers.every((c) => c.ready);
        if (ready !== run.wasReady) [run.wasReady, run.readySince] = [ready, now()];
        const cond = (type: string, ok: boolean, since = run.startTime) => ({ type, status: ok ? 'True' : 'False', lastProbeTime: null, lastTransitionTime: since });
        const status = {
          phase, hostIP: '127.0.0.1', hostIPs: [{ ip: '127.0.0.1' }], startTime: run.startTime,
          ...(run.ip ? { podIP: run.ip, podIPs: [{ ip: run.ip }] } : {}),
          conditions: [cond('PodScheduled', true), cond('Initialized', true), cond('ContainersReady', ready, run.readySince), cond('Ready', ready, run.readySince)],
          containerStatuses: run.containers.map((c) => ({
            name: c.spec.name, image: c.spec.image, imageID: '', containerID: c.proc?.pid ? `spore-test://${c.proc.pid}` : c.state.terminated?.containerID,
            ready: c.ready, started: !!c.state.running, restartCount: c.restarts, state: c.state, lastState: c.lastState ?? {},
          })),
        };
        try {
          await this.client.request('PATCH', `/api/v1/namespaces/${run.namespace}/pods/${run.name}/status`, { contentType: 'application/merge-patch+json', body: { metadata: { uid: run.uid }, status } });
        } catch (err) {
          if (!(err instanceof KubeError && (err.status === 404 || err.status === 409))) this.log(`writing the status of pod ${run.namespace}/${run.name}: ${(err as Error).message}`);
        }
      }
      run.writing = undefined;
    })();
  }

  /** SIGTERM to each container's process group, up to `grace` seconds, then SIGKILL; resolves once all are gone. */
  private stopContainers(run: PodRun, grace: number): Promise<void> {
    return (run.stopping ??= (async () => {
      for (const c of run.containers) {
        clearTimeout(c.timer);
        clearTimeout(c.probeTimer);
      }
      const live = run.containers.map((c) => c.proc).filter((p): p is ChildProcess => !!p?.pid && p.exitCode === null && p.signalCode === null);
      const exits = live.map((p) => new Promise((r) => p.once('exit', r)));
      for (const p of live) signalGroup(p.pid!, 'SIGTERM');
      const all = Promise.all(exits);
      if (await Promise.race([all.then(() => true), sleep(grace * 1000).then(() => false)])) return this.release(run);
      for (const p of live) signalGroup(p.pid!, 'SIGKILL');
      await all;
      this.release(run);
    })());
  }

  private release(run: PodRun): void {
    if (run.ip) this.ips.delete(run.ip);
    rmSync(run.dir, { recursive: true, force: true });
  }

  /** The kubelet's end of a deletion: stop the containers within the grace period, then remove the pod for good. */
  private async finalize(pod: any, run: PodRun | undefined): Promise<void> {
    const { uid, namespace, name } = pod.metadata;
    if (run) {
      if (run.stopping) return;
      const asked = pod.metadata.deletionGracePeriodSeconds ?? pod.spec.terminationGracePeriodSeconds ?? 30;
      await this.stopContainers(run, Math.min(asked, this.graceCap));
    }
    try {
      await this.client.request('DELETE', `/api/v1/namespaces/${namespace}/pods/${name}`, { body: { apiVersion: 'v1', kind: 'DeleteOptions', gracePeriodSeconds: 0, preconditions: { uid } } });
    } catch (err) {
      if (!(err instanceof KubeError && (err.status === 404 || err.status === 409))) this.log(`removing pod ${namespace}/${name}: ${(err as Error).message}`);
    }
    this.pods.delete(uid);
  }

  /** A pod that disappeared without this agent's finalizing it (force-deleted): its processes go at once. */
  private async gone(uid: string): Promise<void> {
    this.binding.delete(uid);
    const run = this.pods.get(uid);
    if (!run) return;
    await this.stopContainers(run, 0);
    this.pods.delete(uid);
  }
}

function signalGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal);
  } catch {
    // gone already
  }
}

/** Starts a node agent for an API server (the run's global setup starts one; a suite rarely needs its own). */
export async function startNodeAgent(kubeconfig: string, o: NodeAgentOptions = {}): Promise<NodeAgent> {
  const kc = new KubeConfig();
  kc.loadFromFile(kubeconfig);
  const agent = new NodeAgent(kc, o);
  try {
    await agent.start();
  } catch (err) {
    await agent.stop();
    throw err;
  }
  return agent;
}
