// Stages over time: rollback pins that outlive the process, drift healed
// whatever the head's state, pull-request previews that end when the pull
// request closes (its ref stays), and what a preview's namespace holds.
import { createHmac } from 'node:crypto';
import { renameSync } from 'node:fs';
import { request } from 'undici';
import { describe, expect, it } from 'vitest';
import { DEFAULT_PREVIEW_PATTERNS } from '../../reconciler/reconciler.js';
import { reconcilerServer } from '../../reconciler/server.js';
import { waitFor } from '../dataplane/harness.js';
import { mainTs } from './gitrepo.js';
import { mainStage, reconcilerHarness, stageOf, v } from './harness.js';

const { setup } = reconcilerHarness();
const FN = { apiVersion: 'spore.dev/v1alpha1', kind: 'Function', name: 'hello' };

describe('reconciler over time', () => {
  it('rolls back one revision further each time, keeps the pin across a restart, heals while pinned, and unpins on sync', async () => {
    const e = await setup();
    const one = e.repo.commit('v1', v('v1'));
    await e.rec.start();
    const two = e.repo.commit('v2', v('v2'));
    await e.rec.poll('poll');
    const three = e.repo.commit('v3', v('v3'));
    await e.rec.poll('poll');
    expect((await e.get('/hello')).body).toBe('v3 hello');

    expect(await e.rec.rollback()).toMatchObject({ revision: two, result: 'succeeded' });
    expect((await e.get('/hello')).body).toBe('v2 hello');
    expect(await e.rec.rollback()).toMatchObject({ revision: one, result: 'succeeded' }); // back again, not forward
    expect((await e.get('/hello')).body).toBe('v1 hello');

    const rec = await e.restart();
    expect(mainStage(e)).toMatchObject({ liveRevision: one, pinned: one, headAtPin: three });
    await rec.poll('poll');
    expect((await e.get('/hello')).body).toBe('v1 hello'); // still pinned after the restart

    await e.store.delete(FN);
    await rec.poll('poll');
    expect((await e.get('/hello')).body).toBe('v1 hello'); // drift healed to the pinned revision
    expect(rec.history()[0]).toMatchObject({ revision: one, trigger: 'poll: drift', healed: ['Function/default/hello'] });

    // a rollback while the remote cannot be listed pins against the head last seen
    renameSync(e.repo.remote, `${e.repo.remote}.away`);
    expect(await rec.rollback(two.slice(0, 12))).toMatchObject({ revision: two, result: 'succeeded' });
    renameSync(`${e.repo.remote}.away`, e.repo.remote);
    expect(mainStage(e)).toMatchObject({ pinned: two, headAtPin: three });
    await rec.poll('poll');
    expect((await e.get('/hello')).body).toBe('v2 hello');

    await rec.poll('sync'); // `spore sync`: no new commit, but the pin goes
    expect((await e.get('/hello')).body).toBe('v3 hello');
    expect(mainStage(e).pinned).toBeUndefined();
    await e.restart();
    expect(mainStage(e).liveRevision).toBe(three);
    expect(mainStage(e).pinned).toBeUndefined();
  });

  it('heals drift while the branch head is a revision that failed, without retrying it', async () => {
    const e = await setup();
    const good = e.repo.commit('v1', v('v1'));
    await e.rec.start();
    const bad = e.repo.commit('broken', { 'functions/hello.ts': 'export default () => (' });
    await e.rec.poll('poll');
    expect(mainStage(e)).toMatchObject({ liveRevision: good, lastAttempt: { revision: bad, result: 'failed' } });
    await e.store.delete(FN);
    expect((await e.get('/hello')).status).toBe(404);
    await e.rec.poll('poll');
    expect((await e.get('/hello')).body).toBe('v1 hello');
    expect(e.rec.history().map((h) => `${h.revision === good ? 'good' : 'bad'} ${h.result} ${h.trigger}`)).toEqual(['good succeeded poll: drift', 'bad failed poll', 'good succeeded start']);
  });

  it('previews a pull request until it closes, though its ref stays, and again when reopened; the API wants its token', async () => {
    const e = await setup({ previews: { patterns: DEFAULT_PREVIEW_PATTERNS, max: 10 } });
    e.repo.commit('v1', v('v1'));
    const head = e.repo.commit('try', v('pr'), 'feature');
    e.repo.pushRef('refs/pull/7/head', head);
    await e.rec.start();
    expect((await e.get('/_stage/pr-7/hello')).body).toBe('pr hello');

    const server = reconcilerServer({ reconciler: e.rec, webhookSecret: 's3cret', apiToken: 'tok3n', report: () => {} });
    await server.listen({ port: 0, host: '127.0.0.1' });
    const base = `http://127.0.0.1:${(server.server.address() as any).port}`;
    const hook = async (body: unknown) => {
      const payload = JSON.stringify(body);
      const sig = `sha256=${createHmac('sha256', 's3cret').update(payload).digest('hex')}`;
      const res = await request(`${base}/webhook`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-github-event': 'pull_request', 'x-hub-signature-256': sig }, body: payload });
      return { status: res.statusCode, body: (await res.body.json()) as any };
    };
    try {
      expect((await request(`${base}/status`)).statusCode).toBe(401);
      expect((await request(`${base}/sync`, { method: 'POST', headers: { authorization: 'Bearer wrong' } })).statusCode).toBe(401);
      const status = await request(`${base}/status`, { headers: { authorization: 'Bearer tok3n' } });
      expect(status.statusCode).toBe(200);
      expect(((await status.body.json()) as any[]).map((s) => s.stage)).toEqual(['main', 'pr-7']);

      expect(await hook({ action: 'closed', number: 'seven', pull_request: {} })).toMatchObject({ status: 400, body: { message: 'pull_request.number: expected a pull request number (got "seven")' } });
      expect((await hook({ action: 'closed', number: 7, pull_request: { number: 7, head: { sha: head } } })).status).toBe(202);
      await waitFor('the preview torn down', async () => (await e.get('/_stage/pr-7/hello')).status === 404);
      await e.rec.poll('poll'); // the ref is still there: no preview comes back
      expect(stageOf(e, 'pr-7')).toBeUndefined();
      expect(await e.store.list({ namespace: 'pr-7' })).toEqual([]);
      expect(e.rec.history('pr-7')[0]).toMatchObject({ trigger: 'teardown: its pull request closed', teardown: true, counts: { prune: 5 } }); // Environment, Package, Function, HttpTrigger, and the preview's Namespace
      expect((await e.get('/hello')).body).toBe('v1 hello');

      expect((await hook({ action: 'reopened', number: 7, pull_request: { number: 7, head: { sha: head } } })).status).toBe(202);
      await e.rec.poll('webhook'); // after the webhook's own poll
      expect((await e.get('/_stage/pr-7/hello')).body).toBe('pr hello');

      // closed and reopened at once: events are handled in the order they came
      await hook({ action: 'closed', number: 7, pull_request: { number: 7, head: { sha: head } } });
      await hook({ action: 'reopened', number: 7, pull_request: { number: 7, head: { sha: head } } });
      await e.rec.poll('webhook');
      expect((await e.get('/_stage/pr-7/hello')).body).toBe('pr hello');

      // closed, then a broken commit pushed to it: what the stage served before it closed never comes back, even after a restart
      await hook({ action: 'closed', number: 7, pull_request: { number: 7, head: { sha: head } } });
      const broken = e.repo.commit('broken', { 'functions/hello.ts': 'export default () => (' }, 'feature');
      e.repo.pushRef('refs/pull/7/head', broken);
      await e.rec.poll('poll');
      expect(stageOf(e, 'pr-7')).toMatchObject({ lastAttempt: { revision: broken, result: 'failed' } });
      expect(stageOf(e, 'pr-7')!.liveRevision).toBeUndefined();
      const rec = await e.restart();
      expect(stageOf(e, 'pr-7')!.liveRevision).toBeUndefined();
      await rec.poll('poll');
      expect((await e.get('/_stage/pr-7/hello')).status).toBe(404);
    } finally {
      await server.close();
    }
  });

  it('answers a burst of webhooks with one poll, and a webhook during a poll with one more', async () => {
    const e = await setup();
    e.repo.commit('v1', v('v1'));
    await e.rec.start();
    e.repo.commit('v2', v('v2'));
    const first = e.rec.poll('webhook');
    expect(e.rec.poll('webhook')).toBe(first); // not started yet: the same poll
    await waitFor('the poll under way', () => e.lines.some((l) => l.includes('syncing') && l.includes('(webhook)')));
    const second = e.rec.poll('webhook'); // started: it may have listed the refs already, so another one
    expect(second).not.toBe(first);
    expect(e.rec.poll('webhook')).toBe(second);
    const third = e.rec.poll('poll');
    expect(third).not.toBe(second); // a different trigger is its own poll
    await Promise.all([first, second, third]);
    expect((await e.get('/hello')).body).toBe('v2 hello');
  });

  it("puts a preview's namespaced objects in its namespace, leaves cluster-wide ones to main, and previews pull requests by number up to the cap", async () => {
    const e = await setup({ previews: { patterns: ['refs/pull/*/head'], max: 1 } });
    const extra = `import { ApiObject } from 'cdk8s';
new ApiObject(chart, 'settings', { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'settings' }, data: { colour: 'blue' } });
new ApiObject(chart, 'team', { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'team' } });`;
    const files = (text: string) => ({ ...v(text), 'main.ts': mainTs(['hello'], extra) });
    e.repo.commit('v1', files('v1'));
    e.repo.pushRef('refs/pull/10/head', e.repo.commit('ten', files('ten'), 'pr-ten'));
    e.repo.pushRef('refs/pull/2/head', e.repo.commit('two', files('two'), 'pr-two'));
    await e.rec.start();
    expect(e.rec.status().map((s) => s.stage)).toEqual(['main', 'pr-2']); // 2 before 10, and only one
    expect(e.lines).toContain('reconciler: 2 preview refs, only 1 get a stage (--max-previews)');
    const names = async (namespace: string) => (await e.store.list({ namespace })).map((o) => `${o.kind}/${o.metadata.name}`).sort();
    expect(await names('pr-2')).toEqual(['ConfigMap/settings', 'Environment/node', 'Function/hello', 'HttpTrigger/hello-route', 'Package/hello']);
    expect(await names('default')).toContain('ConfigMap/settings');
    // the app's Namespace is main's; the preview has one of its own, made and deleted with it
    expect((await e.store.list({ kind: 'Namespace' })).map((o) => `${o.metadata.name}: ${o.metadata.labels?.['spore.dev/stage']}`).sort()).toEqual(['pr-2: pr-2', 'team: main']);
    expect(e.lines).toContain("reconciler: pr-2: cluster-wide objects are the main stage's, not the preview's: left out Namespace/team");
    // a live preview keeps its place when a lower number arrives
    e.repo.pushRef('refs/pull/1/head', e.repo.commit('one', files('one'), 'pr-one'));
    await e.rec.poll('poll');
    expect(e.rec.status().map((s) => s.stage)).toEqual(['main', 'pr-2']);
    expect((await e.get('/_stage/pr-2/hello')).body).toBe('two hello');
  });
});
