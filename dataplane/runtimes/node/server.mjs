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
//
// Built on node:http alone, for speed and memory: the Request a handler gets
// is built lazily (URL, Headers and the real Request only when touched), and a
// Response made from a string or bytes keeps its body aside, to be written
// with one res.end() instead of being read back through a ReadableStream.
import { AsyncLocalStorage } from 'node:async_hooks';
import { timingSafeEqual } from 'node:crypto';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { createServer } from 'node:http';
import { join, resolve } from 'node:path';
import { duplexPair, Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { pathToFileURL } from 'node:url';
import { format, inspect } from 'node:util';

const port = Number(process.env.PORT ?? 8888);
const host = process.env.HOST ?? '127.0.0.1';
const REQUEST_ID = 'x-spore-request-id';
const BODY_LIMIT = 1024 * 1024 * 1024;

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
// This instance's credential: every request must carry it (X-Spore-Instance-Token),
// so only the pool manager and the router, never another function or local
// process, can specialize or call this instance.
let token;
let offered; // the caller's token is written here to be compared: no allocation per call
const fromEnv = process.env.SPORE_INSTANCE_TOKEN;
if (fromEnv !== undefined) {
  // In a pod: the credential comes from a Secret through the env, and there is
  // no stdin and no parent to outlive. The function must not read it back.
  delete process.env.SPORE_INSTANCE_TOKEN;
  if (!fromEnv.trim()) {
    process.stderr.write('SPORE_INSTANCE_TOKEN is empty: refusing to serve without a credential\n');
    process.exit(1);
  }
  token = Buffer.from(fromEnv.trim());
  offered = Buffer.alloc(token.length);
} else {
  // Locally the pool manager holds our stdin, and its first line is the
  // credential: when the pipe goes away, so do we (no orphans).
  let tokenLine = '';
  process.stdin.on('data', (chunk) => {
    if (token !== undefined) return;
    tokenLine += chunk;
    const nl = tokenLine.indexOf('\n');
    if (nl >= 0) {
      token = Buffer.from(tokenLine.slice(0, nl).trim());
      offered = Buffer.alloc(token.length);
    }
  });
  process.stdin.on('end', () => process.exit(0));
  process.stdin.on('error', () => process.exit(0));
  process.stdin.resume();
}
const TOKEN = 'x-spore-instance-token';
let warming = true;

// What serving needs of a request's headers, found in one pass over rawHeaders
// (node's req.headers object costs more than the rest of a call). Read
// synchronously right after scan(): one request at a time fills it.
const seen = { token: undefined, id: undefined, body: false };

function scan(raw) {
  seen.token = seen.id = undefined;
  seen.body = false;
  const list = raw.rawHeaders;
  for (let i = 0; i < list.length; i += 2) {
    const name = list[i];
    const n = name.length; // names are compared only when their length matches
    if (n === 22 && name.toLowerCase() === TOKEN) seen.token = seen.token === undefined ? list[i + 1] : `${seen.token}, ${list[i + 1]}`;
    else if (n === 18 && name.toLowerCase() === REQUEST_ID) seen.id = seen.id === undefined ? list[i + 1] : `${seen.id}, ${list[i + 1]}`;
    else if ((n === 14 && name.toLowerCase() === 'content-length' && list[i + 1] !== '0') || (n === 17 && name.toLowerCase() === 'transfer-encoding')) seen.body = true;
  }
}

/** Whether the caller holds this instance's credential; answers it if not. The function never sees the header. */
function admitted(res) {
  if (warming) return true;
  if (token === undefined) return void sendJson(res, 503, { error: 'the instance has not received its credential yet' });
  // compared as bytes: a non-ASCII header is a wrong one, not a crash
  const ok = seen.token !== undefined && Buffer.byteLength(seen.token) === token.length && offered.write(seen.token) === token.length && timingSafeEqual(offered, token);
  if (!ok) return void sendJson(res, 403, { error: 'this instance answers only its pool manager and router' });
  return true;
}

const JSON_TYPE = 'application/json; charset=utf-8';
const TEXT_TYPE = 'text/plain; charset=utf-8';

function sendJson(res, status, value) {
  const text = JSON.stringify(value);
  res.writeHead(status, ['content-type', JSON_TYPE, 'content-length', String(Buffer.byteLength(text))]);
  res.end(text);
}

// ---------------------------------------------------------------- loading

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

// ---------------------------------------------------------------- request bodies

class BodyTooLarge extends Error {}
const EMPTY = Buffer.alloc(0);

/** The whole request body, up to BODY_LIMIT. */
function readBody(raw) {
  if (Number(raw.headers['content-length']) > BODY_LIMIT) return Promise.reject(new BodyTooLarge());
  return new Promise((resolveBody, reject) => {
    const chunks = [];
    let size = 0;
    raw.on('data', (c) => {
      size += c.length;
      if (size > BODY_LIMIT) {
        raw.pause();
        reject(new BodyTooLarge());
      } else chunks.push(c);
    });
    raw.on('end', () => resolveBody(chunks.length === 1 ? chunks[0] : Buffer.concat(chunks)));
    raw.on('error', reject);
    raw.on('close', () => reject(new Error('the client went away before sending the whole body')));
  });
}

// ---------------------------------------------------------------- the Request a handler gets

const GlobalRequest = globalThis.Request;
const GlobalResponse = globalThis.Response;
const GlobalHeaders = globalThis.Headers;
const decoder = new TextDecoder();

const RAW = Symbol('incoming message');
const BODY = Symbol('buffered body'); // Buffer when read first; undefined when the body streams from RAW
const REAL = Symbol('real object');
const HEADERS = Symbol('headers');
const HREF = Symbol('url');
const USED = Symbol('body read directly');
const MATERIALIZE = Symbol('materialize');
const EXPRESS = Symbol('express request');
const WHOLE = Symbol('whole body');
const DIRECT = Symbol('direct read');

function hostOf(raw) {
  const list = raw.rawHeaders;
  for (let i = 0; i < list.length; i += 2) if (list[i].length === 4 && list[i].toLowerCase() === 'host') return list[i + 1];
  return undefined;
}

function headersOf(raw) {
  const headers = new GlobalHeaders();
  const list = raw.rawHeaders;
  for (let i = 0; i < list.length; i += 2) {
    const name = list[i];
    if (name.length !== TOKEN.length || name.toLowerCase() !== TOKEN) headers.append(name, list[i + 1]);
  }
  return headers;
}

/**
 * A request's Headers over node's rawHeaders: get() and has() read them as
 * they are (most handlers only ask for a header or two); anything else — a
 * change, iteration — builds the real Headers once and goes on with it.
 */
class LightHeaders {
  constructor(raw) {
    this[RAW] = raw;
    this[REAL] = undefined;
  }
  [MATERIALIZE]() {
    return (this[REAL] ??= headersOf(this[RAW]));
  }
  get(name) {
    if (this[REAL] !== undefined || typeof name !== 'string') return this[MATERIALIZE]().get(name);
    const want = name.toLowerCase();
    if (want === TOKEN) return null;
    const list = this[RAW].rawHeaders;
    let found = null;
    for (let i = 0; i < list.length; i += 2) {
      const n = list[i];
      if (n.length === want.length && n.toLowerCase() === want) found = found === null ? list[i + 1] : `${found}, ${list[i + 1]}`;
    }
    return found;
  }
  has(name) {
    return this[REAL] !== undefined || typeof name !== 'string' ? this[MATERIALIZE]().has(name) : this.get(name) !== null;
  }
  [Symbol.iterator]() {
    return this[MATERIALIZE]()[Symbol.iterator]();
  }
  [inspect.custom](depth, options) {
    return inspect(this[MATERIALIZE](), options);
  }
}

/**
 * A Request over node's IncomingMessage that builds its URL, Headers and the
 * real Request only when the handler touches them. A buffered body is read
 * straight from the buffer by text()/json()/arrayBuffer()/bytes().
 */
class LightRequest {
  constructor(raw, body) {
    this[RAW] = raw;
    this[BODY] = body;
    this[REAL] = undefined;
    this[HEADERS] = undefined;
    this[HREF] = undefined;
    this[USED] = false;
    this[EXPRESS] = undefined;
  }
  get method() {
    return this[RAW].method;
  }
  get url() {
    return (this[HREF] ??= new URL(this[RAW].url, `http://${hostOf(this[RAW]) ?? 'function'}`).href);
  }
  get headers() {
    return (this[HEADERS] ??= this[REAL] ? this[REAL].headers : new LightHeaders(this[RAW]));
  }
  get bodyUsed() {
    return this[USED] || (this[REAL]?.bodyUsed ?? false);
  }
  [MATERIALIZE]() {
    if (this[REAL]) return this[REAL];
    const raw = this[RAW];
    const method = raw.method;
    let body;
    if (method !== 'GET' && method !== 'HEAD' && !this[USED]) body = this[BODY] === undefined ? Readable.toWeb(raw) : this[BODY].length ? this[BODY] : undefined;
    const headers = this.headers;
    return (this[REAL] = new GlobalRequest(this.url, { method, headers: headers instanceof LightHeaders ? headers[MATERIALIZE]() : headers, body, duplex: 'half' }));
  }
  /** The buffered body, once; undefined when the real Request must read it. */
  [DIRECT]() {
    if (this[BODY] === undefined || this[REAL]) return undefined;
    if (this[USED]) throw new TypeError('Body is unusable: Body has already been read');
    this[USED] = true;
    return this[BODY];
  }
  text() {
    try {
      const b = this[DIRECT]();
      return b === undefined ? this[MATERIALIZE]().text() : Promise.resolve(decoder.decode(b));
    } catch (err) {
      return Promise.reject(err);
    }
  }
  json() {
    try {
      const b = this[DIRECT]();
      return b === undefined ? this[MATERIALIZE]().json() : Promise.resolve(JSON.parse(decoder.decode(b)));
    } catch (err) {
      return Promise.reject(err);
    }
  }
  arrayBuffer() {
    try {
      const b = this[DIRECT]();
      return b === undefined ? this[MATERIALIZE]().arrayBuffer() : Promise.resolve(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
    } catch (err) {
      return Promise.reject(err);
    }
  }
  bytes() {
    try {
      const b = this[DIRECT]();
      return b === undefined ? this[MATERIALIZE]().bytes() : Promise.resolve(new Uint8Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength)));
    } catch (err) {
      return Promise.reject(err);
    }
  }
  [inspect.custom](depth, options) {
    return inspect(this[MATERIALIZE](), options);
  }
}
// Everything else a Request has (body, signal, clone, formData, ...) comes from the real one.
delegate(LightRequest.prototype, GlobalRequest.prototype);
// and the rest of Headers (set, append, entries, forEach, getSetCookie ...) from the real Headers
delegate(LightHeaders.prototype, GlobalHeaders.prototype);
Object.setPrototypeOf(LightHeaders.prototype, GlobalHeaders.prototype);
Object.defineProperty(LightHeaders.prototype, 'constructor', { value: GlobalHeaders, writable: true, configurable: true });

