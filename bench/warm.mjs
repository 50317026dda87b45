// Warm path: what a function costs its user against the server they would
// write by hand. Every target answers the same bytes as the example `hello`
// function and is loaded in turn, round after round, in one run (a noisy
// neighbour hurts all alike); each figure is reported as a ratio to the floor
// of the same round, the median of the rounds.
import { accessSync, constants, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import yaml from 'js-yaml';
import { request } from 'undici';
import { packArchive } from '../lib/api/archive.js';
import { localPython } from '../lib/api/index.js';
import { NODE_ENV, PYTHON_ENV, ROOT, fmt, freePort, latencies, median, percentile, rss, scope, side, specialized, startProcess, waitFor } from './util.mjs';

const DURATION = Number(process.env.BENCH_SECONDS ?? 5);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 50);
const PY_CONNECTIONS = Number(process.env.BENCH_PY_CONNECTIONS ?? 10);
const SEQUENTIAL = 2000;

// what a user would write by hand: the answer's bytes, nothing else
const FLOOR = `import http from 'node:http';
const body = process.env.BENCH_BODY, type = process.env.BENCH_TYPE;
const server = http.createServer((req, res) => {
  res.writeHead(200, { 'content-type': type });
  res.end(body);
});
server.listen(0, '127.0.0.1', () => console.log('floor on http://127.0.0.1:' + server.address().port));
`;

// the same handler bundle, wrapped in Web Request/Response objects on node:http
const WEB_WRAPPED = `import http from 'node:http';
import handler from './index.mjs';
const server = http.createServer(async (req, res) => {
  const headers = new Headers();
  for (let i = 0; i < req.rawHeaders.length; i += 2) headers.append(req.rawHeaders[i], req.rawHeaders[i + 1]);
  headers.set('x-spore-param-name', req.url.split('/').pop());
  const r = await handler(new Request('http://' + req.headers.host + req.url, { method: req.method, headers }));
  res.writeHead(r.status, Object.fromEntries(r.headers));
  res.end(Buffer.from(await r.arrayBuffer()));
});
server.listen(0, '127.0.0.1', () => console.log('web-wrapped on http://127.0.0.1:' + server.address().port));
`;

// The least any Node proxy does: node:http in, an undici Pool out, no routing,
// no metrics. pool.dispatch with a tiny handler measured faster than
// pool.request (about 1.4×: no promise, no body stream per call); the upstream's
// headers pass as they come (Node chunks the body when they say chunked).
const NODE_PROXY = (undici) => `import http from 'node:http';
import { Pool } from ${JSON.stringify(undici)};
const pool = new Pool(process.env.BENCH_UPSTREAM, { connections: 100 });
const noop = () => {};
const server = http.createServer((req, res) => {
  const chunks = [];
  pool.dispatch({ path: req.url, method: req.method, headers: req.rawHeaders }, {
    onConnect: noop,
    onHeaders(status, raw) {
      res.statusCode = status;
      for (let i = 0; i < raw.length; i += 2) res.setHeader(raw[i].toString('latin1'), raw[i + 1].toString('latin1'));
      return true;
    },
    onData(chunk) { chunks.push(chunk); return true; },
    onComplete() { res.end(Buffer.concat(chunks)); },
    onError(err) { res.statusCode = 502; res.end(err.message); },
  });
});
server.listen(0, '127.0.0.1', () => console.log('node proxy on http://127.0.0.1:' + server.address().port));
`;

// a function written for Fission, answering the same bytes
const FISSION = (body, type) => `module.exports = async (context) => ({ status: 200, headers: { 'content-type': ${JSON.stringify(type)} }, body: ${JSON.stringify(body)} });\n`;

// Python's standard library, as a user would write it (TCP_NODELAY, keep-alive)
const PY_BARE = `import http.server, os, sys
BODY, TYPE = os.environ["BENCH_BODY"].encode(), os.environ["BENCH_TYPE"]
class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", TYPE)
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)
    def log_message(self, *args):
        pass
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print("python bare on http://127.0.0.1:%d" % server.server_address[1], flush=True)
server.serve_forever()
`;

// One process, one worker: like the router, a single process in front of the floor.
// With master_process off nginx never changes user, so no `user` directive is needed as root.
const nginxConf = (dir, port, upstream) => `daemon off;
master_process off;
worker_processes 1;
error_log ${dir}/error.log warn;
pid ${dir}/nginx.pid;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path ${dir}/body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  upstream floor {
    server ${upstream};
    keepalive 64;
    keepalive_timeout 4s; # below node's 5 s, so that nginx lets a connection go before the floor closes it
  }
  server {
    listen 127.0.0.1:${port};
    location / {
      proxy_pass http://floor;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
`;

