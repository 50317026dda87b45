// The Node.js runtime: a generic instance the pool manager specializes once
// with a function's code (Fission's POST /v2/specialize contract), then every
// other request invokes the function. User code never takes the process down.
//
// Handler forms:
//   export default (req: Request) => Response          Web, body read first
//   export default { fetch(req) { return Response } }  Web, body streams in
//   module.exports = async (context) => ({ status, body, headers })   Fission
//   module.exports = (context, callback) => callback(status, body, headers)
// A one-argument function gets a Request that is also a Fission context
// (`.request` is Express-like): the result's type says which form it was.
import { AsyncLocalStorage } from 'node:async_hooks';
import { timingSafeEqual } from 'node:crypto';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { Readable } from 'node:stream';
import { pathToFileURL } from 'node:url';
import { format } from 'node:util';
import Fastify from 'fastify';

const port = Number(process.env.PORT ?? 8888);
const host = process.env.HOST ?? '127.0.0.1';
const REQUEST_ID = 'x-spore-request-id';

// Log lines written while serving a request carry its id, framed so the pool
// manager can read it back: \x1e<request id>\x1f<line>.
const context = new AsyncLocalStorage();
for (const [method, stream] of [['log', 'stdout'], ['info', 'stdout'], ['debug', 'stdout'], ['warn', 'stderr'], ['error', 'stderr']]) {
  console[method] = (...args) => {
    const id = context.getStore();
    const text = format(...args);
    process[stream].write(id ? text.split('\n').map((l) => `\x1e${id}\x1f${l}`).join('\n') + '\n' : text + '\n');
  };
}
process.on('uncaughtException', (err) => console.error('uncaught exception in function:', err));
process.on('unhandledRejection', (err) => console.error('unhandled rejection in function:', err));
// The pool manager holds our stdin: when it goes away, so do we (no orphans).
// Its first line is this instance's credential: every request must carry it
// (X-Spore-Instance-Token), so only the pool manager and the router, never
// another function or local process, can specialize or call this instance.
let token;
let tokenLine = '';
process.stdin.on('data', (chunk) => {
  if (token !== undefined) return;
  tokenLine += chunk;
  const nl = tokenLine.indexOf('\n');
  if (nl >= 0) token = Buffer.from(tokenLine.slice(0, nl).trim());
});
process.stdin.on('end', () => process.exit(0));
process.stdin.on('error', () => process.exit(0));
process.stdin.resume();
const TOKEN = 'x-spore-instance-token';
let warming = true;

/** Whether the caller holds this instance's credential; answers it if not. The function never sees the header. */
function admitted(req, reply) {
  if (warming) return true;
  const given = req.headers[TOKEN];
  delete req.headers[TOKEN];
  if (token === undefined) return void reply.code(503).send({ error: 'the instance has not received its credential yet' });
  const bytes = typeof given === 'string' ? Buffer.from(given) : undefined; // compared as bytes: a non-ASCII header is a wrong one, not a crash
  const ok = bytes !== undefined && bytes.length === token.length && timingSafeEqual(bytes, token);
  if (!ok) return void reply.code(403).send({ error: 'this instance answers only its pool manager and router' });
  return true;
}

let handler; // { kind: 'fetch' | 'function', fn }

const EXTENSIONS = ['', '.mjs', '.js', '.cjs'];

function findFile(base) {
  for (const ext of EXTENSIONS) {
    const file = base + ext;
    if (existsSync(file) && statSync(file).isFile()) return file;
  }
  if (existsSync(base) && statSync(base).isDirectory()) return mainOf(base);
  return undefined;
}

/** A folder's entry: package.json main, then index.js (as Fission's Node environment does). */
function mainOf(dir) {
  const pkg = join(dir, 'package.json');
  if (existsSync(pkg)) {
    const main = JSON.parse(readFileSync(pkg, 'utf8')).main;
    if (main) {
      const file = findFile(resolve(dir, main));
      if (file) return file;
    }
  }
  return findFile(join(dir, 'index'));
}

/** `file.export`, `file` (default export), or empty (package.json main, then index.js). */
function resolveEntrypoint(filepath, functionName) {
  if (statSync(filepath).isFile()) return { file: filepath, exportName: functionName || undefined };
  if (!functionName) {
    const file = mainOf(filepath);
    if (!file) throw new Error(`no entrypoint given and ${filepath} has neither package.json main nor index.js`);
    return { file };
  }
  const whole = findFile(join(filepath, functionName));
  if (whole) return { file: whole };
  const dot = functionName.lastIndexOf('.');
  if (dot > 0) {
    const file = findFile(join(filepath, functionName.slice(0, dot)));
    if (file) return { file, exportName: functionName.slice(dot + 1) };
  }
  throw new Error(`entrypoint "${functionName}": no module ${functionName.slice(0, dot > 0 ? dot : undefined)}(.mjs|.js|.cjs) in ${filepath}`);
}

