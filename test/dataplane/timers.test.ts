// TimerTriggers fire: a real dataplane over a real SQLite store, a real Node
// function appending each call to a file, on the real clock.
import { chmodSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { KubeObject } from '../../api/index.js';
import { schedule } from '../../dataplane/index.js';
import { tempDir } from '../helpers.js';
import { environment, fn, harness, waitFor, type Harness } from './harness.js';

let h: Harness | undefined;
afterEach(async () => {
  await h?.close();
  h = undefined;
});

/** Appends one JSON line per call (start and end for /slow); /fail answers 500, /throw throws. */
const RECORDER = {
  'index.mjs': `import { appendFileSync } from 'node:fs';
  export default async (req) => {
    const url = new URL(req.url);
    const rec = (what) => appendFileSync(process.env.OUT, JSON.stringify({ what, id: req.headers.get('x-spore-request-id'), method: req.method, path: url.pathname + url.search, body: what === 'start' ? body : undefined, custom: req.headers.get('x-custom'), timer: req.headers.get('x-spore-timer') }) + '\\n');
    const body = await req.text();
    rec('start');
    if (url.pathname === '/fail') return new Response('broken', { status: 500 });
    if (url.pathname === '/throw') throw new Error('boom');
    if (url.pathname === '/slow') await new Promise((r) => setTimeout(r, 1500));
    rec('end');
    return new Response('ok');
  };`,
};

type Line = { what: string; id: string; method: string; path: string; body?: string; custom: string | null; timer: string | null };

const timer = (name: string, spec: Record<string, unknown>): KubeObject => ({ apiVersion: 'spore.dev/v1alpha1', kind: 'TimerTrigger', metadata: { name }, spec: { method: 'POST', path: '/', ...spec } });

async function recorder(timers: KubeObject[]) {
  const dir = tempDir('spore-timer-out-');
  chmodSync(dir, 0o777); // instances may run as other users
  const out = join(dir, 'calls.jsonl');
  writeFileSync(out, '', { mode: 0o666 });
  chmodSync(out, 0o666);
  h = await harness();
  await h.store.apply([environment('node', 'node'), ...fn('rec', RECORDER, { vars: { OUT: out } }), ...timers]);
  const lines = (): Line[] => (existsSync(out) ? readFileSync(out, 'utf8').trim().split('\n').filter(Boolean).map((l) => JSON.parse(l)) : []);
  return { lines, starts: () => lines().filter((l) => l.what === 'start') };
}

describe('timer triggers', () => {
  it('fire every second with the method, path, headers and body the trigger says, each call with its own request id, counted and logged', async () => {
    const r = await recorder([timer('tick', { cron: '*/1 * * * * *', function: { name: 'rec' }, method: 'PUT', path: '/hook?x=1', headers: { 'X-Custom': 'yes' }, body: '{"n":1}' })]);
    const calls = await waitFor('three calls', () => (r.starts().length >= 3 ? r.starts() : null), 30_000);
    for (const c of calls) expect(c).toMatchObject({ method: 'PUT', path: '/hook?x=1', body: '{"n":1}', custom: 'yes', timer: 'tick' });
    const ids = calls.map((c) => c.id);
    expect(ids.every((id) => /^[0-9a-f-]{36}$/.test(id))).toBe(true);
    expect(new Set(ids).size).toBe(ids.length);
    // through the router's call path: in the metrics as any call is, and in the function's logs with its request id
    const metrics = (await h!.get('/metrics')).body;
    expect(metrics).toMatch(/spore_function_calls_total\{[^}]*function="rec"[^}]*code="200"[^}]*\} [1-9]/);
    const logs = await waitFor('a timer log line', () => h!.store.queryLogs({ function: 'rec' }).find((e) => e.instance === 'timer/tick' && e.requestId === ids[0]));
    expect(logs.line).toMatch(/^timer tick: PUT \/hook\?x=1 → 200 in \d+ ms$/);
    expect(h!.dp.timers.list()).toEqual([expect.objectContaining({ name: 'tick', function: 'rec', cron: '*/1 * * * * *', timeZone: 'UTC', nextRun: expect.any(String) })]);
    const status = JSON.parse((await h!.get('/_spore/status')).body);
    expect(status.timers.map((t: { name: string }) => t.name)).toEqual(['tick']);
    // and in the store, as the trigger's Active condition
    const stored = await h!.store.get({ apiVersion: 'spore.dev/v1alpha1', kind: 'TimerTrigger', namespace: 'default', name: 'tick' });
    expect(stored!.status!.conditions).toEqual([{ type: 'Active', status: 'True', reason: 'Scheduled', message: '"*/1 * * * * *" (UTC) → rec', lastTransitionTime: expect.any(String) }]);
  });

  it('stops firing once the trigger is deleted from the store, and reschedules when it changes', async () => {
    const tt = timer('tick', { cron: '*/1 * * * * *', function: { name: 'rec' } });
    const r = await recorder([tt]);
    await waitFor('a call', () => r.starts().length >= 1, 30_000);
    // changed: the new path is used from then on
    await h!.store.apply([{ ...tt, spec: { ...(tt as unknown as { spec: object }).spec, path: '/changed' } }]);
    await waitFor('a call on the new path', () => r.starts().some((c) => c.path === '/changed'), 30_000);
    await h!.store.delete({ apiVersion: 'spore.dev/v1alpha1', kind: 'TimerTrigger', namespace: 'default', name: 'tick' });
    expect(h!.dp.timers.list()).toEqual([]);
    await new Promise((res) => setTimeout(res, 1500)); // a call already in flight may still land
    const after = r.starts().length;
    await new Promise((res) => setTimeout(res, 3000));
    expect(r.starts().length).toBe(after);
  });

  it('says a failing call (500, or a function that throws) and keeps firing', async () => {
    const r = await recorder([
      timer('fails', { cron: '*/1 * * * * *', function: { name: 'rec' }, path: '/fail' }),
      timer('throws', { cron: '*/1 * * * * *', function: { name: 'rec' }, path: '/throw' }),
    ]);
    await waitFor('three calls of each', () => ['/fail', '/throw'].every((p) => r.starts().filter((c) => c.path === p).length >= 3), 30_000);
    const said = await waitFor('failures reported', () => (h!.reports.filter((m) => m.includes('failed')).length >= 4 ? h!.reports : null));
    expect(said.find((m) => m.startsWith('timer default/fails → default/rec failed (request '))).toMatch(/: 500 broken in \d+ ms$/);
    expect(said.some((m) => /^timer default\/throws → default\/rec failed \(request [0-9a-f-]{36}\): 5\d\d /.test(m))).toBe(true);
    const logged = h!.store.queryLogs({ function: 'rec' }).filter((e) => e.instance === 'timer/fails');
    expect(logged.length).toBeGreaterThanOrEqual(2);
    expect(logged.every((e) => e.stream === 'stderr' && e.requestId)).toBe(true);
    expect(h!.dp.timers.list().find((t) => t.name === 'fails')).toMatchObject({ lastStatus: 500, lastError: 'broken' });
  });

  it("runs one timer's calls one at a time, in order: a firing due during a call waits for it (Fission's behaviour)", async () => {
    // the function could take calls at once (several instances); a 1.5 s call on a 1 s timer
    const r = await recorder([timer('slow', { cron: '*/1 * * * * *', function: { name: 'rec' }, path: '/slow' })]);
    await waitFor('four finished calls', () => r.lines().filter((l) => l.what === 'end').length >= 4, 40_000);
    // never two at once: every start follows the previous call's end
    let open = 0;
    for (const l of r.lines()) {
      open += l.what === 'start' ? 1 : -1;
      expect(open).toBeLessThanOrEqual(1);
    }
    expect(h!.reports.filter((m) => m.includes('dropped'))).toEqual([]);
  });

  it("honours the trigger's time zone (UTC by default)", async () => {
    const from = new Date('2024-06-01T12:30:00Z');
    const next = (timeZone?: string) => schedule({ cron: '0 0 9 * * *', timeZone }, () => {}, { paused: true }).nextRun(from)?.toISOString();
    expect(next('Asia/Tokyo')).toBe('2024-06-02T00:00:00.000Z'); // 09:00 in Tokyo is 00:00 UTC
    expect(next()).toBe('2024-06-02T09:00:00.000Z');
    expect(next('America/New_York')).toBe('2024-06-01T13:00:00.000Z'); // EDT, UTC-4
    const hourly = schedule({ cron: '@hourly', timeZone: 'Asia/Kolkata' }, () => {}, { paused: true }).nextRun(from)?.toISOString();
    expect(hourly).toBe('2024-06-01T12:30:00.000Z'.replace('12:30', '13:30')); // a half-hour zone (UTC+5:30): its hours start at :30 UTC
    // the running timers use the same: what the dataplane lists for a Tokyo trigger
    h = await harness();
    await h.store.apply([environment('node', 'node'), ...fn('rec', RECORDER), timer('tokyo', { cron: '0 0 9 * * *', timeZone: 'Asia/Tokyo', function: { name: 'rec' } }), timer('utc', { cron: '0 0 9 * * *', function: { name: 'rec' } })]);
    const listed = Object.fromEntries(h.dp.timers.list().map((t) => [t.name, t.nextRun]));
    expect(listed.tokyo).toMatch(/T00:00:00\.000Z$/);
    expect(listed.utc).toMatch(/T09:00:00\.000Z$/);
  });

  it('@every fires D apart, the first D after the start', async () => {
    const t0 = Date.now();
    const runs = schedule({ cron: '@every 1m30s' }, () => {}, { paused: true }).nextRuns(2).map((d) => d.getTime());
    expect(runs[1] - runs[0]).toBe(90_000);
    expect(runs[0] - t0).toBeGreaterThan(85_000);
    expect(runs[0] - t0).toBeLessThanOrEqual(90_000);
  });
});

