// Asynchronous calls (X-Spore-Async: true): a real dataplane over a real
// SQLite file, a real Node function recording each call in a file, the CLI.
import { execFile } from 'node:child_process';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { SqliteStore } from '../../store/index.js';
import { tempDir } from '../helpers.js';
import { environment, fn, harness, recordFile, waitFor, type Harness } from './harness.js';

const BIN = new URL('../../bin/spore.js', import.meta.url).pathname;

/** Records each call; fails (503) while the file FLAG exists, 400 on a body "bad"; takes SLOW ms. */
const RECORDER = {
  'index.mjs': `import { appendFileSync, existsSync } from 'node:fs';
  export default async (req) => {
    const body = await req.text();
    const url = new URL(req.url);
    const h = (n) => req.headers.get(n);
    const rec = (what) => appendFileSync(process.env.OUT, JSON.stringify({ what, body, method: req.method, path: url.pathname + url.search, id: h('x-spore-request-id'), param: h('x-spore-param-id'), custom: h('x-custom'), async: h('x-spore-async') }) + '\\n');
    rec('start');
    await new Promise((r) => setTimeout(r, Number(process.env.SLOW ?? 0)));
    if (body === 'bad') return new Response('no such order', { status: 400 });
    if (existsSync(process.env.FLAG)) return new Response('database down', { status: 503 });
    rec('end');
    return new Response('done ' + body);
  };`,
};
type Line = { what: string; body: string; method: string; path: string; id: string; param: string | null; custom: string | null; async: string | null };

let h: Harness | undefined;
afterEach(async () => {
  await h?.close();
  h = undefined;
});

const files = () => recordFile<Line>();

const objects = (f: { out: string; flag: string }, slow = 0) => [environment('node', 'node'), ...fn('orders', RECORDER, { vars: { OUT: f.out, FLAG: f.flag, SLOW: String(slow) }, route: '/orders/:id' })];
const state = async (id: string) => JSON.parse((await h!.get(`/_spore/invocations/${id}`)).body);
/** The CLI, in a child process (the dataplane runs in this one: it must keep serving meanwhile). */
const cli = (...args: string[]) =>
  new Promise<{ status: number; stdout: string; stderr: string }>((resolve) =>
    execFile(process.execPath, [BIN, ...args, '--url', h!.url], { encoding: 'utf8' }, (err, stdout, stderr) => resolve({ status: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr })),
  );