async function load(filepath, functionName) {
  const { file, exportName } = resolveEntrypoint(filepath, functionName);
  const mod = await import(pathToFileURL(file).href);
  let fn = exportName ? (mod[exportName] ?? mod.default?.[exportName]) : (mod.default ?? mod);
  if (fn === undefined) throw new Error(`${file} has no export "${exportName}" (it exports: ${Object.keys(mod).join(', ') || 'nothing'})`);
  if (fn && typeof fn === 'object' && typeof fn.fetch === 'function') return { kind: 'fetch', fn: fn.fetch.bind(fn) };
  if (typeof fn !== 'function') throw new Error(`${exportName ? `export "${exportName}"` : 'the default export'} of ${file} is not a function (it is ${typeof fn})`);
  return { kind: 'function', fn };
}

const app = Fastify({ logger: false, bodyLimit: 1024 * 1024 * 1024 });
app.removeAllContentTypeParsers();
app.addContentTypeParser('*', (_req, _payload, done) => done(null)); // bodies are read by us, as streams

async function readAll(stream) {
  const chunks = [];
  for await (const c of stream) chunks.push(c);
  return Buffer.concat(chunks);
}

// Health is the generic instance's; once specialized, /healthz is the function's path like any other.
const health = () => ({ status: 'ok', specialized: Boolean(handler), instance: process.env.SPORE_INSTANCE });

app.post('/v2/specialize', async (req, reply) => {
  if (!admitted(req, reply)) return reply;
  if (handler) return reply.code(400).send({ error: 'not a generic instance: already specialized' });
  let body;
  try {
    body = JSON.parse((await readAll(req.raw)).toString('utf8'));
  } catch {
    return reply.code(400).send({ error: 'the body must be JSON: { "filepath": "...", "functionName": "..." }' });
  }
  if (typeof body?.filepath !== 'string' || !existsSync(body.filepath)) return reply.code(400).send({ error: `filepath ${JSON.stringify(body?.filepath)} does not exist` });
  if (body.env && typeof body.env === 'object') Object.assign(process.env, body.env); // the function's env vars
  try {
    handler = await load(body.filepath, typeof body.functionName === 'string' ? body.functionName : '');
  } catch (err) {
    console.error(`specialization failed: ${err?.stack ?? err}`);
    return reply.code(500).send({ error: `cannot load the function: ${err?.message ?? err}` });
  }
  return reply.code(202).send({ specialized: true });
});

function parseBody(buf, type) {
  if (!buf.length) return undefined;
  const t = (type ?? '').split(';')[0].trim().toLowerCase();
  if (t === 'application/json' || t.endsWith('+json')) {
    try {
      return JSON.parse(buf.toString('utf8'));
    } catch {
      return buf.toString('utf8');
    }
  }
  if (t === 'application/x-www-form-urlencoded') return Object.fromEntries(new URLSearchParams(buf.toString('utf8')));
  if (t.startsWith('text/') || t === '' || t.endsWith('xml')) return buf.toString('utf8');
  return buf;
}

/** The request Fission hands its functions: Express-like. */
function expressRequest(raw, buf) {
  const url = new URL(raw.url, 'http://function');
  const query = {};
  for (const [k, v] of url.searchParams) query[k] = k in query ? [].concat(query[k], v) : v;
  const params = {};
  for (const [k, v] of Object.entries(raw.headers)) if (k.startsWith('x-spore-param-')) params[k.slice('x-spore-param-'.length)] = v;
  return {
    url: raw.url,
    originalUrl: raw.url,
    path: url.pathname,
    method: raw.method,
    headers: raw.headers,
    query,
    params,
    body: parseBody(buf, raw.headers['content-type']),
    get: (name) => raw.headers[String(name).toLowerCase()],
    header: (name) => raw.headers[String(name).toLowerCase()],
  };
}

function webRequest(raw, body) {
  const headers = new Headers();
  for (let i = 0; i < raw.rawHeaders.length; i += 2) if (raw.rawHeaders[i].toLowerCase() !== TOKEN) headers.append(raw.rawHeaders[i], raw.rawHeaders[i + 1]);
  const hasBody = raw.method !== 'GET' && raw.method !== 'HEAD';
  return new Request(new URL(raw.url, `http://${raw.headers.host ?? 'function'}`), {
    method: raw.method,
    headers,
    body: hasBody ? body : undefined,
    duplex: 'half',
  });
}

