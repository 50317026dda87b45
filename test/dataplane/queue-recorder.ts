// What the queue trigger suites (NATS, Kafka) share: a Node function that
// records each call in a file, the file read back, and a QueueTrigger builder.
import type { KubeObject } from '../../api/index.js';
import { recordFile } from './harness.js';

/**
 * Records each call (start, end) in OUT and answers what it got. A body
 * "fail…" answers 500, "flaky…" answers 503 once, "slow…" takes SLOW ms
 * (1.5 s), "huge" answers 2 MiB.
 */
export const RECORDER = {
  'index.mjs': `import { appendFileSync, existsSync, writeFileSync } from 'node:fs';
  export default async (req) => {
    const body = await req.text();
    const h = (n) => req.headers.get(n);
    const rec = (what) => appendFileSync(process.env.OUT, JSON.stringify({ what, body, id: h('x-spore-request-id'), delivery: h('x-spore-delivery'), trigger: h('x-spore-trigger'), type: h('content-type'), custom: h('x-custom'), ce: h('ce-type'), at: Date.now() }) + '\\n');
    rec('start');
    if (body.startsWith('slow')) await new Promise((r) => setTimeout(r, Number(process.env.SLOW ?? 1500)));
    if (body.startsWith('fail')) return new Response('broken by ' + body, { status: 500 });
    if (body === 'huge') return new Response('x'.repeat(2 * 1024 * 1024));
    const flag = process.env.OUT + '.' + body;
    if (body.startsWith('flaky') && !existsSync(flag)) {
      writeFileSync(flag, '');
      return new Response('flaky once', { status: 503 });
    }
    rec('end');
    return Response.json({ got: body, custom: h('x-custom'), ce: h('ce-type') });
  };`,
};

export type Line = { what: string; body: string; id: string; delivery: string; trigger: string; type: string; custom: string | null; ce: string | null; at: number };

/** A QueueTrigger on `broker` calling the recorder, one message at a time, no retries, unless `spec` says otherwise. */
export const queueTrigger = (broker: 'nats' | 'kafka', name: string, url: string, spec: Record<string, unknown>): KubeObject => ({
  apiVersion: 'spore.dev/v1alpha1',
  kind: 'QueueTrigger',
  metadata: { name },
  spec: { broker: { kind: broker, connection: { url } }, function: { name: 'rec' }, maxRetries: 0, contentType: 'text/plain', concurrency: 1, ...spec },
});

/** The recorder's file: its lines, the calls started and those ended. */
export function outFile() {
  const { out, lines } = recordFile<Line>();
  return { out, lines, starts: () => lines().filter((l) => l.what === 'start'), ends: () => lines().filter((l) => l.what === 'end') };
}