/** The first argument of a function handler: a Request that is also a Fission context. */
class FunctionContext extends LightRequest {
  constructor(raw, buf) {
    super(raw, raw.method === 'GET' || raw.method === 'HEAD' ? EMPTY : buf); // as a Request: no body on GET
    this[WHOLE] = buf;
  }
  get request() {
    return (this[EXPRESS] ??= expressRequest(this[RAW], this[WHOLE]));
  }
}

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
  delete raw.headers[TOKEN];
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

function delegate(proto, realProto) {
  for (const key of Object.getOwnPropertyNames(realProto)) {
    if (key === 'constructor' || Object.hasOwn(proto, key)) continue;
    const d = Object.getOwnPropertyDescriptor(realProto, key);
    if (d.get) Object.defineProperty(proto, key, { get() { return this[MATERIALIZE]()[key]; }, configurable: true });
    else if (typeof d.value === 'function') Object.defineProperty(proto, key, { value(...args) { return this[MATERIALIZE]()[key](...args); }, writable: true, configurable: true });
  }
}

// `new Request(req)` and `fetch(req)` with a handler's request work as with a real one.
class Request extends GlobalRequest {
  constructor(input, init) {
    super(input instanceof LightRequest ? input[MATERIALIZE]() : input, init);
  }
}
Object.setPrototypeOf(LightRequest.prototype, Request.prototype);
for (const proto of [LightRequest.prototype, FunctionContext.prototype]) Object.defineProperty(proto, 'constructor', { value: Request, writable: true, configurable: true });
const globalFetch = globalThis.fetch;
function fetch(input, init) {
  return globalFetch(input instanceof LightRequest ? input[MATERIALIZE]() : input, init);
}
Object.defineProperty(globalThis, 'Request', { value: Request, writable: true, configurable: true });
Object.defineProperty(globalThis, 'fetch', { value: fetch, writable: true, enumerable: true, configurable: true });

