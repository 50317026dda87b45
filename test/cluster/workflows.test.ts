// Workflows on a cluster: `spore router` runs them, keeping each run as a
// WorkflowRun object (store/kube-workflow-runs.ts) in the workflow's namespace,
// against the run's real kube-apiserver, with a `spore poolmgr` whose pods the
// test node agent runs as local processes. A router killed mid-run leaves its
// run behind; the router holding the Lease `spore-triggers` takes it over once
// its heartbeat is stale and finishes it, without running finished tasks again.
import { describe, expect, it } from 'vitest';
import { validateObject } from '../../api/index.js';
import { clusterReady } from './cluster.js';
import { appWithPool, clusterSuite } from './components.js';

const kubeconfig = await clusterReady();

/** Records each call (its request id: `<run>:<task>:<attempt>`), sleeps `?sleep=` ms, answers its number plus one. */
const INC = `import { appendFileSync } from 'node:fs';
export default async (req) => {
  const url = new URL(req.url);
  const body = await req.text();
  appendFileSync(process.env.OUT, JSON.stringify({ id: req.headers.get('x-spore-request-id'), body }) + '\\n');
  await new Promise((r) => setTimeout(r, Number(url.searchParams.get('sleep') ?? 0)));
  return Response.json(Number(JSON.parse(body || '0')) + 1);
};
`;
type Call = { id: string; body: string };
type RunObject = { metadata: { name: string; labels: Record<string, string> }; spec: { workflow: string; input: { default: unknown } }; status: { state: string; output?: unknown; owner: string; tasks: { path: string; state: string; attempts: number; output?: unknown }[] } };

