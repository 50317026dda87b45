// The reconciler against real Git repositories (file:// remotes), real npm ci
// (cached by lockfile), real renders, the SQLite store and the real dataplane.
import { createHmac, randomBytes, randomUUID } from 'node:crypto';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { request } from 'undici';
import { describe, expect, it, onTestFinished } from 'vitest';
import { packArchive } from '../../constructs/archive.js';
import { reconcilerServer } from '../../reconciler/server.js';
import { alive, waitFor } from '../dataplane/harness.js';
import { handler, mainTs, Repo } from './gitrepo.js';
import { mainStage, reconcilerHarness, v } from './harness.js';

const { setup, template } = reconcilerHarness();

describe('reconciler', () => {
  it('deploys a push within one poll', async () => {
    const e = await setup({ pollMs: 300 });
    const first = e.repo.commit('v1', v('v1'));
    await e.rec.start();
    expect(mainStage(e).liveRevision).toBe(first);
    expect((await e.get('/hello')).body).toBe('v1 hello');
    const second = e.repo.commit('v2', v('v2'));
    await waitFor('v2 served', async () => (await e.get('/hello')).body === 'v2 hello', 60_000);
    expect(mainStage(e).liveRevision).toBe(second);
    const [latest] = e.rec.history();
    expect(latest).toMatchObject({ stage: 'main', revision: second, result: 'succeeded', trigger: 'poll', author: 'Dev <dev@example.com>', message: 'v2', counts: { create: 0, prune: 0 } });
    expect(latest.counts!.update).toBeGreaterThan(0);
  });

  it('says on each object and on its Stage what it is at: Ready, the revision that last changed it, the failure', async () => {
    const e = await setup();
    const first = e.repo.commit('v1', v('v1', ['hello', 'bye']));
    await e.rec.start();
    const fn = (name: string) => e.store.get({ apiVersion: 'spore.dev/v1alpha1', kind: 'Function', name });
    expect((await fn('hello'))!.status).toMatchObject({
      observedGeneration: 1,
      revision: first,
      conditions: [{ type: 'Ready', status: 'True', reason: 'Applied', message: expect.stringMatching(/^environment node, package hello/) }],
    });
    const route = (await e.store.list({ kind: 'HttpTrigger' })).find((t) => (t.spec as any).function?.name === 'hello')!;
    expect(route.status).toMatchObject({ revision: first, conditions: [{ status: 'True', message: 'calls function hello' }] });
    const stage = () => e.store.get({ apiVersion: 'spore.dev/v1alpha1', kind: 'Stage', namespace: 'spore-system', name: 'shop-main' });
    expect((await stage())!.status).toMatchObject({ lastAppliedRevision: first, conditions: [{ type: 'Ready', status: 'True', reason: 'Synced' }] });

    // only what changed takes the new revision; a sync that changes nothing writes no status
    const second = e.repo.commit('v2 of hello', { 'functions/hello.ts': handler('v2 hello') });
    await e.rec.poll('poll');
    expect((await fn('hello'))!.status).toMatchObject({ revision: second });
    const bye = (await fn('bye'))!;
    expect(bye.status).toMatchObject({ revision: first });
    await e.rec.poll('sync');
    expect((await fn('bye'))!.metadata.resourceVersion).toBe(bye.metadata.resourceVersion);

    const bad = e.repo.commit('broken', { 'functions/hello.ts': 'export default () => (' });
    await e.rec.poll('poll');
    expect((await stage())!.status).toMatchObject({
      lastAppliedRevision: second,
      lastAttemptedRevision: bad,
      failure: { revision: bad, step: 'render' },
      conditions: [{ type: 'Ready', status: 'False', reason: 'SyncFailed' }],
      history: [{ revision: bad, result: 'failed' }, { revision: second, result: 'succeeded' }, { revision: first, result: 'succeeded' }],
    });
  });

  it('syncs at once on a signed webhook and refuses forged ones', async () => {
    const e = await setup();
    e.repo.commit('v1', v('v1'));
    await e.rec.start();
    const server = reconcilerServer({ reconciler: e.rec, webhookSecret: 's3cret', report: () => {} });
    await server.listen({ port: 0, host: '127.0.0.1' });
    const url = `http://127.0.0.1:${(server.server.address() as any).port}/webhook`;
    try {
      e.repo.commit('v2', v('v2'));
      const payload = JSON.stringify({ ref: 'refs/heads/main' });
      const forged = await request(url, { method: 'POST', headers: { 'content-type': 'application/json', 'x-github-event': 'push', 'x-hub-signature-256': `sha256=${createHmac('sha256', 'wrong').update(payload).digest('hex')}` }, body: payload });
      expect(forged.statusCode).toBe(401);
      expect(await forged.body.json()).toMatchObject({ message: 'X-Hub-Signature-256 does not match the payload' });
      const unsigned = await request(url, { method: 'POST', headers: { 'content-type': 'application/json', 'x-github-event': 'push' }, body: payload });
      expect(unsigned.statusCode).toBe(401);
      const gitlabWrong = await request(url, { method: 'POST', headers: { 'x-gitlab-event': 'Push Hook', 'x-gitlab-token': 'nope' }, body: payload });
      expect(gitlabWrong.statusCode).toBe(401);
      expect(e.rec.history()).toHaveLength(1); // nothing ran
      expect((await e.get('/hello')).body).toBe('v1 hello');
      const signed = await request(url, { method: 'POST', headers: { 'content-type': 'application/json', 'x-github-event': 'push', 'x-hub-signature-256': `sha256=${createHmac('sha256', 's3cret').update(payload).digest('hex')}` }, body: payload });
      expect(signed.statusCode).toBe(202);
      await waitFor('v2 served', async () => (await e.get('/hello')).body === 'v2 hello', 60_000);
      expect(e.rec.history()[0].trigger).toBe('webhook');
      const gitlab = await request(url, { method: 'POST', headers: { 'x-gitlab-event': 'Push Hook', 'x-gitlab-token': 's3cret', 'x-gitlab-event-uuid': 'gl-1' }, body: payload });
      expect(gitlab.statusCode).toBe(202);
      // the same delivery again (a retry, or a replay): answered, and nothing runs
      const syncs = e.rec.history().length;
      const again = await request(url, { method: 'POST', headers: { 'x-gitlab-event': 'Push Hook', 'x-gitlab-token': 's3cret', 'x-gitlab-event-uuid': 'gl-1' }, body: payload });
      expect([again.statusCode, await again.body.json()]).toEqual([200, { accepted: false, message: 'delivery gl-1 was received before' }]);
      const metrics = await (await request(url.replace('/webhook', '/metrics'))).body.text();
      expect(metrics).toContain('spore_webhooks_total{result="refused"} 3');
      expect(metrics).toContain('spore_webhooks_total{result="accepted"} 2');
      expect(metrics).toContain('spore_webhooks_total{result="duplicate"} 1');
      expect(e.rec.history().length).toBe(syncs);
      expect(metrics).toContain('spore_syncs_total{stage_type="main",kind="revision",result="succeeded"} 2');
      expect(metrics).toMatch(/spore_sync_step_duration_seconds_count\{step="render"\} 2/);
    } finally {
      await server.close();
    }
  });

  it('rejects bad commits whole, keeps serving the last good revision, and says why', async () => {
    const e = await setup();
    let good = e.repo.commit('v1', v('v1'));
    await e.rec.start();
    const server = reconcilerServer({ reconciler: e.rec, report: () => {} });
    const cases: [string, Record<string, string | undefined>, string, RegExp][] = [
      ['typescript error', { 'functions/hello.ts': 'export default () => new Response("x"' }, 'render', /hello\.ts:\d+:\d+: Expected "\)" but found end of file/],
      ['invalid construct', { 'main.ts': mainTs(['hello'], `node.addDependency; new NodeFunction(chart, 'Bad_Name', { environment: node, entry: 'functions/hello.ts' });`) }, 'render', /\[shop\/Bad_Name\] metadata\.name: must be a DNS-1123 label/],
      ['missing lockfile', { 'package-lock.json': undefined }, 'install', /no package-lock\.json/],
      ['failing npm ci', { 'package.json': readFileSync(join(template(), 'package.json'), 'utf8').replace('"tsx"', '"left-pad": "^1.3.0", "tsx"') }, 'install', /npm ci failed \(exit code \d+\):[\s\S]*left-pad/],
    ];
    for (const [what, files, step, message] of cases) {
      const bad = e.repo.commit(what, { ...v('v1'), ...files });
      await e.rec.poll('poll');
      const st = mainStage(e);
      expect(st.liveRevision, what).toBe(good);
      expect(st.lastAttempt, what).toMatchObject({ revision: bad, result: 'failed', error: { step } });
      expect(st.lastAttempt!.error!.message, what).toMatch(message);
      expect((await e.get('/hello')).body, what).toBe('v1 hello');
      // not retried until something new arrives…
      const before = e.rec.history().length;
      await e.rec.poll('poll');
      expect(e.rec.history().length, what).toBe(before);
      // …or a forced sync
      await e.rec.poll('sync', { force: true });
      expect(e.rec.history().length, what).toBe(before + 1);
      good = e.repo.commit(`fix ${what}`, { ...v('v1'), 'package.json': readFileSync(join(template(), 'package.json'), 'utf8'), 'package-lock.json': readFileSync(join(template(), 'package-lock.json'), 'utf8') });
      await e.rec.poll('poll');
      expect(mainStage(e).lastAttempt!.result, `fix of ${what}`).toBe('succeeded');
    }
    const metrics = (await server.inject({ url: '/metrics' })).body;
    expect(metrics).toContain('spore_sync_failures_total{stage_type="main",step="render"} 4'); // each bad commit, then its forced retry
    expect(metrics).toContain('spore_sync_failures_total{stage_type="main",step="install"} 4');
    expect(metrics).toContain('spore_syncs_total{stage_type="main",kind="revision",result="failed"} 8');
    await server.close();
  });

  it('serves a function whose code is too big to inline, from the archive the render wrote', async () => {
    const e = await setup();
    const big = randomBytes(300 * 1024).toString('base64'); // ~400 KB that gzip cannot shrink below 256 KiB
    e.repo.commit('big', { ...v('v1'), 'functions/hello.ts': `const big = ${JSON.stringify(big)};\nexport default () => new Response(String(big.length));\n` });
    await e.rec.start();
    expect(mainStage(e).lastAttempt).toMatchObject({ result: 'succeeded' });
    const pkg = (await e.store.get({ apiVersion: 'spore.dev/v1alpha1', kind: 'Package', name: 'hello' }))!.spec as any;
    expect(pkg.archive.inline).toBeUndefined();
    expect(pkg.archive.url).toMatch(/^archives\/[0-9a-f]{64}\.tgz$/);
    expect((await e.get('/hello')).body).toBe(String(big.length));
  });

  it('rejects an invalid pre-rendered manifest (manifests mode) naming the object', async () => {
    const repo = new Repo();
    const manifest = (timeout: number) =>
      `apiVersion: spore.dev/v1alpha1\nkind: Environment\nmetadata: {name: node}\nspec: {runtime: {name: node}, poolSize: 1}\n---\napiVersion: spore.dev/v1alpha1\nkind: Function\nmetadata: {name: hello}\nspec: {environment: {name: node}, package: {name: hello}, executor: {functionTimeoutSeconds: ${timeout}}}\n`;
    repo.commit('good', { 'dist/app.k8s.yaml': manifest(10) + pkgYaml() });
    const e = await setup({ mode: 'manifests' }, repo);
    await e.rec.start();
    expect(mainStage(e).lastAttempt!.result).toBe('succeeded');
    expect((await e.get('/_fn/default/hello')).body).toBe('manifest mode');
    repo.commit('bad', { 'dist/app.k8s.yaml': manifest(-1) + pkgYaml() });
    await e.rec.poll('poll');
    expect(mainStage(e).lastAttempt!.error).toEqual({ step: 'validate', object: 'Function/default/hello', message: 'Function/default/hello: spec.executor.functionTimeoutSeconds: must be >= 1 (got -1)' });
    expect((await e.get('/_fn/default/hello')).body).toBe('manifest mode');
  });

  it('refuses an Environment command from a repository unless the operator allows commands, and runs nothing', async () => {
    // in the shared temp folder: as root the command runs as the instance's own user, who may write only there (and in its folder)
    const marker = join(tmpdir(), `spore-marker-${randomUUID()}`);
    onTestFinished(() => rmSync(marker, { force: true }));
    const env = `apiVersion: spore.dev/v1alpha1\nkind: Environment\nmetadata: {name: custom}\nspec: {runtime: {command: [sh, -c, "touch ${marker}; sleep 5"]}, poolSize: 1}\n`;
    const repo = new Repo();
    const bad = repo.commit('an environment with a command', { 'dist/app.k8s.yaml': env });
    const e = await setup({ mode: 'manifests' }, repo);
    await e.rec.start();
    expect(mainStage(e).lastAttempt).toMatchObject({ revision: bad, result: 'failed', error: { step: 'validate', object: 'Environment/default/custom' } });
    expect(mainStage(e).lastAttempt!.error!.message).toContain('spec.runtime.command: ["sh","-c","touch');
    expect(mainStage(e).lastAttempt!.error!.message).toContain('--allow-commands');
    expect(await e.store.get({ apiVersion: 'spore.dev/v1alpha1', kind: 'Environment', namespace: 'default', name: 'custom' })).toBeUndefined();
    await new Promise((r) => setTimeout(r, 500)); // a pool would have started by now
    expect(existsSync(marker)).toBe(false);

    const rec = await e.restart({ allowCommands: true });
    await rec.poll('sync', { force: true });
    expect(mainStage(e).liveRevision).toBe(bad);
    await waitFor('the allowed command run by the pool', () => existsSync(marker), 30_000);
  });

  it('removes what leaves the repository, and never touches what Spore did not create', async () => {
    const e = await setup();
    e.repo.commit('two', v('v1', ['hello', 'bye']));
    await e.rec.start();
    await e.store.apply([{ apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'hand-made', namespace: 'default' }, data: { a: '1' } } as any]);
    const pid = Number((await e.get('/_fn/default/bye')).status === 200 && e.dp.poolmgr.snapshot().functions.find((f) => f.name === 'bye')!.instances[0].pid);
    e.repo.commit('one', v('v1', ['hello']));
    await e.rec.poll('poll');
    expect((await e.get('/bye')).status).toBe(404);
    expect((await e.get('/hello')).body).toBe('v1 hello');
    await waitFor('the removed function stopped', () => !alive(pid));
    expect(await e.store.get({ apiVersion: 'v1', kind: 'ConfigMap', name: 'hand-made' })).toBeDefined();
    expect(e.rec.history()[0].counts).toMatchObject({ prune: 3 }); // Function, Package, HttpTrigger
  });

  it('heals an out-of-band change at the next sync and says so', async () => {
    const e = await setup();
    e.repo.commit('v1', v('v1'));
    await e.rec.start();
    const route = (await e.store.get({ apiVersion: 'spore.dev/v1alpha1', kind: 'HttpTrigger', name: 'hello-route' }))!;
    await e.store.apply([{ ...route, spec: { ...(route.spec as object), path: '/hijacked' } }]);
    await e.dp.router.reload();
    expect((await e.get('/hijacked')).body).toBe('v1 hello');
    await e.rec.poll('poll');
    expect((await e.get('/hello')).body).toBe('v1 hello');
    expect((await e.get('/hijacked')).status).toBe(404);
    expect(e.rec.history()[0]).toMatchObject({ trigger: 'poll: drift', result: 'succeeded', healed: ['HttpTrigger/default/hello-route'] });
    // deleted out of band: put back too
    await e.store.delete({ apiVersion: 'spore.dev/v1alpha1', kind: 'Function', name: 'hello' });
    expect((await e.get('/hello')).status).toBe(404);
    await e.rec.poll('poll');
    expect((await e.get('/hello')).body).toBe('v1 hello');
    expect(e.rec.history()[0].healed).toEqual(['Function/default/hello']);
    // replaced by a hand-made object of the same name: never taken over, and said
    const ref = { apiVersion: 'spore.dev/v1alpha1', kind: 'Function', name: 'hello' };
    const fn = (await e.store.get(ref))!;
    await e.store.delete(ref);
    const { 'spore.dev/app': _a, 'spore.dev/stage': _s, ...labels } = fn.metadata.labels!;
    await e.store.apply([{ apiVersion: fn.apiVersion, kind: fn.kind, metadata: { name: 'hello', namespace: 'default', labels }, spec: fn.spec }]);
    const syncs = e.rec.history().length;
    await e.rec.poll('poll');
    expect(e.rec.history()).toHaveLength(syncs);
    expect((await e.store.get(ref))!.metadata.labels?.['spore.dev/app']).toBeUndefined();
    expect(e.lines).toContain('reconciler: main: cannot heal drift: Function/default/hello exists and is not managed by app shop stage main; refusing to take it over');
  });

  it('gives a preview branch its own stage at its host and prefix, and tears it down with the branch', async () => {
    const e = await setup({ previews: { patterns: ['refs/heads/preview/*'], max: 10 } });
    e.repo.commit('v1', v('v1'));
    e.repo.commit('try', v('preview'), 'preview/new-ui');
    await e.rec.start();
    expect((await e.get('/hello')).body).toBe('v1 hello');
    expect((await e.get('/_stage/preview-new-ui/hello')).body).toBe('preview hello');
    expect((await e.get('/hello', { host: 'preview-new-ui.example.com' })).body).toBe('preview hello');
    expect((await e.store.list({ kind: 'Function', namespace: 'preview-new-ui' })).map((f) => f.metadata.name)).toEqual(['hello']);
    e.repo.deleteBranch('preview/new-ui');
    await e.rec.poll('poll');
    expect((await e.get('/_stage/preview-new-ui/hello')).status).toBe(404);
    expect(await e.store.list({ namespace: 'preview-new-ui' })).toEqual([]);
    expect((await e.get('/hello')).body).toBe('v1 hello');
  });

  it('rolls back to the previous good revision, pins it, and moves on at the next push', async () => {
    const e = await setup();
    const one = e.repo.commit('v1', v('v1'));
    await e.rec.start();
    e.repo.commit('v2', v('v2'));
    await e.rec.poll('poll');
    expect((await e.get('/hello')).body).toBe('v2 hello');
    const r = await e.rec.rollback();
    expect(r).toMatchObject({ revision: one, result: 'succeeded', trigger: 'rollback' });
    expect((await e.get('/hello')).body).toBe('v1 hello');
    await e.rec.poll('poll');
    expect((await e.get('/hello')).body).toBe('v1 hello'); // pinned
    e.repo.commit('v3', v('v3'));
    await e.rec.poll('poll');
    expect((await e.get('/hello')).body).toBe('v3 hello');
    await expect(e.rec.rollback('deadbeef')).rejects.toThrow('no good sync of deadbeef in stage main to roll back to');
  });
});

function pkgYaml(): string {
  const a = packArchive([{ path: 'index.mjs', data: Buffer.from(`export default () => new Response('manifest mode');`) }]);
  return `---\napiVersion: spore.dev/v1alpha1\nkind: Package\nmetadata: {name: hello}\nspec: {archive: {sha256: ${a.sha256}, size: ${a.size}, inline: ${a.bytes.toString('base64')}}}\n`;
}
