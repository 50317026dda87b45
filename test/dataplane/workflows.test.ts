// Workflows on the real dataplane: real Node and Python functions, the real
// SQLite run store, calls through /_fn/ and routes, a real `spore up`-like
// process killed mid-run.
import { execFile } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ApiObject, App, Chart } from 'cdk8s';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { validateSet, type KubeObject } from '../../api/index.js';
import { Workflow } from '../../constructs/index.js';
import { jetstream } from '@nats-io/jetstream';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { tempDir } from '../helpers.js';
import { collect, natsInstalled, startNats, type Nats } from '../nats-server.js';
import { dataplaneProcess, environment, fn, harness, recordFile, waitFor, type Harness } from './harness.js';

const API = 'spore.dev/v1alpha1';
const ROOT = new URL('../..', import.meta.url).pathname;
const BIN = join(ROOT, 'bin/spore.js');

/** Adds one to the JSON number it is sent (after ?sleep=ms); answers 500 to "boom". Records start and end. */
const INC = {
  'index.mjs': `import { appendFileSync } from 'node:fs';
  export default async (req) => {
    const url = new URL(req.url);
    const body = await req.text();
    const rec = (what) => appendFileSync(process.env.OUT, JSON.stringify({ fn: process.env.NAME, what, body, id: req.headers.get('x-spore-request-id'), t: Date.now() }) + '\\n');
    rec('start');
    await new Promise((r) => setTimeout(r, Number(url.searchParams.get('sleep') ?? 0)));
    rec('end');
    if (body === 'boom') return new Response('boom: no such thing', { status: 500 });
    return Response.json(Number(JSON.parse(body || '0')) + 1);
  };`,
};
/** Fails (503) the first time it gets a body (it leaves FLAG.<body> behind), then answers "ok <body>". */
const FLAKY = {
  'index.mjs': `import { appendFileSync, existsSync, writeFileSync } from 'node:fs';
  export default async (req) => {
    const body = await req.text();
    appendFileSync(process.env.OUT, JSON.stringify({ fn: 'flaky', what: 'start', body }) + '\\n');
    const flag = process.env.FLAG + '.' + body;
    if (!existsSync(flag)) {
      writeFileSync(flag, 'x');
      return new Response('not yet', { status: 503 });
    }
    return new Response('ok ' + body);
  };`,
};
/** Fission's example, fortune → whalesay: a Node function and a Python one, text in, text out. */
const FORTUNE = { 'index.mjs': `export default async (req) => new Response('Fortune favours ' + ((await req.text()) || 'the bold'));` };
const WHALESAY = { 'main.py': `def main(request):\n    text = request.get_data(as_text=True)\n    return "< " + text + " >\\n   \\\\\\n    🐳"\n` };

const workflow = (name: string, spec: Record<string, unknown>): KubeObject => ({ apiVersion: API, kind: 'Workflow', metadata: { name }, spec: { parallelism: 10, ...spec } });
const post = (h: Harness, name: string, body?: unknown, headers: Record<string, string> = {}) =>
  h.get(`/_fn/default/${name}`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: body === undefined ? undefined : JSON.stringify(body) });
type Rec = { fn: string; what: string; body: string; id: string; t: number };

