// The dataplane end to end: requests through the router to runtime processes.
import { Readable } from 'node:stream';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { archiveOf, alive, environment, fn, harness, PID_FN, rawArchiveFn, waitFor, type Harness } from './harness.js';

let h: Harness;
afterEach(async () => {
  await h?.close();
});

const fnState = (name: string) => h.dp.poolmgr.snapshot().functions.find((f) => f.name === name)!;

describe('serving', () => {
  beforeEach(async () => {
    h = await harness();
  });

  it('cold-starts a function from the warm pool, then reuses the instance', async () => {
    await h.apply([environment('node', 'node', 2), ...fn('hello', PID_FN, { route: '/hello' })]);
    await waitFor('a warm pool', () => h.dp.poolmgr.snapshot().environments[0]?.warm === 2);
    const first = await h.get('/hello');
    expect(first.status).toBe(200);
    const second = await h.get('/hello');
    expect(second.body).toBe(first.body); // same process served both
    expect(fnState('hello').instances).toHaveLength(1);
    const metrics = await h.get('/metrics');
    expect(metrics.body).toContain('spore_function_cold_starts_total{namespace="default",function="hello"} 1');
    await waitFor('the pool refilled', () => h.dp.poolmgr.snapshot().environments[0]?.warm === 2);
  });

  it('passes path params as headers, trims prefixes, honours hosts, and answers clear JSON errors', async () => {
    const echo = { 'index.mjs': `export default (req) => Response.json({ path: new URL(req.url).pathname + new URL(req.url).search, name: req.headers.get('x-spore-param-name'), rid: req.headers.get('x-spore-request-id') });` };
    await h.apply([
      environment('node', 'node'),
      ...fn('echo', echo, { route: { path: '/users/:name', methods: ['GET'] } }),
      ...fn('files', echo, { route: { prefix: '/static', methods: ['GET'] } }),
      ...fn('kept', echo, { route: { prefix: '/kept', keepPrefix: true, methods: ['GET'] } }),
      ...fn('api', echo, { route: { path: '/users/:name', host: 'api.example.com', methods: ['GET'] } }),
    ]);
    const user = await h.get('/users/ada?x=1', { headers: { 'x-spore-request-id': 'req-42' } });
    expect(JSON.parse(user.body)).toEqual({ path: '/users/ada?x=1', name: 'ada', rid: 'req-42' });
    expect(user.headers['x-spore-request-id']).toBe('req-42');
    expect(JSON.parse((await h.get('/static/css/site.css')).body).path).toBe('/css/site.css');
    expect(JSON.parse((await h.get('/kept/a')).body).path).toBe('/kept/a');
    const hosted = await h.get('/users/bob', { headers: { host: 'api.example.com' } });
    expect(hosted.status, hosted.body).toBe(200);
    expect(h.dp.poolmgr.snapshot().functions.find((f) => f.name === 'api')!.instances).toHaveLength(1);

    const notFound = await h.get('/nowhere');
    expect(notFound.status).toBe(404);
    expect(JSON.parse(notFound.body)).toMatchObject({ status: 404, error: 'NotFound', message: 'no route for GET /nowhere' });
    const wrongMethod = await h.get('/users/ada', { method: 'DELETE' });
    expect(wrongMethod.status).toBe(405);
    expect(wrongMethod.headers.allow).toBe('GET, HEAD'); // a GET route answers HEAD too
    expect(JSON.parse(wrongMethod.body).message).toBe('/users/ada does not accept DELETE (it accepts GET, HEAD)');
  });

  it('invokes through /_fn/<namespace>/<name> the same way', async () => {
    await h.apply([environment('node', 'node'), ...fn('hello', PID_FN)]);
    const r = await h.get('/_fn/default/hello/some/path');
    expect(r.status).toBe(200);
    expect(Number(r.body)).toBeGreaterThan(0);
    expect((await h.get('/_fn/default/nope')).status).toBe(404);
  });

  it('refuses bodies over the limit with 413', async () => {
    await h.close();
    h = await harness({ bodyLimit: 1024 });
    await h.apply([environment('node', 'node'), ...fn('sink', { 'index.mjs': `export default async (req) => new Response(String((await req.text()).length))` }, { route: '/sink' })]);
    expect((await h.get('/sink', { method: 'POST', body: 'x'.repeat(100) })).body).toBe('100');
    const big = await h.get('/sink', { method: 'POST', body: 'x'.repeat(5000) });
    expect(big.status).toBe(413);
    expect(JSON.parse(big.body).message).toBe('the request body (5000 bytes) exceeds the limit of 1024 bytes');
    const chunked = await h.get('/sink', { method: 'POST', body: Readable.from((async function* () { for (let i = 0; i < 10; i++) yield Buffer.alloc(512, 'y'); })()) });
    expect(chunked.status).toBe(413);
  });

  it('splits a canary by weight within tolerance', async () => {
    await h.apply([
      environment('node', 'node', 2),
      ...fn('v1', { 'index.mjs': `export default () => new Response('v1')` }),
      ...fn('v2', { 'index.mjs': `export default () => new Response('v2')` }),
      { apiVersion: 'spore.dev/v1alpha1', kind: 'HttpTrigger', metadata: { name: 'canary' }, spec: { methods: ['GET'], path: '/c', functions: [{ name: 'v1', weight: 80 }, { name: 'v2', weight: 20 }] } },
    ]);
    const counts: Record<string, number> = { v1: 0, v2: 0 };
    for (let i = 0; i < 400; i++) counts[(await h.get('/c')).body]++;
    expect(counts.v1 + counts.v2).toBe(400);
    // 20% of 400 is 80; a binomial spread of ±4.5 sd is 80 ± 36
    expect(counts.v2).toBeGreaterThan(44);
    expect(counts.v2).toBeLessThan(116);
  });

  it('counts every call once in the metrics', async () => {
    await h.apply([environment('node', 'node'), ...fn('hello', PID_FN, { route: '/hello' }), ...fn('boom', { 'index.mjs': `export default () => { throw new Error('kaboom'); }` }, { route: '/boom' })]);
    for (let i = 0; i < 7; i++) await h.get('/hello');
    for (let i = 0; i < 3; i++) await h.get('/boom');
    await h.get('/_fn/default/hello');
    const m = (await h.get('/metrics')).body;
    expect(m).toContain('spore_function_calls_total{namespace="default",function="hello",method="GET",code="200"} 8');
    expect(m).toContain('spore_function_calls_total{namespace="default",function="boom",method="GET",code="500"} 3');
    expect(m).toContain('spore_function_errors_total{namespace="default",function="boom",method="GET",code="500"} 3');
    expect(m).toContain('spore_function_duration_seconds_count{namespace="default",function="hello",method="GET",code="200"} 8');
    expect(m).toContain('spore_function_overhead_seconds_count{namespace="default",function="hello"} 8');
    expect(m).toContain('spore_function_response_size_bytes_count{namespace="default",function="hello"} 8');
    expect(m).toMatch(/spore_function_cold_start_seconds_count\{namespace="default",function="hello"\} 1/);
    expect(m).toMatch(/spore_pool_warm_instances\{namespace="default",environment="node"\} \d/);
    expect(m).toContain('spore_function_specialized_instances{namespace="default",function="hello"} 1');
    expect(m).not.toMatch(/path=/);
  });

  it('captures logs line by line with function, instance and request id', async () => {
    await h.apply([environment('node', 'node'), ...fn('talk', { 'index.mjs': `export default () => { console.log('line one\\nline two'); console.error('to stderr'); return new Response('ok'); }` }, { route: '/talk' })]);
    await h.get('/talk', { headers: { 'x-spore-request-id': 'rid-7' } });
    const instance = fnState('talk').instances[0].id;
    const entries = await waitFor('logs', () => {
      const e = h.store.queryLogs({ function: 'talk' });
      return e.length >= 3 ? e : undefined;
    });
    expect(entries.map((e) => [e.stream, e.line, e.requestId, e.instance, e.function])).toEqual([
      ['stdout', 'line one', 'rid-7', instance, 'talk'],
      ['stdout', 'line two', 'rid-7', instance, 'talk'],
      ['stderr', 'to stderr', 'rid-7', instance, 'talk'],
    ]);
  });

  it('turns a throwing handler into a 500, logs it, and keeps the instance', async () => {
    await h.apply([environment('node', 'node'), ...fn('boom', { 'index.mjs': `let n = 0; export default () => { if (n++ === 0) throw new Error('kaboom'); return new Response(String(process.pid)); }` }, { route: '/boom' })]);
    const failed = await h.get('/boom');
    expect(failed.status).toBe(500);
    expect(JSON.parse(failed.body)).toMatchObject({ error: 'the function failed', message: 'kaboom' });
    const ok = await h.get('/boom');
    expect(ok.status).toBe(200);
    expect(fnState('boom').instances).toHaveLength(1);
    const logs = await waitFor('the error log', () => h.store.queryLogs({ function: 'boom' }).find((e) => e.line.includes('Error: kaboom')));
    expect(logs.stream).toBe('stderr');
  });
});