describe('timer triggers after a restart', () => {
  it('replay a run missed while Spore was down once when the trigger says catchUp, and not otherwise', async () => {
    const dir = tempDir('spore-timer-catchup-');
    const out = join(dir, 'calls.jsonl');
    writeFileSync(out, '', { mode: 0o666 });
    chmodSync(dir, 0o777);
    chmodSync(out, 0o666);
    // what the store of a Spore stopped two days ago holds: both yearly timers last fired then (a run fell due since: 1 January)
    const { SqliteStore } = await import('../../store/index.js');
    const before = new SqliteStore(join(dir, 'spore.db'));
    const twoYears = Date.now() - 2 * 365 * 24 * 3600_000;
    before.writeState('timer/default/yearly-catchup', { at: twoYears });
    before.writeState('timer/default/yearly', { at: twoYears });
    await before.close();
    h = await harness({ stateDir: dir });
    await h.store.apply([
      environment('node', 'node'),
      ...fn('rec', RECORDER, { vars: { OUT: out } }),
      timer('yearly-catchup', { cron: '0 0 1 1 *', function: { name: 'rec' }, path: '/caught-up', catchUp: true }),
      timer('yearly', { cron: '0 0 1 1 *', function: { name: 'rec' }, path: '/not-replayed' }),
    ]);
    const lines = () => readFileSync(out, 'utf8').trim().split('\n').filter(Boolean).map((l) => JSON.parse(l) as Line);
    await waitFor('the caught-up run', () => lines().find((l) => l.what === 'end' && l.path === '/caught-up'), 30_000);
    expect(h.reports.join('\n')).toMatch(/timer default\/yearly-catchup: a run due at \d{4}-01-01T00:00:00\.000Z was missed while Spore was down; catching up \(once\)/);
    // once, not once per missed year; and the other timer replays nothing
    await new Promise((r) => setTimeout(r, 1500));
    expect(lines().filter((l) => l.what === 'start').map((l) => l.path)).toEqual(['/caught-up']);
    // its last firing is kept for the next restart
    expect(h.store.readState<{ at: number }>('timer/default/yearly-catchup')!.at).toBeGreaterThan(twoYears);
    // and forgotten with the trigger: one made again by that name does not catch up on this one's runs
    await h.store.delete({ apiVersion: 'spore.dev/v1alpha1', kind: 'TimerTrigger', namespace: 'default', name: 'yearly-catchup' });
    await waitFor('the state forgotten', () => h!.store.readState('timer/default/yearly-catchup') === undefined, 10_000);
  });
});
