// A real control plane for tests: etcd and kube-apiserver on loopback, state in
// one folder (data, certificates, keys, logs, kubeconfig, pids). No controllers
// run (no kube-controller-manager): objects are stored, validated, defaulted
// and admitted, but nothing reconciles them (namespaces are not finalized).
import { spawn, type ChildProcess } from 'node:child_process';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import yaml from 'js-yaml';

export interface Cluster {
  dir: string;
  kubeconfig: string;
  /** https://127.0.0.1:<port> */
  server: string;
  /** Stops kube-apiserver, then etcd, and waits until both are gone. */
  stop(): Promise<void>;
}

/** How long the servers may take to answer (a shared 2-core machine can be slow): a bound on giving up, not a measure. */
const START_LIMIT_MS = 180_000;

/** Ports free on loopback, held open together while chosen so that no two are the same. */
async function freePorts(n: number): Promise<number[]> {
  const servers = await Promise.all(
    Array.from({ length: n }, () => new Promise<Server>((resolve, reject) => {
      const srv = createServer();
      srv.once('error', reject);
      srv.listen(0, '127.0.0.1', () => resolve(srv));
    })),
  );
  const ports = servers.map((s) => (s.address() as { port: number }).port);
  await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  return ports;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function logTail(file: string, lines = 15): string {
  try {
    return readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

/** A process gone or a zombie (PID 1 here may not reap the children of a parent that left). */
export function gone(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return true;
  }
  try {
    return /^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return true;
  }
}

/** SIGTERM, then SIGKILL after a grace period; resolves once the process is gone. */
export async function terminate(pid: number, child?: ChildProcess): Promise<void> {
  const exited = child && child.exitCode === null && child.signalCode === null ? new Promise((r) => child.once('exit', r)) : undefined;
  if (gone(pid)) return;
  try {
    process.kill(pid, 'SIGTERM');
  } catch {
    return;
  }
  for (let waited = 0; !gone(pid); waited += 100) {
    if (waited === 15_000) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        break; // gone meanwhile
      }
    }
    await sleep(100);
  }
  await exited; // our own child: its exit is collected (reaped) by Node
}

/** GET an URL until it answers 200; fails early when the server process exits. */
async function waitFor(what: string, url: string, init: { ca?: string; token?: string }, proc: ChildProcess, log: string): Promise<void> {
  const agent = init.ca ? new https.Agent({ ca: init.ca }) : undefined;
  const get = () =>
    new Promise<number>((resolve) => {
      const req = (url.startsWith('https:') ? https : http).request(url, { agent, headers: init.token ? { authorization: `Bearer ${init.token}` } : {}, timeout: 5_000 }, (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      });
      req.on('error', () => resolve(0));
      req.on('timeout', () => req.destroy());
      req.end();
    });
  const deadline = Date.now() + START_LIMIT_MS;
  for (;;) {
    if (proc.exitCode !== null || proc.signalCode !== null) throw new Error(`${what} exited (${proc.exitCode ?? proc.signalCode}) before it was ready; the end of ${log}:\n${logTail(log)}`);
    if ((await get()) === 200) return;
    if (Date.now() > deadline) throw new Error(`${what} did not answer ${url} with 200 within ${START_LIMIT_MS / 1000}s; the end of ${log}:\n${logTail(log)}`);
    await sleep(250);
  }
}

function start(bin: string, args: string[], log: string, detached: boolean): ChildProcess {
  const out = openSync(log, 'a');
  const child = spawn(bin, args, { stdio: ['ignore', out, out], detached });
  closeSync(out);
  if (detached) child.unref();
  return child;
}

/**
 * Starts etcd and kube-apiserver with their state in `dir` and returns once
 * /readyz answers. The kubeconfig authenticates as a member of system:masters
 * (a static token); authorization is RBAC, so Roles and bindings are real.
 * `detached`: the servers outlive this process (the `npm run cluster` script);
 * stop them with stopCluster(dir).
 */