describe('capacity', () => {
  beforeEach(async () => {
    h = await harness({ queueSize: 2 });
  });

  it('honours requestsPerInstance and concurrency under a burst', async () => {
    await h.apply([environment('node', 'node', 3), ...fn('slow', PID_FN, { route: '/slow', executor: { requestsPerInstance: 2, concurrency: 3 } })]);
    await waitFor('a warm pool', () => h.dp.poolmgr.snapshot().environments[0]?.warm === 3);
    const burst = await Promise.all(Array.from({ length: 6 }, () => h.get('/slow?sleep=600')));
    expect(burst.map((r) => r.status)).toEqual([200, 200, 200, 200, 200, 200]);
    const perPid = new Map<string, number>();
    for (const r of burst) perPid.set(r.body, (perPid.get(r.body) ?? 0) + 1);
    expect(perPid.size).toBe(3); // concurrency
    expect([...perPid.values()].every((n) => n <= 2)).toBe(true); // requestsPerInstance
    expect(fnState('slow').instances).toHaveLength(3);
  });

  it("caps one function's instances on this host below its concurrency (Fission's 500), queueing the rest", async () => {
    await h.close();
    h = await harness({ maxInstancesPerFunction: 2 });
    await h.apply([environment('node', 'node', 2), ...fn('slow', PID_FN, { route: '/slow', executor: { requestsPerInstance: 1 } })]);
    const burst = await Promise.all(Array.from({ length: 5 }, () => h.get('/slow?sleep=300')));
    expect(burst.map((r) => r.status)).toEqual([200, 200, 200, 200, 200]);
    expect(new Set(burst.map((r) => r.body)).size).toBe(2);
    expect(fnState('slow').instances).toHaveLength(2);
  });

  it('queues past capacity, then answers 429', async () => {
    await h.apply([environment('node', 'node', 1), ...fn('one', PID_FN, { route: '/one', executor: { concurrency: 1, requestsPerInstance: 1 } })]);
    await h.get('/one'); // specialized and idle
    const started = [h.get('/one?sleep=800')];
    await waitFor('the first call in flight', () => fnState('one').instances[0]?.inFlight === 1);
    started.push(h.get('/one'), h.get('/one'));
    await waitFor('two queued calls', () => fnState('one').waiting === 2);
    const rejected = await h.get('/one');
    expect(rejected.status).toBe(429);
    expect(rejected.headers['retry-after']).toBe('1');
    expect(JSON.parse(rejected.body).message).toContain('is at its concurrency limit (1 instances × 1) and 2 calls are already waiting');
    const served = await Promise.all(started);
    expect(served.map((r) => r.status)).toEqual([200, 200, 200]);
    expect(new Set(served.map((r) => r.body)).size).toBe(1);
  });
});

