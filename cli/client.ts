// `spore invoke`, `spore logs` and `spore list`: requests to a running `spore up`.
import parseDuration from 'parse-duration';
import { request } from 'undici';
import { findReconciler, findTarget, splitName } from './target.js';

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

// ---- the reconciler's verbs ---------------------------------------------

/** A call to the reconciler: a sync may run npm ci and a render, so no header timeout short of the reconciler's own bounds. */
async function send(o: TargetOptions, path: string, method: 'GET' | 'POST'): Promise<any> {
  const { url: base, token } = findReconciler(o);
  const url = `${base}${path}`;
  const res = await request(url, { method, headers: token ? { authorization: `Bearer ${token}` } : {}, headersTimeout: 15 * 60_000, bodyTimeout: 15 * 60_000 }).catch((err) => {
    if ((err as { code?: string }).code === 'UND_ERR_HEADERS_TIMEOUT') throw new Error(`${url}: no answer within 15 minutes; the reconciler may still be working on it (see spore status)`);
    throw new Error(`cannot reach ${url}: ${(err as Error).message}`);
  });
  const text = await res.body.text();
  const body = text ? JSON.parse(text) : undefined;
  if (res.statusCode >= 400) throw new Error(body?.message ?? `${res.statusCode} ${text}`);
  return body;
}

const short = (sha?: string) => (sha ? sha.slice(0, 12) : '-');

function printStatus(stages: any[]): void {
  for (const s of stages) {
    const lines = [`${s.stage} (${s.ref}${s.namespace ? `, namespace ${s.namespace}` : ''})`, `  live:     ${short(s.liveRevision)}${s.pinned ? ` (pinned by a rollback)` : ''}`];
    if (s.lastAttempt) {
      lines.push(`  last try: ${short(s.lastAttempt.revision)} ${s.lastAttempt.result} at ${new Date(s.lastAttempt.at).toISOString()}`);
      if (s.lastAttempt.error) lines.push(`  failed at ${s.lastAttempt.error.step}${s.lastAttempt.error.object ? ` (${s.lastAttempt.error.object})` : ''}: ${s.lastAttempt.error.message.split('\n').join('\n    ')}`);
    }
    if (s.retry) lines.push(`  retry:    ${short(s.retry.revision)} again from ${new Date(s.retry.at).toISOString()} (it failed ${s.retry.attempts} time${s.retry.attempts > 1 ? 's' : ''} for want of the network)`);
    process.stdout.write(lines.join('\n') + '\n');
  }
}

export async function statusCommand(o: TargetOptions): Promise<void> {
  printStatus(await send(o, `/status`, 'GET'));
}

export async function historyCommand(o: TargetOptions & { stage?: string; limit: string }): Promise<void> {
  const q = new URLSearchParams({ limit: o.limit, ...(o.stage ? { stage: o.stage } : {}) });
  for (const h of await send(o, `/history?${q}`, 'GET')) {
    const c = h.counts ? ` +${h.counts.create} ~${h.counts.update} -${h.counts.prune} =${h.counts.unchanged}` : '';
    const why = h.error ? ` at ${h.error.step}: ${h.error.message.split('\n')[0]}` : '';
    process.stdout.write(`${new Date(h.startedAt).toISOString()} ${h.stage} ${short(h.revision)} ${h.result}${why}${c} ${h.durationMs}ms (${h.trigger}) ${h.author ?? ''} ${h.message ? `"${h.message}"` : ''}${h.healed ? ` healed: ${h.healed.join(', ')}` : ''}\n`);
  }
}

export async function diffCommand(o: TargetOptions): Promise<void> {
  const d = await send(o, `/diff`, 'GET');
  process.stdout.write(`revision ${d.revision}\n${d.plan}\n`);
}

export async function syncCommand(o: TargetOptions & { force?: boolean }): Promise<void> {
  printStatus(await send(o, `/sync?force=${o.force ? 'true' : 'false'}`, 'POST'));
}

export async function rollbackCommand(revision: string | undefined, o: TargetOptions & { stage: string }): Promise<void> {
  const q = new URLSearchParams({ stage: o.stage, ...(revision ? { revision } : {}) });
  const r = await send(o, `/rollback?${q}`, 'POST');
  if (r.result !== 'succeeded') throw new Error(`rollback to ${short(r.revision)} failed at ${r.error?.step}: ${r.error?.message}`);
  process.stdout.write(`rolled back ${r.stage} to ${short(r.revision)}; pinned until the next push or spore sync\n`);
}