describe('workflows', () => {
  let h: Harness;
  const rec = recordFile<Rec>();
  const calls = (fnName: string, what = 'start') => rec.lines().filter((l) => l.fn === fnName && l.what === what);

  beforeAll(async () => {
    h = await harness();
    const objects: KubeObject[] = [
      environment('node', 'node', 2),
      environment('python', 'python', 1),
      ...fn('inc', INC, { vars: { OUT: rec.out, NAME: 'inc' } }),
      ...fn('flaky', FLAKY, { vars: { OUT: rec.out, FLAG: rec.flag } }),
      workflow('seq', {
        tasks: {
          a: { run: 'inc', inputs: '{$.Invocation.Inputs.default}' },
          b: { run: 'inc', inputs: '{$.Tasks.a.Output}', requires: ['a'] },
          c: { run: 'inc', inputs: { default: '{$.Tasks.b.Output}' }, requires: ['b'] },
        },
      }),
      workflow('fan', {
        output: 'join',
        tasks: {
          left: { run: 'inc', inputs: { default: 1, query: { sleep: '800' } } },
          right: { run: 'inc', inputs: { default: 10, query: { sleep: '800' } } },
          join: { run: 'compose', inputs: { sum: '{$.Tasks.left.Output + $.Tasks.right.Output}', both: ['{$.Tasks.left.Output}', '{$.Tasks.right.Output}'] }, requires: ['left', 'right'] },
        },
      }),
      workflow('branch', {
        tasks: {
          pick: {
            run: 'if',
            inputs: { if: '{$.Invocation.Inputs.default > 10}', then: { run: 'inc', inputs: '{$.Invocation.Inputs.default}' }, else: '{"small: " & $string($.Invocation.Inputs.default)}' },
          },
        },
      }),
      workflow('choose', {
        tasks: {
          pick: {
            run: 'switch',
            inputs: {
              switch: '{$.Invocation.Inputs.default}',
              cases: [
                { case: 'a', action: 'first' },
                { case: 'b', action: { run: 'inc', inputs: 41 } },
              ],
              default: { tasks: { x: { run: 'noop', inputs: 'other' } } },
            },
          },
        },
      }),
      workflow('each', {
        tasks: {
          all: { run: 'foreach', inputs: { foreach: '{$.Invocation.Inputs.default}', parallelism: 2, do: { run: 'inc', inputs: { default: '{$.Item}', query: { sleep: '300' } } } } },
        },
      }),
      workflow('loops', {
        output: 'summary',
        tasks: {
          thrice: { run: 'repeat', inputs: { times: 3, do: { run: 'inc', inputs: '{$exists($.Prev) ? $.Prev : 0}' } } },
          upto: { run: 'while', inputs: { expr: '{$not($exists($.Prev)) or $.Prev < 13}', do: { run: 'inc', inputs: '{$exists($.Prev) ? $.Prev : 10}' } } },
          summary: { run: 'compose', inputs: { repeat: '{$.Tasks.thrice.Output}', while: '{$.Tasks.upto.Output}' }, requires: ['thrice', 'upto'] },
        },
      }),
      workflow('endless', { tasks: { loop: { run: 'while', inputs: { expr: '{true}', limit: 3, do: { run: 'noop' } } } } }),
      workflow('retried', { tasks: { once: { run: 'flaky', inputs: 'again', retry: { attempts: 2, backoff: '100ms' } } } }),
      workflow('retried-flow', { tasks: { cond: { run: 'if', inputs: { if: true, then: { run: 'flaky', inputs: 'branch' } }, retry: { attempts: 2, backoff: '100ms' } } } }),
      workflow('inner-catch', { tasks: { catch: { run: 'fail', inputs: 'inner failed' } } }),
      workflow('outer-catch', { tasks: { x: { run: 'inner-catch', catch: { run: 'noop', inputs: 'recovered' } } } }),
      workflow('napping', { tasks: { nap: { run: 'sleep', inputs: '200ms' }, after: { run: 'noop', inputs: 'rested', requires: ['nap'] } } }),
      workflow('each-fails', { tasks: { all: { run: 'foreach', inputs: { foreach: [1, 'boom', 2, 3, 4, 5, 6, 7], parallelism: 2, do: { run: 'inc', inputs: { default: '{$.Item}', query: { sleep: '200' } } } } } } }),
      workflow('slow', { tasks: { wait: { run: 'inc', inputs: { default: 1, query: { sleep: '3000' } }, timeout: '300ms' } } }),
      workflow('broken', {
        outputHeaders: { 'x-result': 'never' },
        tasks: { first: { run: 'inc', inputs: 1 }, bad: { run: 'inc', inputs: 'boom', requires: ['first'] }, after: { run: 'inc', inputs: 1, requires: ['bad'] } },
      }),
      workflow('rescued', {
        outputHeaders: { 'x-recovered-from': '{$.Tasks.bad.Output.status}' },
        tasks: { bad: { run: 'inc', inputs: 'boom', catch: { run: 'compose', inputs: { recovered: true, status: '{$.Error.status}', body: '{$.Error.body}' } } } },
      }),
      workflow('outer', { tasks: { inner: { run: 'seq', inputs: '{$.Invocation.Inputs.default}' }, more: { run: 'inc', inputs: '{$.Tasks.inner.Output}', requires: ['inner'] } } }),
      workflow('failing', { tasks: { no: { run: 'fail', inputs: '{"order " & $string($.Invocation.Inputs.default) & " refused"}' } } }),
    ];
    expect(validateSet(objects)).toEqual([]);
    await h.apply(objects);
  }, 60_000);
  afterAll(() => h?.close());

  it('runs a sequence, each output the next input, JSON kept as JSON; the calls carry the run id in their request ids', async () => {
    const counted = async () => Number(/spore_function_calls_total\{namespace="default",function="inc",method="POST",code="200"\} (\d+)/.exec((await h.get('/metrics')).body)?.[1] ?? 0);
    const before = await counted();
    const res = await post(h, 'seq', 1);
    expect(res.status).toBe(200);
    expect(res.headers['content-type']).toMatch(/application\/json/);
    expect(JSON.parse(res.body)).toBe(4);
    const run = res.headers['x-spore-workflow-run'];
    const ids = calls('inc').filter((c) => c.id.startsWith(`${run}:`)).map((c) => [c.id, c.body]);
    expect(ids).toEqual([
      [`${run}:a:1`, '1'],
      [`${run}:b:1`, '2'],
      [`${run}:c:1`, '3'],
    ]);
    // each call counted once in the function's metrics
    expect((await counted()) - before).toBe(3);
    const metrics = (await h.get('/metrics')).body;
    expect(metrics).toMatch(/spore_workflow_runs_total\{namespace="default",workflow="seq",state="succeeded"\} 1/);
    expect(metrics).toMatch(/spore_workflow_tasks_total\{namespace="default",workflow="seq",task="b",state="succeeded"\} 1/);
  });

  it('runs independent tasks at once and joins them', async () => {
    const res = await post(h, 'fan');
    expect(res.status).toBe(200);
    expect(JSON.parse(res.body)).toEqual({ sum: 13, both: [2, 11] });
    const run = res.headers['x-spore-workflow-run'];
    const of = (task: string, what: string) => rec.lines().find((l) => l.id === `${run}:${task}:1` && l.what === what)!.t;
    // overlapped: each started before the other ended
    expect(of('left', 'start')).toBeLessThan(of('right', 'end'));
    expect(of('right', 'start')).toBeLessThan(of('left', 'end'));
  });

  it('takes each branch of an if and of a switch (cases, a default sub-workflow)', async () => {
    expect(JSON.parse((await post(h, 'branch', 20)).body)).toBe(21);
    const small = await post(h, 'branch', 5);
    expect(small.headers['content-type']).toMatch(/text\/plain/);
    expect(small.body).toBe('small: 5');
    expect((await post(h, 'choose', 'a')).body).toBe('first');
    expect(JSON.parse((await post(h, 'choose', 'b')).body)).toBe(42);
    expect((await post(h, 'choose', 'zzz')).body).toBe('other');
  });

  it('runs foreach over a list, at most `parallelism` at once, outputs in order', async () => {
    const res = await post(h, 'each', [1, 2, 3, 4, 5]);
    expect(res.status).toBe(200);
    expect(JSON.parse(res.body)).toEqual([2, 3, 4, 5, 6]);
    const run = res.headers['x-spore-workflow-run'];
    const events = rec
      .lines()
      .filter((l) => l.id?.startsWith(`${run}:`))
      .sort((a, b) => a.t - b.t || (a.what === 'end' ? -1 : 1));
    let now = 0;
    let most = 0;
    for (const e of events) {
      now += e.what === 'start' ? 1 : -1;
      most = Math.max(most, now);
    }
    expect(events.filter((e) => e.what === 'start')).toHaveLength(5);
    expect(most).toBe(2);
    // its items count under the foreach task, not one label per item
    const metrics = (await h.get('/metrics')).body;
    expect(metrics).toMatch(/spore_workflow_tasks_total\{namespace="default",workflow="each",task="all",state="succeeded"\} \d+/);
    expect(metrics).not.toMatch(/task="all:\d/);
  });

  it('runs repeat and while loops with the previous output, and stops a while at its limit', async () => {
    expect(JSON.parse((await post(h, 'loops')).body)).toEqual({ repeat: 3, while: 13 });
    const endless = await post(h, 'endless');
    expect(endless.status).toBe(500);
    expect(JSON.parse(endless.body)).toMatchObject({ error: 'WorkflowFailed', task: 'loop', message: 'task loop: while: the condition still holds after 3 iterations (input "limit")' });
  });

  it('retries a failed task: the second attempt succeeds', async () => {
    const res = await post(h, 'retried');
    expect(res.status).toBe(200);
    expect(res.body).toBe('ok again');
    expect(calls('flaky')).toHaveLength(2);
    const run = JSON.parse((await h.get(`/_spore/workflow-runs/${res.headers['x-spore-workflow-run']}`)).body);
    expect(run.tasks).toEqual([expect.objectContaining({ path: 'once', state: 'succeeded', attempts: 2, output: 'ok again' })]);
  });

  it('retries a control-flow task: what failed under it runs again', async () => {
    const res = await post(h, 'retried-flow');
    expect(res.status).toBe(200);
    expect(res.body).toBe('ok branch');
    expect(calls('flaky').filter((c) => c.body === 'branch')).toHaveLength(2);
  });

  it("keeps the engine's actions apart from a sub-workflow's task ids (a task named catch)", async () => {
    const res = await post(h, 'outer-catch');
    expect(res.status).toBe(200);
    expect(res.body).toBe('recovered');
  });

  it("sleeps as Fission's sleep does: its duration as the default input", async () => {
    expect((await post(h, 'napping')).body).toBe('rested');
  });

  it('starts no foreach item after one failed', async () => {
    const res = await post(h, 'each-fails');
    expect(res.status).toBe(500);
    expect(JSON.parse(res.body)).toMatchObject({ task: 'all:1', functionStatus: 500 });
    await new Promise((r) => setTimeout(r, 1500));
    const run = res.headers['x-spore-workflow-run'];
    const started = rec.lines().filter((l) => l.what === 'start' && l.id?.startsWith(`${run}:`));
    // two at a time, each 200 ms: items 0 and 1 ('boom'), and item 2 if item 0's slot freed just before the failure
    // was known (its call may reach the function after the answer); none after (request ids: <run>:all:<item>:<attempt>)
    const items = started.map((l) => Number(l.id.split(':')[2]));
    expect(items).toEqual(expect.arrayContaining([0, 1]));
    expect(Math.max(...items)).toBeLessThanOrEqual(2);
  });

  it('fails a task that outlives its timeout, and says so', async () => {
    const res = await post(h, 'slow');
    expect(res.status).toBe(500);
    expect(JSON.parse(res.body)).toMatchObject({ error: 'WorkflowFailed', task: 'wait', message: 'task wait timed out after 300ms' });
  });

  it('a failed run says which task failed, with the function status and body; what came after it never ran', async () => {
    const before = calls('inc').length;
    const res = await post(h, 'broken');
    expect(res.status).toBe(500);
    expect(res.headers['x-result']).toBeUndefined();
    const body = JSON.parse(res.body);
    expect(body).toMatchObject({ error: 'WorkflowFailed', task: 'bad', functionStatus: 500, functionBody: 'boom: no such thing', message: 'task bad: function inc answered 500', run: res.headers['x-spore-workflow-run'] });
    expect(calls('inc').length - before).toBe(2); // first and bad; never after
    const run = JSON.parse((await h.get(`/_spore/workflow-runs/${body.run}`)).body);
    expect(run).toMatchObject({ state: 'failed', error: { task: 'bad', status: 500 } });
  });

  it('catches a failure with a fallback action that sees the error', async () => {
    const res = await post(h, 'rescued');
    expect(res.status).toBe(200);
    expect(JSON.parse(res.body)).toEqual({ recovered: true, status: 500, body: 'boom: no such thing' });
    expect(res.headers['x-recovered-from']).toBe('500');
  });

  it('runs a workflow from a workflow', async () => {
    expect(JSON.parse((await post(h, 'outer', 1)).body)).toBe(5);
  });

  it('fails with the message a fail task gives', async () => {
    const res = await post(h, 'failing', 7);
    expect(res.status).toBe(500);
    expect(JSON.parse(res.body)).toMatchObject({ task: 'no', message: 'task no: order 7 refused' });
  });

  it('answers 202 and the run id at once when asked to be asynchronous; the run is kept with its output', async () => {
    const res = await post(h, 'each', [10, 20], { 'x-spore-async': 'true', authorization: 'Bearer secret', 'x-custom': 'kept' });
    expect(res.status).toBe(202);
    const { run } = JSON.parse(res.body);
    expect(res.headers['x-spore-workflow-run']).toBe(run);
    const done = await waitFor('the run', async () => {
      const r = JSON.parse((await h.get(`/_spore/workflow-runs/${run}`)).body);
      return r.state === 'succeeded' ? r : null;
    });
    expect(done.output).toEqual([11, 21]);
    // the input is kept with the run, credentials aside
    expect(done.input.headers).toMatchObject({ 'x-custom': 'kept' });
    expect(done.input.headers.authorization).toBeUndefined();
    const listed = JSON.parse((await h.get('/_spore/workflow-runs?workflow=each')).body);
    expect(listed.map((r: { id: string }) => r.id)).toContain(run);
  });

  it('refuses a body that says JSON and is not, and a bad async flag', async () => {
    const bad = await h.get('/_fn/default/seq', { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{nope' });
    expect(bad.status).toBe(400);
    expect(JSON.parse(bad.body).message).toMatch(/the request body says it is JSON but is not/);
    expect((await post(h, 'seq', 1, { 'x-spore-async': 'maybe' })).status).toBe(400);
    // the listings the CLI asks for say what is wrong with a query
    const state = await h.get('/_spore/workflow-runs?state=done');
    expect([state.status, JSON.parse(state.body).message]).toEqual([400, 'query parameter "state" must be one of running, succeeded, failed']);
    const limit = await h.get('/_spore/invocations?limit=0');
    expect([limit.status, JSON.parse(limit.body).message]).toEqual([400, 'query parameter "limit" must be a whole number from 1 to 10000']);
  });
});

describe.skipIf(!natsInstalled)('triggers that start workflows', () => {
  let h: Harness | undefined;
  let nats: Nats | undefined;
  let nc: NatsConnection | undefined;
  afterAll(async () => {
    await h?.close();
    await nc?.close();
    await nats?.stop();
  });

  it('a timer and a NATS queue trigger start a workflow the way they call a function; the queue publishes its output to responseTopic', async () => {
    nats = await startNats();
    nc = await connect({ servers: nats.url });
    const rec = recordFile<Rec>();
    h = await harness();
    const double = workflow('double', { tasks: { a: { run: 'inc', inputs: '{$.Invocation.Inputs.default}' }, b: { run: 'inc', inputs: '{$.Tasks.a.Output}', requires: ['a'] } } });
    const objects: KubeObject[] = [
      environment('node', 'node'),
      ...fn('inc', INC, { vars: { OUT: rec.out, NAME: 'inc' } }),
      double,
      { apiVersion: API, kind: 'TimerTrigger', metadata: { name: 'tick' }, spec: { cron: '* * * * * *', workflow: { name: 'double' }, method: 'POST', path: '/', headers: { 'content-type': 'application/json' }, body: '40' } },
      {
        apiVersion: API,
        kind: 'QueueTrigger',
        metadata: { name: 'jobs' },
        spec: { broker: { kind: 'nats', connection: { url: nats.url } }, topic: 'jobs', responseTopic: 'jobs.done', workflow: { name: 'double' }, maxRetries: 0, contentType: 'application/json', concurrency: 1 },
      },
    ];
    expect(validateSet(objects)).toEqual([]);
    const answers = collect(nc, 'jobs.done');
    await h.apply(objects);
    const timed = await waitFor('a run the timer started', async () => (JSON.parse((await h!.get('/_spore/workflow-runs?workflow=double&state=succeeded')).body) as { output: unknown }[]).find((r) => r.output === 42), 30_000);
    expect(timed).toBeDefined();
    await waitFor('the queue consuming', () => h!.dp.queues.list().find((q) => q.name === 'jobs' && q.state === 'consuming'), 30_000);
    await jetstream(nc).publish('jobs', '1');
    const answer = await waitFor('the workflow output on jobs.done', () => answers[0], 30_000);
    expect(answer.string()).toBe('3');
  }, 90_000);
});

describe('a Fission Workflows file', () => {
  let h: Harness | undefined;
  afterEach(async () => {
    await h?.close();
    h = undefined;
  });

  it('loads unchanged with Workflow.fromFile and runs through an HttpTrigger: fortune (Node) → whalesay (Python)', async () => {
    const dir = tempDir('spore-fission-wf-');
    const file = join(dir, 'fortunewhale.wf.yaml');
    // as Fission Workflows' example is written
    writeFileSync(
      file,
      `apiVersion: 1
output: WhaleWithFortune
tasks:
  GenerateFortune:
    run: fortune
    inputs: "{$.Invocation.Inputs.default}"

  WhaleWithFortune:
    run: whalesay
    inputs: "{$.Tasks.GenerateFortune.Output}"
    requires:
    - GenerateFortune
`,
    );
    const app = new App({ outdir: join(dir, 'dist') });
    const chart = new Chart(app, 'fission');
    Workflow.fromFile(chart, 'fortunewhale', file);
    const rest: KubeObject[] = [
      environment('node', 'node'),
      environment('python', 'python'),
      ...fn('fortune', FORTUNE),
      ...fn('whalesay', WHALESAY, { env: 'python' }),
      { apiVersion: API, kind: 'HttpTrigger', metadata: { name: 'fortunewhale' }, spec: { methods: ['POST'], path: '/fortune', workflow: { name: 'fortunewhale' } } },
    ];
    rest.forEach((o, i) => new ApiObject(chart, `o${i}`, o));
    // synth validates the workflow with the rest of the app (its functions resolve)
    const objects = chart.toJson() as KubeObject[];
    expect(objects.find((o) => o.kind === 'Workflow')).toMatchObject({ spec: { output: 'WhaleWithFortune', tasks: { WhaleWithFortune: { run: 'whalesay', inputs: '{$.Tasks.GenerateFortune.Output}', requires: ['GenerateFortune'] } } } });
    expect(validateSet(objects)).toEqual([]);
    h = await harness();
    await h.apply(objects);
    const res = await h.get('/fortune', { method: 'POST', body: 'the brave' });
    expect(res.status).toBe(200);
    expect(res.body).toBe('< Fortune favours the brave >\n   \\\n    🐳');
  }, 60_000);

  it('is refused with a clear error when it is not a Fission workflow', () => {
    const dir = tempDir('spore-fission-wf-');
    const chart = new Chart(new App({ outdir: join(dir, 'dist') }), 'x');
    writeFileSync(join(dir, 'v2.yaml'), 'apiVersion: 2\ntasks: {}\n');
    expect(() => Workflow.fromFile(chart, 'a', join(dir, 'v2.yaml'))).toThrow(/apiVersion must be 1, Fission Workflows' format \(got 2\)/);
    writeFileSync(join(dir, 'extra.yaml'), 'apiVersion: 1\ntasks: {}\nstages: []\n');
    expect(() => Workflow.fromFile(chart, 'b', join(dir, 'extra.yaml'))).toThrow(/unknown field stages/);
    expect(() => Workflow.fromFile(chart, 'c', join(dir, 'missing.yaml'))).toThrow(/cannot read .*missing\.yaml/);
  });
});

describe('a run killed mid-way (SIGKILL)', () => {
  const dp = dataplaneProcess(tempDir('spore-wf-kill-'));
  afterAll(() => dp.kill());

  it('resumes after a restart: finished tasks are not run again, the one in flight runs again, the run completes', async () => {
    const rec = recordFile<Rec>();
    const objects = [
      environment('node', 'node'),
      ...fn('inc', INC, { vars: { OUT: rec.out, NAME: 'inc' } }),
      workflow('pipeline', {
        tasks: {
          first: { run: 'inc', inputs: '{$.Invocation.Inputs.default}' },
          long: { run: 'inc', inputs: { default: '{$.Tasks.first.Output}', query: { sleep: '3000' } }, requires: ['first'] },
          // $.Tasks.first.Inputs too: a resumed run sees the inputs of tasks done before the kill
          last: { run: 'inc', inputs: '{$.Tasks.long.Output + $.Tasks.first.Inputs.default}', requires: ['long'] },
        },
      }),
    ];
    const first = dp.start(objects);
    const url = await first.url();
    const accepted = await fetch(`${url}/_fn/default/pipeline`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-spore-async': 'true' }, body: '1' });
    expect(accepted.status).toBe(202);
    const { run } = (await accepted.json()) as { run: string };
    await waitFor('the long task under way', () => rec.lines().find((l) => l.id === `${run}:long:1` && l.what === 'start'), 30_000);
    await first.kill();

    const second = dp.start();
    const again = await second.url();
    expect(second.output()).toMatch(new RegExp(`resuming 1 workflow run left under way: default/pipeline ${run}`));
    const done = await waitFor(
      'the run resumed and done',
      async () => {
        const r = (await (await fetch(`${again}/_spore/workflow-runs/${run}`)).json()) as { state: string; output: unknown; tasks: { path: string; attempts: number }[] };
        return r.state === 'succeeded' ? r : null;
      },
      60_000,
    );
    expect(done.output).toBe(5);
    const starts = rec.lines().filter((l) => l.what === 'start' && l.id?.startsWith(`${run}:`)).map((l) => l.id);
    // first ran once; long twice (killed in flight, then again: its second attempt); last once
    expect(starts).toEqual([`${run}:first:1`, `${run}:long:1`, `${run}:long:2`, `${run}:last:1`]);
    second.child.kill('SIGTERM');
  }, 150_000);
});

describe('spore workflow (CLI)', () => {
  let h: Harness | undefined;
  afterAll(() => h?.close());
  const cli = (...args: string[]) =>
    new Promise<{ status: number; stdout: string; stderr: string }>((resolve) =>
      execFile(process.execPath, [BIN, ...args, '--url', h!.url], { encoding: 'utf8' }, (err, stdout, stderr) => resolve({ status: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr })),
    );

  it('runs a workflow with an input, lists its runs and shows one task by task', async () => {
    const rec = recordFile<Rec>();
    h = await harness();
    await h.apply([
      environment('node', 'node'),
      ...fn('inc', INC, { vars: { OUT: rec.out, NAME: 'inc' } }),
      workflow('two', { tasks: { a: { run: 'inc', inputs: '{$.Invocation.Inputs.default}' }, b: { run: 'inc', inputs: '{$.Tasks.a.Output}', requires: ['a'] } } }),
      workflow('bad', { tasks: { x: { run: 'inc', inputs: 'boom' } } }),
    ]);
    const ran = await cli('workflow', 'run', 'two', '--input', '5');
    expect(ran).toMatchObject({ status: 0, stdout: '7\n' });
    const failed = await cli('workflow', 'run', 'bad');
    expect(failed.status).toBe(1);
    expect(failed.stderr).toMatch(/task x: function inc answered 500/);
    const runs = await cli('workflow', 'runs', 'two');
    expect(runs.status).toBe(0);
    expect(runs.stdout).toMatch(/RUN\s+WORKFLOW\s+STATE/);
    const id = /^(\S+)\s+two\s+succeeded/m.exec(runs.stdout)?.[1];
    expect(id).toBeDefined();
    const got = await cli('workflow', 'get', id!);
    expect(got.status).toBe(0);
    expect(got.stdout).toMatch(/^a\s+succeeded\s+1\s+\S+\s+6$/m);
    expect(got.stdout).toMatch(/^b\s+succeeded\s+1\s+\S+\s+7$/m);
    const badInput = await cli('workflow', 'run', 'two', '--input', '{nope');
    expect(badInput.status).toBe(1);
    expect(badInput.stderr).toMatch(/--input must be JSON/);
    expect(await cli('workflow', 'get', 'no-such-run')).toMatchObject({ status: 1, stderr: expect.stringMatching(/no workflow run no-such-run/) });
  }, 60_000);
});
