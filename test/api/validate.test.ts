import { createHash } from 'node:crypto';
import { gzipSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { normalize, resolveExecutor, validateObject, validateSet, ValidationError, parseSchedule, formatErrors } from '../../api/index.js';
import { spore } from '../helpers.js';

const env = spore('Environment', 'node', { runtime: { name: 'node' } });
const archive = gzipSync(Buffer.from('not really a tar, but bytes'));
const pkg = spore('Package', 'hello', {
  archive: { sha256: createHash('sha256').update(archive).digest('hex'), size: archive.length, inline: archive.toString('base64') },
});
const fn = spore('Function', 'hello', { environment: { name: 'node' }, package: { name: 'hello' } });
const route = (name: string, spec: object) => spore('HttpTrigger', name, { function: { name: 'hello' }, ...spec });

describe('validateObject', () => {
  it('accepts a minimal object of each kind', () => {
    const objects = [
      env,
      pkg,
      fn,
      route('r', { path: '/hello/:name' }),
      spore('TimerTrigger', 't', { cron: '*/5 * * * *', function: { name: 'hello' } }),
      spore('QueueTrigger', 'q', { broker: { kind: 'nats', connection: { url: 'nats://x:4222' } }, topic: 'orders', function: { name: 'hello' } }),
      spore('WatchTrigger', 'w', { resource: { kind: 'Pod' }, function: { name: 'hello' } }),
      spore('Workflow', 'wf', { tasks: { a: { run: 'hello' }, b: { run: 'noop', requires: ['a'] } }, output: 'b' }),
    ];
    for (const o of objects) expect(validateObject(o), o.kind).toEqual([]);
  });

  it('reports every schema error with its field path and what is wrong', () => {
    const errors = validateObject(
      spore('Function', 'Hello_World', {
        environment: { name: 'node' },
        package: {},
        executor: { type: 'lambda', idleTimeoutSeconds: -5, functionTimeoutSeconds: 999_999, colour: 'red' },
      }),
    );
    expect(errors).toEqual(
      expect.arrayContaining([
        { path: 'metadata.name', message: expect.stringContaining('must be a DNS-1123 label') },
        { path: 'spec.package.name', message: 'is required' },
        { path: 'spec.executor.type', message: 'must be one of: pool, dedicated (got "lambda")' },
        { path: 'spec.executor.idleTimeoutSeconds', message: 'must be >= 1 (got -5)' },
        { path: 'spec.executor.functionTimeoutSeconds', message: 'must be <= 3600 (got 999999)' },
        { path: 'spec.executor.colour', message: expect.stringContaining('is not a known field (known: type, minScale') },
      ]),
    );
    expect(errors).toHaveLength(6);
  });

  it('names the object and the problem for unknown kinds and versions', () => {
    expect(validateObject({ ...fn, kind: 'Lambda' })).toEqual([{ path: 'kind', message: expect.stringContaining('must be one of: Environment, Package, Function') }]);
    expect(validateObject({ ...fn, apiVersion: 'spore.dev/v2' })).toEqual([{ path: 'apiVersion', message: 'must be spore.dev/v1alpha1 (got "spore.dev/v2")' }]);
    expect(validateObject({ apiVersion: 'v1', kind: 'ConfigMap', metadata: {} })).toEqual([{ path: 'metadata.name', message: 'is required' }]);
    expect(validateObject('a string')).toEqual([{ path: '', message: 'must be an object' }]);
  });

  it('lets objects of other kinds through (stored, not rejected)', () => {
    expect(validateObject({ apiVersion: 'apps/v1', kind: 'Deployment', metadata: { name: 'x' }, spec: { anything: true } })).toEqual([]);
  });

  it('applies defaults from the one definition', () => {
    const out = normalize<'Function'>(fn);
    expect(out.spec.executor).toEqual({ type: 'pool' });
    const t = normalize<'HttpTrigger'>(route('r', { path: '/x' }));
    expect(t.spec.methods).toEqual(['GET']);
    expect(t.spec.keepPrefix).toBe(false);
    expect(normalize<'Environment'>(env).spec.poolSize).toBe(3);
    expect(fn.spec).not.toHaveProperty('executor'); // the input is not mutated
  });

  it('normalize throws a ValidationError listing all errors', () => {
    const bad = spore('Environment', 'e', { runtime: {}, poolSize: 1000 });
    expect(() => normalize(bad)).toThrow(ValidationError);
    try {
      normalize(bad);
    } catch (err) {
      expect((err as ValidationError).message).toBe('invalid Environment/default/e:\n  spec.poolSize: must be <= 100 (got 1000)');
    }
    expect(validateObject(spore('Environment', 'e', { runtime: {} }))).toEqual([
      { path: 'spec.runtime', message: 'set name (node or python), or an image and/or a command' },
    ]);
  });

  it('checks an inline package against its size and checksum', () => {
    const wrongSum = structuredClone(pkg);
    wrongSum.spec.archive.sha256 = 'a'.repeat(64);
    expect(validateObject(wrongSum)).toEqual([{ path: 'spec.archive.sha256', message: 'does not match the inline archive' }]);
    const wrongSize = structuredClone(pkg);
    wrongSize.spec.archive.size = 1;
    expect(validateObject(wrongSize)).toEqual([{ path: 'spec.archive.size', message: `is 1 but the inline archive has ${archive.length} bytes` }]);
    const both = structuredClone(pkg);
    (both.spec.archive as any).url = 'archives/x.tgz';
    expect(validateObject(both)).toEqual([{ path: 'spec.archive', message: 'set exactly one of inline or url' }]);
    const neither = spore('Package', 'p', { archive: { sha256: 'b'.repeat(64), size: 10 } });
    expect(validateObject(neither)).toEqual([{ path: 'spec.archive', message: 'set exactly one of inline or url' }]);
  });

  it('confines archive URLs: http(s), or a plain relative path inside the manifests folder', () => {
    const byUrl = (url: string) => spore('Package', 'p', { archive: { sha256: 'b'.repeat(64), size: 10, url } });
    for (const ok of ['archives/' + 'b'.repeat(64) + '.tgz', 'x.tgz', 'https://example.com/a.tgz', 'HTTP://10.0.0.1:8080/a.tgz']) expect(validateObject(byUrl(ok)), ok).toEqual([]);
    const relative = (url: string) => ({
      path: 'spec.archive.url',
      message: `"${url}" must be a plain relative path inside the manifests' folder (archives/<sha256>.tgz): not absolute, no "..", "." or empty segments, no backslashes`,
    });
    for (const bad of ['../../../../etc/hostname', 'archives/../../x.tgz', '/etc/hostname', './x.tgz', 'archives//x.tgz', 'archives\\..\\x.tgz']) {
      expect(validateObject(byUrl(bad)), bad).toEqual([relative(bad)]);
    }
    expect(validateObject(byUrl('file:///tmp/fifo'))).toEqual([
      { path: 'spec.archive.url', message: '"file:///tmp/fifo": archive URLs are https://, http:// or a path beside the manifests (archives/<sha256>.tgz); file: is not allowed' },
    ]);
    expect(validateObject(byUrl('https:///a.tgz'))).toEqual([{ path: 'spec.archive.url', message: '"https:///a.tgz" has no host' }]);
    // what `spore validate` and every apply run
    expect(formatErrors(validateSet([env, byUrl('../../../../etc/hostname'), fn]))).toContain('Package/default/p: spec.archive.url: "../../../../etc/hostname" must be a plain relative path');
  });

  it('checks HTTP triggers: path or prefix, function or weights summing to 100', () => {
    expect(validateObject(route('r', {}))).toEqual([{ path: 'spec', message: 'set exactly one of path or prefix' }]);
    expect(validateObject(route('r', { path: 'hello' }))).toEqual([{ path: 'spec.path', message: 'must be a URL path such as /hello or /users/:id (got "hello")' }]);
    expect(validateObject(route('r', { path: '/a', keepPrefix: true }))).toEqual([{ path: 'spec.keepPrefix', message: 'only applies with prefix' }]);
    expect(validateObject(route('r', { path: '/a/:id/:id' }))).toEqual([{ path: 'spec.path', message: 'parameter :id appears twice' }]);
    const canary = (weights: number[]) =>
      spore('HttpTrigger', 'c', { path: '/c', functions: weights.map((weight, i) => ({ name: `v${i}`, weight })) });
    expect(validateObject(canary([90, 10]))).toEqual([]);
    expect(validateObject(canary([90, 20]))).toEqual([{ path: 'spec.functions', message: 'weights sum to 110; they must sum to 100' }]);
    expect(validateObject(canary([150, -50]))).toEqual([
      { path: 'spec.functions[0].weight', message: 'must be <= 100 (got 150)' },
      { path: 'spec.functions[1].weight', message: 'must be >= 0 (got -50)' },
    ]);
    expect(validateObject(spore('HttpTrigger', 'c', { path: '/c', function: { name: 'a' }, functions: [{ name: 'a', weight: 50 }, { name: 'b', weight: 50 }] }))).toEqual([
      { path: 'spec', message: 'set exactly one of function, functions or workflow (got function and functions)' },
    ]);
  });

  it('checks timer schedules and time zones', () => {
    const timer = (cron: string, timeZone?: string) => spore('TimerTrigger', 't', { cron, timeZone, function: { name: 'hello' } });
    for (const ok of ['*/5 * * * *', '0 */5 * * * *', '@hourly', '@daily', '@every 5m', '@every 1h30m']) expect(validateObject(timer(ok)), ok).toEqual([]);
    expect(validateObject(timer('0 9 * * 1-5', 'Europe/Paris'))).toEqual([]);
    expect(validateObject(timer('61 * * * *'))).toEqual([{ path: 'spec.cron', message: expect.stringMatching(/^"61 \* \* \* \*" is not a valid cron expression .*minute: 61/) }]);
    expect(validateObject(timer('every five minutes'))[0].message).toContain('is not a valid cron expression');
    expect(validateObject(timer('@every 5'))).toEqual([{ path: 'spec.cron', message: '"@every 5": the interval must be a duration such as 30s, 5m or 1h30m' }]);
    expect(validateObject(timer('@every 10ms'))).toEqual([{ path: 'spec.cron', message: '"@every 10ms": the interval must be at least 1s' }]);
    expect(validateObject(timer('@hourly', 'Mars/Olympus'))).toEqual([
      { path: 'spec.timeZone', message: '"Mars/Olympus" is not an IANA time zone (e.g. UTC, Europe/Paris, America/New_York)' },
    ]);
  });

  it('parses schedules into something a timer can run', () => {
    expect(parseSchedule('@every 1h30m')).toEqual({ kind: 'every', everyMs: 5_400_000 });
    const s = parseSchedule('0 0 * * *', 'UTC');
    expect(s.kind).toBe('cron');
    if (s.kind === 'cron') expect(s.cron.nextRun(new Date('2026-01-01T10:00:00Z'))?.toISOString()).toBe('2026-01-02T00:00:00.000Z');
  });

  it('checks queue triggers: one connection, replies never on the consumed topic', () => {
    const q = (connection: object, extra: object = {}) =>
      spore('QueueTrigger', 'q', { broker: { kind: 'nats', connection }, topic: 'orders', function: { name: 'hello' }, ...extra });
    expect(validateObject(q({}))).toEqual([{ path: 'spec.broker.connection', message: 'set exactly one of url or secretRef' }]);
    expect(validateObject(q({ url: 'nats://x' }, { responseTopic: 'orders' }))).toEqual([
      { path: 'spec.responseTopic', message: 'is the consumed topic "orders": every reply would be consumed again' },
    ]);
    expect(validateObject(q({ url: 'nats://x' }, { maxRetries: -1 }))).toEqual([{ path: 'spec.maxRetries', message: 'must be >= 0 (got -1)' }]);
    expect(validateObject(spore('QueueTrigger', 'q', { broker: { kind: 'sqs', connection: { url: 'x' } }, topic: 't', function: { name: 'f' } }))).toEqual([
      { path: 'spec.broker.kind', message: 'must be one of: nats, kafka (got "sqs")' },
    ]);
  });

  it('checks workflows: known tasks, no cycles, control-flow inputs', () => {
    const wf = (tasks: object, output?: string) => spore('Workflow', 'wf', { tasks, output });
    expect(validateObject(wf({ a: { run: 'f', requires: ['b'] }, b: { run: 'f', requires: ['a'] } }))).toEqual([
      { path: 'spec.tasks', message: 'tasks depend on each other in a cycle: a → b → a' },
    ]);
    expect(validateObject(wf({ a: { run: 'f', requires: ['zz'] } }, 'nope'))).toEqual([
      { path: 'spec.tasks.a.requires', message: 'unknown task "zz"' },
      { path: 'spec.output', message: 'unknown task "nope"' },
    ]);
    expect(validateObject(wf({ check: { run: 'if', inputs: { if: '{ $.Tasks.a.Output > 1 }' } } }))).toEqual([
      { path: 'spec.tasks.check.inputs', message: '"if" needs input "then"' },
    ]);
    expect(validateObject(wf({ '9lives': { run: 'f' } }))).toEqual([
      { path: 'spec.tasks.9lives', message: 'task id must start with a letter or _ and hold only letters, digits, _ and -' },
    ]);
    expect(validateObject(wf({}))).toEqual([{ path: 'spec.tasks', message: 'must NOT have fewer than 1 properties' }]);
  });

  it("checks the actions inside workflow tasks (then, do, cases, catch) at any depth, with their paths, and Fission's one-value inputs", () => {
    const wf = (tasks: object) => spore('Workflow', 'wf', { tasks });
    // Fission's short form: one value is the default input
    expect(validateObject(wf({ a: { run: 'f', inputs: '{$.Invocation.Inputs.default}' }, b: { run: 'noop', inputs: 42, retry: { attempts: 3, backoff: '250ms' }, timeout: '5s' } }))).toEqual([]);
    expect(
      validateObject(
        wf({
          check: { run: 'if', inputs: { if: '{true}', then: { run: 'f', retry: { attempts: 0 } }, else: { tasks: { x: { run: 'foreach', inputs: { foreach: [1] } } }, output: 'y' } } },
          pick: { run: 'switch', inputs: { switch: 1, cases: [{ action: 'no case' }] } },
          each: { run: 'foreach', inputs: { foreach: [1, 2], parallelism: 0, do: { run: 'repeat', inputs: { times: 2, do: { run: 'sleep', inputs: { duration: 'soon' } } } } } },
          risky: { run: 'f', catch: { run: 'g', colour: 'red' } },
        }),
      ),
    ).toEqual([
      { path: 'spec.tasks.pick.inputs.cases', message: 'must be a list of { case, action }' },
      { path: 'spec.tasks.each.inputs.parallelism', message: 'must be a whole number of at least 1 (got 0)' },
      { path: 'spec.tasks.check.inputs.then.retry.attempts', message: 'must be >= 1 (got 0)' },
      { path: 'spec.tasks.check.inputs.else.tasks.x.inputs', message: '"foreach" needs input "do"' },
      { path: 'spec.tasks.check.inputs.else.output', message: 'unknown task "y"' },
      { path: 'spec.tasks.each.inputs.do.inputs.do.inputs.duration', message: '"sleep" needs a duration such as 500ms, 5s or 1m, or milliseconds (got "soon")' },
      { path: 'spec.tasks.risky.catch.colour', message: expect.stringMatching(/^is not a known field/) },
    ]);
    // Fission's sleep: the duration as the default input; expressions are read at synth, not mid-run
    expect(validateObject(wf({ nap: { run: 'sleep', inputs: '1s' }, ms: { run: 'sleep', inputs: 250 } }))).toEqual([]);
    expect(validateObject(spore('Workflow', 'wf', { tasks: { a: { run: 'f', inputs: { x: ['{$.Tasks.(}'] } } }, outputHeaders: { 'x-a': '{$$$(}' } }))).toEqual([
      { path: 'spec.tasks.a.inputs.x[0]', message: expect.stringMatching(/^\{\$\.Tasks\.\(\} is not a valid JSONata expression: /) },
      { path: 'spec.outputHeaders.x-a', message: expect.stringMatching(/^\{\$\$\$\(\} is not a valid JSONata expression: /) },
    ]);
    expect(validateObject(wf({ a: { run: 'f', timeout: '5 minutes' } }))).toEqual([{ path: 'spec.tasks.a.timeout', message: 'must be a duration such as 500ms, 5s, 1m or 1h30m (got "5 minutes")' }]);
  });

  it('checks dedicated scale bounds', () => {
    const f = spore('Function', 'f', { environment: { name: 'node' }, package: { name: 'p' }, executor: { type: 'dedicated', minScale: 3, maxScale: 2 } });
    expect(validateObject(f)).toEqual([{ path: 'spec.executor.minScale', message: 'is 3, more than maxScale (2)' }]);
  });
});

describe('validateSet', () => {
  it('resolves what workflows run (functions or workflows, at any depth) and what routes call; a workflow and a function do not share a name', () => {
    const wf = (name: string, tasks: object) => spore('Workflow', name, { tasks });
    const set = [env, pkg, fn, wf('inner', { a: { run: 'hello' } }), wf('outer', { a: { run: 'inner' }, b: { run: 'if', inputs: { if: true, then: { run: 'helo' } } } })];
    expect(validateSet([...set, route('r', { path: '/wf', function: undefined, workflow: { name: 'outer' } })])).toEqual([
      { object: 'Workflow/default/outer', path: 'spec.tasks.b.inputs.then.run', message: 'unknown Function "helo" (known: hello)' },
    ]);
    const ping = wf('ping', { a: { run: 'if', inputs: { if: true, then: { run: 'pong' } } } });
    expect(validateSet([env, pkg, fn, wf('loop', { a: { run: 'loop' } }), ping, wf('pong', { a: { run: 'ping' } }), wf('outer', { a: { run: 'ping' } }), wf('hello', { a: { run: 'noop' } }), route('r', { path: '/x', function: undefined, workflow: { name: 'nope' } })])).toEqual([
      { object: 'Workflow/default/hello', path: 'metadata.name', message: 'Function hello has the same name: functions and workflows share the names they are called by (/_fn/default/hello)' },
      { object: 'HttpTrigger/default/r', path: 'spec.workflow.name', message: 'unknown Workflow "nope" (known: loop, ping, pong, outer, hello)' },
      { object: 'Workflow/default/loop', path: 'spec.tasks', message: 'workflows run each other in a cycle: loop → loop (a run would never end)' },
      { object: 'Workflow/default/ping', path: 'spec.tasks', message: 'workflows run each other in a cycle: ping → pong → ping (a run would never end)' },
      { object: 'Workflow/default/pong', path: 'spec.tasks', message: 'workflows run each other in a cycle: pong → ping → pong (a run would never end)' },
    ]);
    expect(validateObject(route('both', { path: '/y', workflow: { name: 'outer' } }))).toEqual([{ path: 'spec', message: 'set exactly one of function, functions or workflow (got function and workflow)' }]);
    // timers, queues and watches start a workflow as they call a function: one or the other
    const timer = (spec: object) => spore('TimerTrigger', 't', { cron: '@hourly', ...spec });
    expect(validateSet([env, pkg, fn, wf('inner', { a: { run: 'hello' } }), timer({ workflow: { name: 'inner' } })])).toEqual([]);
    expect(validateObject(timer({ workflow: { name: 'outer' }, function: { name: 'hello' } }))).toEqual([{ path: 'spec', message: 'set exactly one of function or workflow' }]);
    expect(validateObject(spore('WatchTrigger', 'w', { resource: { kind: 'Pod' } }))).toEqual([{ path: 'spec', message: 'set exactly one of function or workflow' }]);
  });

  it('accepts a consistent set', () => {
    expect(validateSet([env, pkg, fn, route('r', { path: '/hello/:name' })])).toEqual([]);
  });

  it('reports unknown references with what is known', () => {
    const stray = spore('Function', 'stray', { environment: { name: 'pyhton' }, package: { name: 'hello' } });
    expect(validateSet([env, pkg, fn, stray, route('r', { path: '/x', function: { name: 'nope' } })])).toEqual([
      { object: 'Function/default/stray', path: 'spec.environment.name', message: 'unknown Environment "pyhton" (known: node)' },
      { object: 'HttpTrigger/default/r', path: 'spec.function.name', message: 'unknown Function "nope" (known: hello, stray)' },
    ]);
  });

  it('keeps namespaces apart', () => {
    const otherNs = spore('Function', 'hello', { environment: { name: 'node' }, package: { name: 'hello' } }, 'team-b');
    expect(validateSet([env, pkg, otherNs])).toEqual([
      { object: 'Function/team-b/hello', path: 'spec.environment.name', message: 'unknown Environment "node" (no Environment in namespace team-b)' },
      { object: 'Function/team-b/hello', path: 'spec.package.name', message: 'unknown Package "hello" (no Package in namespace team-b)' },
    ]);
  });

  it('rejects two triggers claiming the same method, path and host', () => {
    const errors = validateSet([env, pkg, fn, route('a', { path: '/users/:id' }), route('b', { path: '/users/:name', methods: ['POST', 'GET'] })]);
    expect(errors).toEqual([
      {
        object: 'HttpTrigger/default/b',
        path: 'spec.path',
        message: 'GET /users/:name is already routed by HttpTrigger/default/a (parameter names do not tell routes apart)',
      },
    ]);
    // other hosts, methods or shapes do not clash
    expect(validateSet([env, pkg, fn, route('a', { path: '/u' }), route('b', { path: '/u', host: 'api.example.com' }), route('c', { path: '/u', methods: ['POST'] })])).toEqual([]);
    expect(validateSet([env, pkg, fn, route('a', { prefix: '/api' }), route('b', { prefix: '/api' })])[0].message).toBe(
      'GET /api (prefix) is already routed by HttpTrigger/default/a',
    );
  });

  it('rejects duplicate names and invalid members, naming each object', () => {
    const errors = validateSet([env, env, { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'c' } }, spore('Environment', 'bad', {})]);
    expect(formatErrors(errors)).toBe(
      'Environment/default/bad: spec.runtime: is required\nEnvironment/default/node: metadata.name: is defined twice',
    );
  });
});

describe('resolveExecutor', () => {
  it('takes the function value, else the environment default, else Spore’s default', () => {
    expect(resolveExecutor(undefined)).toEqual({
      type: 'pool', minScale: 0, maxScale: 1, concurrency: 500, requestsPerInstance: 1, idleTimeoutSeconds: 120, functionTimeoutSeconds: 60, specializationTimeoutSeconds: 120,
    });
    const r = resolveExecutor({ functionTimeoutSeconds: 5, minScale: 3 }, { defaults: { functionTimeoutSeconds: 30, idleTimeoutSeconds: 10, concurrency: 7 } });
    expect(r).toMatchObject({ functionTimeoutSeconds: 5, idleTimeoutSeconds: 10, concurrency: 7, minScale: 3, maxScale: 3 });
  });

  it("takes the calls an instance serves at once from its runtime: node 100, python 10, others Fission's 1", () => {
    const of = (runtime: object, defaults?: object, executor?: object) => resolveExecutor(executor, { runtime, defaults } as any).requestsPerInstance;
    expect([of({ name: 'node' }), of({ name: 'python' }), of({ image: 'ghcr.io/me/go-env' }), of({ command: ['./server'] })]).toEqual([100, 10, 1, 1]);
    expect(of({ name: 'node' }, { requestsPerInstance: 1 })).toBe(1); // Fission's value for a whole Environment
    expect(of({ name: 'node' }, { requestsPerInstance: 1 }, { requestsPerInstance: 8 })).toBe(8);
  });
});