// ---------------------------------------------------------------- the Response a handler returns

const KEPT = Symbol('kept body'); // string | Uint8Array | ArrayBuffer | null while light
const INIT = Symbol('init');
const TYPE = Symbol('default content-type');
const LIGHT = Symbol('light');

/** Whether `new Response(body, init)` can keep its body aside (else a real Response is made at once, with its checks). */
function keepable(body, init) {
  if (!(body === null || typeof body === 'string' || body instanceof Uint8Array || body instanceof ArrayBuffer)) return false;
  if (init === undefined) return true;
  if (init === null || typeof init !== 'object' || init.statusText !== undefined) return false;
  const { status, headers } = init;
  if (status !== undefined && !(Number.isInteger(status) && status >= 200 && status <= 599)) return false;
  if (body !== null && (status === 204 || status === 205 || status === 304)) return false;
  return headers === undefined || (headers !== null && typeof headers === 'object');
}

/** The global Response: one built from a string, bytes or nothing keeps them for a direct write; the rest is a real Response. */
class Response {
  constructor(body = null, init = undefined) {
    this[LIGHT] = keepable(body, init);
    this[KEPT] = null;
    this[INIT] = undefined;
    this[TYPE] = undefined;
    this[HEADERS] = undefined;
    this[REAL] = undefined;
    if (this[LIGHT]) {
      this[KEPT] = body;
      this[INIT] = init;
      if (typeof body === 'string') this[TYPE] = 'text/plain;charset=UTF-8';
    } else this[REAL] = new GlobalResponse(body, init);
  }
  static json(data, init = undefined) {
    if (!keepable('', init)) return GlobalResponse.json(data, init);
    const text = JSON.stringify(data);
    if (text === undefined) throw new TypeError('Value is not JSON serializable');
    const res = new Response(text, init);
    res[TYPE] = 'application/json';
    return res;
  }
  static [Symbol.hasInstance](value) {
    // real Responses (from fetch, Response.error) are Responses too
    return this === Response ? value instanceof GlobalResponse : Function.prototype[Symbol.hasInstance].call(this, value);
  }
  get status() {
    return this[LIGHT] ? (this[INIT]?.status ?? 200) : this[REAL].status;
  }
  get ok() {
    const status = this.status;
    return status >= 200 && status <= 299;
  }
  get statusText() {
    return this[LIGHT] ? '' : this[REAL].statusText;
  }
  get bodyUsed() {
    return this[LIGHT] ? false : this[REAL].bodyUsed;
  }
  get type() {
    return this[LIGHT] ? 'default' : this[REAL].type;
  }
  get redirected() {
    return this[LIGHT] ? false : this[REAL].redirected;
  }
  get url() {
    return this[LIGHT] ? '' : this[REAL].url;
  }
  get headers() {
    if (!this[LIGHT]) return this[REAL].headers;
    if (this[HEADERS] === undefined) {
      const headers = new GlobalHeaders(this[INIT]?.headers);
      if (this[TYPE] && !headers.has('content-type')) headers.set('content-type', this[TYPE]);
      this[HEADERS] = headers;
    }
    return this[HEADERS];
  }
  [MATERIALIZE]() {
    if (this[LIGHT]) {
      this[REAL] = new GlobalResponse(this[KEPT], { status: this.status, headers: this.headers });
      this[LIGHT] = false;
      this[KEPT] = null;
    }
    return this[REAL];
  }
  [inspect.custom](depth, options) {
    return inspect(this[MATERIALIZE](), options);
  }
}
delegate(Response.prototype, GlobalResponse.prototype);
Object.setPrototypeOf(Response.prototype, GlobalResponse.prototype);
Object.setPrototypeOf(Response, GlobalResponse); // Response.error(), Response.redirect()
Object.defineProperty(globalThis, 'Response', { value: Response, writable: true, configurable: true });

