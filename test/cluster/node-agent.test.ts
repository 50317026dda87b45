// The test node (node-agent.ts) the run's global setup starts with the API
// server: pods created on the real API server are bound, run as local
// processes on their own loopback address, probed, restarted and stopped; their
// logs are read through the API server (pods/log), which asks the agent.
import { text } from 'node:stream/consumers';
import type { KubeConfig } from '@kubernetes/client-node';
import { beforeAll, describe, expect, it } from 'vitest';
import { KubeClient, KubeError } from '../../store/kube-client.js';
import { clusterReady, kubeConfig, podsAllowed, testNamespace } from './cluster.js';
import { gone } from './harness.js';
import { NODE_NAME } from './node-agent.js';

const kubeconfig = await clusterReady();

/** Polls until `get` returns something truthy; generous, since the machine is shared. */
async function until<T>(what: string, get: () => Promise<T | undefined | false>, last?: () => Promise<unknown>): Promise<T> {
  for (let i = 0; ; i++) {
    const v = await get();
    if (v) return v;
    if (i === 900) throw new Error(`waited in vain for ${what}; last seen: ${JSON.stringify(await last?.())}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** An HTTP server on the pod IP and PORT: / says what the container was given; /ready fails until /go was called. */
const SERVER = `
const fs = require('node:fs');
let ready = false;
require('node:http').createServer((req, res) => {
  if (req.url === '/ready') { res.writeHead(ready ? 200 : 503); return res.end(); }
  if (req.url === '/go') { ready = true; return res.end('ok'); }
  let shared = null;
  try { shared = fs.readFileSync(process.env.SPORE_MOUNT_SHARED + '/note', 'utf8'); } catch {}
  res.end(JSON.stringify({ name: process.env.POD_NAME, namespace: process.env.POD_NAMESPACE, ip: process.env.POD_IP, token: process.env.TOKEN, greeting: process.env.GREETING, shared }));
}).listen(Number(process.env.PORT), process.env.HOST);
`;

const pidOf = (status: any) => Number(/^spore-test:\/\/(\d+)$/.exec(status?.containerID ?? '')?.[1]);

describe.skipIf(!kubeconfig)('the test node agent', () => {
  let kc: KubeConfig;
  let client: KubeClient;
  let ns: string;
  const pod = (name: string) => client.request('GET', `/api/v1/namespaces/${ns}/pods/${name}`);
  const create = (name: string, spec: any) => client.request('POST', `/api/v1/namespaces/${ns}/pods`, { body: { apiVersion: 'v1', kind: 'Pod', metadata: { name }, spec } });
  const waitPod = (name: string, what: string, test: (p: any) => boolean) => until(`pod ${name}: ${what}`, async () => {
    const p = await pod(name);
    return test(p) && p;
  }, () => pod(name).then((p) => p.status));

  beforeAll(async () => {
    kc = kubeConfig(kubeconfig!);
    client = new KubeClient(kc);
    ns = await testNamespace(kc, 'node-agent');
    await podsAllowed(kc, ns);
  });

  it(`registers the Node ${NODE_NAME}, Ready`, async () => {
    const node = await client.request('GET', `/api/v1/nodes/${NODE_NAME}`);
    expect(node.status.conditions.find((c: any) => c.type === 'Ready')).toMatchObject({ status: 'True' });
  });

  it('binds a pod without a node, runs its containers on a 127.0.1.x pod IP with env from the spec and a shared emptyDir, and makes it Ready when its probe passes', async () => {
    await client.request('POST', `/api/v1/namespaces/${ns}/secrets`, { body: { apiVersion: 'v1', kind: 'Secret', metadata: { name: 'creds' }, stringData: { token: 's3cret' } } });
    await create('web', {
      volumes: [{ name: 'scratch', emptyDir: {} }],
      containers: [
        {
          name: 'web', image: 'spore-test/command', command: ['node', '-e', SERVER],
          ports: [{ name: 'http', containerPort: 8080 }],
          env: [
            { name: 'POD_NAME', valueFrom: { fieldRef: { fieldPath: 'metadata.name' } } },
            { name: 'POD_NAMESPACE', valueFrom: { fieldRef: { fieldPath: 'metadata.namespace' } } },
            { name: 'POD_IP', valueFrom: { fieldRef: { fieldPath: 'status.podIP' } } },
            { name: 'TOKEN', valueFrom: { secretKeyRef: { name: 'creds', key: 'token' } } },
            { name: 'GREETING', value: 'hi' },
          ],
          volumeMounts: [{ name: 'scratch', mountPath: '/shared' }],
          readinessProbe: { httpGet: { path: '/ready', port: 'http' }, periodSeconds: 1 },
        },
        {
          name: 'writer', image: 'spore-test/command',
          command: ['node', '-e', "require('node:fs').writeFileSync(process.env.SPORE_MOUNT_DATA + '/note', 'from the writer'); setInterval(() => {}, 60_000)"],
          volumeMounts: [{ name: 'scratch', mountPath: '/data' }],
        },
      ],
    });
    const running = await waitPod('web', 'Running', (p) => p.status?.phase === 'Running' && p.status.containerStatuses?.every((c: any) => c.state.running));
    expect(running.spec.nodeName).toBe(NODE_NAME);
    const ip = running.status.podIP as string;
    expect(ip).toMatch(/^127\.0\.1\.\d+$/);
    const body = await until('the shared note', async () => {
      const res = await fetch(`http://${ip}:8080/`).catch(() => undefined);
      const b: any = res && (await res.json());
      return b?.shared && b;
    });
    expect(body).toEqual({ name: 'web', namespace: ns, ip, token: 's3cret', greeting: 'hi', shared: 'from the writer' });
    // its probe fails until /go: running, not Ready
    await new Promise((r) => setTimeout(r, 2_500));
    const notYet = await pod('web');
    expect(notYet.status.conditions.find((c: any) => c.type === 'Ready').status).toBe('False');
    expect(notYet.status.containerStatuses.find((c: any) => c.name === 'web').ready).toBe(false);
    await fetch(`http://${ip}:8080/go`);
    await waitPod('web', 'Ready', (p) => p.status?.conditions?.some((c: any) => c.type === 'Ready' && c.status === 'True'));
  });

  it('on deletion stops the processes (SIGKILL after the grace period for one ignoring SIGTERM), then removes the pod', async () => {
    await create('doomed', {
      terminationGracePeriodSeconds: 1,
      containers: [
        { name: 'web', image: 'spore-test/command', command: ['node', '-e', SERVER], ports: [{ containerPort: 8080 }] },
        { name: 'stubborn', image: 'spore-test/command', command: ['node', '-e', "process.on('SIGTERM', () => {}); setInterval(() => {}, 60_000)"] },
      ],
    });
    const running = await waitPod('doomed', 'Running', (p) => p.status?.containerStatuses?.every((c: any) => c.state.running));
    const pids = running.status.containerStatuses.map(pidOf);
    expect(pids.every((pid: number) => pid > 0 && !gone(pid))).toBe(true);
    await client.request('DELETE', `/api/v1/namespaces/${ns}/pods/doomed`);
    await until('the pod removed', () => pod('doomed').then(() => false, (err) => err instanceof KubeError && err.status === 404));
    expect(pids.filter((pid: number) => !gone(pid))).toEqual([]);
  });

  it("serves a container's log through the API server's pods/log: plain, with timestamps, the last lines, and followed until the container ends", async () => {
    // two lines at start (one framed as the runtimes frame a request's lines); a line per other request; /exit ends it
    const talker = `
      console.log('one');
      process.stdout.write('\\x1eabc\\x1fframed\\n');
      require('node:http').createServer((req, res) => {
        if (req.url === '/exit') { res.end(); process.exit(0); }
        console.error('said ' + req.url.slice(1)); // stderr is in the log too
        res.end('ok');
      }).listen(Number(process.env.PORT), process.env.HOST);`;
    await create('talker', { restartPolicy: 'Never', containers: [{ name: 'c', image: 'spore-test/command', command: ['node', '-e', talker], ports: [{ containerPort: 8080 }] }] });
    const p = await waitPod('talker', 'Running', (p) => p.status?.containerStatuses?.[0]?.state?.running);
    const base = `http://${p.status.podIP}:8080`;
    await until('the server', () => fetch(`${base}/hello`).catch(() => undefined));
    const log = async (query: Record<string, string>) => text(await client.stream(`/api/v1/namespaces/${ns}/pods/talker/log`, { query: { container: 'c', ...query } }));
    expect(await log({})).toBe('one\n\x1eabc\x1fframed\nsaid hello\n');
    const stamped = (await log({ timestamps: 'true' })).trimEnd().split('\n');
    expect(stamped.map((l) => /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z (.*)$/s.exec(l)?.[2])).toEqual(['one', '\x1eabc\x1fframed', 'said hello']);
    expect(await log({ tailLines: '2' })).toBe('\x1eabc\x1fframed\nsaid hello\n');
    // follow: what is there, then a line printed later; the answer ends when the container does
    const res = await client.stream(`/api/v1/namespaces/${ns}/pods/talker/log`, { query: { container: 'c', follow: 'true' } });
    let got = '';
    res.setEncoding('utf8');
    res.on('data', (d) => (got += d));
    const ended = new Promise((r) => res.once('end', r));
    await until('the lines there', async () => got.includes('said hello'));
    await fetch(`${base}/later`);
    await until('the later line', async () => got.includes('said later'));
    await fetch(`${base}/exit`).catch(() => {});
    await ended;
    expect(got).toBe('one\n\x1eabc\x1fframed\nsaid hello\nsaid later\n');
  });

  it('restarts a container that exits non-zero, counting its restarts', async () => {
    await create('crashy', { containers: [{ name: 'crashy', image: 'spore-test/command', command: ['node', '-e', 'process.exit(3)'] }] });
    const p = await waitPod('crashy', 'two restarts', (p) => p.status?.containerStatuses?.[0]?.restartCount >= 2);
    expect(p.status.phase).toBe('Running');
    expect(p.status.containerStatuses[0].lastState.terminated).toMatchObject({ exitCode: 3, reason: 'Error' });
  });

  it('with restartPolicy Never, ends the pod Succeeded or Failed by its container exit code', async () => {
    await create('fails', { restartPolicy: 'Never', containers: [{ name: 'c', image: 'spore-test/command', command: ['node', '-e', 'process.exit(1)'] }] });
    await create('succeeds', { restartPolicy: 'Never', containers: [{ name: 'c', image: 'spore-test/command', command: ['node', '-e', ''] }] });
    const failed = await waitPod('fails', 'Failed', (p) => p.status?.phase === 'Failed');
    expect(failed.status.containerStatuses[0].state.terminated).toMatchObject({ exitCode: 1 });
    expect(failed.status.containerStatuses[0].restartCount).toBe(0);
    await waitPod('succeeds', 'Succeeded', (p) => p.status?.phase === 'Succeeded');
  });

  it('leaves a container of an unknown image waiting with ErrImagePull, saying it is not in the image map', async () => {
    await create('unknown', { containers: [{ name: 'c', image: 'registry.example.com/nothing:1' }] });
    const p = await waitPod('unknown', 'a waiting container', (p) => p.status?.containerStatuses?.[0]?.state?.waiting?.reason === 'ErrImagePull');
    expect(p.status.phase).toBe('Pending');
    expect(p.status.containerStatuses[0].state.waiting.message).toContain(`image "registry.example.com/nothing:1" is not in the test node's image map (test/cluster/images.json`);
  });

  it("runs the Node runtime's image as dataplane/runtimes/node/server.mjs, listening on the pod IP and its port", async () => {
    await create('runtime', { containers: [{ name: 'node', image: 'ghcr.io/spore-dev/runtime-node:0.1.0', stdin: true, ports: [{ containerPort: 8888 }] }] });
    const p = await waitPod('runtime', 'Running', (p) => p.status?.containerStatuses?.[0]?.state?.running);
    // any HTTP answer will do: what it answers before the pool manager gave it its credential is the runtime's business
    const res = await until('an HTTP answer', () => fetch(`http://${p.status.podIP}:8888/healthz`).catch(() => undefined));
    expect(res.headers.get('content-type')).toContain('application/json');
  });
});
