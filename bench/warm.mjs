// Warm path: the example hello function through `spore up` (router + runtime
// instance) vs. the same bundled handler on a bare node:http server, side by
// side in one run. Throughput with autocannon; router-added latency as the p50
// difference between calling through the router and calling the same
// instance directly, one request at a time.
import { mkdtempSync, writeFileSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import autocannon from 'autocannon';
import yaml from 'js-yaml';
import { request } from 'undici';
import { ROOT, fmt, latencies, percentile, startProcess, waitFor } from './util.mjs';

const DURATION = Number(process.env.BENCH_SECONDS ?? 5);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 10);

function cannon(url) {
  return new Promise((resolve, reject) => {
    autocannon({ url, connections: CONNECTIONS, duration: DURATION, pipelining: 1 }, (err, r) => (err ? reject(err) : resolve(r)));
  });
}

export async function warm() {
  const state = mkdtempSync(join(tmpdir(), 'spore-bench-'));
  const up = startProcess(process.execPath, [join(ROOT, 'bin/spore.js'), 'up', join(ROOT, 'examples'), '--port', '0', '--state-dir', state], /serving on (http:\/\/\S+)\n/);
  const [, url] = await up.matched;
  try {
    const route = `${url}/hello/bench`;
    await latencies(route, 50); // cold start, then warm

    // the same bundle on a bare node:http server
    const docs = yaml.loadAll(readFileSync(join(state, 'render', 'shop.k8s.yaml'), 'utf8'));
    const pkg = docs.find((d) => d.kind === 'Package' && d.metadata.name === 'hello');
    const dir = mkdtempSync(join(tmpdir(), 'spore-bare-'));
    writeFileSync(join(dir, 'hello.tgz'), Buffer.from(pkg.spec.archive.inline, 'base64'));
    const { x } = await import('tar');
    await x({ file: join(dir, 'hello.tgz'), cwd: dir });
    writeFileSync(
      join(dir, 'bare.mjs'),
      `import http from 'node:http';
import handler from './index.mjs';
const server = http.createServer(async (req, res) => {
  const headers = new Headers();
  for (let i = 0; i < req.rawHeaders.length; i += 2) headers.append(req.rawHeaders[i], req.rawHeaders[i + 1]);
  headers.set('x-spore-param-name', req.url.split('/').pop());
  const r = await handler(new Request('http://' + req.headers.host + req.url, { method: req.method, headers }));
  res.writeHead(r.status, Object.fromEntries(r.headers));
  res.end(Buffer.from(await r.arrayBuffer()));
});
server.listen(0, '127.0.0.1', () => console.log('bare on http://127.0.0.1:' + server.address().port));`,
    );
    const bare = startProcess(process.execPath, [join(dir, 'bare.mjs')], /bare on (http:\/\/\S+)\n/);
    const [, bareUrl] = await bare.matched;
    try {
      await latencies(`${bareUrl}/hello/bench`, 50);
      // alternate the two, so that a noisy neighbour hurts both alike; report the median round
      const rounds = [];
      for (let i = 0; i < ROUNDS; i++) {
        const b = await cannon(`${bareUrl}/hello/bench`);
        const s = await cannon(route);
        rounds.push({ b, s, ratio: s.requests.average / b.requests.average });
      }
      rounds.sort((x, y) => x.ratio - y.ratio);
      const { b, s } = rounds[Math.floor(rounds.length / 2)];
      // the same runtime, specialized with the same bundle, called directly with its credential (as the router does)
      const { ProcessProvider } = await import('../lib/dataplane/index.js');
      const provider = new ProcessProvider({ workRoot: join(dir, 'instances') });
      const instance = await provider.start({ apiVersion: 'spore.dev/v1alpha1', kind: 'Environment', metadata: { name: 'node', namespace: 'default' }, spec: { runtime: { name: 'node' } } });
      const credential = { 'x-spore-instance-token': instance.token };
      await (await request(`${instance.url}/v2/specialize`, { method: 'POST', headers: credential, body: JSON.stringify({ filepath: dir, functionName: 'index' }) })).body.text();
      const direct = await latencies(`${instance.url}/hello/bench`, 2000, { ...credential, 'x-spore-param-name': 'bench' }).finally(() => provider.shutdown());
      const routed = await latencies(route, 2000);
      const added = percentile(routed, 50) - percentile(direct, 50);
      return {
        bare: { rps: b.requests.average, p50: b.latency.p50, p99: b.latency.p99, errors: b.errors + b.non2xx },
        spore: { rps: s.requests.average, p50: s.latency.p50, p99: s.latency.p99, errors: s.errors + s.non2xx },
        ratio: s.requests.average / b.requests.average,
        ratios: rounds.map((r) => r.ratio),
        sequential: { directP50: percentile(direct, 50), routedP50: percentile(routed, 50), addedP50: added },
      };
    } finally {
      bare.child.kill();
    }
  } finally {
    up.child.kill('SIGTERM');
    await new Promise((r) => up.child.once('exit', r));
  }
}

export function report(r) {
  return [
    `warm path, ${CONNECTIONS} connections × ${DURATION}s, ${ROUNDS} alternating rounds, median shown (autocannon):`,
    `  bare node:http   ${fmt(r.bare.rps, 0).padStart(7)} req/s  p50 ${r.bare.p50} ms  p99 ${r.bare.p99} ms  errors ${r.bare.errors}`,
    `  through spore up ${fmt(r.spore.rps, 0).padStart(7)} req/s  p50 ${r.spore.p50} ms  p99 ${r.spore.p99} ms  errors ${r.spore.errors}`,
    `  throughput ratio spore/bare: ${fmt(r.ratio)} (rounds: ${r.ratios.map((x) => fmt(x)).join(', ')}; target >= 0.6)`,
    `one request at a time (2000 calls each): instance direct p50 ${fmt(r.sequential.directP50, 3)} ms, through the router p50 ${fmt(r.sequential.routedP50, 3)} ms`,
    `  router-added p50: ${fmt(r.sequential.addedP50, 3)} ms (target <= 0.5 ms)`,
  ].join('\n');
}
