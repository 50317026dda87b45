// TEST INFRASTRUCTURE, not part of Spore: the kubelet's log endpoint for the
// test node agent (node-agent.ts). Each container's output is kept line by
// line with the time it came (kubelet's `timestamps`), and served over HTTPS
// as `GET /containerLogs/<ns>/<pod>/<container>`, where the API server proxies
// `pods/<name>/log` to (it does not verify this server's certificate unless
// given --kubelet-certificate-authority; the harness gives none). The server
// asks no client certificate: any local process may read the test pods' logs.
import { execFileSync } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { appendFileSync, readFileSync } from 'node:fs';
import https from 'node:https';
import { join } from 'node:path';
import type { Readable } from 'node:stream';

/** The time as Go's RFC3339Nano writes it (what the kubelet prefixes): fraction to the nanosecond, trailing zeros dropped. */
export function rfc3339Nano(ms = performance.timeOrigin + performance.now()): string {
  const seconds = Math.floor(ms / 1000);
  const nanos = Math.min(999_999_999, Math.round((ms - seconds * 1000) * 1e6));
  const fraction = String(nanos).padStart(9, '0').replace(/0+$/, '');
  return `${new Date(seconds * 1000).toISOString().slice(0, 19)}${fraction ? `.${fraction}` : ''}Z`;
}

/** One container's log across its restarts: a file of `<time> <line>` lines, and a 'line' event for each new one. */
export class ContainerLog extends EventEmitter {
  /** Set while a process's output is still coming (until its stdout and stderr both end). */
  live?: Promise<void>;

  constructor(readonly file: string) {
    super();
  }

  /** Takes a new process's stdout and stderr. */
  capture(out: Readable, err: Readable): void {
    const live: Promise<void> = Promise.all([this.lines(out), this.lines(err)]).then(() => {
      if (this.live === live) this.live = undefined;
    });
    this.live = live;
  }

  private lines(stream: Readable): Promise<void> {
    stream.setEncoding('utf8');
    let partial = '';
    stream.on('data', (chunk: string) => {
      const parts = (partial + chunk).split('\n');
      partial = parts.pop()!;
      for (const line of parts) this.add(line);
    });
    return new Promise((resolve) => {
      const done = () => {
        if (partial) this.add(partial); // a last line without its newline, as the kubelet keeps it
        partial = '';
        resolve();
      };
      stream.once('end', done);
      stream.once('close', done); // a process that never started: its pipes close without an end
      stream.once('error', done);
    });
  }

  private add(line: string): void {
    const entry = `${rfc3339Nano()} ${line}`;
    try {
      appendFileSync(this.file, `${entry}\n`); // written and announced in one go: a reader that read the file, then listens, misses nothing
    } catch {
      return; // the pod's folder is gone (its last words after it was removed)
    }
    this.emit('line', entry);
  }

  /** Every line so far, each `<time> <line>`. */
  entries(): string[] {
    try {
      const text = readFileSync(this.file, 'utf8');
      return text ? text.slice(0, -1).split('\n') : [];
    } catch {
      return []; // nothing written yet
    }
  }
}

export interface LogServer {
  port: number;
  close(): void;
}

/** A non-negative integer query parameter, or undefined when absent. */
function count(q: URLSearchParams, name: string): number | undefined {
  const v = q.get(name);
  if (v === null) return undefined;
  if (!/^\d+$/.test(v)) throw new Error(`${name}=${v}: expected a non-negative integer`);
  return Number(v);
}

/** Starts the log endpoint on 127.0.0.1 (a free port) with a self-signed certificate made in `dir` by openssl. */
export async function startLogServer(dir: string, find: (namespace: string, pod: string, container: string) => ContainerLog | undefined): Promise<LogServer> {
  const [key, cert] = [join(dir, 'kubelet.key'), join(dir, 'kubelet.crt')];
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '2', '-subj', '/CN=spore-test-node', '-addext', 'subjectAltName=IP:127.0.0.1', '-keyout', key, '-out', cert], { stdio: 'pipe' });
  const server = https.createServer({ key: readFileSync(key), cert: readFileSync(cert) }, (req, res) => {
    const fail = (status: number, message: string) => {
      res.writeHead(status, { 'content-type': 'text/plain' });
      res.end(message);
    };
    const url = new URL(req.url ?? '/', 'https://localhost');
    const m = /^\/containerLogs\/([^/]+)\/([^/]+)\/([^/]+)$/.exec(url.pathname);
    if (req.method !== 'GET' || !m) return fail(404, `the test node serves only GET /containerLogs/<namespace>/<pod>/<container>, not ${req.method} ${url.pathname}`);
    const [namespace, pod, container] = m.slice(1).map(decodeURIComponent);
    const log = find(namespace, pod, container);
    if (!log) return fail(404, `container "${container}" in pod "${namespace}/${pod}" is not on this node`);
    const q = url.searchParams;
    let tail: number | undefined, sinceSeconds: number | undefined;
    try {
      tail = count(q, 'tailLines');
      sinceSeconds = count(q, 'sinceSeconds');
    } catch (err) {
      return fail(400, (err as Error).message);
    }
    const sinceTime = q.get('sinceTime');
    const since = sinceSeconds !== undefined ? Date.now() - sinceSeconds * 1000 : sinceTime ? Date.parse(sinceTime) : undefined;
    if (Number.isNaN(since)) return fail(400, `sinceTime=${sinceTime}: expected an RFC3339 time`);
    const timestamps = q.get('timestamps') === 'true';
    const show = (entry: string) => `${timestamps ? entry : entry.slice(entry.indexOf(' ') + 1)}\n`;
    // the kubelet's order: the last tailLines lines, then those since the time
    let entries = log.entries();
    if (tail !== undefined) entries = tail === 0 ? [] : entries.slice(-tail);
    if (since !== undefined) entries = entries.filter((e) => Date.parse(e.slice(0, e.indexOf(' '))) >= since);
    res.writeHead(200, { 'content-type': 'text/plain' });
    for (const e of entries) res.write(show(e));
    const live = log.live;
    if (q.get('follow') !== 'true' || !live) return res.end();
    // follow: new lines until the running process's output ends, or the client goes
    const send = (entry: string) => res.write(show(entry));
    log.on('line', send);
    const stop = () => {
      log.off('line', send);
      res.end();
    };
    void live.then(stop);
    res.once('close', stop);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  return {
    port: (server.address() as { port: number }).port,
    close: () => {
      server.close();
      server.closeAllConnections();
    },
  };
}
