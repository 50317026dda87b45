// Shared bits of the benchmarks: processes, waiting, percentiles.
import { spawn } from 'node:child_process';
import { request } from 'undici';

export const ROOT = new URL('..', import.meta.url).pathname;

export function percentile(values, p) {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

export async function waitFor(what, probe, timeoutMs = 60_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Starts a process and resolves with the first match of `ready` in its output. */
export function startProcess(cmd, args, ready, env = {}) {
  const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, ...env } });
  let out = '';
  const matched = new Promise((resolve, reject) => {
    const on = (c) => {
      out += c;
      const m = ready.exec(out);
      if (m) resolve(m);
    };
    child.stdout.on('data', on);
    child.stderr.on('data', on);
    child.once('exit', (code) => reject(new Error(`${cmd} exited (${code}) before it was ready:\n${out}`)));
  });
  return { child, matched, output: () => out };
}

/** Sequential calls, returning each call's latency in milliseconds. */
export async function latencies(url, count, headers = {}) {
  const out = [];
  for (let i = 0; i < count; i++) {
    const t = performance.now();
    const res = await request(url, { headers }).catch((err) => {
      throw new Error(`${url} (call ${i + 1}): ${err.message}`);
    });
    await res.body.text();
    if (res.statusCode !== 200) throw new Error(`${url}: ${res.statusCode}`);
    out.push(performance.now() - t);
  }
  return out;
}

export const fmt = (n, d = 2) => n.toFixed(d);