// ---------------------------------------------------------------- writing answers

const NONE = Object.freeze({});
const NO_BODY_STATUS = (status) => status === 204 || status === 304 || status < 200;

/** Pushes a Headers' entries (set-cookie ones apart) but the framing ones, which are ours; whether one was content-type. */
function pushHeaders(flat, headers) {
  let typed = false;
  for (const [k, v] of headers) {
    if (k === 'content-length' || k === 'transfer-encoding') continue;
    if (k === 'content-type') typed = true;
    flat.push(k, v);
  }
  return typed;
}

/** The same for a plain { name: value } record, without making a Headers of it. */
function pushRecord(flat, record) {
  let typed = false;
  for (const key in record) {
    const k = key.toLowerCase();
    if (k === 'content-length' || k === 'transfer-encoding') continue;
    if (k === 'content-type') typed = true;
    const v = record[key];
    flat.push(k, typeof v === 'string' ? v : String(v));
  }
  return typed;
}

/** A light Response: status, headers and the kept body in one writeHead and one end. */
function writeLight(res, r) {
  const status = r[INIT]?.status ?? 200;
  const given = r[INIT]?.headers;
  let body = r[KEPT] ?? undefined;
  if (body instanceof ArrayBuffer) body = Buffer.from(body);
  const flat = [];
  let typed;
  if (r[HEADERS] !== undefined) typed = pushHeaders(flat, r[HEADERS]);
  else {
    if (given === undefined) typed = false;
    else if (given instanceof GlobalHeaders) typed = pushHeaders(flat, given);
    else if (Array.isArray(given)) typed = pushHeaders(flat, new GlobalHeaders(given));
    else typed = pushRecord(flat, given);
    if (!typed && r[TYPE] !== undefined) typed = flat.push('content-type', r[TYPE]) > 0;
  }
  try {
    endWith(res, status, flat, body, typed);
  } catch (err) {
    if (!res.headersSent && r[HEADERS] === undefined && given !== undefined) new GlobalHeaders(given); // Response's own word for a bad header
    throw err;
  }
}

