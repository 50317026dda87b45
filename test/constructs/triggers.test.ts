import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { Environment, HttpTrigger, NodeFunction, QueueTrigger, TimerTrigger, WatchTrigger, Workflow } from '../../constructs/index.js';
import { appAndChart, objectsOf, synthError } from '../helpers.js';

const ENTRY = new URL('../fixtures/node/web.ts', import.meta.url).pathname;

function shop() {
  const { app, chart } = appAndChart('shop');
  const node = Environment.node(chart, 'node');
  const fn = (id: string) => new NodeFunction(chart, id, { environment: node, entry: ENTRY });
  return { app, chart, fn };
}
const specOf = (app: any, kind: string, name: string) => objectsOf(app).find((o) => o.kind === kind && o.metadata.name === name)?.spec;

describe('HttpTrigger', () => {
  it('addRoute names routes after the function, in order', () => {
    const { app, fn } = shop();
    const hello = fn('hello');
    hello.addRoute('GET', '/hello/:name');
    hello.addRoute(['POST', 'PUT'], '/hello', { host: 'api.example.com' });
    hello.addRoute('GET', '/static', { prefix: true, keepPrefix: true, name: 'assets' });
    app.synth();
    expect(specOf(app, 'HttpTrigger', 'hello-route')).toEqual({ methods: ['GET'], path: '/hello/:name', keepPrefix: false, function: { name: 'hello' } });
    expect(specOf(app, 'HttpTrigger', 'hello-route-2')).toEqual({ methods: ['POST', 'PUT'], path: '/hello', host: 'api.example.com', keepPrefix: false, function: { name: 'hello' } });
    expect(specOf(app, 'HttpTrigger', 'assets')).toEqual({ methods: ['GET'], prefix: '/static', keepPrefix: true, function: { name: 'hello' } });
  });

  it('splits calls between functions by weight (canary)', () => {
    const { app, chart, fn } = shop();
    new HttpTrigger(chart, 'greeting', { path: '/greeting', functions: [{ function: fn('v1'), weight: 90 }, { function: 'v2', weight: 10 }] });
    fn('v2');
    app.synth();
    expect(specOf(app, 'HttpTrigger', 'greeting').functions).toEqual([{ name: 'v1', weight: 90 }, { name: 'v2', weight: 10 }]);
  });

  it('fails synth when canary weights do not sum to 100', () => {
    const { app, chart, fn } = shop();
    new HttpTrigger(chart, 'greeting', { path: '/greeting', functions: [{ function: fn('v1'), weight: 60 }, { function: fn('v2'), weight: 30 }] });
    expect(synthError(app)).toBe('Validation failed with the following errors:\n  [shop/greeting] spec.functions: weights sum to 90; they must sum to 100');
  });

  it('fails synth when two triggers claim the same method, path and host', () => {
    const { app, fn } = shop();
    fn('a').addRoute('GET', '/users/:id');
    fn('b').addRoute(['GET', 'POST'], '/users/:userId');
    expect(synthError(app)).toBe(
      'Validation failed with the following errors:\n  [shop/b/b-route] spec.path: GET /users/:userId is already routed by HttpTrigger/default/a-route (parameter names do not tell routes apart)',
    );
  });

  it('fails synth on a path that is not a path and on a trigger naming an unknown function', () => {
    const { app, chart, fn } = shop();
    fn('a').addRoute('GET', 'hello');
    new HttpTrigger(chart, 'orphan', { path: '/orphan', function: 'ghost' });
    const message = synthError(app);
    expect(message).toContain('[shop/a/a-route] spec.path: must be a URL path such as /hello or /users/:id (got "hello")');
    expect(message).toContain('[shop/orphan] spec.function.name: unknown Function "ghost" (known: a)');
  });
});

describe('TimerTrigger', () => {
  it('addSchedule accepts cron with optional seconds, descriptors and @every', () => {
    const { app, chart, fn } = shop();
    const tick = fn('tick');
    tick.addSchedule('@every 5m');
    tick.addSchedule('0 30 9 * * 1-5', { timeZone: 'Europe/Paris', method: 'GET', path: '/report', headers: { 'x-kind': 'daily' }, body: 'go' });
    new TimerTrigger(chart, 'nightly', { cron: '@daily', function: tick });
    app.synth();
    expect(specOf(app, 'TimerTrigger', 'tick-schedule')).toEqual({ cron: '@every 5m', function: { name: 'tick' }, method: 'POST', path: '/' });
    expect(specOf(app, 'TimerTrigger', 'tick-schedule-2')).toEqual({
      cron: '0 30 9 * * 1-5', timeZone: 'Europe/Paris', function: { name: 'tick' }, method: 'GET', path: '/report', headers: { 'x-kind': 'daily' }, body: 'go',
    });
    expect(specOf(app, 'TimerTrigger', 'nightly').cron).toBe('@daily');
  });

  it('fails synth on an invalid cron or time zone', () => {
    const { app, fn } = shop();
    const tick = fn('tick');
    tick.addSchedule('*/70 * * * *');
    tick.addSchedule('@hourly', { timeZone: 'Europe/Atlantis' });
    const message = synthError(app);
    expect(message).toMatch(/\[shop\/tick\/tick-schedule\] spec\.cron: "\*\/70 \* \* \* \*" is not a valid cron expression \(min hour day month weekday, seconds optional first; or @hourly, @every 5m\): /);
    expect(message).toContain('[shop/tick/tick-schedule-2] spec.timeZone: "Europe/Atlantis" is not an IANA time zone');
  });
});

