// The verbs that talk to a running `spore up` (invoke, logs, list) and to its
// reconciler (status, history, diff, sync, rollback) over HTTP.
import { readFileSync } from 'node:fs';
import { STATUS_CODES } from 'node:http';
import { text } from 'node:stream/consumers';
import parseDuration from 'parse-duration';
import { request } from 'undici';
import type { Diff, FieldChange } from '../reconciler/diff.js';
import type { StageStatus } from '../reconciler/reconciler.js';
import { formatRef } from '../store/index.js';
import { printData, type Format } from './output.js';
import { findReconciler, findTarget, splitName } from './target.js';

export interface TargetOptions {
  url?: string;
  stateDir?: string;
  namespace?: string;
}

interface OutputOptions {
  output?: Format;
}

/** The server's own message for an error answer (`{ message }`), else the status and text. */
export function failure(url: string, status: number, body: string): Error {
  let message: string | undefined;
  try {
    message = JSON.parse(body)?.message;
  } catch {
    // not JSON
  }
  return new Error(message ?? `${url}: ${status} ${body}`);
}

export async function getJson(url: string): Promise<any> {
  const res = await request(url).catch((err) => {
    throw new Error(`cannot reach ${url}: ${(err as Error).message}`);
  });
  const body = await res.body.text();
  if (res.statusCode >= 400) throw failure(url, res.statusCode, body);
  return JSON.parse(body);
}

export interface InvokeOptions extends TargetOptions {
  method?: string;
  /** curl's spelling of --method. */
  request?: string;
  path?: string;
  query?: string[];
  header?: string[];
  data?: string;
  include?: boolean;
}