describe.skipIf(!kubeconfig)('workflows on a cluster (spore router, runs as WorkflowRun objects)', () => {
  const suite = clusterSuite(kubeconfig);

  /** An app namespace with the function `inc` and the 2-task workflow `pair` (its second task sleeping `?sleep=` of the call), a pool manager. */
  async function setup(prefix: string) {
    const { ns, system, rec, poolmgr, router, leaseHolder } = await appWithPool<Call>(suite, prefix, { name: 'inc', code: INC }, (meta) => [
      {
        apiVersion: 'spore.dev/v1alpha1',
        kind: 'Workflow',
        metadata: meta('pair'),
        spec: {
          tasks: {
            first: { run: 'inc', inputs: '{$.Invocation.Inputs.default.n}' },
            second: { run: 'inc', inputs: { default: '{$.Tasks.first.Output}', query: { sleep: '{$string($.Invocation.Inputs.default.sleep)}' } }, requires: ['first'] },
          },
        },
      },
    ]);
    const runObject = (id: string) => suite.client.request<RunObject>('GET', `/apis/spore.dev/v1alpha1/namespaces/${ns}/workflowruns/${id}`);
    return { ns, system, rec, poolmgr, router, runObject, leaseHolder };
  }

  it('answers a 2-task workflow called through the router with its output, and keeps the run as a WorkflowRun with both tasks succeeded', async () => {
    const { ns, rec, poolmgr, router, runObject } = await setup('wf');
    const r = await router('router');
    // the router follows the Workflow once its store has it: until then the name is not found
    let res!: Response;
    await expect.poll(async () => (res = await fetch(`${r.url}/_fn/${ns}/pair`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ n: 1, sleep: 0 }) })).status, { timeout: 60_000, interval: 500 }).toBe(200);
    expect(await res.json()).toBe(3);
    const id = res.headers.get('x-spore-workflow-run')!;
    expect(id).toBeTruthy();
    const run = await runObject(id);
    expect(run.spec.workflow).toBe('pair');
    expect(run.spec.input.default).toEqual({ n: 1, sleep: 0 });
    expect(run.metadata.labels).toMatchObject({ 'spore.dev/workflow': 'pair', 'spore.dev/run-state': 'succeeded' });
    expect(run.status.state).toBe('succeeded');
    expect(run.status.output).toBe(3);
    expect(run.status.tasks.map((t) => [t.path, t.state, t.output])).toEqual([
      ['first', 'succeeded', 2],
      ['second', 'succeeded', 3],
    ]);
    expect(rec.lines().map((c) => c.id)).toEqual([`${id}:first:1`, `${id}:second:1`]);
    r.child.kill('SIGTERM');
    poolmgr.child.kill('SIGTERM');
  }, 180_000);

  it('resumes a run whose router was killed mid-run on the router holding the Lease, without running its finished task again; a stopped router hands its run over', async () => {
    const { ns, rec, poolmgr, router, runObject, leaseHolder } = await setup('wf-kill');
    // the first router takes the Lease; the run is started on the second, which is then killed
    const leader = await router('router 1');
    await expect.poll(leaseHolder, { timeout: 30_000, interval: 250 }).toContain(`-${leader.child.pid}-`);
    const doomed = await router('router 2');
    let accepted!: Response;
    const call = () => fetch(`${doomed.url}/_fn/${ns}/pair`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-spore-async': 'true' }, body: JSON.stringify({ n: 10, sleep: 4000 }) });
    await expect.poll(async () => (accepted = await call()).status, { timeout: 60_000, interval: 500 }).toBe(202);
    const { run: id } = (await accepted.json()) as { run: string };
    // the second task under way (the first done and kept): the router dies without a word
    await expect.poll(() => rec.lines().some((c) => c.id === `${id}:second:1`), { timeout: 60_000, interval: 100 }).toBe(true);
    await expect.poll(async () => (await runObject(id)).status.tasks.find((t) => t.path === 'first')?.state, { timeout: 10_000, interval: 100 }).toBe('succeeded');
    doomed.child.kill('SIGKILL');
    await new Promise((r) => doomed.child.once('exit', r));
    expect((await runObject(id)).status.state).toBe('running');

    // the leader takes it over once its heartbeat is stale, and finishes it
    await expect.poll(async () => (await runObject(id)).status.state, { timeout: 120_000, interval: 1000 }).toBe('succeeded');
    const done = await runObject(id);
    expect(done.status.output).toBe(12);
    expect(done.status.owner).toContain(`-${leader.child.pid}-`);
    expect(done.status.tasks.map((t) => [t.path, t.state])).toEqual([
      ['first', 'succeeded'],
      ['second', 'succeeded'],
    ]);
    expect(leader.output()).toContain(`took over workflow run ${ns}/${id}`);
    // the finished task ran once; the one in flight again, as its second attempt
    const ids = rec.lines().map((c) => c.id).filter((c) => c.startsWith(`${id}:`));
    expect(ids.filter((c) => c.startsWith(`${id}:first:`))).toEqual([`${id}:first:1`]);
    expect(ids.filter((c) => c.startsWith(`${id}:second:`))).toEqual([`${id}:second:1`, `${id}:second:2`]);

    // a router stopped (SIGTERM) mid-run hands the run over at once (heartbeat 0), and the leader finishes it
    const stopped = await router('router 3');
    const res = await fetch(`${stopped.url}/_fn/${ns}/pair`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-spore-async': 'true' }, body: JSON.stringify({ n: 20, sleep: 4000 }) });
    expect(res.status).toBe(202);
    const { run: handed } = (await res.json()) as { run: string };
    await expect.poll(() => rec.lines().some((c) => c.id === `${handed}:second:1`), { timeout: 60_000, interval: 100 }).toBe(true);
    const exited = new Promise((r) => stopped.child.once('exit', r));
    stopped.child.kill('SIGTERM');
    await exited;
    const left = await runObject(handed);
    expect(left.status.owner.includes(`-${leader.child.pid}-`) || (left.status.state === 'running' && (left.status as { heartbeat?: number }).heartbeat === 0)).toBe(true);
    await expect.poll(async () => (await runObject(handed)).status.state, { timeout: 120_000, interval: 1000 }).toBe('succeeded');
    expect((await runObject(handed)).status.output).toBe(22);
    expect(rec.lines().filter((c) => c.id.startsWith(`${handed}:first:`))).toHaveLength(1);
    leader.child.kill('SIGTERM');
    poolmgr.child.kill('SIGTERM');
  }, 300_000);
});

describe('a WorkflowRun in an app', () => {
  it('is refused: runs are written by the router, an app declares the Workflow', () => {
    const run = { apiVersion: 'spore.dev/v1alpha1', kind: 'WorkflowRun', metadata: { name: 'r1', namespace: 'shop' }, spec: { workflow: 'pair', input: {}, workflowSpec: {}, requestId: 'r' } };
    expect(validateObject(run)).toEqual([{ path: 'kind', message: expect.stringMatching(/written by Spore's router .* an app declares the Workflow, not its runs/) }]);
  });
});