describe('QueueTrigger and WatchTrigger', () => {
  it('render with their defaults', () => {
    const { app, chart, fn } = shop();
    const orders = fn('orders');
    orders.addQueue('orders', { url: 'nats://nats:4222', responseTopic: 'orders.done', maxRetries: 3 });
    new QueueTrigger(chart, 'kafka-orders', { broker: 'kafka', secret: { name: 'kafka', key: 'brokers' }, topic: 'orders-v2', function: orders, concurrency: 8 });
    orders.addWatch('ConfigMap', { namespace: 'shop', labelSelector: { app: 'shop' } });
    new WatchTrigger(chart, 'deployments', { kind: 'Deployment', apiVersion: 'apps/v1', function: orders });
    app.synth();
    expect(specOf(app, 'QueueTrigger', 'orders-queue')).toEqual({
      broker: { kind: 'nats', connection: { url: 'nats://nats:4222' } }, topic: 'orders', responseTopic: 'orders.done', maxRetries: 3, contentType: 'application/json', concurrency: 1, function: { name: 'orders' },
    });
    expect(specOf(app, 'QueueTrigger', 'kafka-orders').broker).toEqual({ kind: 'kafka', connection: { secretRef: { name: 'kafka', key: 'brokers' } } });
    expect(specOf(app, 'WatchTrigger', 'orders-watch')).toEqual({ resource: { apiVersion: 'v1', kind: 'ConfigMap' }, namespace: 'shop', labelSelector: { app: 'shop' }, function: { name: 'orders' } });
    expect(specOf(app, 'WatchTrigger', 'deployments').resource).toEqual({ apiVersion: 'apps/v1', kind: 'Deployment' });
  });

  it('fail synth without a broker address or with a reply loop', () => {
    const { app, fn } = shop();
    const orders = fn('orders');
    orders.addQueue('orders');
    orders.addQueue('orders', { url: 'nats://x', errorTopic: 'orders', name: 'loop' });
    orders.addWatch('pod');
    const message = synthError(app);
    expect(message).toContain('[shop/orders/orders-queue] spec.broker.connection: set exactly one of url or secretRef');
    expect(message).toContain('[shop/orders/loop] spec.errorTopic: is the consumed topic "orders": every reply would be consumed again');
    expect(message).toContain('[shop/orders/orders-watch] spec.resource.kind: must match ^[A-Z][A-Za-z0-9]*$ (got "pod")');
  });
});

describe('Workflow', () => {
  it('renders tasks that run functions and control flow', () => {
    const { app, chart, fn } = shop();
    const validate = fn('validate');
    new Workflow(chart, 'checkout', {
      output: 'done',
      tasks: {
        check: { run: validate, inputs: { body: '{ $.Invocation.Inputs.default }' } },
        branch: { run: 'if', inputs: { if: '{ $.Tasks.check.Output.ok }', then: { run: 'validate' } }, requires: ['check'] },
        done: { run: 'noop', requires: ['branch'] },
      },
    });
    app.synth();
    expect(specOf(app, 'Workflow', 'checkout')).toEqual({
      output: 'done',
      parallelism: 10,
      tasks: {
        check: { run: 'validate', inputs: { body: '{ $.Invocation.Inputs.default }' } },
        branch: { run: 'if', inputs: { if: '{ $.Tasks.check.Output.ok }', then: { run: 'validate' } }, requires: ['check'] },
        done: { run: 'noop', requires: ['branch'] },
      },
    });
  });

  it('fails synth on unknown functions and cycles', () => {
    const { app, chart } = shop();
    new Workflow(chart, 'loop', { tasks: { a: { run: 'noop', requires: ['b'] }, b: { run: 'noop', requires: ['a'] } } });
    new Workflow(chart, 'ghost', { tasks: { a: { run: 'no-such-fn' } } });
    const message = synthError(app);
    expect(message).toContain('[shop/loop] spec.tasks: tasks depend on each other in a cycle: a → b → a');
    expect(message).toContain('[shop/ghost] spec.tasks.a.run: unknown Function "no-such-fn" (no Function in namespace default)');
  });
});

describe('sync waves and labels', () => {
  it('annotates each kind with its wave and labels it as Spore’s', () => {
    const { app, fn } = shop();
    fn('hello').addRoute('GET', '/hello');
    app.synth();
    const waves = Object.fromEntries(objectsOf(app).map((o) => [o.kind, o.metadata.annotations['argocd.argoproj.io/sync-wave']]));
    expect(waves).toEqual({ Environment: '0', Package: '0', Function: '1', HttpTrigger: '2' });
    const route = objectsOf(app).find((o) => o.kind === 'HttpTrigger');
    expect(route.metadata.labels).toEqual({
      'app.kubernetes.io/name': 'hello-route',
      'app.kubernetes.io/component': 'httptrigger',
      'app.kubernetes.io/part-of': 'shop',
      'app.kubernetes.io/managed-by': 'spore',
    });
  });

  it('writes packages before their functions and functions before their routes', () => {
    const { app, fn } = shop();
    fn('hello').addRoute('GET', '/hello');
    const order = objectsOf(app).map((o) => `${o.kind}/${o.metadata.name}`);
    expect(order.indexOf('Package/hello')).toBeLessThan(order.indexOf('Function/hello'));
    expect(order.indexOf('Function/hello')).toBeLessThan(order.indexOf('HttpTrigger/hello-route'));
  });
});

void join;
