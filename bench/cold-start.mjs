// Cold start: the first call of a never-called function, served from a warm
// pool (fetch, verify, extract, specialize, call), vs. spawning a fresh runtime
// process for it (start, health, specialize, call). p50 over many functions.
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { request } from 'undici';
import { packArchive } from '../lib/constructs/archive.js';
import { startDataplane, ProcessProvider } from '../lib/dataplane/index.js';
import { SqliteStore } from '../lib/store/index.js';
import { fmt, percentile, waitFor } from './util.mjs';

const FUNCTIONS = Number(process.env.BENCH_FUNCTIONS ?? 24);
const API = 'spore.dev/v1alpha1';

function objects(i) {
  const a = packArchive([{ path: 'index.mjs', data: Buffer.from(`export default () => new Response('fn ${i}');`) }]);
  const metadata = { name: `fn-${i}` };
  return [
    { apiVersion: API, kind: 'Package', metadata, spec: { archive: { sha256: a.sha256, size: a.size, inline: a.bytes.toString('base64') } } },
    { apiVersion: API, kind: 'Function', metadata, spec: { environment: { name: 'node' }, package: { name: `fn-${i}` }, entrypoint: 'index' } },
  ];
}

export async function coldStart() {
  const dir = mkdtempSync(join(tmpdir(), 'spore-cold-'));
  const store = new SqliteStore(join(dir, 'spore.db'));
  const env = { apiVersion: API, kind: 'Environment', metadata: { name: 'node' }, spec: { runtime: { name: 'node' }, poolSize: 3 } };
  await store.apply([env, ...Array.from({ length: FUNCTIONS }, (_, i) => objects(i)).flat()]);
  const dp = await startDataplane({ store, stateDir: dir, port: 0 });
  const pooled = [];
  const fresh = [];
  try {
    const warm = () => dp.poolmgr.snapshot().environments[0]?.warm === 3;
    for (let i = 0; i < FUNCTIONS; i++) {
      await waitFor('a full warm pool', warm);
      const t = performance.now();
      const res = await request(`${dp.url}/_fn/default/fn-${i}`);
      const body = await res.body.text();
      pooled.push(performance.now() - t);
      if (body !== `fn ${i}`) throw new Error(`fn-${i} answered ${res.statusCode} ${body}`);
    }
    // the same work without a pool: a new process per first call
    const provider = new ProcessProvider({ workRoot: join(dir, 'fresh') });
    const { PackageFetcher } = await import('../lib/dataplane/index.js');
    const fetcher = new PackageFetcher({ archiveDir: dir });
    for (let i = 0; i < FUNCTIONS; i++) {
      const [pkg] = objects(i);
      const t = performance.now();
      const instance = await provider.start({ ...env, metadata: { ...env.metadata, namespace: 'default' } });
      await fetcher.extract(await fetcher.bytes({ ...pkg, metadata: { ...pkg.metadata, namespace: 'default' } }), join(instance.workDir, 'code'), 'bench');
      const credential = { 'x-spore-instance-token': instance.token }; // as the pool manager and router hold it
      const s = await request(`${instance.url}/v2/specialize`, { method: 'POST', headers: credential, body: JSON.stringify({ filepath: join(instance.workDir, 'code'), functionName: 'index' }) });
      await s.body.text();
      const res = await request(`${instance.url}/`, { headers: credential });
      await res.body.text();
      fresh.push(performance.now() - t);
      await instance.kill();
    }
    await provider.shutdown();
  } finally {
    await dp.close();
    await store.close();
  }
  return { functions: FUNCTIONS, pooledP50: percentile(pooled, 50), pooledP90: percentile(pooled, 90), freshP50: percentile(fresh, 50), freshP90: percentile(fresh, 90) };
}

export function report(r) {
  return [
    `cold start, first call of ${r.functions} never-called functions:`,
    `  from the warm pool  p50 ${fmt(r.pooledP50)} ms  p90 ${fmt(r.pooledP90)} ms (target p50 <= 15 ms)`,
    `  fresh process       p50 ${fmt(r.freshP50)} ms  p90 ${fmt(r.freshP90)} ms`,
    `  pooled / fresh p50: ${fmt(r.pooledP50 / r.freshP50)}`,
  ].join('\n');
}