const chunkLength = (c) => (typeof c === 'string' ? Buffer.byteLength(c) : c.byteLength);

/** Resolves when res can take more, or has closed. */
function drained(res) {
  return new Promise((done) => {
    const go = () => {
      res.off('drain', go);
      res.off('close', go);
      done();
    };
    res.on('drain', go);
    res.on('close', go);
  });
}

/** A real Response: a one-chunk body is sent whole (with a length), a longer one streamed as it comes. */
async function writeReal(res, r) {
  const flat = [];
  const typed = pushHeaders(flat, r.headers);
  if (!r.body) return endWith(res, r.status, flat, undefined, typed);
  const reader = r.body.getReader();
  const first = await reader.read();
  if (first.done) return endWith(res, r.status, flat, undefined, typed);
  const pending = reader.read();
  const second = await Promise.race([pending, new Promise((next) => setImmediate(next))]);
  if (second?.done) return endWith(res, r.status, flat, first.value, typed);
  res.writeHead(r.status, flat);
  res.write(first.value); // sent before the rest exists
  for (let next = second ?? (await pending); !next.done; next = await reader.read()) {
    if (res.destroyed) return void reader.cancel().catch(() => {});
    if (!res.write(next.value)) await drained(res);
  }
  res.end();
}

/** A whole answer, with its length; a body of no type gets the one the fastify-based runtime gave (octets, or text when empty). */
function endWith(res, status, flat, body, typed) {
  if (!NO_BODY_STATUS(status)) {
    if (!typed) flat.push('content-type', body === undefined ? TEXT_TYPE : 'application/octet-stream');
    flat.push('content-length', body === undefined ? '0' : String(chunkLength(body)));
  }
  res.writeHead(status, flat);
  res.end(body);
}

