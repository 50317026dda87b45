// The reconciler: each new revision of a Git repository is checked out,
// rendered, validated, planned and applied to the store — or rejected whole,
// leaving the last good revision serving. One stage per tracked ref: the main
// branch, and previews for refs matching the preview patterns.
import { existsSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { APP_LABEL, MAIN_STAGE, STAGE_LABEL, type KubeObject } from '../api/index.js';
import { digest, formatRef, refOf, type ResourceStore, type SyncHistory, type SyncRecord } from '../store/index.js';
import type { GitSource } from './git-source.js';
import { installDependencies } from './install.js';
import { loadManifests } from './manifests.js';
import { formatPlan, plan, refKey, type Plan } from './plan.js';
import { prepareObjects, type PrepareError } from './prepare.js';
import { renderApp } from './render.js';

export { APP_LABEL, STAGE_LABEL, MAIN_STAGE };

export interface ReconcilerOptions {
  store: ResourceStore & SyncHistory;
  source: GitSource;
  /** Checkouts, renders and (by default) the dependency cache. */
  workDir: string;
  /** Installed dependencies by lockfile, shareable between apps. @default workDir/deps */
  depsCache?: string;
  /** Where archives referenced by URL are kept for the dataplane. */
  archiveDir: string;
  /** The app's name: the inventory label that marks its objects. */
  app: string;
  /** @default 'main' */
  branch?: string;
  /** `render`: install and run the app's cdk8s program; `manifests`: the repo holds rendered YAML. @default 'render' */
  mode?: 'render' | 'manifests';
  /** Folder of the repository holding cdk8s.yaml (render) or the YAML (manifests). @default '.' / 'dist' */
  path?: string;
  /** @default 30000 ms */
  pollMs?: number;
  /** Refs that get a preview stage each; none when undefined. */
  previews?: { patterns: string[]; max: number };
  renderTimeoutMs?: number;
  report?: (line: string) => void;
}

export const DEFAULT_PREVIEW_PATTERNS = ['refs/pull/*/head', 'refs/heads/preview/*'];

export class SyncFailure extends Error {
  constructor(
    readonly step: string,
    message: string,
    readonly object?: string,
  ) {
    super(message);
    this.name = 'SyncFailure';
  }
}

export interface StageStatus {
  stage: string;
  ref: string;
  namespace?: string;
  liveRevision?: string;
  lastAttempt?: { revision: string; result: 'succeeded' | 'failed'; at: number; error?: SyncRecord['error'] };
  /** Set by a rollback: polling leaves the stage alone until the next push or sync. */
  pinned?: string;
  headAtPin?: string;
}

/** `refs/pull/12/head` → `pr-12`; `refs/heads/preview/new-ui` → `preview-new-ui`. */
export function stageName(ref: string): string {
  const pr = /^refs\/pull\/(\d+)\/head$/.exec(ref);
  if (pr) return `pr-${pr[1]}`;
  return ref.replace(/^refs\/heads\//, '').toLowerCase().replace(/[^a-z0-9-]+/g, '-').replace(/^-+|-+$/g, '').slice(0, 40) || 'preview';
}

function matches(ref: string, pattern: string): boolean {
  const re = new RegExp(`^${pattern.split('*').map((p) => p.replace(/[.+?^${}()|[\]\\]/g, '\\$&')).join('[^/]+')}$`);
  return re.test(ref);
}

export class Reconciler {
  private readonly stages = new Map<string, StageStatus>();
  private queue: Promise<unknown> = Promise.resolve();
  private timer?: NodeJS.Timeout;
  private closed = false;
  readonly branch: string;

  constructor(private readonly o: ReconcilerOptions) {
    this.branch = o.branch ?? 'main';
    this.stages.set(MAIN_STAGE, { stage: MAIN_STAGE, ref: `refs/heads/${this.branch}` });
    // what the store already serves survives a restart
    for (const s of o.store.listSyncs({ limit: 500 })) {
      const st = this.stages.get(s.stage) ?? (s.ref ? { stage: s.stage, ref: s.ref, namespace: s.stage === MAIN_STAGE ? undefined : s.stage } : undefined);
      if (!st) continue;
      this.stages.set(s.stage, st);
      st.lastAttempt ??= { revision: s.revision, result: s.result, at: s.startedAt, error: s.error };
      if (s.result === 'succeeded') st.liveRevision ??= s.revision;
    }
  }

  private say(line: string): void {
    (this.o.report ?? ((l) => process.stdout.write(`${l}\n`)))(line);
  }

  /** Runs one piece of work at a time, in order. */
  private serial<T>(work: () => Promise<T>): Promise<T> {
    const next = this.queue.then(work, work);
    this.queue = next.catch(() => {});
    return next;
  }

  /** Syncs now, then every pollMs. */
  async start(): Promise<void> {
    await this.poll('start').catch((err) => this.say(`reconciler: ${(err as Error).message}`));
    if (this.closed) return;
    const every = this.o.pollMs ?? 30_000;
    const tick = () => {
      if (this.closed) return;
      this.poll('poll')
        .catch((err) => this.say(`reconciler: ${(err as Error).message}`))
        .finally(() => {
          if (!this.closed) this.timer = setTimeout(tick, every);
        });
    };
    this.timer = setTimeout(tick, every);
  }

  /**
   * Looks at the remote's refs and syncs every stage whose ref moved. A
   * revision that failed is not tried again unless `force`.
   */
  poll(trigger: string, options: { force?: boolean } = {}): Promise<StageStatus[]> {
    return this.serial(async () => {
      const heads = await this.o.source.heads();
      const wanted = new Map<string, string>([[MAIN_STAGE, `refs/heads/${this.branch}`]]);
      if (this.o.previews) {
        const refs = [...heads.keys()].filter((r) => this.o.previews!.patterns.some((p) => matches(r, p))).sort();
        for (const ref of refs.slice(0, this.o.previews.max)) wanted.set(stageName(ref), ref);
        if (refs.length > this.o.previews.max) this.say(`reconciler: ${refs.length} preview refs, only the first ${this.o.previews.max} get a stage`);
      }
      for (const [name, st] of [...this.stages]) {
        if (name !== MAIN_STAGE && !wanted.has(name)) await this.teardown(st);
      }
      for (const [name, ref] of wanted) {
        const sha = heads.get(ref);
        let st = this.stages.get(name);
        if (!st) this.stages.set(name, (st = { stage: name, ref, namespace: name === MAIN_STAGE ? undefined : name }));
        if (!sha) {
          if (name === MAIN_STAGE) this.say(`reconciler: ${ref} does not exist in ${this.o.source.url}`);
          continue;
        }
        if (st.pinned) {
          if (!options.force && sha === st.headAtPin) continue; // rolled back: wait for a push or a sync
          st.pinned = undefined;
        }
        if (sha === st.liveRevision && !options.force) {
          await this.heal(st, trigger);
          continue;
        }
        if (st.lastAttempt?.revision === sha && st.lastAttempt.result === 'failed' && !options.force) continue;
        await this.syncRevision(st, sha, trigger);
      }
      return this.status();
    });
  }

  private inventory(st: StageStatus) {
    return { [APP_LABEL]: this.o.app, [STAGE_LABEL]: st.stage };
  }

  /** Renders a revision into objects (checkout, install, render or read), throwing a SyncFailure naming the step. */
  private async render(st: StageStatus, sha: string, timings: Record<string, number>): Promise<{ objects: KubeObject[]; outdir: string }> {
    const stepped = async <T>(step: string, work: () => Promise<T>): Promise<T> => {
      const t = performance.now();
      try {
        return await work();
      } catch (err) {
        throw err instanceof SyncFailure ? err : new SyncFailure(step, (err as Error).message);
      } finally {
        timings[step] = Math.round(performance.now() - t);
      }
    };
    await stepped('fetch', () => this.o.source.fetch());
    const checkout = join(this.o.workDir, 'checkouts', st.stage);
    await stepped('checkout', () => this.o.source.checkout(sha, checkout));
    const base = join(checkout, this.o.path ?? (this.o.mode === 'manifests' ? 'dist' : '.'));
    if (this.o.mode === 'manifests') {
      const docs = await stepped('render', async () => {
        if (!existsSync(base)) throw new Error(`the repository has no ${this.o.path ?? 'dist'} folder of rendered manifests`);
        return loadManifests([base]);
      });
      return { objects: docs.map((d) => d.object as KubeObject), outdir: base };
    }
    await stepped('install', async () => {
      const r = await installDependencies(base, this.o.depsCache ?? join(this.o.workDir, 'deps'), { onProgress: (l) => this.say(`  npm: ${l}`) });
      if (!r.cached) this.say(`reconciler: installed dependencies (lockfile ${r.key})`);
    });
    const outdir = join(this.o.workDir, 'renders', st.stage);
    const docs = await stepped('render', () => renderApp(base, outdir, { timeoutMs: this.o.renderTimeoutMs }));
    return { objects: docs.map((d) => d.object as KubeObject), outdir };
  }

  /** Validates and places objects in the stage; copies their URL archives where the dataplane reads them. */
  private prepare(st: StageStatus, objects: KubeObject[], outdir: string): KubeObject[] {
    try {
      return prepareObjects(objects, { outdir, archiveDir: this.o.archiveDir, inventory: this.inventory(st), namespace: st.namespace });
    } catch (err) {
      throw new SyncFailure('validate', (err as Error).message, (err as PrepareError).object);
    }
  }

  /** Plans desired objects against the store; refuses to take over objects that are not this stage's. */
  private async planFor(st: StageStatus, desired: KubeObject[]): Promise<Plan> {
    const live = await this.o.store.list();
    const inv = this.inventory(st);
    const byKey = new Map(live.map((o) => [refKey(refOf(o)), o]));
    for (const o of desired) {
      const current = byKey.get(refKey(refOf(o)));
      if (current && Object.entries(inv).some(([k, v]) => current.metadata.labels?.[k] !== v)) {
        throw new SyncFailure('apply', `${formatRef(refOf(o))} exists and is not managed by app ${this.o.app} stage ${st.stage}; refusing to take it over`, formatRef(refOf(o)));
      }
    }
    return plan(desired, live, inv);
  }

  private async syncRevision(st: StageStatus, sha: string, trigger: string, given?: { objects: KubeObject[] }): Promise<SyncRecord> {
    const started = Date.now();
    const record: SyncRecord = { stage: st.stage, ref: st.ref, revision: sha, startedAt: started, durationMs: 0, result: 'failed', trigger };
    this.say(`reconciler: ${st.stage}: syncing ${sha.slice(0, 12)} (${trigger})`);
    try {
      let desired: KubeObject[];
      const timings: Record<string, number> = {};
      record.timings = timings;
      if (given) desired = given.objects;
      else {
        const { objects, outdir } = await this.render(st, sha, timings);
        const t = performance.now();
        desired = this.prepare(st, objects, outdir);
        timings.validate = Math.round(performance.now() - t);
      }
      const info = await this.o.source.commit(sha).catch(() => undefined); // the render fetched it
      if (info) Object.assign(record, { author: info.author, message: info.message });
      const p = await this.planFor(st, desired);
      const last = this.o.store.getSync({ stage: st.stage, revision: st.liveRevision ?? '-', result: 'succeeded' });
      // drift: live objects that differ from what this stage last applied, where the desired object did not change
      const healed = p.entries
        .filter((e) => (e.action === 'update' || e.action === 'create') && e.object && last?.applied?.[refKey(e.ref)] === digest(e.object))
        .map((e) => formatRef(e.ref));
      const tApply = performance.now();
      try {
        await this.o.store.apply(
          p.entries.filter((e) => e.object).map((e) => e.object!),
          { prune: { labels: this.inventory(st) } },
        );
      } catch (err) {
        throw new SyncFailure('apply', (err as Error).message);
      }
      timings.apply = Math.round(performance.now() - tApply);
      Object.assign(record, {
        result: 'succeeded',
        counts: p.counts,
        healed: healed.length ? healed : undefined,
        objects: desired,
        applied: Object.fromEntries(desired.map((o) => [refKey(refOf(o)), digest(o)])),
      });
      st.liveRevision = sha;
      this.say(`reconciler: ${st.stage}: ${sha.slice(0, 12)} applied — ${formatPlan(p).split('\n')[0].replace('plan: ', '')}${healed.length ? `; healed drift of ${healed.join(', ')}` : ''}`);
    } catch (err) {
      const f = err instanceof SyncFailure ? err : new SyncFailure('sync', (err as Error).message);
      record.error = { step: f.step, object: f.object, message: f.message };
      this.say(`reconciler: ${st.stage}: ${sha.slice(0, 12)} rejected at ${f.step}${f.object ? ` (${f.object})` : ''}: ${f.message}\nreconciler: ${st.stage}: still serving ${st.liveRevision?.slice(0, 12) ?? 'nothing'}`);
    }
    record.durationMs = Date.now() - started;
    st.lastAttempt = { revision: sha, result: record.result, at: started, error: record.error };
    this.o.store.recordSync(record);
    return record;
  }

  /** Puts back what changed in the store out of band since the live revision was applied (no render needed). */
  private async heal(st: StageStatus, trigger: string): Promise<void> {
    const last = this.o.store.getSync({ stage: st.stage, revision: st.liveRevision!, result: 'succeeded' });
    if (!last?.objects) return;
    const p = await this.planFor(st, last.objects).catch(() => undefined);
    if (!p || p.counts.create + p.counts.update + p.counts.prune === 0) return;
    await this.syncRevision(st, st.liveRevision!, `${trigger}: drift`, { objects: last.objects });
  }

  /** Removes a stage's objects (its instances stop as their functions go) and forgets it. */
  private async teardown(st: StageStatus): Promise<void> {
    const r = await this.o.store.apply([], { prune: { labels: this.inventory(st) } });
    this.stages.delete(st.stage);
    for (const sub of ['checkouts', 'renders']) rmSync(join(this.o.workDir, sub, st.stage), { recursive: true, force: true });
    this.say(`reconciler: ${st.stage}: ${st.ref} is gone; removed ${r.pruned.length} object(s)`);
  }

  /** The plan for the branch head, without applying it. */
  diff(): Promise<{ revision: string; plan: string }> {
    return this.serial(async () => {
      const st = this.stages.get(MAIN_STAGE)!;
      const sha = (await this.o.source.heads()).get(st.ref);
      if (!sha) throw new Error(`${st.ref} does not exist in ${this.o.source.url}`);
      const { objects, outdir } = await this.render(st, sha, {});
      return { revision: sha, plan: formatPlan(await this.planFor(st, this.prepare(st, objects, outdir))) };
    });
  }

  /** Re-applies a previous good revision (the one before the live one by default) and pins it until the next push or sync. */
  rollback(revision?: string, stage = MAIN_STAGE): Promise<SyncRecord> {
    return this.serial(async () => {
      const st = this.stages.get(stage);
      if (!st) throw new Error(`no stage ${stage}`);
      const good = this.o.store.listSyncs({ stage, result: 'succeeded', limit: 200 });
      const target = revision ? good.find((s) => s.revision.startsWith(revision)) : good.find((s) => s.revision !== st.liveRevision);
      if (!target?.objects) throw new Error(revision ? `no good sync of ${revision} in stage ${stage} to roll back to` : `no earlier good revision in stage ${stage} to roll back to`);
      const head = (await this.o.source.heads().catch(() => new Map<string, string>())).get(st.ref);
      const rec = await this.syncRevision(st, target.revision, 'rollback', { objects: target.objects });
      if (rec.result === 'succeeded') Object.assign(st, { pinned: target.revision, headAtPin: head });
      return rec;
    });
  }

  status(): StageStatus[] {
    return [...this.stages.values()].map((s) => ({ ...s }));
  }

  history(stage?: string, limit = 20): Omit<SyncRecord, 'objects' | 'applied'>[] {
    return this.o.store.listSyncs({ stage, limit }).map(({ objects: _o, applied: _a, ...rest }) => rest);
  }

  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.timer);
    await this.queue.catch(() => {});
  }
}
