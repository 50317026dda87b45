// The reconciler's HTTP face: Git webhooks (GitHub and GitLab, signed) that
// trigger a sync at once, and the endpoints `spore status|history|diff|sync|rollback`
// use, which need the API token; and the archives it rendered, for the dataplane.
import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import Fastify, { type FastifyInstance } from 'fastify';
import { archiveRoutes, ARCHIVES_PATH } from './archive-server.js';
import type { Reconciler } from './reconciler.js';

export interface ReconcilerServerOptions {
  reconciler: Reconciler;
  /** Shared secret of the webhooks; without it the webhook endpoint refuses everything. */
  webhookSecret?: string;
  /** Bearer token the API endpoints require (not /webhook, which is signed, nor /healthz, /metrics and /archives/); none: they are open. */
  apiToken?: string;
  report?: (line: string) => void;
}

/** Compares secrets in constant time, lengths included (both are hashed first). */
const same = (a: string, b: string) => timingSafeEqual(createHash('sha256').update(a).digest(), createHash('sha256').update(b).digest());

/** Which provider signed the request, or why it is refused. */
export function verifyWebhook(headers: Record<string, string | string[] | undefined>, body: Buffer, secret: string | undefined): { ok: true; event: string } | { ok: false; why: string } {
  if (!secret) return { ok: false, why: 'webhooks are disabled: start with --webhook-secret' };
  const gh = headers['x-hub-signature-256'];
  if (typeof gh === 'string') {
    const expected = `sha256=${createHmac('sha256', secret).update(body).digest('hex')}`;
    return same(gh, expected) ? { ok: true, event: String(headers['x-github-event'] ?? '') } : { ok: false, why: 'X-Hub-Signature-256 does not match the payload' };
  }
  const gl = headers['x-gitlab-token'];
  if (typeof gl === 'string') return same(gl, secret) ? { ok: true, event: String(headers['x-gitlab-event'] ?? '') } : { ok: false, why: 'X-Gitlab-Token is wrong' };
  return { ok: false, why: 'missing signature: expected X-Hub-Signature-256 (GitHub) or X-Gitlab-Token (GitLab)' };
}

const SYNC_EVENTS = new Set(['push', 'pull_request', 'Push Hook', 'Merge Request Hook', 'Tag Push Hook']);

/** A pull (merge) request that closed or reopened: its ref stays on the server, so the event is what says so. */
export function previewChange(event: string, payload: any): { action: 'close' | 'reopen'; ref: string; head?: string } | { error: string } | undefined {
  const number = (n: unknown, where: string) => (Number.isInteger(n) && (n as number) > 0 ? (n as number) : { error: `${where}: expected a pull request number (got ${JSON.stringify(n)})` });
  if (event === 'pull_request' && (payload?.action === 'closed' || payload?.action === 'reopened')) {
    const n = number(payload.pull_request?.number ?? payload.number, 'pull_request.number');
    if (typeof n !== 'number') return n;
    const head = payload.pull_request?.head?.sha;
    return { action: payload.action === 'closed' ? 'close' : 'reopen', ref: `refs/pull/${n}/head`, head: typeof head === 'string' ? head : undefined };
  }
  const mr = payload?.object_attributes;
  if (event === 'Merge Request Hook' && ['close', 'merge', 'reopen'].includes(mr?.action)) {
    const n = number(mr.iid, 'object_attributes.iid');
    if (typeof n !== 'number') return n;
    const head = mr.last_commit?.id;
    return { action: mr.action === 'reopen' ? 'reopen' : 'close', ref: `refs/merge-requests/${n}/head`, head: typeof head === 'string' ? head : undefined };
  }
  return undefined;
}