async function sendResponse(reply, res) {
  reply.code(res.status);
  for (const [k, v] of res.headers) if (k !== 'set-cookie' && k !== 'content-length' && k !== 'transfer-encoding') reply.header(k, v);
  const cookies = res.headers.getSetCookie();
  if (cookies.length) reply.header('set-cookie', cookies);
  if (!res.body) return reply.send('');
  // Most bodies are one chunk: send those whole (with a length); stream the rest as they come.
  const reader = res.body.getReader();
  const first = await reader.read();
  if (first.done) return reply.send('');
  const pending = reader.read();
  const second = await Promise.race([pending, new Promise((r) => setImmediate(() => r(undefined)))]);
  if (second?.done) return reply.send(Buffer.from(first.value.buffer, first.value.byteOffset, first.value.byteLength));
  async function* rest() {
    yield first.value; // sent before the rest exists
    const next = await pending;
    if (next.done) return;
    yield next.value;
    for (let r = await reader.read(); !r.done; r = await reader.read()) yield r.value;
  }
  return reply.send(Readable.from(rest(), { objectMode: false }));
}

function sendFission(reply, result) {
  const { status = 200, body, headers = {} } = result ?? {};
  reply.code(status).headers(headers);
  if (body === undefined || body === null) return reply.send('');
  if (Buffer.isBuffer(body) || typeof body === 'string' || body instanceof Readable) return reply.send(body);
  return reply.type(headers['content-type'] ?? 'application/json').send(JSON.stringify(body));
}

async function invoke(req, reply) {
  const raw = req.raw;
  if (handler.kind === 'fetch') return sendResponse(reply, await handler.fn(webRequest(raw, Readable.toWeb(raw))));
  const buf = await readAll(raw);
  const request = expressRequest(raw, buf);
  // One call for every function form: the first argument is a Request that is
  // also a Fission context; a second one is Fission's callback. The handler
  // answers by what it returns, or through the callback.
  const hybrid = webRequest(raw, buf.length ? buf : undefined);
  Object.defineProperty(hybrid, 'request', { value: request });
  let viaCallback;
  const called = new Promise((resolveCb) => (viaCallback = (status, body, headers) => resolveCb({ status, body, headers })));
  const returned = await handler.fn(hybrid, viaCallback);
  const result = returned === undefined && handler.fn.length >= 2 ? await called : returned;
  if (result instanceof Response) return sendResponse(reply, result);
  if (typeof result === 'string') return reply.type('text/plain; charset=utf-8').send(result);
  if (result && typeof result === 'object' && ('status' in result || 'body' in result || 'headers' in result)) return sendFission(reply, result);
  throw new Error(`the handler returned ${result === null ? 'null' : typeof result}; return a Response (or Fission's { status, body, headers })`);
}

app.route({
  method: ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'],
  url: '/*',
  handler: async (req, reply) => {
    if (!admitted(req, reply)) return reply;
    if (!handler) return req.url === '/healthz' && req.method === 'GET' ? health() : reply.code(503).send({ error: 'generic instance: not specialized yet' });
    const id = req.headers[REQUEST_ID];
    return context.run(typeof id === 'string' ? id : undefined, async () => {
      try {
        return await invoke(req, reply);
      } catch (err) {
        console.error(err?.stack ?? String(err));
        if (!reply.sent) return reply.code(500).send({ error: 'the function failed', message: String(err?.message ?? err) });
      }
    });
  },
});

// Warm what every first call uses (Node loads its fetch classes lazily, ~20 ms):
// that is the point of a pool of generic instances.
{
  const req = new Request('http://warm/', { method: 'POST', body: 'x', duplex: 'half', headers: new Headers({ a: 'b' }) });
  await req.text();
  const res = new Response('warm', { headers: { 'content-type': 'text/plain' } });
  for await (const _ of Readable.fromWeb(res.body));
  Response.json({});
  res.headers.getSetCookie();
  await import('data:text/javascript,export default 1'); // the module loader
  // and the whole invocation path once, with a stand-in handler
  handler = { kind: 'function', fn: () => new Response('warm') };
  await app.inject({ method: 'POST', url: '/warm?x=1', payload: 'x', headers: { 'content-type': 'text/plain' } });
  handler = undefined;
  warming = false;
}

await app.listen({ port, host });
process.stdout.write(`spore-runtime listening on ${host}:${app.server.address().port}\n`);