/** `--data`: `@file` reads the file, `-` (or `@-`) reads stdin, anything else is the body itself (curl's rules). */
async function bodyOf(data: string): Promise<Buffer> {
  if (data === '-' || data === '@-') return Buffer.from(await text(process.stdin));
  if (!data.startsWith('@')) return Buffer.from(data);
  try {
    return readFileSync(data.slice(1));
  } catch (err) {
    throw new Error(`--data ${data}: cannot read ${data.slice(1)}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
}

/** What a route, timer or queue sends, sent by hand: method, a path under the function, query, headers and body. */
export async function invokeCommand(fn: string, o: InvokeOptions): Promise<void> {
  const base = findTarget(o);
  const { namespace, name } = splitName(fn, o.namespace);
  const headers: Record<string, string> = {};
  for (const h of o.header ?? []) {
    const i = h.indexOf(':');
    if (i <= 0) throw new Error(`--header "${h}": a header is "Name: value"`);
    headers[h.slice(0, i).trim().toLowerCase()] = h.slice(i + 1).trim();
  }
  const path = o.path === undefined ? '/' : o.path.startsWith('/') ? o.path : `/${o.path}`;
  const url = new URL(`${base}/_fn/${encodeURIComponent(namespace)}/${encodeURIComponent(name)}${path}`);
  for (const q of o.query ?? []) {
    const i = q.indexOf('=');
    if (i <= 0) throw new Error(`--query "${q}": a query parameter is name=value`);
    url.searchParams.append(q.slice(0, i), q.slice(i + 1));
  }
  const body = o.data === undefined ? undefined : await bodyOf(o.data);
  const method = (o.method ?? o.request ?? (body ? 'POST' : 'GET')).toUpperCase();
  const res = await request(url, { method: method as any, headers, body }).catch((err) => {
    throw new Error(`cannot reach ${base}: ${(err as Error).message}`);
  });
  const answer = Buffer.from(await res.body.arrayBuffer());
  if (o.include) {
    // curl -i: the status line and the headers, a blank line, then the body
    const lines = [`HTTP/1.1 ${res.statusCode} ${STATUS_CODES[res.statusCode] ?? ''}`.trimEnd()];
    for (const [k, v] of Object.entries(res.headers)) for (const one of ([] as string[]).concat(v ?? [])) lines.push(`${k}: ${one}`);
    process.stdout.write(`${lines.join('\n')}\n\n`);
  }
  process.stdout.write(answer);
  if (res.statusCode >= 400) {
    process.stderr.write(`\nspore: ${namespace}/${name} answered ${res.statusCode}\n`);
    process.exitCode = 1;
  }
}

export interface LogsOptions extends TargetOptions {
  follow?: boolean;
  since?: string;
  /** On a cluster: read the function's pods' logs through the API of this kubeconfig. */
  kubeconfig?: string;
  poolNamespace?: string;
}

/** A local spore up's log store over its admin API; with --kubeconfig, the function's pods on the cluster. */
export async function logsCommand(fn: string, o: LogsOptions): Promise<void> {
  const { namespace, name } = splitName(fn, o.namespace);
  let sinceMs: number | undefined;
  if (o.since) {
    const ms = parseDuration(o.since);
    if (ms == null || ms < 0) throw new Error(`--since "${o.since}": give a duration such as 30s, 5m or 2h`);
    sinceMs = ms;
  }
  if (o.kubeconfig) {
    const { clusterLogsCommand } = await import('./cluster-logs.js'); // the Kubernetes client only when needed
    return clusterLogsCommand(namespace, name, { kubeconfig: o.kubeconfig, poolNamespace: o.poolNamespace ?? process.env.SPORE_NAMESPACE ?? 'spore-system', follow: o.follow, sinceMs });
  }
  const base = findTarget(o);
  const since = sinceMs === undefined ? 0 : Date.now() - sinceMs;
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

export async function listCommand(o: TargetOptions & OutputOptions): Promise<void> {
  const base = findTarget(o);
  const status = await getJson(`${base}/_spore/status`);
  if (printData(status, o.output)) return;
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
  out.push('TIMERS');
  for (const t of status.timers ?? []) {
    const last = t.lastStatus === undefined ? '' : ` last=${t.lastStatus || 'failed'}${t.lastError ? ` (${t.lastError})` : ''}`;
    out.push(`  ${`${t.namespace}/${t.name}`.padEnd(32)} "${t.cron}" ${t.timeZone} → ${t.function} next=${t.nextRun ?? 'never'}${last}`);
  }
  out.push('QUEUES');
  for (const q of status.queues ?? []) {
    out.push(`  ${`${q.namespace}/${q.name}`.padEnd(32)} ${q.broker} ${q.topic} → ${q.function} ${q.state}${q.detail ? ` (${q.detail})` : ''} handled=${q.handled} failed=${q.failed} lag=${q.lag ?? '-'}${q.lastError ? ` last-error=(${q.lastError})` : ''}`);
  }
  out.push('WATCHES');
  for (const w of status.watches ?? []) out.push(`  ${`${w.namespace}/${w.name}`.padEnd(32)} ${w.resource} → ${w.function} ${w.state}${w.detail ? ` (${w.detail})` : ''} sent=${w.sent} failed=${w.failed ?? 0}${w.lastError ? ` last-error=(${w.lastError})` : ''}`);
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
  const body = await res.body.text();
  if (res.statusCode >= 400) throw failure(url, res.statusCode, body);
  return body ? JSON.parse(body) : undefined;
}

const short = (sha?: string) => (sha ? sha.slice(0, 12) : '-');
const ago = (since: number) => `${Math.max(0, Math.round((Date.now() - since) / 1000))}s`;
const indent = (message: string) => message.split('\n').join('\n    ');

const STATES: Record<NonNullable<StageStatus['state']>, string> = {
  synced: 'synced: the head is live',
  syncing: 'syncing',
  failed: 'failed: the head did not sync; the live revision keeps serving',
  pinned: 'pinned by a rollback (until the next push or spore sync)',
  pending: 'pending: the head has not synced yet',
};

function printStatus(stages: StageStatus[]): void {
  for (const s of stages) {
    const lines = [`${s.stage} (${s.ref}${s.namespace ? `, namespace ${s.namespace}` : ''})`];
    if (s.state) lines.push(`  state:    ${STATES[s.state]}`);
    lines.push(`  live:     ${short(s.liveRevision)}${s.pinned ? ` (pinned by a rollback)` : ''}`);
    if (s.head && s.head !== s.liveRevision && s.head !== s.running?.revision) lines.push(`  head:     ${short(s.head)}`);
    if (s.running) {
      const r = s.running;
      lines.push(`  syncing:  ${short(r.revision)} (${r.trigger}): ${r.step} for ${ago(r.stepStartedAt)}, ${ago(r.startedAt)} in all`);
      if (r.progress) lines.push(`  progress: ${r.progress}`);
    }
    const error = (step: string, e: NonNullable<NonNullable<StageStatus['lastAttempt']>['error']>) => `  ${step} at ${e.step}${e.object ? ` (${e.object})` : ''}: ${indent(e.message)}`;
    if (s.lastAttempt) {
      lines.push(`  last try: ${short(s.lastAttempt.revision)} ${s.lastAttempt.result} at ${new Date(s.lastAttempt.at).toISOString()}`);
      if (s.lastAttempt.error) lines.push(error('failed', s.lastAttempt.error));
    }
    // the head's failure when a heal of the live revision came after it
    if (s.failure?.error && s.failure.revision !== s.lastAttempt?.revision) lines.push(error(`head ${short(s.failure.revision)} failed`, s.failure.error));
    if (s.retry) lines.push(`  retry:    ${short(s.retry.revision)} again from ${new Date(s.retry.at).toISOString()} (it failed ${s.retry.attempts} time${s.retry.attempts > 1 ? 's' : ''} for want of the network)`);
    process.stdout.write(lines.join('\n') + '\n');
  }
}

/** Prints the stages; exits 1 when a stage's head failed (the live revision is not the head because of it). */
function reportStatus(stages: StageStatus[], o: OutputOptions): void {
  if (!printData(stages, o.output)) printStatus(stages);
  const failed = stages.filter((s) => s.state === 'failed');
  if (failed.length) {
    process.stderr.write(`spore: ${failed.map((s) => `${s.stage}: ${short(s.failure?.revision)} failed${s.failure?.error ? ` at ${s.failure.error.step}` : ''}`).join('; ')}\n`);
    process.exitCode = 1;
  }
}

export async function statusCommand(o: TargetOptions & OutputOptions): Promise<void> {
  reportStatus(await send(o, `/status`, 'GET'), o);
}

/** The first line of a message, and the lines it introduces (`synth failed (…):` alone says little). */
function headline(message: string): string {
  const lines = message.split('\n').map((l) => l.trim()).filter(Boolean);
  let line = lines[0] ?? '';
  for (let i = 1; i < lines.length && i < 3 && line.endsWith(':'); i++) line += ` ${lines[i]}`;
  return line;
}

export async function historyCommand(o: TargetOptions & OutputOptions & { stage?: string; limit: string }): Promise<void> {
  const q = new URLSearchParams({ limit: o.limit, ...(o.stage ? { stage: o.stage } : {}) });
  const records = await send(o, `/history?${q}`, 'GET');
  if (printData(records, o.output)) return;
  for (const h of records) {
    const c = h.counts ? ` +${h.counts.create} ~${h.counts.update} -${h.counts.prune} =${h.counts.unchanged}` : '';
    const why = h.error ? ` at ${h.error.step}: ${headline(h.error.message)}` : '';
    process.stdout.write(`${new Date(h.startedAt).toISOString()} ${h.stage} ${short(h.revision)} ${h.result}${why}${c} ${h.durationMs}ms (${h.trigger}) ${h.author ?? ''} ${h.message ? `"${h.message}"` : ''}${h.healed ? ` healed: ${h.healed.join(', ')}` : ''}\n`);
  }
}

/** A field's value in one line: long ones (an inline archive) cut, with their length. */
function shown(change: FieldChange, side: 'old' | 'new'): string {
  if (!(side in change)) return '(none)';
  const text = JSON.stringify(change[side]);
  return text.length > 80 ? `${text.slice(0, 60)}… (${text.length} chars)` : text;
}

export function formatDiff(d: Diff): string {
  const sign = { create: '+', update: '~', prune: '-' } as const;
  const lines = [`revision ${d.revision}`, `plan: ${d.counts.create} to create, ${d.counts.update} to update, ${d.counts.prune} to prune, ${d.counts.unchanged} unchanged`];
  for (const o of d.objects) {
    lines.push(`  ${sign[o.action]} ${formatRef(o)} (wave ${o.wave})`);
    for (const f of o.fields ?? []) lines.push(`      ${f.path}: ${shown(f, 'old')} → ${shown(f, 'new')}`);
  }
  return lines.join('\n') + '\n';
}

/** kubectl diff's exit codes: 0 no changes, 1 changes, 2 (above 1) when the diff itself failed. */
export async function diffCommand(o: TargetOptions & OutputOptions): Promise<void> {
  let d: Diff;
  try {
    d = await send(o, `/diff`, 'GET');
  } catch (err) {
    throw Object.assign(err as Error, { exitCode: 2 });
  }
  if (!printData(d, o.output)) process.stdout.write(formatDiff(d));
  if (d.objects.length) process.exitCode = 1;
}

export async function syncCommand(o: TargetOptions & OutputOptions & { force?: boolean }): Promise<void> {
  reportStatus(await send(o, `/sync?force=${o.force ? 'true' : 'false'}`, 'POST'), o);
}

export async function rollbackCommand(revision: string | undefined, o: TargetOptions & { stage: string }): Promise<void> {
  const q = new URLSearchParams({ stage: o.stage, ...(revision ? { revision } : {}) });
  const r = await send(o, `/rollback?${q}`, 'POST');
  if (r.result !== 'succeeded') throw new Error(`rollback to ${short(r.revision)} failed at ${r.error?.step}: ${r.error?.message}`);
  process.stdout.write(`rolled back ${r.stage} to ${short(r.revision)}; pinned until the next push or spore sync\n`);
}
