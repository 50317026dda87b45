// Asynchronous calls on a cluster: `spore router` keeps each call it accepts
// (`X-Spore-Async: true`) as an Invocation object in the function's namespace,
// runs it with its retries, and a failed call stays as the dead letter, which
// `spore invocations --kubeconfig` lists and `retry` queues again. Against the
// run's real kube-apiserver, with a `spore poolmgr` whose pods the test node
// agent runs as local processes. A call whose router is killed mid-call is
// taken over by the router holding the Lease `spore-triggers` and runs again.
import { execFile } from 'node:child_process';
import { existsSync, rmSync, writeFileSync } from 'node:fs';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { validateObject } from '../../api/index.js';
import type { Invocation } from '../../store/index.js';
import { objectOf } from '../../store/kube-invocations.js';
import { OwnedObjects } from '../../store/kube-owned.js';
import { clusterReady, testNamespace } from './cluster.js';
import { appWithPool, clusterSuite } from './components.js';

const kubeconfig = await clusterReady();
const BIN = new URL('../../bin/spore.js', import.meta.url).pathname;

/** Records each call (its request id and body), answers 500 while `<OUT>.fail` exists (or with a message of `?big=` characters), sleeps `?sleep=` ms, echoes the body. */
const ECHO = `import { appendFileSync, existsSync } from 'node:fs';
export default async (req) => {
  const url = new URL(req.url);
  const body = await req.text();
  appendFileSync(process.env.OUT, JSON.stringify({ id: req.headers.get('x-spore-request-id'), body }) + '\\n');
  await new Promise((r) => setTimeout(r, Number(url.searchParams.get('sleep') ?? 0)));
  const big = Number(url.searchParams.get('big') ?? 0);
  if (big) return Response.json({ message: 'x'.repeat(big) }, { status: 500 });
  if (existsSync(process.env.OUT + '.fail')) return new Response('told to fail', { status: 500 });
  return new Response('got ' + body);
};
`;
type Call = { id: string; body: string };
type InvocationObject = { metadata: { name: string; labels: Record<string, string>; annotations: Record<string, string> }; spec: { function: string; method: string; path: string; body: string; headers: Record<string, string> }; status: { state: string; attempts: number; status?: number; error?: string; response?: string; owner: string; heartbeat: number; updated: number; bodyBytes?: number } };

