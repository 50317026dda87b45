// Edge cases a reviewer found: none of them may leak an instance, kill a
// healthy one, or send a call to the wrong handler.
import http from 'node:http';
import { request } from 'undici';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { validateObject } from '../../api/index.js';
import { alive, environment, fn, harness, PID_FN, rawArchiveFn, waitFor, type Harness } from './harness.js';

let h: Harness;
beforeEach(async () => {
  h = await harness();
});
afterEach(async () => {
  await h.close();
});
const fnState = (name: string) => h.dp.poolmgr.snapshot().functions.find((f) => f.name === name)!;

describe('the router keeps instances healthy', () => {
  it('a client that leaves while its call is queued does not hold an instance', async () => {
    await h.apply([environment('node', 'node'), ...fn('one', PID_FN, { route: '/one', executor: { concurrency: 1, requestsPerInstance: 1 } })]);
    const pid = (await h.get('/one')).body;
    const running = h.get('/one?sleep=600');
    await waitFor('the call in flight', () => fnState('one').instances[0]?.inFlight === 1);
    const ac = new AbortController();
    const queued = request(`${h.url}/one`, { signal: ac.signal }).catch((e) => e);
    await waitFor('a queued call', () => fnState('one').waiting === 1);
    ac.abort();
    await queued;
    expect((await running).body).toBe(pid);
    expect((await h.get('/one')).body).toBe(pid); // the instance came back
    expect(fnState('one').instances[0].inFlight).toBe(0);
    expect((await h.get('/metrics')).body).toContain('spore_function_calls_total{namespace="default",function="one",method="GET",code="499"} 1');
  });

  it('serves queued calls with the new code when the function changes', async () => {
    const code = (v: string) => ({ 'index.mjs': `export default async (req) => { await new Promise((r) => setTimeout(r, Number(new URL(req.url).searchParams.get('sleep') ?? 0))); return new Response('${v}'); }` });
    await h.apply([environment('node', 'node'), ...fn('ver', code('v1'), { route: '/ver', executor: { concurrency: 1, requestsPerInstance: 1 } })]);
    const running = h.get('/ver?sleep=500');
    await waitFor('the call in flight', () => fnState('ver').instances[0]?.inFlight === 1);
    const queued = h.get('/ver');
    await waitFor('a queued call', () => fnState('ver').waiting === 1);
    await h.apply([environment('node', 'node'), ...fn('ver', code('v2'), { route: '/ver', executor: { concurrency: 1, requestsPerInstance: 1 } })]);
    expect((await running).body).toBe('v1');
    expect(await queued).toMatchObject({ status: 200, body: 'v2' });
  });

  it('passes Expect: 100-continue and params that are not plain ASCII without hurting the instance', async () => {
    const echo = { 'index.mjs': `export default async (req) => new Response(req.headers.get('x-spore-param-name') + ' ' + (await req.text()).length + ' ' + process.pid)` };
    await h.apply([environment('node', 'node'), ...fn('echo', echo, { route: { path: '/u/:name', methods: ['GET', 'POST'] } })]);
    const first = await h.get('/u/%E2%82%AC');
    expect(first.status).toBe(200);
    const [param, , pid] = first.body.split(' ');
    expect(decodeURIComponent(param)).toBe('€');
    // as curl sends a larger upload (undici will not send Expect, so node:http does)
    const upload = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      const req = http.request(`${h.url}/u/ada`, { method: 'POST', headers: { expect: '100-continue', 'content-type': 'text/plain', 'content-length': 2000 } }, (res) => {
        let body = '';
        res.on('data', (c) => (body += c));
        res.on('end', () => resolve({ status: res.statusCode!, body }));
      });
      req.on('continue', () => req.end('x'.repeat(2000)));
      req.on('error', reject);
    });
    expect(upload.status).toBe(200);
    expect(upload.body).toBe(`ada 2000 ${pid}`);
    expect(alive(Number(pid))).toBe(true);
  });

  it('sends /healthz under a prefix route to the function once it is specialized', async () => {
    await h.apply([environment('node', 'node'), ...fn('api', { 'index.mjs': `export default (req) => new Response('function saw ' + new URL(req.url).pathname)` }, { route: { prefix: '/api', methods: ['GET'] } })]);
    expect((await h.get('/api/healthz')).body).toBe('function saw /healthz');
    expect((await h.get('/api/healthz')).body).toBe('function saw /healthz');
  });

  it('matches hosts without regard to case, and wildcard hosts', async () => {
    await h.apply([
      environment('node', 'node'),
      ...fn('a', { 'index.mjs': `export default () => new Response('exact')` }, { route: { path: '/h', host: 'api.example.com', methods: ['GET'] } }),
      ...fn('b', { 'index.mjs': `export default () => new Response('wild')` }, { route: { path: '/h', host: '*.example.org', methods: ['GET'] } }),
    ]);
    expect((await h.get('/h', { headers: { host: 'API.Example.com:8080' } })).body).toBe('exact');
    expect((await h.get('/h', { headers: { host: 'shop.example.org' } })).body).toBe('wild');
    expect((await h.get('/h', { headers: { host: 'example.org' } })).status).toBe(404);
  });

  it('runs a two-argument Web handler as a Web handler', async () => {
    await h.apply([environment('node', 'node'), ...fn('two', { 'index.mjs': `export default (req, env) => new Response(req.method + ' ' + typeof env)` }, { route: '/two' })]);
    expect((await h.get('/two')).body).toBe('GET function');
  });
});

describe('refusals', () => {
  it('refuses archives whose links climb, even through other links', async () => {
    await h.apply([
      environment('node', 'node'),
      ...rawArchiveFn('links', [{ path: 'index.mjs', data: `export default () => new Response('x')` }, { path: 'd', type: 'SymbolicLink', linkpath: '.' }, { path: 'l', type: 'SymbolicLink', linkpath: 'd/d/../..' }]),
    ]);
    const r = await h.get('/_fn/default/links');
    expect(r.status).toBe(500);
    expect(JSON.parse(r.body)).toMatchObject({ error: 'BadPackage', message: 'Package default/links: unsafe archive, refusing to extract it: l: link to d/d/../.. may leave the code folder' });
  });

  it('rejects routes on the router’s own paths', () => {
    const t = (path: string) => ({ apiVersion: 'spore.dev/v1alpha1', kind: 'HttpTrigger', metadata: { name: 't' }, spec: { path, function: { name: 'f' } } });
    expect(validateObject(t('/metrics'))).toEqual([{ path: 'spec.path', message: "/metrics is the router's own (reserved: /_fn, /_spore, /_stage, /metrics, /healthz)" }]);
    expect(validateObject(t('/_fn/x'))[0].message).toContain('/_fn is the router');
    expect(validateObject(t('/metricsx'))).toEqual([]);
  });
});