// as Express does: a JSON type without a charset gets one
const withCharset = (type) => (type.includes('json') && type.split(';')[0].includes('json') && !/;\s*charset=/i.test(type) ? `${type}; charset=utf-8` : type);

/** Fission's { status, body, headers }, sent as Fission's Express-based environment would. */
function writeFission(res, result) {
  const { status = 200, body, headers = NONE } = result;
  const flat = [];
  let type;
  for (const key in headers) {
    const k = key.toLowerCase();
    const v = headers[key];
    if (v === undefined || k === 'content-length' || k === 'transfer-encoding') continue;
    if (k === 'content-type') type = v;
    else if (Array.isArray(v)) for (const one of v) flat.push(k, one);
    else flat.push(k, v);
  }
  if (body instanceof Readable) {
    if (type !== undefined) flat.push('content-type', type);
    res.writeHead(status, flat);
    return pipeline(body, res);
  }
  let data;
  if (Buffer.isBuffer(body)) {
    type ??= 'application/octet-stream';
    data = body;
  } else {
    if (body === undefined || body === null || typeof body === 'string') {
      data = body ?? '';
      type ??= TEXT_TYPE;
    } else {
      data = JSON.stringify(body);
      type = headers['content-type'] ?? 'application/json';
    }
    type = withCharset(type);
  }
  flat.push('content-type', type);
  endWith(res, status, flat, data, true);
}

// ---------------------------------------------------------------- invoking the function

const METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS']);

// Health is the generic instance's; once specialized, /healthz is the function's path like any other.
const health = () => ({ status: 'ok', specialized: Boolean(handler), instance: process.env.SPORE_INSTANCE });

function onRequest(req, res) {
  scan(req);
  if (!admitted(res)) return;
  const url = req.url;
  if (!METHODS.has(req.method)) return sendJson(res, 404, { message: `Route ${req.method}:${url} not found`, error: 'Not Found', statusCode: 404 });
  if (req.method === 'POST' && (url === '/v2/specialize' || url.startsWith('/v2/specialize?'))) return void specialize(req, res);
  if (!handler) return url === '/healthz' && req.method === 'GET' ? sendJson(res, 200, health()) : sendJson(res, 503, { error: 'generic instance: not specialized yet' });
  context.run(seen.id, serve, req, res);
}

// A call stays synchronous as long as the function is (no body to wait for, a
// result that is not a promise): no microtask hops on the common path.
function serve(req, res) {
  const { kind, fn } = handler;
  if (kind === 'fetch') return call(res, fn, new LightRequest(req, undefined));
  if (!seen.body) return call(res, fn, new FunctionContext(req, EMPTY));
  readBody(req).then(
    (buf) => call(res, fn, new FunctionContext(req, buf)),
    (err) => failed(res, err),
  );
}

// One call for every function form: the first argument is a Request that is
// also a Fission context; a second one is Fission's callback. The handler
// answers by what it returns, or through the callback.
function call(res, fn, arg) {
  let result;
  try {
    result = fn.length < 2 ? fn(arg) : withCallback(fn, arg);
  } catch (err) {
    return failed(res, err);
  }
  if (result !== null && typeof result === 'object' && typeof result.then === 'function') {
    result.then(
      (value) => respond(res, value),
      (err) => failed(res, err),
    );
  } else respond(res, result);
}

async function withCallback(fn, arg) {
  let viaCallback;
  const called = new Promise((resolveCb) => (viaCallback = (status, body, headers) => resolveCb({ status, body, headers })));
  const returned = await fn(arg, viaCallback);
  return returned === undefined ? called : returned;
}

function respond(res, result) {
  try {
    answer(res, result)?.catch((err) => failed(res, err)); // a streamed body answers later
  } catch (err) {
    failed(res, err);
  }
}

function failed(res, err) {
  if (err instanceof BodyTooLarge) return void (res.headersSent || sendJson(res.setHeader('connection', 'close'), 413, { error: `the request body exceeds the limit of ${BODY_LIMIT} bytes` }));
  console.error(err?.stack ?? String(err));
  if (res.headersSent) return void res.destroy(); // mid-stream: the client sees a cut body, not a complete one
  res.statusMessage = undefined; // not the reason of a status the function gave before failing
  sendJson(res, 500, { error: 'the function failed', message: String(err?.message ?? err) });
}

