// The runtime servers, driven over HTTP as the pool manager drives them.
import { mkdirSync, writeFileSync } from 'node:fs';
import { Readable } from 'node:stream';
import { dirname, join } from 'node:path';
import { request } from 'undici';
import { afterAll, describe, expect, it } from 'vitest';
import { ProcessProvider, type Instance } from '../../dataplane/index.js';
import { tempDir } from '../helpers.js';
import { alive } from './harness.js';

const provider = new ProcessProvider({ workRoot: tempDir('spore-rt-') });
afterAll(() => provider.shutdown());

const envOf = (runtime: string) => ({ apiVersion: 'spore.dev/v1alpha1', kind: 'Environment', metadata: { name: runtime, namespace: 'default', generation: 1, resourceVersion: '1', creationTimestamp: '' }, spec: { runtime: { name: runtime } } });

/** The pool manager's side: every request carries the instance's credential. */
async function post(instance: Instance, path: string, body: unknown) {
  const res = await request(`${instance.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-spore-instance-token': instance.token! }, body: JSON.stringify(body) });
  return { status: res.statusCode, body: await res.body.text() };
}

/** A new instance of a runtime, specialized with `files` and an entrypoint. */
async function specialized(runtime: 'node' | 'python', files: Record<string, string>, functionName = '', env?: Record<string, string>) {
  const instance = await provider.start(envOf(runtime) as any);
  const code = join(instance.workDir, 'code');
  for (const [path, text] of Object.entries(files)) {
    mkdirSync(dirname(join(code, path)), { recursive: true });
    writeFileSync(join(code, path), text);
  }
  const r = await post(instance, '/v2/specialize', { filepath: code, functionName, env });
  return { instance, specialize: r };
}

async function call(instance: Instance, path = '/', init: Parameters<typeof request>[1] = {}) {
  const res = await request(`${instance.url}${path}`, { ...init, headers: { ...(init?.headers as Record<string, string>), 'x-spore-instance-token': instance.token! } });
  return { status: res.statusCode, headers: res.headers, body: await res.body.text() };
}

describe('Node runtime', () => {
  it('follows the specialize contract: 202, then 400 "not a generic instance"; 500 with the load error', async () => {
    const { instance, specialize } = await specialized('node', { 'index.js': `module.exports = () => 'hi'` }, 'index');
    expect(specialize).toEqual({ status: 202, body: '{"specialized":true}' });
    const again = await post(instance, '/v2/specialize', { filepath: instance.workDir, functionName: 'index' });
    expect(again.status).toBe(400);
    expect(again.body).toContain('not a generic instance');
    const broken = await specialized('node', { 'index.mjs': `import './missing.mjs';` }, 'index');
    expect(broken.specialize.status).toBe(500);
    expect(JSON.parse(broken.specialize.body).error).toMatch(/^cannot load the function: Cannot find module .*missing\.mjs/);
    const noExport = await specialized('node', { 'hello.mjs': `export const a = 1;` }, 'hello.handler');
    expect(JSON.parse(noExport.specialize.body).error).toMatch(/hello\.mjs has no export "handler" \(it exports: a\)/);
    const generic = await provider.start(envOf('node') as any);
    expect((await call(generic, '/x')).status).toBe(503);
    expect((await post(generic, '/v2/specialize', { filepath: '/no/such/dir' })).body).toContain('does not exist');
  });

  it('serves Web handlers: Request in, Response out, headers and status kept', async () => {
    const { instance } = await specialized('node', { 'index.mjs': `export default async (req) => new Response(req.method + ' ' + new URL(req.url).search + ' ' + req.headers.get('x-a') + ' ' + await req.text(), { status: 201, headers: { 'x-b': 'c' } });` }, 'index');
    const r = await call(instance, '/p?q=1', { method: 'POST', headers: { 'x-a': 'A' }, body: 'payload' });
    expect(r).toMatchObject({ status: 201, body: 'POST ?q=1 A payload' });
    expect(r.headers['x-b']).toBe('c');
  });

  it("gives a Web handler request headers that behave as Headers: any case, repeated ones joined, the instance's credential hidden, changed, iterated, copied", async () => {
    const code = `export default (req) => {
      const h = req.headers;
      const seen = { headers: h instanceof Headers, tag: Object.prototype.toString.call(h), multi: h.get('X-Multi'), has: h.has('x-MULTI'), none: h.get('x-none'), token: h.get('x-spore-instance-token'), hasToken: h.has('x-spore-instance-token') };
      seen.listed = [...h].filter(([k]) => k.startsWith('x-'));
      h.set('x-added', '1');
      h.delete('x-multi');
      seen.changed = [h.get('x-added'), h.get('x-multi'), h.has('x-multi')];
      seen.copied = new Request('http://elsewhere/', { headers: h }).headers.get('x-added');
      return Response.json(seen);
    };`;
    const { instance } = await specialized('node', { 'index.mjs': code }, 'index');
    // a header sent twice, in two cases
    const res = await request(`${instance.url}/`, { headers: ['X-Multi', 'a', 'x-multi', 'b', 'x-other', 'c', 'x-spore-instance-token', instance.token!] });
    expect(JSON.parse(await res.body.text())).toEqual({
      headers: true, tag: '[object Headers]', multi: 'a, b', has: true, none: null, token: null, hasToken: false,
      listed: [['x-multi', 'a, b'], ['x-other', 'c']],
      changed: ['1', null, false],
      copied: '1',
    });
  });

  it('streams request bodies into { fetch } handlers and response bodies out', async () => {
    const { instance } = await specialized(
      'node',
      {
        'index.mjs': `export default { async fetch(req) {
          let n = 0; for await (const c of req.body) n += c.length;
          let release; const gate = new Promise((r) => (release = r));
          globalThis.release = release;
          const body = new ReadableStream({ async start(ctl) { ctl.enqueue(new TextEncoder().encode('first:' + n + ';')); await gate; ctl.enqueue(new TextEncoder().encode('second')); ctl.close(); } });
          setTimeout(() => release(), 300);
          return new Response(body);
        } };`,
      },
      'index',
    );
    const res = await request(`${instance.url}/`, { method: 'POST', headers: { 'x-spore-instance-token': instance.token! }, body: Readable.from((async function* () { for (let i = 0; i < 5; i++) yield Buffer.alloc(1000, 'x'); })()) });
    const chunks: string[] = [];
    let endedBeforeFirst = false;
    let ended = false;
    res.body.on('end', () => (ended = true));
    for await (const c of res.body) {
      if (!chunks.length) endedBeforeFirst = ended;
      chunks.push(c.toString());
    }
    expect(chunks[0]).toBe('first:5000;'); // arrived on its own, before the rest existed
    expect(endedBeforeFirst).toBe(false);
    expect(chunks.join('')).toBe('first:5000;second');
  });

  it('runs Fission handlers unchanged: context.request is Express-like', async () => {
    const { instance } = await specialized('node', {
      'hello.js': `module.exports = async (context) => ({ status: 200, body: { url: context.request.url, method: context.request.method, h: context.request.headers['x-h'], query: context.request.query, body: context.request.body, got: context.request.get('X-H') } });`,
    }, 'hello');
    const json = await call(instance, '/f?a=1&a=2&b=x', { method: 'POST', headers: { 'x-h': 'v', 'content-type': 'application/json' }, body: '{"k":[1,2]}' });
    expect(JSON.parse(json.body)).toEqual({ url: '/f?a=1&a=2&b=x', method: 'POST', h: 'v', query: { a: ['1', '2'], b: 'x' }, body: { k: [1, 2] }, got: 'v' });
    const text = await call(instance, '/f', { method: 'POST', headers: { 'content-type': 'text/plain' }, body: 'plain words' });
    expect(JSON.parse(text.body).body).toBe('plain words');
    const form = await call(instance, '/f', { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: 'x=1&y=two' });
    expect(JSON.parse(form.body).body).toEqual({ x: '1', y: 'two' });
  });

  it('runs Fission callback handlers and ESM Fission handlers', async () => {
    const cb = await specialized('node', { 'cb.js': `module.exports = function (context, callback) { callback(202, 'accepted ' + context.request.method, { 'x-cb': '1' }); };` }, 'cb');
    const r = await call(cb.instance, '/', { method: 'PUT' });
    expect(r).toMatchObject({ status: 202, body: 'accepted PUT' });
    expect(r.headers['x-cb']).toBe('1');
    const esm = await specialized('node', { 'f.mjs': `export default async (context) => ({ status: 418, body: 'teapot ' + context.request.query.who })` }, 'f');
    expect(await call(esm.instance, '/?who=me')).toMatchObject({ status: 418, body: 'teapot me' });
  });

  it('resolves entrypoints as Fission does: file.export, default, package.json main, index.js', async () => {
    const files = {
      'hello.js': `exports.handler = () => 'named'; exports.other = () => 'other';`,
      'lib/app.mjs': `export default () => 'from main';`,
      'package.json': JSON.stringify({ main: 'lib/app.mjs' }),
    };
    expect((await call((await specialized('node', files, 'hello.handler')).instance)).body).toBe('named');
    expect((await call((await specialized('node', files, 'hello.other')).instance)).body).toBe('other');
    expect((await call((await specialized('node', files, '')).instance)).body).toBe('from main');
    expect((await call((await specialized('node', { 'index.js': `module.exports = () => 'index'` }, '')).instance)).body).toBe('index');
    expect((await call((await specialized('node', { 'x.cjs': `module.exports = { fetch: () => new Response('fetch obj') }` }, 'x')).instance)).body).toBe('fetch obj');
  });

  it('sets the function env vars given at specialization', async () => {
    const { instance } = await specialized('node', { 'index.mjs': `export default () => new Response(process.env.GREETING)` }, 'index', { GREETING: 'bonjour' });
    expect((await call(instance)).body).toBe('bonjour');
  });

  it('answers 500 for throwing or wrongly-typed handlers and keeps serving', async () => {
    const { instance } = await specialized('node', { 'index.mjs': `let n = 0; export default async () => { n++; if (n === 1) throw new Error('first call fails'); if (n === 2) { setTimeout(() => { throw new Error('late'); }); return 42; } return new Response('fine'); }` }, 'index');
    const first = await call(instance);
    expect(first.status).toBe(500);
    expect(JSON.parse(first.body)).toEqual({ error: 'the function failed', message: 'first call fails' });
    const second = await call(instance);
    expect(JSON.parse(second.body).message).toBe("the handler returned number; return a Response (or Fission's { status, body, headers })");
    await new Promise((r) => setTimeout(r, 50)); // the late uncaught exception has fired
    expect(await call(instance)).toMatchObject({ status: 200, body: 'fine' });
    expect(alive(instance.pid!)).toBe(true);
  });
});

describe('Python runtime', () => {
  it('follows the specialize contract', async () => {
    const { instance, specialize } = await specialized('python', { 'main.py': `def main(request):\n    return "hi"\n` });
    expect(specialize.status).toBe(202);
    expect((await post(instance, '/v2/specialize', { filepath: instance.workDir })).status).toBe(400);
    const broken = await specialized('python', { 'main.py': `def main(:\n` });
    expect(broken.specialize.status).toBe(500);
    expect(JSON.parse(broken.specialize.body).error).toMatch(/^cannot load the function: SyntaxError/);
    const missing = await specialized('python', { 'main.py': `x = 1\n` }, 'main.nope');
    expect(JSON.parse(missing.specialize.body).error).toContain("module main has no function 'nope'");
  });

  it('turns str, bytes, dicts and (body, status, headers) into responses', async () => {
    const { instance } = await specialized('python', {
      'main.py': [
        'def main(request):',
        '    kind = request.args.get("kind")',
        '    if kind == "bytes": return b"\\x00\\x01"',
        '    if kind == "dict": return {"method": request.method, "x": request.headers.get("x-h"), "body": request.json()}',
        '    if kind == "tuple": return ("created", 201, {"X-T": "1"})',
        '    return "text " + request.path',
        '',
      ].join('\n'),
    });
    expect(await call(instance, '/p')).toMatchObject({ status: 200, body: 'text /p' });
    const d = await call(instance, '/?kind=dict', { method: 'POST', headers: { 'x-h': 'v', 'content-type': 'application/json' }, body: '{"a":1}' });
    expect(JSON.parse(d.body)).toEqual({ method: 'POST', x: 'v', body: { a: 1 } });
    expect(d.headers['content-type']).toBe('application/json');
    const t = await call(instance, '/?kind=tuple');
    expect(t).toMatchObject({ status: 201, body: 'created' });
    expect(t.headers['x-t']).toBe('1');
    expect((await call(instance, '/?kind=bytes')).headers['content-type']).toBe('application/octet-stream');
  });

  it('resolves entrypoints: empty is main.main, one word is main.<word>, dotted packages work', async () => {
    const files = {
      'main.py': 'def main(request):\n    return "main.main"\n\ndef other():\n    return "main.other, no args"\n',
      'pkg/__init__.py': '',
      'pkg/sub/__init__.py': '',
      'pkg/sub/mod.py': 'def fn(request):\n    return "pkg.sub.mod.fn"\n',
    };
    expect((await call((await specialized('python', files, '')).instance)).body).toBe('main.main');
    expect((await call((await specialized('python', files, 'other')).instance)).body).toBe('main.other, no args');
    expect((await call((await specialized('python', files, 'pkg.sub.mod.fn')).instance)).body).toBe('pkg.sub.mod.fn');
  });

  it('streams generators and keeps serving after an exception', async () => {
    const { instance } = await specialized('python', {
      'main.py': 'import os\n\ndef main(request):\n    if request.args.get("fail"):\n        raise ValueError("bad input")\n    if request.args.get("stream"):\n        return (str(i) for i in range(3))\n    return os.environ["GREETING"]\n',
    }, '', { GREETING: 'hallo' });
    const failed = await call(instance, '/?fail=1');
    expect(failed.status).toBe(500);
    expect(JSON.parse(failed.body)).toEqual({ error: 'the function failed', message: 'bad input' });
    const streamed = await call(instance, '/?stream=1');
    expect(streamed.body).toBe('012');
    expect(streamed.headers['transfer-encoding']).toBe('chunked');
    expect((await call(instance)).body).toBe('hallo');
  });
});

describe('an instance answers only its pool manager and router', () => {
  for (const runtime of ['node', 'python'] as const) {
    it(`${runtime}: no credential, no specialize and no call; the function sees neither the credential nor Spore's environment`, async () => {
      process.env.SPORE_TEST_SECRET = 'host secret'; // as SPORE_API_TOKEN or a cloud key would be in Spore's environment
      try {
        const generic = await provider.start(envOf(runtime) as any);
        // another process (another function, a local user) that found the port
        const hijack = await request(`${generic.url}/v2/specialize`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ filepath: '/tmp' }) });
        expect(hijack.statusCode).toBe(403);
        await hijack.body.text();
        const forged = await request(`${generic.url}/v2/specialize`, { method: 'POST', headers: { 'x-spore-instance-token': 'guess' }, body: '{}' });
        expect(forged.statusCode).toBe(403);
        await forged.body.text();

        const files: Record<string, string> =
          runtime === 'node'
            ? { 'index.mjs': `export default (req) => Response.json({ token: req.headers.get('x-spore-instance-token'), env: process.env })` }
            : { 'main.py': 'import os\n\ndef main(request):\n    return {"token": request.headers.get("X-Spore-Instance-Token"), "env": dict(os.environ)}\n' };
        const { instance, specialize } = await specialized(runtime, files, runtime === 'node' ? 'index' : '', { OWN: 'mine' });
        expect(specialize.status).toBe(202);
        const direct = await request(`${instance.url}/`);
        expect(direct.statusCode).toBe(403);
        await direct.body.text();
        const seen = JSON.parse((await call(instance)).body);
        expect(seen.token).toBeNull();
        expect(seen.env.OWN).toBe('mine');
        expect(seen.env.SPORE_TEST_SECRET).toBeUndefined();
        expect(Object.values(seen.env)).not.toContain(instance.token);
        expect(seen.env.HOME).toBe(instance.workDir);
      } finally {
        delete process.env.SPORE_TEST_SECRET;
      }
    });
  }
});