function onPath(cmd) {
  return (process.env.PATH ?? '').split(':').some((d) => {
    try {
      accessSync(join(d, cmd), constants.X_OK);
      return true;
    } catch {
      return false;
    }
  });
}

/** Checks that a target answers 200 with the expected body, so that every target does the same work. */
async function check(name, url, headers, body) {
  const res = await request(url, { headers });
  const text = await res.body.text();
  if (res.statusCode !== 200 || text !== body) throw new Error(`${name} (${url}) answered ${res.statusCode} ${JSON.stringify(text.slice(0, 200))}, not ${JSON.stringify(body)}`);
}

export async function warm() {
  const s = scope();
  try {
    const dir = mkdtempSync(join(tmpdir(), 'spore-bench-'));
    s.defer(async () => rmSync(dir, { recursive: true, force: true })); // last, after everything in it stopped
    // the example app through `spore up`
    const up = startProcess(s, process.execPath, [join(ROOT, 'bin/spore.js'), 'up', join(ROOT, 'examples'), '--port', '0', '--state-dir', join(dir, 'state')], /serving on (http:\/\/\S+)\n/);
    const [, url] = await up.matched;
    const routed = `${url}/hello/bench`;
    await latencies(routed, 50); // cold start, then warm
    const answer = await request(routed);
    const body = await answer.body.text();
    const type = answer.headers['content-type'];
    const docs = yaml.loadAll(readFileSync(join(dir, 'state', 'render', 'shop.k8s.yaml'), 'utf8'));
    const bundle = (name) => {
      const pkg = docs.find((d) => d.kind === 'Package' && d.metadata.name === name);
      const fn = docs.find((d) => d.kind === 'Function' && d.metadata.name === name);
      return { bytes: Buffer.from(pkg.spec.archive.inline, 'base64'), entrypoint: fn.spec.entrypoint };
    };
    const hello = bundle('hello');

    // the floor and the Web-wrapped variant
    writeFileSync(join(dir, 'floor.mjs'), FLOOR);
    const floor = startProcess(s, process.execPath, [join(dir, 'floor.mjs')], /floor on (http:\/\/\S+)\n/, { BENCH_BODY: body, BENCH_TYPE: type });
    const floorUrl = (await floor.matched)[1];
    const web = join(dir, 'web');
    mkdirSync(web);
    const { x } = await import('tar');
    writeFileSync(join(web, 'hello.tgz'), hello.bytes);
    await x({ file: join(web, 'hello.tgz'), cwd: web });
    writeFileSync(join(web, 'bare.mjs'), WEB_WRAPPED);
    const webUrl = (await startProcess(s, process.execPath, [join(web, 'bare.mjs')], /web-wrapped on (http:\/\/\S+)\n/).matched)[1];

    // nginx in front of the floor, when installed
    let nginxUrl, nginxPid;
    if (onPath('nginx')) {
      const ndir = join(dir, 'nginx');
      mkdirSync(ndir);
      const port = await freePort();
      writeFileSync(join(ndir, 'nginx.conf'), nginxConf(ndir, port, new URL(floorUrl).host));
      const nginx = startProcess(s, 'nginx', ['-p', ndir, '-c', join(ndir, 'nginx.conf'), '-e', join(ndir, 'error.log')]);
      nginxPid = nginx.child.pid; // master_process off: the one process that serves
      nginxUrl = `http://127.0.0.1:${port}`;
      await waitFor('nginx to answer', async () => {
        if (nginx.child.exitCode !== null) throw new Error(`nginx exited (${nginx.child.exitCode}): ${nginx.output()}${readFileSync(join(ndir, 'error.log'), 'utf8')}`);
        const res = await request(`${nginxUrl}/hello/bench`).catch(() => undefined);
        return res && (await res.body.text(), res.statusCode === 200);
      }, 10_000);
    }

    // the minimal Node proxy in front of the floor: what any Node process in front of it can do
    writeFileSync(join(dir, 'node-proxy.mjs'), NODE_PROXY(import.meta.resolve('undici')));
    const proxy = startProcess(s, process.execPath, [join(dir, 'node-proxy.mjs')], /node proxy on (http:\/\/\S+)\n/, { BENCH_UPSTREAM: floorUrl });
    const proxyUrl = (await proxy.matched)[1];

    // the runtime, called directly as the router calls it
    const { ProcessProvider } = await import('../lib/dataplane/index.js');
    const provider = new ProcessProvider({ workRoot: join(dir, 'instances') });
    s.defer(() => provider.shutdown());
    const generic = await provider.start(NODE_ENV);
    s.defer(() => generic.kill());
    const direct = await specialized(s, provider, NODE_ENV, hello.bytes, hello.entrypoint);
    const param = { 'x-spore-param-name': 'bench' }; // as the router passes /hello/:name
    const fission = await specialized(s, provider, NODE_ENV, packArchive([{ path: 'index.js', data: Buffer.from(FISSION(body, type)) }]).bytes, 'index');
    await latencies(`${direct.instance.url}/hello/bench`, 50, { ...direct.headers, ...param });
    await latencies(`${floorUrl}/hello/bench`, 50); // as warm as the instance
    await new Promise((r) => setTimeout(r, 1000)); // idle
    const memory = { floor: rss(floor.child.pid), generic: rss(generic.pid), hello: rss(direct.instance.pid) };

    const targets = [
      { key: 'floor', label: 'floor: bare node:http, the same bytes', url: `${floorUrl}/hello/bench`, pid: floor.child.pid },
      { key: 'web', label: 'bare node:http + Web Request/Response', url: `${webUrl}/hello/bench` },
      ...(nginxUrl ? [{ key: 'nginx', label: 'nginx → floor (keep-alive upstream)', url: `${nginxUrl}/hello/bench`, pid: nginxPid }] : []),
      { key: 'proxy', label: 'minimal Node proxy → floor (undici, no routing)', url: `${proxyUrl}/hello/bench`, pid: proxy.child.pid },
      { key: 'direct', label: 'runtime instance direct, hello (Web)', url: `${direct.instance.url}/hello/bench`, headers: { ...direct.headers, ...param }, pid: direct.instance.pid },
      { key: 'fission', label: 'runtime instance direct, Fission-style', url: `${fission.instance.url}/hello/bench`, headers: fission.headers },
      { key: 'router', label: 'through the router (spore up)', url: routed, pid: up.child.pid }, // spore up's process: the router (its instance is another)
    ];
    for (const t of targets) await check(t.label, t.url, t.headers, body);
    const node = await side(targets, { connections: CONNECTIONS, duration: DURATION, rounds: ROUNDS });
    memory.helloAfterLoad = rss(direct.instance.pid);

    // router-added latency, one request at a time
    const d = await latencies(`${direct.instance.url}/hello/bench`, SEQUENTIAL, { ...direct.headers, ...param });
    const r = await latencies(routed, SEQUENTIAL);
    const sequential = { directP50: percentile(d, 50), routedP50: percentile(r, 50), addedP50: percentile(r, 50) - percentile(d, 50) };

    // Python: the runtime specialized with py-hello vs the standard library's server
    let python;
    try {
      const py = bundle('py-hello');
      const instance = await specialized(s, provider, PYTHON_ENV, py.bytes, py.entrypoint);
      const pyAnswer = await request(`${instance.instance.url}/py/hello`, { headers: instance.headers });
      const pyBody = await pyAnswer.body.text();
      writeFileSync(join(dir, 'bare.py'), PY_BARE);
      const bareUrl = (await startProcess(s, localPython(), ['-u', join(dir, 'bare.py')], /python bare on (http:\/\/\S+)\n/, { BENCH_BODY: pyBody, BENCH_TYPE: pyAnswer.headers['content-type'] }).matched)[1];
      const pyTargets = [
        { key: 'floor', label: 'floor: http.server, TCP_NODELAY, HTTP/1.1', url: `${bareUrl}/py/hello` },
        { key: 'python', label: 'runtime instance direct, py-hello', url: `${instance.instance.url}/py/hello`, headers: instance.headers },
      ];
      for (const t of pyTargets) await check(t.label, t.url, t.headers, pyBody);
      python = await side(pyTargets, { connections: PY_CONNECTIONS, duration: DURATION, rounds: ROUNDS });
    } catch (err) {
      python = { error: err.message };
    }
    return { failed: Boolean(python.error), body, node, nginx: Boolean(nginxUrl), sequential, memory, python };
  } finally {
    await s.close();
  }
}

