// The CLI's dataplane verbs as a user runs them against a real `spore up`:
// invoke (and its alias test) sends what a trigger sends, logs of a function
// that does not exist fail, list prints its data with -o json|yaml.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import yaml from 'js-yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { waitFor } from './dataplane/harness.js';
import { tempDir } from './helpers.js';

const ROOT = new URL('..', import.meta.url).pathname;
const BIN = join(ROOT, 'bin/spore.js');

/** Answers with everything it was sent, as 201 with a header of its own. */
const ECHO = `export default async (req: Request) => {
  const url = new URL(req.url);
  const sent = { method: req.method, path: url.pathname, query: [...url.searchParams], test: req.headers.get('x-test'), type: req.headers.get('content-type'), body: await req.text() };
  return new Response(JSON.stringify(sent), { status: 201, headers: { 'content-type': 'application/json', 'x-echo': 'yes' } });
};
`;
const MAIN = `import { App, Chart } from 'cdk8s';
import { Environment, NodeFunction } from 'spore';
const app = new App();
const chart = new Chart(app, 'app');
const node = Environment.node(chart, 'node', { poolSize: 1 });
new NodeFunction(chart, 'echo', { environment: node, entry: 'echo.ts' }).addRoute('POST', '/echo/:rest');
app.synth();
`;

let child: ChildProcess;
let dir: string;
const state = tempDir('spore-cli-output-');
const cli = (args: string[], input?: string) => spawnSync(process.execPath, [BIN, ...args, '--state-dir', state], { encoding: 'utf8', input });

beforeAll(async () => {
  // inside the repository, so that the app resolves spore and cdk8s as a user's app does
  dir = mkdtempSync(join(ROOT, 'test', '.apps-'));
  writeFileSync(join(dir, 'cdk8s.yaml'), 'language: typescript\napp: npx tsx main.ts\n');
  writeFileSync(join(dir, 'main.ts'), MAIN);
  writeFileSync(join(dir, 'echo.ts'), ECHO);
  child = spawn(process.execPath, [BIN, 'up', dir, '--port', '0', '--state-dir', state], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout!.on('data', (c) => (out += c));
  child.stderr!.on('data', (c) => (out += c));
  await waitFor('spore up to serve', () => out.includes('serving on'), 120_000);
}, 150_000);

afterAll(() => {
  if (child?.exitCode === null) child.kill('SIGKILL');
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('spore invoke', () => {
  it('sends the method, path, query, headers and body a trigger would, from text, a file or stdin', () => {
    const file = join(tempDir(), 'order.json');
    writeFileSync(file, '{"id":"o-1"}');
    const r = cli(['invoke', 'echo', '--method', 'put', '--path', '/orders/42', '--query', 'a=1', '--query', 'who=Ada Lovelace', '--header', 'X-Test: yes', '--header', 'content-type:application/json', '--data', `@${file}`]);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({ method: 'PUT', path: '/orders/42', query: [['a', '1'], ['who', 'Ada Lovelace']], test: 'yes', type: 'application/json', body: '{"id":"o-1"}' });

    const stdin = cli(['invoke', 'echo', '--data', '-'], 'from stdin');
    expect(JSON.parse(stdin.stdout)).toMatchObject({ method: 'POST', path: '/', body: 'from stdin' });

    // curl's spellings keep working
    const curl = cli(['invoke', 'echo', '-X', 'PATCH', '-H', 'x-test: curl', '-d', 'text']);
    expect(JSON.parse(curl.stdout)).toMatchObject({ method: 'PATCH', test: 'curl', body: 'text' });
    expect(JSON.parse(cli(['invoke', 'echo', '--request', 'DELETE']).stdout)).toMatchObject({ method: 'DELETE' });

    const missing = cli(['invoke', 'echo', '--data', `@${join(tempDir(), 'nope.json')}`]);
    expect(missing.status).toBe(1);
    expect(missing.stderr).toMatch(/spore: --data @\S+nope\.json: cannot read \S+nope\.json: ENOENT/);
    expect(cli(['invoke', 'echo', '--query', 'novalue']).stderr).toContain('spore: --query "novalue": a query parameter is name=value');
  });

  it('-i prints the status line and headers before the body; spore test is the same verb', () => {
    const r = cli(['test', 'echo', '-i', '--path', 'x']);
    expect(r.status).toBe(0);
    const [head, body] = r.stdout.split('\n\n');
    const lines = head.split('\n');
    expect(lines[0]).toBe('HTTP/1.1 201 Created');
    expect(lines).toContain('x-echo: yes');
    expect(lines).toContain('content-type: application/json');
    expect(lines.some((l) => /^x-spore-request-id: [0-9a-f-]{36}$/.test(l))).toBe(true);
    expect(JSON.parse(body)).toMatchObject({ method: 'GET', path: '/x' });
  });
});

describe('spore logs', () => {
  it('fails, naming the function, when it does not exist', () => {
    const r = cli(['logs', 'nosuch']);
    expect(r.status).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toBe('spore: function default/nosuch does not exist (functions in default: echo)\n');
    expect(cli(['logs', 'echo']).status).toBe(0);
  });
});

describe('spore list', () => {
  it('prints the data as JSON or YAML with -o', () => {
    const json = cli(['list', '-o', 'json']);
    expect(json.status).toBe(0);
    const data = JSON.parse(json.stdout);
    expect(data.functions.map((f: any) => `${f.namespace}/${f.name}`)).toEqual(['default/echo']);
    expect(data.routes).toEqual([expect.objectContaining({ methods: ['POST'], path: '/echo/:rest' })]);
    expect(data.environments).toEqual([expect.objectContaining({ namespace: 'default', name: 'node' })]);
    expect(yaml.load(cli(['list', '--output', 'yaml']).stdout)).toEqual(expect.objectContaining({ functions: [expect.objectContaining({ name: 'echo' })] }));
    const bad = cli(['list', '-o', 'xml']);
    expect(bad.status).toBe(1);
    expect(bad.stderr).toContain("argument 'xml' is invalid. Allowed choices are json, yaml.");
  });
});
