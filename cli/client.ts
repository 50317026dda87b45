// `spore invoke`, `spore logs` and `spore list`: requests to a running `spore up`.
import parseDuration from 'parse-duration';
import { request } from 'undici';
import { findTarget, splitName } from './target.js';

export interface TargetOptions {
  url?: string;
  stateDir?: string;
  namespace?: string;
}

async function getJson(url: string): Promise<any> {
  const res = await request(url).catch((err) => {
    throw new Error(`cannot reach ${url}: ${(err as Error).message}`);
  });
  const text = await res.body.text();
  if (res.statusCode >= 400) throw new Error(`${url}: ${res.statusCode} ${text}`);
  return JSON.parse(text);
}

export async function invokeCommand(fn: string, o: TargetOptions & { request: string; data?: string; header: string[] }): Promise<void> {
  const base = findTarget(o);
  const { namespace, name } = splitName(fn, o.namespace);
  const headers: Record<string, string> = {};
  for (const h of o.header) {
    const i = h.indexOf(':');
    if (i <= 0) throw new Error(`-H "${h}": a header is "Name: value"`);
    headers[h.slice(0, i).trim().toLowerCase()] = h.slice(i + 1).trim();
  }
  const method = (o.request ?? (o.data !== undefined ? 'POST' : 'GET')).toUpperCase();
  const res = await request(`${base}/_fn/${namespace}/${name}/`, { method: method as any, headers, body: o.data }).catch((err) => {
    throw new Error(`cannot reach ${base}: ${(err as Error).message}`);
  });
  const body = Buffer.from(await res.body.arrayBuffer());
  process.stdout.write(body);
  if (res.statusCode >= 400) {
    process.stderr.write(`\nspore: ${namespace}/${name} answered ${res.statusCode}\n`);
    process.exitCode = 1;
  }
}

export async function logsCommand(fn: string, o: TargetOptions & { follow?: boolean; since?: string }): Promise<void> {
  const base = findTarget(o);
  const { namespace, name } = splitName(fn, o.namespace);
  let since = 0;
  if (o.since) {
    const ms = parseDuration(o.since);
    if (ms == null || ms < 0) throw new Error(`--since "${o.since}": give a duration such as 30s, 5m or 2h`);
    since = Date.now() - ms;
  }
  let afterId = 0;
  const print = (entries: any[]) => {
    for (const e of entries) {
      afterId = Math.max(afterId, e.id);
      const rid = e.requestId ? ` ${e.requestId}` : '';
      process.stdout.write(`${new Date(e.time).toISOString()} ${e.instance}${rid} ${e.stream === 'stderr' ? '! ' : ''}${e.line}\n`);
    }
  };
  const query = () => `${base}/_spore/logs?namespace=${encodeURIComponent(namespace)}&function=${encodeURIComponent(name)}&since=${since}&afterId=${afterId}`;
  print(await getJson(query()));
  while (o.follow) {
    await new Promise((r) => setTimeout(r, 500));
    print(await getJson(query()));
  }
}

export async function listCommand(o: TargetOptions): Promise<void> {
  const base = findTarget(o);
  const status = await getJson(`${base}/_spore/status`);
  const out: string[] = ['FUNCTIONS'];
  for (const f of status.functions) {
    const busy = f.instances.filter((i: any) => i.state === 'busy').length;
    out.push(`  ${`${f.namespace}/${f.name}`.padEnd(32)} env=${f.environment} executor=${f.executor} instances=${f.instances.length} busy=${busy} waiting=${f.waiting}`);
    for (const i of f.instances) out.push(`    instance ${i.id} pid=${i.pid ?? '-'} ${i.state} in-flight=${i.inFlight} age=${i.ageSeconds}s`);
  }
  out.push('ROUTES');
  for (const r of status.routes) {
    const to = r.functions.map((f: any) => (r.functions.length > 1 ? `${f.name} ${f.weight}%` : f.name)).join(', ');
    out.push(`  ${r.methods.join(',').padEnd(10)} ${r.path}${r.host ? ` host=${r.host}` : ''} → ${to}`);
  }
  out.push('ENVIRONMENTS');
  for (const e of status.environments) out.push(`  ${`${e.namespace}/${e.name}`.padEnd(32)} warm=${e.warm} starting=${e.starting}`);
  process.stdout.write(out.join('\n') + '\n');
}