describe.skipIf(!kubeconfig)('asynchronous calls on a cluster (spore router, calls as Invocation objects)', () => {
  const suite = clusterSuite(kubeconfig);

  async function setup(prefix: string) {
    const app = await appWithPool<Call>(suite, prefix, { name: 'echo', code: ECHO });
    const object = (id: string) => suite.client.request<InvocationObject>('GET', `/apis/spore.dev/v1alpha1/namespaces/${app.ns}/invocations/${id}`);
    return { ...app, object };
  }
  /** `spore invocations …` against the cluster: its exit code, stdout and stderr. */
  const cli = (...args: string[]) =>
    promisify(execFile)(process.execPath, [BIN, 'invocations', ...args, '--kubeconfig', kubeconfig!], { encoding: 'utf8' }).then(
      (r) => ({ code: 0, stdout: r.stdout, stderr: r.stderr }),
      (err: { code: number; stdout: string; stderr: string }) => ({ code: err.code, stdout: err.stdout, stderr: err.stderr }),
    );
  /** An asynchronous POST through `url`'s router (retried until the router follows the function): the call's id. */
  async function accept(url: string, ns: string, body: string, query = '', headers: Record<string, string> = {}): Promise<string> {
    let res!: Response;
    await expect.poll(async () => (res = await fetch(`${url}/_fn/${ns}/echo${query}`, { method: 'POST', headers: { 'x-spore-async': 'true', ...headers }, body })).status, { timeout: 60_000, interval: 500 }).toBe(202);
    const { invocation } = (await res.json()) as { invocation: string };
    expect(res.headers.get('x-spore-invocation-id')).toBe(invocation);
    return invocation;
  }

  it('answers 202 with the call id, runs the call, and keeps it as an Invocation that ends succeeded; a body too large for an object is refused with 413', async () => {
    const { ns, rec, poolmgr, router, object } = await setup('async');
    const r = await router('router');
    const id = await accept(r.url, ns, 'hello', '?x=1');
    await expect.poll(async () => (await object(id)).status.state, { timeout: 60_000, interval: 250 }).toBe('succeeded');
    const done = await object(id);
    expect(done.metadata.labels).toMatchObject({ 'spore.dev/function': 'echo', 'spore.dev/invocation-state': 'succeeded' });
    // done: its body and headers are no longer kept, only the body's size
    expect(done.spec).toMatchObject({ function: 'echo', method: 'POST', path: '/?x=1', body: '', headers: {} });
    expect(done.status).toMatchObject({ attempts: 1, status: 200, response: 'got hello', bodyBytes: 5 });
    expect(done.metadata.annotations['spore.dev/updated']).toBe(String(done.status.updated));
    // the call carried its id as the request id, once
    expect(rec.lines().filter((c) => c.id === id)).toEqual([{ id, body: 'hello' }]);

    const big = await fetch(`${r.url}/_fn/${ns}/echo`, { method: 'POST', headers: { 'x-spore-async': 'true' }, body: Buffer.alloc(1024 * 1024 + 1, 97) });
    expect(big.status).toBe(413);
    expect(((await big.json()) as { message: string }).message).toMatch(/exceeds the limit of 1048576 bytes kept with an asynchronous call here \(it goes in an Invocation object\)/);
    // an id that is no object name is not found (rather than an API server's complaint about a selector)
    expect((await cli('retry', 'x=y')).stderr).toContain('no asynchronous call x=y on the cluster');

    // a call the API server refuses to keep (its namespace is being deleted) is answered 503, saying why, and said in the router's log
    await suite.client.request('DELETE', `/api/v1/namespaces/${ns}`);
    const refused = await fetch(`${r.url}/_fn/${ns}/echo`, { method: 'POST', headers: { 'x-spore-async': 'true' }, body: 'lost' });
    expect(refused.status).toBe(503);
    expect(((await refused.json()) as { message: string }).message).toMatch(/could not be kept.*being terminated/);
    expect(r.output()).toMatch(/could not be kept.*being terminated/);
    r.child.kill('SIGTERM');
    poolmgr.child.kill('SIGTERM');
  }, 180_000);

  it('puts a call failing every attempt in the dead letter; spore invocations --kubeconfig lists it and retry runs it again', async () => {
    const { ns, rec, poolmgr, router, object, leaseHolder } = await setup('async-dl');
    const r = await router('router');
    await expect.poll(leaseHolder, { timeout: 30_000, interval: 250 }).toContain(`-${r.child.pid}-`);
    writeFileSync(`${rec.out}.fail`, '');
    const id = await accept(r.url, ns, 'doomed', '', { authorization: 'Bearer s3cret' });
    // three attempts (1 s and 2 s apart), then failed
    await expect.poll(async () => (await object(id)).status.state, { timeout: 60_000, interval: 250 }).toBe('failed');
    expect((await object(id)).status).toMatchObject({ attempts: 3, status: 500, response: 'told to fail' });
    expect(rec.lines().filter((c) => c.id === id)).toHaveLength(3);
    // the dead letter keeps the call whole, to be retried
    expect(Buffer.from((await object(id)).spec.body, 'base64').toString()).toBe('doomed');
    expect((await object(id)).spec.headers.authorization).toBe('Bearer s3cret');

    const listed = await cli('--failed', '-o', 'json');
    expect(listed.code, listed.stderr).toBe(0);
    expect(JSON.parse(listed.stdout)).toEqual([expect.objectContaining({ id, namespace: ns, function: 'echo', state: 'failed', attempts: 3, status: 500, bodyBytes: 6 })]);
    // as spore up's API shows a call: neither its body nor its headers (the caller's credentials)
    expect(listed.stdout).not.toContain('s3cret');
    expect(JSON.parse(listed.stdout)[0]).not.toHaveProperty('body');
    expect(JSON.parse(listed.stdout)[0]).not.toHaveProperty('headers');
    const table = await cli('--state', 'failed');
    expect(table.stdout).toContain(`${id}`);
    expect(table.stdout).toContain(`${ns}/echo`);
    expect((await cli('--state', 'lost')).stderr).toContain('--state lost: expected one of queued, running, succeeded, failed');

    // fixed: the retry hands it to the router holding the Lease, which runs it
    rmSync(`${rec.out}.fail`);
    const retried = await cli('retry', id);
    expect(retried.code, retried.stderr).toBe(0);
    expect(retried.stdout).toContain(`asynchronous call ${id} queued again`);
    await expect.poll(async () => (await object(id)).status.state, { timeout: 60_000, interval: 500 }).toBe('succeeded');
    expect((await object(id)).status).toMatchObject({ attempts: 1, status: 200, response: 'got doomed', bodyBytes: 6 });
    expect((await object(id)).spec.headers).toEqual({});
    expect(rec.lines().filter((c) => c.id === id)).toHaveLength(4);
    expect(r.output()).toContain(`took over asynchronous call ${ns}/${id} (it had no router)`);

    // only a failed call is retried; an unknown one is said
    const again = await cli('retry', id);
    expect(again.code).toBe(1);
    expect(again.stderr).toContain(`asynchronous call ${id} is succeeded, not failed`);
    const unknown = await cli('retry', 'no-such-call');
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toContain('no asynchronous call no-such-call on the cluster');
    r.child.kill('SIGTERM');
    poolmgr.child.kill('SIGTERM');
  }, 180_000);

  it('ends in the dead letter a call whose every answer is an error too large to keep whole (its start is kept)', async () => {
    const { ns, rec, poolmgr, router, object } = await setup('async-big');
    const r = await router('router');
    const id = await accept(r.url, ns, 'loud', '?big=2000000');
    await expect.poll(async () => (await object(id)).status.state, { timeout: 60_000, interval: 250 }).toBe('failed');
    const { status } = await object(id);
    expect(status).toMatchObject({ attempts: 3, status: 500 });
    expect(status.error).toMatch(/^x{100}/);
    expect(status.error!.length).toBeLessThan(10_000);
    expect(rec.lines().filter((c) => c.id === id)).toHaveLength(3);
    r.child.kill('SIGTERM');
    poolmgr.child.kill('SIGTERM');
  }, 180_000);

  it('runs again, on the router holding the Lease, a call whose router was killed mid-call; a stopped router hands its calls over at once', async () => {
    const { ns, rec, poolmgr, router, object, leaseHolder } = await setup('async-kill');
    const leader = await router('router 1');
    await expect.poll(leaseHolder, { timeout: 30_000, interval: 250 }).toContain(`-${leader.child.pid}-`);
    const doomed = await router('router 2');
    const id = await accept(doomed.url, ns, 'survivor', '?sleep=4000');
    await expect.poll(() => rec.lines().some((c) => c.id === id), { timeout: 60_000, interval: 100 }).toBe(true);
    await expect.poll(async () => (await object(id)).status.state, { timeout: 10_000, interval: 100 }).toBe('running');
    doomed.child.kill('SIGKILL');
    await new Promise((r) => doomed.child.once('exit', r));

    // taken over once its heartbeat is stale (30 s), and run again with the same id
    await expect.poll(async () => (await object(id)).status.state, { timeout: 120_000, interval: 1000 }).toBe('succeeded');
    const done = await object(id);
    expect(done.status.owner).toContain(`-${leader.child.pid}-`);
    expect(done.status).toMatchObject({ attempts: 2, status: 200, response: 'got survivor' });
    expect(rec.lines().filter((c) => c.id === id)).toHaveLength(2);
    expect(leader.output()).toContain(`took over asynchronous call ${ns}/${id}`);

    // SIGTERM mid-call: the call in flight runs to its end (within the grace) and is written; one queued for a retry is handed over
    const stopped = await router('router 3');
    writeFileSync(`${rec.out}.fail`, '');
    const handed = await accept(stopped.url, ns, 'handed');
    await expect.poll(async () => (await object(handed)).status.attempts, { timeout: 30_000, interval: 100 }).toBe(1);
    await expect.poll(async () => (await object(handed)).status.state, { timeout: 10_000, interval: 100 }).toBe('queued');
    const exited = new Promise((r) => stopped.child.once('exit', r));
    stopped.child.kill('SIGTERM');
    await exited;
    const left = await object(handed);
    expect(left.status.owner.includes(`-${leader.child.pid}-`) || left.status.heartbeat === 0).toBe(true);
    rmSync(`${rec.out}.fail`);
    await expect.poll(async () => (await object(handed)).status.state, { timeout: 60_000, interval: 500 }).toBe('succeeded');
    expect((await object(handed)).status.owner).toContain(`-${leader.child.pid}-`);
    expect(existsSync(`${rec.out}.fail`)).toBe(false);
    leader.child.kill('SIGTERM');
    poolmgr.child.kill('SIGTERM');
  }, 300_000);

  it('prunes done calls by their metadata alone, the newest kept, the rest deleted; other states untouched', async () => {
    const ns = await testNamespace(suite.kc, 'async-prune');
    const objects = new OwnedObjects<Invocation>({ plural: 'invocations', noun: 'asynchronous call', namespaceOf: (i) => i.namespace, updatedOf: (i) => i.updated, done: () => false, objectOf }, { client: suite.client, identity: 'test' });
    try {
      const call = (id: string, state: Invocation['state'], updated: number): Invocation => ({ id, namespace: ns, function: 'echo', method: 'POST', path: '/', headers: {}, params: {}, body: Buffer.alloc(64 * 1024, 1), state, attempts: 3, created: 1000, updated, nextAt: updated });
      for (const [id, state, updated] of [['old', 'failed', 2000], ['older', 'failed', 1000], ['newest', 'failed', 4000], ['newer', 'failed', 3000], ['queued', 'queued', 500]] as const) await objects.create(id, call(id, state, updated));
      await objects.prune(ns, 'spore.dev/invocation-state=failed', 2);
      const left = await suite.client.request<{ items: { metadata: { name: string } }[] }>('GET', `/apis/spore.dev/v1alpha1/namespaces/${ns}/invocations`);
      expect(left.items.map((o) => o.metadata.name).sort()).toEqual(['newer', 'newest', 'queued']);
    } finally {
      await objects.close();
    }
  });
});

describe('an Invocation in an app', () => {
  it('is refused: calls are written by the router, an app declares the Function', () => {
    const call = { apiVersion: 'spore.dev/v1alpha1', kind: 'Invocation', metadata: { name: 'c1', namespace: 'shop' }, spec: { function: 'echo', method: 'POST', path: '/', headers: {}, params: {}, body: '' } };
    expect(validateObject(call)).toEqual([{ path: 'kind', message: expect.stringMatching(/written by Spore's router .* an app declares the Function, not its calls/) }]);
  });
});
