// `spore up` as a user runs it: the CLI in its own process, the example app,
// real runtimes; then `spore list`, `invoke` and `logs` against it.
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { request } from 'undici';
import { afterAll, describe, expect, it } from 'vitest';
import { alive, waitFor } from './dataplane/harness.js';
import { tempDir } from './helpers.js';
import { BIN, sporeUp } from './spore-up.js';

const ROOT = new URL('..', import.meta.url).pathname;
const apps: string[] = [];
afterAll(() => {
  for (const a of apps) rmSync(a, { recursive: true, force: true });
});

const up = sporeUp();

const cli = (...args: string[]) => spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8' });
const get = async (url: string) => {
  const res = await request(url);
  return { status: res.statusCode, body: await res.body.text() };
};

/** An app folder inside the repository, so that it resolves `spore` and cdk8s like a user's app does. */
function app(main: string, files: Record<string, string>): string {
  const dir = mkdtempSync(join(ROOT, 'test', '.apps-'));
  apps.push(dir);
  writeFileSync(join(dir, 'cdk8s.yaml'), 'language: typescript\napp: npx tsx main.ts\n');
  writeFileSync(join(dir, 'main.ts'), main);
  for (const [path, text] of Object.entries(files)) {
    mkdirSync(join(dir, path, '..'), { recursive: true });
    writeFileSync(join(dir, path), text);
  }
  return dir;
}

const MAIN = (env: string) => `import { App, Chart } from 'cdk8s';
import { Environment, NodeFunction } from 'spore';
const app = new App();
const chart = new Chart(app, 'app');
const node = Environment.node(chart, 'node', { poolSize: 1 });
new NodeFunction(chart, 'hello', { environment: ${env}, entry: 'hello.ts' }).addRoute('GET', '/hello');
app.synth();
`;