describe('instance lifecycle', () => {
  beforeEach(async () => {
    h = await harness();
  });

  it('reaps idle instances after idleTimeout', async () => {
    await h.apply([environment('node', 'node'), ...fn('idle', PID_FN, { route: '/idle', executor: { idleTimeoutSeconds: 1 } })]);
    const pid = Number((await h.get('/idle')).body);
    expect(alive(pid)).toBe(true);
    await waitFor('the instance reaped', () => fnState('idle').instances.length === 0);
    await waitFor('the process gone', () => !alive(pid));
  });

  it('answers 504 past functionTimeout and stops the instance', async () => {
    await h.apply([environment('node', 'node'), ...fn('hang', { 'index.mjs': `export default async (req) => { console.log('pid ' + process.pid); await new Promise(() => {}); }` }, { route: '/hang', executor: { functionTimeoutSeconds: 1 } })]);
    const r = await h.get('/hang');
    expect(r.status).toBe(504);
    expect(JSON.parse(r.body).message).toBe('function default/hang did not answer within 1s; its instance was stopped');
    const line = await waitFor('the pid line', () => h.store.queryLogs({ function: 'hang' })[0]);
    const pid = Number(line.line.split(' ')[1]);
    await waitFor('the process gone', () => !alive(pid));
    expect(fnState('hang').instances).toHaveLength(0);
  });

  it('answers 502 when the instance dies mid-request, then serves the next call', async () => {
    await h.apply([environment('node', 'node', 2), ...fn('fragile', PID_FN, { route: '/fragile' })]);
    const pid = Number((await h.get('/fragile')).body);
    const inFlight = h.get('/fragile?sleep=5000');
    await waitFor('the call in flight', () => fnState('fragile').instances[0]?.inFlight === 1);
    process.kill(pid, 'SIGKILL');
    const r = await inFlight;
    expect(r.status).toBe(502);
    expect(JSON.parse(r.body).message).toContain('the instance of default/fragile failed');
    const next = await h.get('/fragile');
    expect(next.status).toBe(200);
    expect(Number(next.body)).not.toBe(pid);
  });

  it('serves new code when the package changes and stops the old instances', async () => {
    await h.apply([environment('node', 'node', 2), ...fn('ver', { 'index.mjs': `export default () => new Response('v1 ' + process.pid)` }, { route: '/ver' })]);
    const [, oldPid] = (await h.get('/ver')).body.split(' ');
    await h.apply([environment('node', 'node', 2), ...fn('ver', { 'index.mjs': `export default () => new Response('v2 ' + process.pid)` }, { route: '/ver' })]);
    const r = await h.get('/ver');
    expect(r.body.startsWith('v2 ')).toBe(true);
    await waitFor('the old process gone', () => !alive(Number(oldPid)));
    expect(fnState('ver').instances).toHaveLength(1);
  });

  it('stops every instance at shutdown', async () => {
    await h.apply([environment('node', 'node', 2), environment('python', 'python', 1), ...fn('a', PID_FN, { route: '/a' })]);
    await h.get('/a');
    await waitFor('warm pools', () => h.dp.poolmgr.pids().length === 4);
    const pids = h.dp.poolmgr.pids();
    await h.close();
    for (const pid of pids) expect(alive(pid), `pid ${pid}`).toBe(false);
    h = undefined as unknown as Harness;
  });
});

