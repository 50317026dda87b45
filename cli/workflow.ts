// `spore workflow run | runs | get`: Workflows of the running `spore up`.
import { request } from 'undici';
import { failure, getJson, type TargetOptions } from './client.js';
import { printData, type Format } from './output.js';
import { findTarget, splitName } from './target.js';

export interface WorkflowOptions extends TargetOptions {
  output?: Format;
  input?: string;
  async?: boolean;
  state?: string;
  limit?: string;
}

interface Run {
  id: string;
  namespace: string;
  workflow: string;
  state: string;
  output?: unknown;
  error?: { message: string; task?: string; status?: number; body?: string };
  created: number;
  updated: number;
  tasks?: { path: string; state: string; attempts: number; started: number; finished?: number; output?: unknown; error?: { message: string } }[];
}

const seconds = (from: number, to?: number) => (to === undefined ? '-' : `${((to - from) / 1000).toFixed(3)}s`);
const shown = (v: unknown) => (v === undefined ? '' : typeof v === 'string' ? v : JSON.stringify(v));

/** Runs a workflow: its output on stdout (or, with --async, the run id at once); exits 1 when the run failed. */
export async function workflowRunCommand(wf: string, o: WorkflowOptions): Promise<void> {
  const base = findTarget(o);
  const { namespace, name } = splitName(wf, o.namespace);
  let body: string | undefined;
  if (o.input !== undefined) {
    try {
      body = JSON.stringify(JSON.parse(o.input));
    } catch (err) {
      throw new Error(`--input must be JSON (a string is '"text"'): ${(err as Error).message}`);
    }
  }
  const url = `${base}/_fn/${encodeURIComponent(namespace)}/${encodeURIComponent(name)}`;
  const headers: Record<string, string> = { 'content-type': 'application/json', ...(o.async ? { 'x-spore-async': 'true' } : {}) };
  // a run takes as long as its tasks: no header timeout short of its own bounds
  const res = await request(url, { method: 'POST', headers, body, headersTimeout: 0, bodyTimeout: 0 }).catch((err) => {
    throw new Error(`cannot reach ${base}: ${(err as Error).message}`);
  });
  const text = await res.body.text();
  if (res.statusCode >= 400) {
    const err = failure(url, res.statusCode, text);
    const run = res.headers['x-spore-workflow-run'];
    throw new Error(`${err.message}${run ? ` (spore workflow get ${run})` : ''}`);
  }
  if (o.async) return void process.stdout.write(`${JSON.parse(text).run}\n`);
  process.stdout.write(text.endsWith('\n') || text === '' ? text : `${text}\n`);
}

/** The runs of a workflow (or of all), newest first. */
export async function workflowRunsCommand(wf: string | undefined, o: WorkflowOptions): Promise<void> {
  const base = findTarget(o);
  const query = new URLSearchParams({ ...(o.state ? { state: o.state } : {}), ...(o.limit ? { limit: o.limit } : {}) });
  if (wf) {
    const { namespace, name } = splitName(wf, o.namespace);
    query.set('namespace', namespace);
    query.set('workflow', name);
  }
  const runs = (await getJson(`${base}/_spore/workflow-runs?${query}`)) as Run[];
  if (printData(runs, o.output)) return;
  if (!runs.length) return void process.stdout.write(`no workflow runs${wf ? ` of ${wf}` : ''}\n`);
  const out = [`${'RUN'.padEnd(37)} ${'WORKFLOW'.padEnd(20)} ${'STATE'.padEnd(10)} ${'DURATION'.padEnd(9)} ERROR`];
  for (const r of runs) {
    out.push(`${r.id.padEnd(37)} ${r.workflow.padEnd(20)} ${r.state.padEnd(10)} ${seconds(r.created, r.state === 'running' ? undefined : r.updated).padEnd(9)} ${r.error?.message ?? ''}`);
  }
  process.stdout.write(out.join('\n') + '\n');
}

/** One run, task by task: state, attempts, duration, output or error. */
export async function workflowGetCommand(id: string, o: WorkflowOptions): Promise<void> {
  const run = (await getJson(`${findTarget(o)}/_spore/workflow-runs/${encodeURIComponent(id)}`)) as Run;
  if (printData(run, o.output)) return;
  const out = [`run ${run.id} of ${run.namespace}/${run.workflow}: ${run.state}${run.error ? ` — ${run.error.message}` : ''}`];
  if (run.state === 'succeeded') out.push(`output: ${shown(run.output)}`);
  out.push(`${'TASK'.padEnd(24)} ${'STATE'.padEnd(10)} ${'ATTEMPTS'.padEnd(8)} ${'DURATION'.padEnd(9)} OUTPUT / ERROR`);
  for (const t of run.tasks ?? []) {
    out.push(`${t.path.padEnd(24)} ${t.state.padEnd(10)} ${String(t.attempts).padEnd(8)} ${seconds(t.started, t.finished).padEnd(9)} ${t.error ? t.error.message : shown(t.output)}`);
  }
  process.stdout.write(out.join('\n') + '\n');
}