describe('asynchronous calls', () => {
  it('answer 202 with an invocation id at once, then call the function as the route would (method, path, query, headers, params, body), the id as its request id', async () => {
    const f = files();
    h = await harness();
    await h.apply(objects(f, 1500));
    const res = await h.get('/orders/42?x=1', { method: 'POST', headers: { 'x-spore-async': 'true', 'x-custom': 'yes' }, body: 'order 42' });
    expect(res.status).toBe(202);
    const { invocation } = JSON.parse(res.body);
    expect(res.headers['x-spore-invocation-id']).toBe(invocation);
    // answered before the function was done with it
    expect(f.lines().filter((l) => l.what === 'end')).toEqual([]);
    await waitFor('the call done', async () => ((await state(invocation)).state === 'succeeded' ? true : null), 30_000);
    const [start] = f.lines();
    expect(start).toMatchObject({ body: 'order 42', method: 'POST', path: '/orders/42?x=1', id: invocation, param: '42', custom: 'yes', async: null });
    expect(await state(invocation)).toMatchObject({ state: 'succeeded', attempts: 1, status: 200, response: 'done order 42', function: 'orders', bodyBytes: 8 });
    // in the function's logs under the invocation id
    const logged = await waitFor('the log line', () => h!.store.queryLogs({ function: 'orders' }).find((e) => e.instance === 'async' && e.requestId === invocation));
    expect(logged.line).toMatch(/→ 200 in \d+ ms/);
  });

  it('retry a failing call (5xx) with a backoff, then keep it in the dead letter, listed by spore invocations --failed and run again by spore invocations retry', async () => {
    const f = files();
    writeFileSync(f.flag, 'down', { mode: 0o666 });
    h = await harness();
    await h.apply(objects(f));
    const { invocation } = JSON.parse((await h.get('/orders/7', { method: 'POST', headers: { 'x-spore-async': 'true' }, body: 'order 7' })).body);
    const failed = await waitFor('the dead letter', async () => ((await state(invocation)).state === 'failed' ? state(invocation) : null), 30_000);
    expect(failed).toMatchObject({ attempts: 3, status: 503, error: 'HTTP 503: database down' });
    expect(f.lines().filter((l) => l.what === 'start')).toHaveLength(3);
    expect(h.reports.join('\n')).toContain(`asynchronous call ${invocation} of default/orders failed: HTTP 503: database down`);
    const listed = await cli('invocations', '--failed');
    expect(listed.status, listed.stderr).toBe(0);
    expect(listed.stdout).toMatch(new RegExp(`^${invocation}\\s+default/orders\\s+failed\\s+3\\s+503\\s+\\d+s\\s+HTTP 503: database down$`, 'm'));
    expect(JSON.parse((await cli('invocations', '--failed', '-o', 'json')).stdout).map((c: { id: string }) => c.id)).toEqual([invocation]);
    // the database is back: the call runs again, and this time it is done
    rmSync(f.flag);
    const retried = await cli('invocations', 'retry', invocation);
    expect(retried.status, retried.stderr).toBe(0);
    await waitFor('the retried call done', async () => ((await state(invocation)).state === 'succeeded' ? true : null), 30_000);
    expect(f.lines().filter((l) => l.what === 'end')).toHaveLength(1);
    // a call that has not failed is not retried; one that does not exist is said
    const again = await cli('invocations', 'retry', invocation);
    expect(again.status).not.toBe(0);
    expect(again.stderr).toContain('has not failed');
    expect((await cli('invocations', 'retry', 'nope')).stderr).toContain('no asynchronous call nope');
  });

  it('do not retry a 4xx (a retry would not change it), and refuse a bad header value or an unknown function', async () => {
    const f = files();
    h = await harness();
    await h.apply(objects(f));
    const { invocation } = JSON.parse((await h.get('/orders/1', { method: 'POST', headers: { 'x-spore-async': 'true' }, body: 'bad' })).body);
    await waitFor('failed', async () => ((await state(invocation)).state === 'failed' ? true : null), 30_000);
    expect(await state(invocation)).toMatchObject({ attempts: 1, status: 400, error: 'HTTP 400: no such order' });
    const bad = await h.get('/orders/1', { method: 'POST', headers: { 'x-spore-async': 'yes please' }, body: 'x' });
    expect(bad.status).toBe(400);
    expect(JSON.parse(bad.body).message).toContain('X-Spore-Async must be "true"');
    const unknown = await h.get('/_fn/default/nope', { method: 'POST', headers: { 'x-spore-async': 'true' } });
    expect(unknown.status).toBe(404);
    expect(h.store.invocations.listInvocations({})).toHaveLength(1);
  });

  it('lose nothing across a restart: calls accepted, or running, when Spore stopped run at its next start', async () => {
    const f = files();
    const dir = tempDir('spore-async-restart-');
    // what a Spore that was killed left in its store: one call accepted, one mid-run
    const before = new SqliteStore(join(dir, 'spore.db'));
    await before.apply(objects(f));
    const call = { namespace: 'default', function: 'orders', method: 'POST', headers: {}, params: { id: '1' } };
    const waiting = before.invocations.enqueue({ ...call, path: '/orders/1', body: Buffer.from('accepted') });
    const running = before.invocations.enqueue({ ...call, path: '/orders/2', body: Buffer.from('was running') });
    expect(before.invocations.claim(Date.now())?.id).toBe(waiting.id);
    expect(before.invocations.claim(Date.now())?.id).toBe(running.id);
    await before.close();
    h = await harness({ stateDir: dir });
    for (const id of [waiting.id, running.id]) await waitFor(`call ${id} done`, async () => ((await state(id)).state === 'succeeded' ? true : null), 30_000);
    expect(f.lines().filter((l) => l.what === 'end').map((l) => l.body).sort()).toEqual(['accepted', 'was running']);
    expect(h.reports.join('\n')).toContain('2 asynchronous call(s) were under way when their Spore stopped: they run (again)');
  });
});