describe('refusing bad packages', () => {
  beforeEach(async () => {
    h = await harness();
  });

  it('refuses an archive whose checksum does not match, and never runs it', async () => {
    const objects = fn('tampered', { 'index.mjs': `export default () => new Response('should never run')` }, { route: '/t' });
    (objects[0].spec as any).archive.sha256 = archiveOf({ 'other.txt': 'x' }).sha256; // the store takes it; the pool manager must not
    await h.apply([environment('node', 'node'), ...objects]);
    const r = await h.get('/t');
    expect(r.status).toBe(500);
    expect(JSON.parse(r.body)).toMatchObject({ error: 'BadPackage' });
    expect(JSON.parse(r.body).message).toMatch(/^Package default\/tampered: checksum mismatch: the archive's sha256 is not spec.archive.sha256 \([a-f0-9]{64}\); refusing to run it$/);
    expect(fnState('tampered').instances).toHaveLength(0);
  });

  it('refuses zip-slip archives with a clear error and writes nothing outside', async () => {
    await h.apply([environment('node', 'node'), ...rawArchiveFn('slip', [{ path: 'index.mjs', data: `export default () => new Response('x')` }, { path: '../../escaped.txt', data: 'gotcha' }])]);
    const r = await h.get('/_fn/default/slip');
    expect(r.status).toBe(500);
    expect(JSON.parse(r.body).message).toBe('Package default/slip: unsafe archive, refusing to extract it: ../../escaped.txt: path leaves the code folder');
    const { existsSync } = await import('node:fs');
    const { join } = await import('node:path');
    expect(existsSync(join(h.dir, 'escaped.txt'))).toBe(false);
    expect(existsSync(join(h.dir, 'instances', 'escaped.txt'))).toBe(false);
    expect(fnState('slip').instances).toHaveLength(0);
  });

  it('reports a function whose code does not load', async () => {
    await h.apply([environment('node', 'node'), ...fn('broken', { 'index.mjs': `export default = ;` }, { route: '/broken' })]);
    const r = await h.get('/broken');
    expect(r.status).toBe(500);
    expect(JSON.parse(r.body)).toMatchObject({ error: 'SpecializationFailed' });
    expect(JSON.parse(r.body).message).toMatch(/^function default\/broken: cannot load the function: /);
  });
});