describe('spore up', () => {
  it('serves every example route, answers the CLI, and leaves no process behind', async () => {
    const state = tempDir('spore-up-');
    const u = up([join(ROOT, 'examples'), '--port', '0', '--state-dir', state]);
    const url = await u.url();
    expect((await get(`${url}/hello/ada`)).body).toBe('Hello, ada!\n');
    expect(JSON.parse((await get(`${url}/slug?text=Hello%20World%21`)).body)).toEqual({ slug: 'hello-world' });
    expect((await get(`${url}/fission?who=Lambda`)).body).toBe('Hello from a Lambda-style function\n');
    expect(JSON.parse((await get(`${url}/py/hello`)).body)).toEqual({ message: 'Hello from Python', method: 'GET' });
    expect(['Hello from v1\n', 'Hello from v2 (canary)\n']).toContain((await get(`${url}/greeting`)).body);
    // the example's workflow: slug (Node) and py-hello (Python) at once, joined
    expect(JSON.parse((await get(`${url}/signup?name=Grace%20Hopper`)).body)).toEqual({ user: 'grace-hopper', greeting: 'Hello from Python' });
    // the README's quick start, as a user pastes it: each curl line prints what its comment says
    const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
    const curls = [...readme.matchAll(/^curl (\S+)\s+# (.+)$/gm)];
    expect(curls.length).toBeGreaterThanOrEqual(3);
    for (const [, arg, said] of curls) {
      const r = spawnSync('sh', ['-c', `curl -sS ${arg.replace('localhost:8080', url.replace('http://', ''))}`], { encoding: 'utf8' });
      expect({ command: `curl ${arg}`, out: r.stdout.trim(), err: r.stderr }).toEqual({ command: `curl ${arg}`, out: said.trim(), err: '' });
    }
    expect(u.output()).toContain(`GET      ${url}/hello/:name → hello`);
    // the example's timer, said at start with its schedule and next run
    expect(u.output()).toMatch(/^  timer    tick-schedule "@every 1m" UTC → tick, next \d{4}-\d\d-\d\dT[\d:.]+Z$/m);

    const invoke = cli('invoke', 'process-order', '--state-dir', state, '-d', '{"id":"o-1","items":[{"sku":"a","quantity":2,"price":3}]}', '-H', 'content-type: application/json');
    expect(invoke.status).toBe(0);
    expect(JSON.parse(invoke.stdout)).toEqual({ id: 'o-1', total: 6, status: 'accepted' });
    const bad = cli('invoke', 'process-order', '--state-dir', state, '-d', '{}');
    expect(bad.status).toBe(1);
    expect(bad.stderr).toContain('default/process-order answered 400');

    expect(cli('invoke', 'tick', '--state-dir', state).stdout).toBe('ok\n');
    const logs = await waitFor('tick logs', () => {
      const r = cli('logs', 'tick', '--state-dir', state, '--since', '5m');
      return r.stdout.includes('tick at') ? r.stdout : undefined;
    });
    expect(logs).toMatch(/^\S+Z \w+ [0-9a-f-]{36} tick at /m);

    const list = cli('list', '--state-dir', state);
    expect(list.stdout).toContain('default/hello');
    expect(list.stdout).toContain('GET        /hello/:name → hello');
    expect(list.stdout).toMatch(/default\/python\s+warm=\d/);
    expect(list.stdout).toMatch(/^TIMERS\n  default\/tick-schedule\s+"@every 1m" UTC → tick next=\d{4}-/m);
    const pids = [...list.stdout.matchAll(/pid=(\d+)/g)].map((m) => Number(m[1]));
    expect(pids.length).toBeGreaterThanOrEqual(5);

    u.child.kill('SIGTERM');
    expect(await u.exited).toBe(0);
    for (const pid of pids) expect(alive(pid), `instance pid ${pid}`).toBe(false);
    expect(cli('list', '--state-dir', state).stderr).toContain('no running "spore up" found');
  });

  it("runs Fission's Node functions (CommonJS .js files) unchanged in an ES module app", async () => {
    // The functions Fission's own Node environment is tested with, in an app whose package.json says "type": "module".
    const fns = ['hello', 'query', 'wordcount', 'yaml'];
    const dir = app(
      `import { App, Chart } from 'cdk8s';
import { Code, Environment, Function, NodeFunction } from 'spore';
const app = new App();
const chart = new Chart(app, 'app');
const node = Environment.node(chart, 'node', { poolSize: 1 });
for (const name of ${JSON.stringify(fns)}) new NodeFunction(chart, name, { environment: node, entry: name + '.js' }).addRoute(['GET', 'POST'], '/' + name);
// Not bundled: the runtime loads the .js file itself.
new Function(chart, 'raw', { environment: node, code: Code.fromDirectory('raw'), entrypoint: 'hello' }).addRoute('GET', '/raw');
app.synth();
`,
      {
        'package.json': JSON.stringify({ type: 'module' }),
        'hello.js': `module.exports = async function (context) {\n  return { status: 200, body: 'hello, world!\\n' };\n};\n`,
        'query.js': `const url = require('url');\nmodule.exports = async function (context) {\n  const query = url.parse(context.request.url, true).query;\n  return { status: 200, body: 'Hello ' + query.user + '\\n' };\n};\n`,
        'wordcount.js': `module.exports = async function (context) {\n  const words = String(context.request.body).split(/\\s+/).filter(Boolean);\n  return { status: 200, body: String(words.length) };\n};\n`,
        'raw/hello.js': `module.exports = async () => ({ status: 200, body: 'raw CommonJS' });\n`,
        'yaml.js': `const yaml = require('js-yaml');\nmodule.exports = function (context, callback) {\n  callback(200, yaml.dump({ from: 'npm' }));\n};\n`,
      },
    );
    const u = up([dir, '--port', '0']); // the default state folder: inside the "type": "module" app, with the instances' folders
    const url = await u.url();
    expect((await get(`${url}/hello`)).body).toBe('hello, world!\n');
    expect((await get(`${url}/query?user=ada`)).body).toBe('Hello ada\n');
    const res = await request(`${url}/wordcount`, { method: 'POST', body: 'the quick brown fox', headers: { 'content-type': 'text/plain' } });
    expect([res.statusCode, await res.body.text()]).toEqual([200, '4']);
    expect((await get(`${url}/yaml`)).body).toBe('from: npm\n');
    expect((await get(`${url}/raw`)).body).toBe('raw CommonJS');
    u.child.kill('SIGTERM');
    expect(await u.exited).toBe(0);
  });

  it('takes its identity from the app, so a copied app prunes what it dropped, and refuses a state folder of another app', async () => {
    const two = MAIN('node').replace("app.synth();", "new NodeFunction(chart, 'bye', { environment: node, entry: 'hello.ts' }).addRoute('GET', '/bye');\napp.synth();");
    const original = app(two, { 'hello.ts': `export default () => new Response('hi');`, 'package.json': JSON.stringify({ name: 'shop', type: 'module' }) });
    const state = tempDir('spore-state-');
    let u = up([original, '--port', '0', '--state-dir', state]);
    let url = await u.url();
    expect((await get(`${url}/bye`)).status).toBe(200);
    u.child.kill('SIGTERM');
    await u.exited;

    // cp -r shop my-shop (state included), then drop a route: same app, so what it dropped is pruned
    const copy = app(MAIN('node'), { 'hello.ts': `export default () => new Response('hi from the copy');`, 'package.json': JSON.stringify({ name: 'shop', type: 'module' }) });
    u = up([copy, '--port', '0', '--state-dir', state]);
    url = await u.url();
    expect(u.output()).toMatch(/, 3 pruned\)/); // bye's Function, Package and route
    expect((await get(`${url}/hello`)).body).toBe('hi from the copy');
    expect((await get(`${url}/bye`)).status).toBe(404);
    u.child.kill('SIGTERM');
    await u.exited;

    // another app (its own name) on that state folder: refused, saying whose it is and what to do
    const other = app(MAIN('node'), { 'hello.ts': `export default () => new Response('other');`, 'package.json': JSON.stringify({ name: 'other-app', type: 'module' }) });
    u = up([other, '--port', '0', '--state-dir', state]);
    expect(await u.exited).toBe(1);
    expect(u.output()).toContain(`the state folder ${state} holds the objects of app "shop", not of "other-app"`);
    expect(u.output()).toContain(`rm -rf ${state}`);
  });

  it('exits non-zero at start when synth fails, naming the construct', async () => {
    const dir = app(MAIN(`'nodejs'`), { 'hello.ts': `export default () => new Response('hi');` });
    const u = up([dir, '--port', '0', '--state-dir', tempDir()]);
    expect(await u.exited).toBe(1);
    expect(u.output()).toContain('[app/hello] spec.environment.name: unknown Environment "nodejs" (known: node)');
  });

  it('--watch serves new code on change and keeps the last good version when a change is broken', async () => {
    const dir = app(MAIN('node'), { 'hello.ts': `export default () => new Response('v1');` });
    const u = up([dir, '--port', '0', '--watch', '--state-dir', tempDir()]);
    const url = await u.url();
    expect((await get(`${url}/hello`)).body).toBe('v1');
    writeFileSync(join(dir, 'hello.ts'), `export default () => new Response('v2');`);
    await waitFor('v2 served', async () => (await get(`${url}/hello`)).body === 'v2', 60_000);
    writeFileSync(join(dir, 'main.ts'), MAIN(`'missing'`));
    await waitFor('the broken change reported', () => u.output().includes('still serving the last good version'), 60_000);
    expect(u.output()).toContain('[app/hello] spec.environment.name: unknown Environment "missing"');
    expect((await get(`${url}/hello`)).body).toBe('v2');
    u.child.kill('SIGINT');
    expect(await u.exited).toBe(0);
  });

  it('closes connections that never finish their headers (within 10 s), and serves others meanwhile', async () => {
    const u = up([join(ROOT, 'examples'), '--port', '0', '--state-dir', tempDir('spore-slow-')]);
    const url = await u.url();
    const { port } = new URL(url);
    const slow = await Promise.all(
      Array.from(
        { length: 200 },
        () =>
          new Promise<net.Socket>((resolve, reject) => {
            const s = net.connect(Number(port), '127.0.0.1', () => {
              s.write('GET /hello/ada HTTP/1.1\r\nHost: x\r\nX-Slow: '); // and never the rest
              resolve(s);
            });
            s.once('error', reject);
          }),
      ),
    );
    let closed = 0;
    for (const s of slow) {
      s.on('error', () => {});
      s.once('close', () => closed++);
      s.resume(); // read what the router answers (a 408), so its close reaches us
    }
    expect(await get(`${url}/hello/ada`)).toMatchObject({ status: 200 });
    // (Node's default would hold them for 60 s, checked every 30 s)
    await waitFor('the router to close the slow connections', () => closed === slow.length, 25_000);
    expect(await get(`${url}/hello/ada`)).toMatchObject({ status: 200 });
    u.child.kill('SIGTERM');
    await u.exited;
  });
});