const verdict = (value, target, atMost) => `target ${atMost ? '<=' : '>='} ${target}${(atMost ? value <= target : value >= target) ? '' : '  (not met)'}`;

function rows(results, targets) {
  const width = Math.max(...results.map((t) => t.label.length));
  return results.map((t) => {
    const figures = `${t.label.padEnd(width)} ${fmt(t.rps, 0).padStart(7)} req/s  p50 ${String(t.p50).padStart(2)} ms  p99 ${String(t.p99).padStart(3)} ms  ${fmt(t.ratio).padStart(5)}× floor`;
    const rounds = t.key === 'floor' ? '' : ` (rounds ${t.ratios.map((x) => fmt(x)).join(', ')})`;
    const errors = t.errors ? `  ${t.errors} failed responses!` : '';
    return `  ${figures}${rounds}  ${targets[t.key] ?? ''}${errors}`;
  });
}

export function report(r) {
  const by = Object.fromEntries(r.node.map((t) => [t.key, t]));
  const nginx = by.nginx ? `next to nginx's ${fmt(by.nginx.ratio)}×` : 'nginx not measured';
  // the router against the Node ceiling, round by round: the part of the gap that is the router's own work
  const ceiling = median(by.router.ratios.map((x, i) => x / by.proxy.ratios[i]));
  const lines = [
    `warm path: the example hello route (the same ${JSON.stringify(r.body)} answer everywhere), ${CONNECTIONS} connections × ${DURATION} s per target,`,
    `${ROUNDS} rounds taking the targets in turn (autocannon). req/s, p50, p99: the target's median round. "× floor": its req/s ÷ the floor's`,
    `in the same round, the median of the rounds (each round's in parentheses), so it may differ from the quotient of the req/s shown:`,
    ...rows(r.node, {
      floor: 'what a user writes by hand',
      web: 'a variant of the floor, no target',
      nginx: 'the reference proxy (1 process, 1 worker)',
      proxy: 'the Node ceiling: the most a Node process in front of the floor does here',
      direct: verdict(by.direct.ratio, 0.8),
      fission: verdict(by.fission.ratio, 0.8),
      router: `${verdict(by.router.ratio, 0.5)}, ${nginx}; ${fmt(ceiling)}× the minimal Node proxy`,
    }),
  ];
  if (!r.nginx) lines.push('  nginx: not installed (apt-get install nginx-light)');
  // where the proxies' time goes: each one's own CPU per answer, against what the floor spends answering
  const us = (t) => (t ? `${fmt(t.cpuUs, 1)} µs` : 'not measured');
  lines.push(
    `CPU per answer (the process's user + system time ÷ answers, median round): the floor ${us(by.floor)}, the instance direct ${us(by.direct)};`,
    `  in front of a server: nginx ${us(by.nginx)}, the minimal Node proxy ${us(by.proxy)}, spore up's process (the router) ${us(by.router)}`,
  );
  const s = r.sequential;
  lines.push(
    `router-added latency, one request at a time (${SEQUENTIAL} calls each): through the router p50 ${fmt(s.routedP50, 3)} ms − instance direct p50 ${fmt(s.directP50, 3)} ms`,
    `  = ${fmt(s.addedP50, 3)} ms  ${verdict(s.addedP50, 0.5, true)}`,
    `memory (VmRSS), idle: the floor (bare node:http, the least a Node ${process.versions.node} process answering HTTP takes) ${fmt(r.memory.floor.mb, 1)} MB, the reference;`,
    `  a Node runtime instance: generic (warm pool) ${fmt(r.memory.generic.mb, 1)} MB ${verdict(r.memory.generic.mb, 45, true)}; specialized with hello ${fmt(r.memory.hello.mb, 1)} MB ${verdict(r.memory.hello.mb, 45, true)};`,
    `  the same after the load rounds ${fmt(r.memory.helloAfterLoad.mb, 1)} MB`,
  );
  if (r.python.error) lines.push(`python: not measured: ${r.python.error}`);
  else {
    const [floor, py] = r.python;
    lines.push(`python: the example py-hello (the same JSON answer), ${PY_CONNECTIONS} connections × ${DURATION} s, ${ROUNDS} rounds in turn, "× floor" as above:`, ...rows([floor, py], { floor: 'what a user writes by hand', python: verdict(py.ratio, 0.8) }));
  }
  return lines.join('\n');
}