export function reconcilerServer(o: ReconcilerServerOptions): FastifyInstance {
  const r = o.reconciler;
  const say = o.report ?? ((l: string) => process.stdout.write(`${l}\n`));
  const deliveries = new RecentIds(10_000, 24 * 60 * 60_000);
  const app = Fastify({ logger: false, bodyLimit: 25 * 1024 * 1024 });
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', { parseAs: 'buffer' }, (_req, body, done) => done(null, body));
  app.get('/healthz', async () => ({ status: 'ok' }));
  app.get('/metrics', async (_req, reply) => reply.type(r.metrics.registry.contentType).send(await r.metrics.registry.metrics()));
  // the API is the CLI's: with a token, only callers that hold it (webhooks carry their own signature)
  app.addHook('onRequest', async (req, reply) => {
    const path = req.url.split('?')[0];
    if (!o.apiToken || path === '/webhook' || path === '/healthz' || path === '/metrics' || path.startsWith(ARCHIVES_PATH)) return;
    const given = req.headers.authorization?.replace(/^Bearer\s+/i, '') ?? '';
    if (!same(given, o.apiToken)) return reply.code(401).send({ status: 401, error: 'Unauthorized', message: 'the reconciler API needs its token: Authorization: Bearer <token> (spore finds it in the state folder\'s up.json, or give SPORE_API_TOKEN)' });
  });

  archiveRoutes(app, r.archiveDir);

  app.post('/webhook', async (req, reply) => {
    const body = Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0);
    const v = verifyWebhook(req.headers, body, o.webhookSecret);
    if (!v.ok) {
      r.metrics.recordWebhook('refused');
      say(`reconciler: webhook refused: ${v.why}`);
      return reply.code(401).send({ status: 401, error: 'Unauthorized', message: v.why });
    }
    if (v.event === 'ping') return reply.code(200).send({ pong: true });
    // a delivery the sender retries, or one replayed by whoever caught it, acts once
    const delivery = req.headers['x-github-delivery'] ?? req.headers['x-gitlab-event-uuid'];
    if (typeof delivery === 'string' && !deliveries.first(delivery)) {
      r.metrics.recordWebhook('duplicate');
      return reply.code(200).send({ accepted: false, message: `delivery ${delivery} was received before` });
    }
    let payload: unknown;
    try {
      payload = JSON.parse(body.toString('utf8') || '{}');
    } catch {
      r.metrics.recordWebhook('invalid');
      return reply.code(400).send({ status: 400, error: 'BadRequest', message: 'the payload is not JSON' });
    }
    if (!SYNC_EVENTS.has(v.event)) {
      r.metrics.recordWebhook('ignored');
      return reply.code(202).send({ accepted: false, message: `event "${v.event}" does not trigger a sync` });
    }
    const change = previewChange(v.event, payload);
    if (change && 'error' in change) {
      r.metrics.recordWebhook('invalid');
      return reply.code(400).send({ status: 400, error: 'BadRequest', message: change.error });
    }
    r.metrics.recordWebhook('accepted');
    const log = (err: Error) => say(`reconciler: ${err.message}`);
    if (change?.action === 'close') void r.closePreview(change.ref, change.head).catch(log);
    else {
      if (change?.action === 'reopen') void r.reopenPreview(change.ref).catch(log);
      void r.poll('webhook').catch(log);
    }
    return reply.code(202).send({ accepted: true });
  });

  const fail = (err: unknown) => ({ status: 400, error: 'Failed', message: (err as Error).message });
  app.get('/status', async () => r.status());
  app.get('/history', async (req) => {
    const q = req.query as { stage?: string; limit?: string };
    return r.history(q.stage, q.limit ? Math.max(1, Math.min(500, Number(q.limit) || 20)) : 20);
  });
  app.get('/diff', async (_req, reply) => r.diff().catch((err) => reply.code(400).send(fail(err))));
  app.post('/sync', async (req) => r.poll('sync', { force: (req.query as { force?: string }).force === 'true' }));
  app.post('/rollback', async (req, reply) => {
    const q = req.query as { revision?: string; stage?: string };
    return r.rollback(q.revision, q.stage).catch((err) => reply.code(400).send(fail(err)));
  });
  return app;
}

/** Ids seen in the last `ttlMs`, at most `max` of them (the oldest forgotten first). */
class RecentIds {
  private readonly seen = new Map<string, number>();

  constructor(
    private readonly max: number,
    private readonly ttlMs: number,
  ) {}

  /** Whether `id` is new (and remembers it). */
  first(id: string): boolean {
    const now = Date.now();
    for (const [k, at] of this.seen) {
      if (this.seen.size < this.max && now - at < this.ttlMs) break; // in insertion order: the rest are newer
      this.seen.delete(k);
    }
    if (this.seen.has(id)) return false;
    this.seen.set(id, now);
    return true;
  }
}