/** Writes the function's answer; a promise when the body streams. */
function answer(res, result) {
  if (result instanceof GlobalResponse) return result[LIGHT] === true ? writeLight(res, result) : writeReal(res, result[REAL] ?? result);
  if (typeof result === 'string') return endWith(res, 200, ['content-type', TEXT_TYPE], result, true);
  if (result && typeof result === 'object' && ('status' in result || 'body' in result || 'headers' in result)) return writeFission(res, result);
  throw new Error(`the handler returned ${result === null ? 'null' : typeof result}; return a Response (or Fission's { status, body, headers })`);
}

async function specialize(req, res) {
  try {
    if (handler) return sendJson(res, 400, { error: 'not a generic instance: already specialized' });
    let body;
    try {
      body = JSON.parse((seen.body ? await readBody(req) : EMPTY).toString('utf8'));
    } catch {
      return sendJson(res, 400, { error: 'the body must be JSON: { "filepath": "...", "functionName": "..." }' });
    }
    if (typeof body?.filepath !== 'string' || !existsSync(body.filepath)) return sendJson(res, 400, { error: `filepath ${JSON.stringify(body?.filepath)} does not exist` });
    if (body.env && typeof body.env === 'object') Object.assign(process.env, body.env); // the function's env vars
    try {
      handler = await load(body.filepath, typeof body.functionName === 'string' ? body.functionName : '');
    } catch (err) {
      console.error(`specialization failed: ${err?.stack ?? err}`);
      return sendJson(res, 500, { error: `cannot load the function: ${err?.message ?? err}` });
    }
    sendJson(res, 202, { specialized: true });
  } catch (err) {
    console.error(`specialization failed: ${err?.stack ?? err}`);
    if (!res.headersSent) sendJson(res, 500, { error: `cannot specialize: ${err?.message ?? err}` });
  }
}

// Router connections idle in its pool for up to 60 s: never cut one under it.
// Bodies (up to 1 GiB) may take long; the router bounds each call's time.
const server = createServer({ keepAliveTimeout: 65_000, headersTimeout: 66_000, requestTimeout: 0 }, onRequest);

// Warm what every first call uses (Node loads its fetch classes lazily, ~20-100
// ms, and the code paths are not compiled yet): that is the point of a pool of
// generic instances. Each form runs once through the real server, over an
// in-memory connection, before anyone can connect.
function warmCall(fn, kind, request) {
  handler = { kind, fn };
  const [ours, theirs] = duplexPair();
  server.emit('connection', ours);
  theirs.resume();
  const ended = new Promise((done) => theirs.on('end', done).on('close', done));
  theirs.write(request);
  return ended;
}
{
  const post = 'POST /warm?x=1 HTTP/1.1\r\nhost: warm\r\ncontent-type: application/json\r\ncontent-length: 7\r\nconnection: close\r\n\r\n{"a":1}';
  const get = 'GET /warm?x=1 HTTP/1.1\r\nhost: warm\r\nx-spore-param-name: w\r\nconnection: close\r\n\r\n';
  await warmCall(async (req) => new Response(req.method + req.headers.get('x-spore-param-name') + new URL(req.url).search, { headers: { 'content-type': 'text/plain' } }), 'function', get);
  await warmCall(async (req) => Response.json(await req.json()), 'function', post);
  await warmCall(async (context) => ({ status: 200, body: { q: context.request.query, b: context.request.body } }), 'function', post);
  await warmCall((context, callback) => callback(200, 'ok'), 'function', get);
  const twoChunks = () => new ReadableStream({ start(c) { c.enqueue(new Uint8Array(1)); setTimeout(() => { c.enqueue(new Uint8Array(1)); c.close(); }, 1); } });
  await warmCall(async (req) => new Response((await req.text()) ? twoChunks() : null), 'fetch', post);
  new Response('warm').headers.getSetCookie();
  await new Response('warm').text();
  await import('data:text/javascript,export default 1'); // the module loader
  handler = undefined;
  warming = false;
}

server.listen(port, host, () => process.stdout.write(`spore-runtime listening on ${host}:${server.address().port}\n`));