export async function startCluster(dir: string, assets: string, { detached = false } = {}): Promise<Cluster> {
  mkdirSync(join(dir, 'certs'), { recursive: true });
  if (existsSync(join(dir, 'pids.json'))) throw new Error(`${dir} holds a running cluster (pids.json): stop it first`);
  const [etcdClient, etcdPeer, apiPort] = await freePorts(3);
  const etcdLog = join(dir, 'etcd.log');
  const apiLog = join(dir, 'kube-apiserver.log');

  const etcd = start(join(assets, 'etcd'), [
    '--name=test', `--data-dir=${join(dir, 'etcd')}`,
    `--listen-client-urls=http://127.0.0.1:${etcdClient}`, `--advertise-client-urls=http://127.0.0.1:${etcdClient}`,
    `--listen-peer-urls=http://127.0.0.1:${etcdPeer}`, `--initial-advertise-peer-urls=http://127.0.0.1:${etcdPeer}`,
    `--initial-cluster=test=http://127.0.0.1:${etcdPeer}`,
    '--unsafe-no-fsync', // throwaway data: no fsync keeps a shared disk out of the tests' way
    '--log-level=warn',
  ], etcdLog, detached);
  const pids = { etcd: etcd.pid!, apiserver: 0 };
  writeFileSync(join(dir, 'pids.json'), JSON.stringify(pids));
  const stopAll = async () => {
    if (api) await terminate(api.pid!, api);
    await terminate(etcd.pid!, etcd);
  };
  let api: ChildProcess | undefined;
  try {
    await waitFor('etcd', `http://127.0.0.1:${etcdClient}/health`, {}, etcd, etcdLog);

    const token = randomBytes(24).toString('hex');
    writeFileSync(join(dir, 'tokens.csv'), `${token},spore-test,spore-test,"system:masters"\n`, { mode: 0o600 });
    const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    writeFileSync(join(dir, 'sa.key'), privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
    writeFileSync(join(dir, 'sa.pub'), publicKey.export({ type: 'spki', format: 'pem' }));
    api = start(join(assets, 'kube-apiserver'), [
      `--etcd-servers=http://127.0.0.1:${etcdClient}`,
      '--bind-address=127.0.0.1', '--advertise-address=127.0.0.1', `--secure-port=${apiPort}`,
      `--cert-dir=${join(dir, 'certs')}`, // self-signed serving certificate for localhost/127.0.0.1, with its CA
      `--token-auth-file=${join(dir, 'tokens.csv')}`,
      '--authorization-mode=RBAC',
      `--service-account-key-file=${join(dir, 'sa.pub')}`, `--service-account-signing-key-file=${join(dir, 'sa.key')}`,
      '--service-account-issuer=https://kubernetes.default.svc.cluster.local',
      '--service-cluster-ip-range=10.96.0.0/16', '--allow-privileged=true',
      // pods/log goes to the node's kubelet port at this address (the test node's Hostname resolves nowhere);
      // without --kubelet-certificate-authority the kubelet's certificate is not verified
      '--kubelet-preferred-address-types=InternalIP',
      '--v=1',
    ], apiLog, detached);
    pids.apiserver = api.pid!;
    writeFileSync(join(dir, 'pids.json'), JSON.stringify(pids));
    // the serving certificate is written at start; it holds the leaf and the CA that signed it
    const certFile = join(dir, 'certs', 'apiserver.crt');
    const deadline = Date.now() + START_LIMIT_MS;
    while (!existsSync(certFile)) {
      if (api.exitCode !== null || Date.now() > deadline) throw new Error(`kube-apiserver wrote no ${certFile}; the end of ${apiLog}:\n${logTail(apiLog)}`);
      await sleep(100);
    }
    await sleep(100); // written in one go, but let the write finish
    const ca = readFileSync(certFile, 'utf8');
    const server = `https://127.0.0.1:${apiPort}`;
    await waitFor('kube-apiserver', `${server}/readyz`, { ca, token }, api, apiLog);

    const kubeconfig = join(dir, 'kubeconfig');
    writeFileSync(
      kubeconfig,
      yaml.dump({
        apiVersion: 'v1',
        kind: 'Config',
        clusters: [{ name: 'spore-test', cluster: { server, 'certificate-authority-data': Buffer.from(ca).toString('base64') } }],
        users: [{ name: 'spore-test', user: { token } }],
        contexts: [{ name: 'spore-test', context: { cluster: 'spore-test', user: 'spore-test', namespace: 'default' } }],
        'current-context': 'spore-test',
      }),
      { mode: 0o600 },
    );
    return {
      dir,
      kubeconfig,
      server,
      stop: async () => {
        await stopAll();
        removePids(dir);
      },
    };
  } catch (err) {
    await stopAll();
    removePids(dir);
    throw err;
  }
}

function removePids(dir: string): void {
  rmSync(join(dir, 'pids.json'), { force: true });
}

/** Stops a cluster started with `detached` (by the pids in its folder) and waits until both servers are gone. */
export async function stopCluster(dir: string): Promise<void> {
  const file = join(dir, 'pids.json');
  if (!existsSync(file)) throw new Error(`no running cluster in ${dir} (no pids.json)`);
  const pids = JSON.parse(readFileSync(file, 'utf8')) as { etcd: number; apiserver: number };
  if (pids.apiserver) await terminate(pids.apiserver);
  await terminate(pids.etcd);
  removePids(dir);
}
