// The reconciler: each new revision of a Git repository is checked out,
// rendered, validated, planned and applied to the store — or rejected whole,
// leaving the last good revision serving. One stage per tracked ref: the main
// branch, and previews for refs matching the preview patterns.
import { existsSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { API_VERSION, APP_LABEL, dnsLabel, MAIN_STAGE, STAGE_LABEL, stageObjectName, type KubeObject } from '../api/index.js';
import { digest, formatRef, refOf, syncKind, type ApplyResult, type ResourceStore, type StoredObject, type SyncHistory, type SyncRecord } from '../store/index.js';
import { statusFor, touched } from './status.js';
import { GitError, type GitSource } from './git-source.js';
import { stopLeftovers } from './bounded.js';
import { buildPackages, type BuildError } from './build.js';
import { ReconcilerMetrics } from './metrics.js';
import { installDependencies, InstallError } from './install.js';
import { loadManifests } from './manifests.js';
import { planChanges, type Diff } from './diff.js';
import { formatPlan, plan, refKey, withInventory, type Plan } from './plan.js';
import { archiveUrlBase, prepareObjects, type PrepareError } from './prepare.js';
import { renderApp } from './render.js';
import { userMessage } from './user-error.js';

export { APP_LABEL, STAGE_LABEL, MAIN_STAGE };

export interface ReconcilerOptions {
  store: ResourceStore;
  /** The syncs and the small state that outlive the process (the SQLite store locally, ConfigMaps on a cluster). */
  history: SyncHistory;
  source: GitSource;
  /** Checkouts, renders and (by default) the dependency cache. */
  workDir: string;
  /** Installed dependencies by lockfile, shareable between apps. @default workDir/deps */
  depsCache?: string;
  /** Python dependencies installed by deploy-time builds, by requirements. @default workDir/python */
  buildCache?: string;
  /** Where archives referenced by URL are kept for the dataplane (and served from at /archives/). */
  archiveDir: string;
  /** The reconciler's server as the dataplane reaches it (on a cluster): Package URLs point there. See PrepareOptions.archiveUrl. */
  archiveUrl?: string;
  /** The app's name: the inventory label that marks its objects. */
  app: string;
  /** Namespace of Spore's own objects: each stage's Stage. @default 'spore-system' */
  namespace?: string;
  /** @default 'main' */
  branch?: string;
  /** `render`: install and run the app's cdk8s program; `manifests`: the repo holds rendered YAML. @default 'render' */
  mode?: 'render' | 'manifests';
  /** Folder of the repository holding cdk8s.yaml (render) or the YAML (manifests). @default '.' / 'dist' */
  path?: string;
  /** Let Environments of the repository name local commands (they run on this host). @default false */
  allowCommands?: boolean;
  /** @default 30000 ms */
  pollMs?: number;
  /** Refs that get a preview stage each; none when undefined. */
  previews?: { patterns: string[]; max: number };
  renderTimeoutMs?: number;
  /** First wait before a revision that failed at fetch or npm ci, or a heal that failed, is tried again; doubles each time. @default 30000 ms */
  retryBaseMs?: number;
  report?: (line: string) => void;
}

export const DEFAULT_PREVIEW_PATTERNS = ['refs/pull/*/head', 'refs/merge-requests/*/head', 'refs/heads/preview/*'];

export class SyncFailure extends Error {
  constructor(
    readonly step: string,
    message: string,
    readonly object?: string,
    /** The same revision may pass on a later try (the network, the registry). */
    readonly transient = false,
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
  /** The ref's commit at the last poll. */
  head?: string;
  lastAttempt?: { revision: string; result: 'succeeded' | 'failed'; at: number; error?: SyncRecord['error'] };
  /** Set by a rollback: polling leaves the stage alone until the next push or sync. */
  pinned?: string;
  headAtPin?: string;
  /** A revision that failed at a step that may pass on a second try (fetch, npm ci): when it is tried again. */
  retry?: { revision: string; attempts: number; at: number };
  /** After a heal that failed: not before `at`, so that a lasting failure is not recorded at every poll. */
  healAfter?: { attempts: number; at: number };
  /** The sync under way: its step (fetch, checkout, install, render, validate, build, apply), since when, and the last line it reported. */
  running?: { revision: string; trigger: string; startedAt: number; step: string; stepStartedAt: number; progress?: string };
  /** Set by status(): whether the stage serves its head (synced), is at it (syncing), or could not (failed: `failure` says why). */
  state?: 'synced' | 'syncing' | 'failed' | 'pinned' | 'pending';
  /** Set by status() when the head failed: that attempt (the last attempt may since be a heal of the live revision). */
  failure?: { revision: string; at: number; error?: SyncRecord['error'] };
}

/** Kept in the store so that a restart picks up where the process left off. */
const STAGES_KEY = 'stages'; // preview stage → its ref
const CLOSED_KEY = 'closed'; // ref of a closed pull request → its head when it closed
const pinKey = (stage: string) => `pin:${stage}`;

/** Tries of a revision that failed at fetch or npm ci (the network, the registry) before giving up on it. */
const MAX_RETRIES = 5;
/** Closed pull requests remembered (their refs stay on GitHub; older ones are long out of the preview window). */
const MAX_CLOSED = 1000;

/** `refs/pull/12/head` → `pr-12`; `refs/merge-requests/3/head` → `mr-3`; `refs/heads/preview/new-ui` → `preview-new-ui`. */
export function stageName(ref: string): string {
  const pr = /^refs\/(pull|merge-requests)\/(\d+)\/head$/.exec(ref);
  if (pr) return `${pr[1] === 'pull' ? 'pr' : 'mr'}-${pr[2]}`;
  return dnsLabel(ref.replace(/^refs\/heads\//, ''), 40) || 'preview';
}

function matches(ref: string, pattern: string): boolean {
  const re = new RegExp(`^${pattern.split('*').map((p) => p.replace(/[.+?^${}()|[\]\\]/g, '\\$&')).join('[^/]+')}$`);
  return re.test(ref);
}

export class Reconciler {
  private readonly stages = new Map<string, StageStatus>();
  private queue: Promise<unknown> = Promise.resolve();
  /** Polls queued and not yet started, by trigger: a webhook burst is one poll. */
  private readonly waiting = new Map<string, Promise<StageStatus[]>>();
  private timer?: NodeJS.Timeout;
  private closed = false;
  /** Stops a running npm ci, render or fetch when the reconciler closes. */
  private readonly stopping = new AbortController();
  /** Warnings already given: a poll every 30 s need not repeat them. */
  private readonly warned = new Set<string>();
  readonly metrics: ReconcilerMetrics;
  readonly branch: string;
  /** Where its archives are kept: its server serves them at /archives/. */
  get archiveDir(): string {
    return this.o.archiveDir;
  }

  constructor(private readonly o: ReconcilerOptions) {
    this.branch = o.branch ?? 'main';
    if (o.archiveUrl) archiveUrlBase(o.archiveUrl); // a wrong address fails the start, not every sync
    this.metrics = new ReconcilerMetrics(() => this.stages.size - 1);
    // what the store already serves survives a restart: the stages, their live revision, their pins
    const refs = { [MAIN_STAGE]: `refs/heads/${this.branch}`, ...o.history.readState<Record<string, string>>(STAGES_KEY) };
    for (const [stage, ref] of Object.entries(refs)) {
      const st: StageStatus = { stage, ref, namespace: stage === MAIN_STAGE ? undefined : stage };
      const records = this.sinceTeardown(stage);
      const [latest] = records;
      if (latest) st.lastAttempt = { revision: latest.revision, result: latest.result, at: latest.startedAt, error: latest.error };
      st.liveRevision = records.find((s) => s.result === 'succeeded')?.revision;
      const pin = o.history.readState<{ revision: string; head?: string }>(pinKey(stage));
      if (pin) Object.assign(st, { pinned: pin.revision, headAtPin: pin.head });
      // a retry under way: the newest attempt at a new revision (heals re-apply the live one)
      const tried = records.find((s) => syncKind(s) !== 'drift');
      if (tried?.result === 'failed' && tried.error?.retryAt) st.retry = { revision: tried.revision, attempts: tried.error.attempts ?? 1, at: tried.error.retryAt };
      this.stages.set(stage, st);
    }
  }

  /** A stage's records, newest first, back to its last teardown: what came before belongs to an earlier life of the stage. */
  private sinceTeardown(stage: string): SyncRecord[] {
    const records = this.o.history.listSyncs({ stage, limit: 500 });
    const end = records.findIndex((s) => s.teardown);
    return end < 0 ? records : records.slice(0, end);
  }

  private say(line: string): void {
    // what a running step reports (npm's lines, a build's) is its progress in spore status
    const running = [...this.stages.values()].find((s) => s.running)?.running;
    if (running) running.progress = line.trim();
    (this.o.report ?? ((l) => process.stdout.write(`${l}\n`)))(line);
  }

  /** Marks the step a running sync of `st` is at (syncs run one at a time, so this is the only one). */
  private enter(st: StageStatus, step: string): void {
    if (st.running) Object.assign(st.running, { step, stepStartedAt: Date.now(), progress: undefined });
  }

  private once(line: string): void {
    if (this.warned.has(line)) return;
    this.warned.add(line);
    this.say(line);
  }

  /** Runs one piece of work at a time, in order; nothing new once closing. */
  private serial<T>(work: () => Promise<T>): Promise<T> {
    const guarded = () => (this.closed ? Promise.reject(new Error('the reconciler is shutting down')) : work());
    const next = this.queue.then(guarded, guarded);
    this.queue = next.catch(() => {});
    return next;
  }

  private saveStages(): void {
    const previews = [...this.stages.values()].filter((s) => s.stage !== MAIN_STAGE);
    this.o.history.writeState(STAGES_KEY, previews.length ? Object.fromEntries(previews.map((s) => [s.stage, s.ref])) : undefined);
  }

  /** Syncs now, then every pollMs. */
  async start(): Promise<void> {
    const left = stopLeftovers(this.o.workDir);
    if (left) this.say(`reconciler: stopped ${left} process(es) an earlier run left behind (npm ci or a synth)`);
    await this.poll('start').catch((err) => this.say(`reconciler: ${(err as Error).message}`));
    if (this.closed) return;
    const every = this.o.pollMs ?? 30_000;
    const tick = () => {
      if (this.closed) return;
      this.poll('poll')
        .catch((err) => this.closed || this.say(`reconciler: ${(err as Error).message}`))
        .finally(() => {
          if (!this.closed) this.timer = setTimeout(tick, every);
        });
    };
    this.timer = setTimeout(tick, every);
  }

  /**
   * Looks at the remote's refs and syncs every stage whose ref moved; heals
   * drift in the others. A revision that failed is not tried again unless
   * `force` (or, when it failed at a step that can pass on a retry, after a
   * backoff). Trigger `sync` (the user's `spore sync`) also releases a
   * rollback pin. Polls asked for while one of the same kind waits are one.
   */
  poll(trigger: string, options: { force?: boolean } = {}): Promise<StageStatus[]> {
    const key = `${trigger}|${options.force ?? false}`;
    const queued = this.waiting.get(key);
    if (queued) return queued;
    const run = this.serial(async () => {
      this.waiting.delete(key);
      const heads = await this.o.source.heads();
      const wanted = this.wanted(heads);
      for (const [name, st] of [...this.stages]) {
        if (name !== MAIN_STAGE && wanted.get(name) !== st.ref) await this.teardown(st, heads.has(st.ref) ? `${st.ref} is no longer previewed` : `${st.ref} is gone`);
      }
      for (const [name, ref] of wanted) {
        let st = this.stages.get(name);
        if (!st) {
          this.stages.set(name, (st = { stage: name, ref, namespace: name === MAIN_STAGE ? undefined : name }));
          this.saveStages();
        }
        const sha = heads.get(ref);
        if (!sha) {
          if (name === MAIN_STAGE) this.say(`reconciler: ${ref} does not exist in ${this.o.source.url}`);
          continue;
        }
        st.head = sha;
        await this.syncStage(st, sha, trigger, options.force ?? false);
      }
      return this.status();
    });
    this.waiting.set(key, run);
    run.catch(() => this.waiting.get(key) === run && this.waiting.delete(key));
    return run;
  }

  /** The stages the remote's refs call for: main, and a preview per matching ref (live previews keep their place under the cap). */
  private wanted(heads: Map<string, string>): Map<string, string> {
    const wanted = new Map<string, string>([[MAIN_STAGE, `refs/heads/${this.branch}`]]);
    if (!this.o.previews) return wanted;
    const closed = this.closedRefs();
    const gone = Object.keys(closed).filter((r) => !heads.has(r));
    if (gone.length) this.saveClosed(Object.fromEntries(Object.entries(closed).filter(([r]) => !gone.includes(r))));
    const refs = [...heads.keys()]
      .filter((r) => this.o.previews!.patterns.some((p) => matches(r, p)) && closed[r] !== heads.get(r))
      .sort((a, b) => Number(this.stages.get(stageName(b))?.ref === b) - Number(this.stages.get(stageName(a))?.ref === a) || a.localeCompare(b, 'en', { numeric: true }));
    let taken = 0;
    for (const ref of refs) {
      const name = stageName(ref);
      if (wanted.has(name)) {
        this.once(`reconciler: ${ref} would be stage ${name}, which ${wanted.get(name)} already has; no preview for it`);
        continue;
      }
      if (taken++ >= this.o.previews.max) continue;
      wanted.set(name, ref);
    }
    if (taken > this.o.previews.max) this.once(`reconciler: ${taken} preview refs, only ${this.o.previews.max} get a stage (--max-previews)`);
    return wanted;
  }

  /** Brings one stage to `sha`, unless it is pinned, already there, or `sha` failed and is not due for a retry: then only heals. */
  private async syncStage(st: StageStatus, sha: string, trigger: string, force: boolean): Promise<void> {
    if (st.pinned) {
      if (!force && trigger !== 'sync' && sha === st.headAtPin) return this.heal(st, trigger); // rolled back: wait for a push or a sync
      this.unpin(st);
    }
    if (!force && (sha === st.liveRevision || !this.due(st, sha))) return this.heal(st, trigger);
    await this.syncRevision(st, sha, trigger);
  }

  /** Whether `sha` may be synced: never tried, or it failed at a transient step and its backoff is over. */
  private due(st: StageStatus, sha: string): boolean {
    const last = st.lastAttempt?.revision === sha ? st.lastAttempt : this.o.history.getSync({ stage: st.stage, revision: sha });
    if (!last || last.result === 'succeeded') return true;
    return st.retry?.revision === sha && Date.now() >= st.retry.at;
  }

  private unpin(st: StageStatus): void {
    st.pinned = st.headAtPin = undefined;
    this.o.history.writeState(pinKey(st.stage), undefined);
  }

  /** Tells the reconciler a pull request closed: GitHub and GitLab keep its ref, so the ref alone never goes away. */
  closePreview(ref: string, head?: string): Promise<void> {
    return this.serial(async () => {
      if (!this.o.previews) return;
      const sha = head ?? (await this.o.source.heads()).get(ref) ?? '';
      // GitHub keeps every closed pull request's ref: remember the latest closes only
      const others = Object.entries(this.closedRefs()).filter(([r]) => r !== ref);
      this.saveClosed(Object.fromEntries([...others.slice(-(MAX_CLOSED - 1)), [ref, sha]]));
      const st = this.stages.get(stageName(ref));
      if (st && st.ref === ref) await this.teardown(st, 'its pull request closed');
    });
  }

  /** A reopened pull request gets its preview back at the next poll. In the queue, after a close that came first. */
  reopenPreview(ref: string): Promise<void> {
    return this.serial(async () => {
      const { [ref]: _reopened, ...closed } = this.closedRefs();
      this.saveClosed(closed);
    });
  }

  /** Refs of closed pull requests → their head when they closed (kept in the store). */
  private closedRefs(): Record<string, string> {
    return this.o.history.readState<Record<string, string>>(CLOSED_KEY) ?? {};
  }

  private saveClosed(closed: Record<string, string>): void {
    this.o.history.writeState(CLOSED_KEY, Object.keys(closed).length ? closed : undefined);
  }

  /** Into the history, and into the metrics. */
  private record(st: StageStatus, record: SyncRecord): void {
    this.o.history.recordSync(record);
    this.metrics.recordSync(record, st.stage === MAIN_STAGE ? 'main' : 'preview');
  }

  /**
   * The stage as an object of the store (kind Stage, in Spore's namespace), so
   * that `kubectl get stages` tells an operator what `spore status` tells a
   * developer: revisions, Ready, the failing step and message, recent syncs.
   * Removed with the stage. A failure to write it is said, never fatal.
   */
  private async writeStage(st: StageStatus, gone = false): Promise<void> {
    const ref = { apiVersion: API_VERSION, kind: 'Stage', namespace: this.o.namespace ?? 'spore-system', name: stageObjectName(this.o.app, st.stage) };
    try {
      if (gone) {
        await this.o.store.delete(ref);
        return;
      }
      const object = { apiVersion: ref.apiVersion, kind: ref.kind, metadata: { name: ref.name, namespace: ref.namespace, labels: { [APP_LABEL]: this.o.app } }, spec: { app: this.o.app, stage: st.stage, ref: st.ref, ...(st.namespace ? { namespace: st.namespace } : {}) } };
      await this.o.store.apply([object]);
      const [last, ...older] = this.sinceTeardown(st.stage);
      const failed = last?.result === 'failed' && last.revision !== st.liveRevision ? last : undefined;
      const ready = failed
        ? { status: 'False', reason: 'SyncFailed', message: `${last.revision.slice(0, 12)} failed at ${last.error?.step}: ${last.error?.message ?? ''}`.slice(0, 1000) }
        : st.liveRevision
          ? { status: 'True', reason: 'Synced', message: `serving ${st.liveRevision.slice(0, 12)}` }
          : { status: 'Unknown', reason: 'Progressing', message: 'no good revision yet' };
      const current = (await this.o.store.get(ref))?.status as { conditions?: { type: string; status: string; lastTransitionTime?: string }[] } | undefined;
      const before = current?.conditions?.find((c) => c.type === 'Ready');
      const summary = (r: SyncRecord) => ({
        revision: r.revision, result: r.result, trigger: r.trigger, startedAt: new Date(r.startedAt).toISOString(), durationMs: r.durationMs,
        ...(r.error ? { step: r.error.step, message: r.error.message.slice(0, 500) } : {}),
      });
      await this.o.store.setStatus(ref, {
        conditions: [{ type: 'Ready', ...ready, lastTransitionTime: before?.status === ready.status && before.lastTransitionTime ? before.lastTransitionTime : new Date().toISOString() }],
        ...(st.liveRevision ? { lastAppliedRevision: st.liveRevision } : {}),
        ...(last ? { lastAttemptedRevision: last.revision } : {}),
        ...(failed ? { failure: { revision: failed.revision, step: failed.error?.step ?? 'sync', ...(failed.error?.object ? { object: failed.error.object } : {}), message: (failed.error?.message ?? '').slice(0, 1000) } } : {}),
        history: [last, ...older].filter(Boolean).slice(0, 10).map(summary),
      });
    } catch (err) {
      this.once(`reconciler: ${st.stage}: could not write its Stage ${ref.namespace}/${ref.name}: ${(err as Error).message}`);
    }
  }

  /** Ready, observedGeneration and revision on each spore.dev object applied, where they changed (see status.ts). */
  private async writeStatuses(desired: KubeObject[], sha: string, result: ApplyResult): Promise<void> {
    const changed = new Set([...result.created, ...result.updated].map(refKey));
    const work = desired.filter((o) => o.apiVersion === API_VERSION && o.kind !== 'Stage');
    for (let i = 0; i < work.length; i += 8) {
      await Promise.all(work.slice(i, i + 8).map(async (o) => {
        const ref = refOf(o);
        const live = await this.o.store.get(ref);
        const status = live && statusFor(live, desired, sha, touched(o, (kind, name) => changed.has(refKey({ ...ref, kind, name }))));
        if (status) await this.o.store.setStatus(ref, status).catch((err: Error) => this.once(`reconciler: could not write the status of ${formatRef(ref)}: ${err.message}`));
      }));
    }
  }

  private inventory(st: StageStatus) {
    return { [APP_LABEL]: this.o.app, [STAGE_LABEL]: st.stage };
  }

  /** Renders a revision into objects (checkout, install, render or read), throwing a SyncFailure naming the step. */
  private async render(st: StageStatus, sha: string, timings: Record<string, number>): Promise<{ objects: KubeObject[]; outdir: string }> {
    const signal = this.stopping.signal;
    const stepped = async <T>(step: string, work: () => Promise<T>): Promise<T> => {
      const t = performance.now();
      this.enter(st, step);
      try {
        return await work();
      } catch (err) {
        // a failing fetch or npm ci may be the network: worth another try; a missing lockfile is not
        const transient = (err instanceof GitError && step === 'fetch') || (err instanceof InstallError && err.transient);
        throw err instanceof SyncFailure ? err : new SyncFailure(step, userMessage((err as Error).message), undefined, transient);
      } finally {
        timings[step] = Math.round(performance.now() - t);
      }
    };
    await stepped('fetch', () => this.o.source.fetch(signal));
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
      const r = await installDependencies(base, this.o.depsCache ?? join(this.o.workDir, 'deps'), { root: checkout, onProgress: (l) => this.say(`  npm: ${l}`), signal, owner: this.o.workDir });
      if (!r.cached) this.say(`reconciler: installed dependencies (lockfile ${r.key})`);
    });
    const outdir = join(this.o.workDir, 'renders', st.stage);
    const docs = await stepped('render', () => renderApp(base, outdir, { timeoutMs: this.o.renderTimeoutMs, signal, owner: this.o.workDir }));
    return { objects: docs.map((d) => d.object as KubeObject), outdir };
  }

  /** Validates and places objects in the stage; copies their URL archives where the dataplane reads them. */
  private prepare(st: StageStatus, objects: KubeObject[], outdir: string): KubeObject[] {
    try {
      const skipped: string[] = [];
      const prepared = prepareObjects(objects, { outdir, archiveDir: this.o.archiveDir, archiveUrl: this.o.archiveUrl, inventory: this.inventory(st), namespace: st.namespace, skipped: (x) => skipped.push(x), allowCommands: this.o.allowCommands ?? false });
      if (skipped.length) this.say(`reconciler: ${st.stage}: cluster-wide objects are the main stage's, not the preview's: left out ${skipped.join(', ')}`);
      // a preview's namespace is one of its objects: made before the rest, deleted with the stage
      if (st.namespace) prepared.unshift(...withInventory([{ apiVersion: 'v1', kind: 'Namespace', metadata: { name: st.namespace } }], this.inventory(st)));
      return prepared;
    } catch (err) {
      throw new SyncFailure('validate', (err as Error).message, (err as PrepareError).object);
    }
  }

  /** Installs the requirements of Python packages into them (the `build` step, timed when there is something to build). */
  private async build(objects: KubeObject[], timings: Record<string, number>): Promise<KubeObject[]> {
    const t = performance.now();
    try {
      const cacheDir = this.o.buildCache ?? join(this.o.workDir, 'python');
      const r = await buildPackages(objects, { archiveDir: this.o.archiveDir, archiveUrl: this.o.archiveUrl, cacheDir, signal: this.stopping.signal, owner: this.o.workDir, onProgress: (l) => this.say(`  build: ${l}`) });
      if (r.built.length) timings.build = Math.round(performance.now() - t);
      return r.objects;
    } catch (err) {
      throw new SyncFailure('build', (err as Error).message, (err as BuildError).object, (err as BuildError).transient);
    }
  }

  /**
   * Plans desired objects against the store: what the stage holds (by its
   * labels) and each desired object, compared by the part Spore applied.
   * Refuses to take over objects that are not this stage's.
   */
  private async planFor(st: StageStatus, desired: KubeObject[]): Promise<Plan> {
    const inv = this.inventory(st);
    const live = new Map((await this.o.store.held({ labels: inv })).map((o) => [refKey(refOf(o)), o]));
    for (const o of desired) {
      const key = refKey(refOf(o));
      const current = live.get(key) ?? (await this.o.store.get(refOf(o)));
      if (!current) continue;
      if (Object.entries(inv).some(([k, v]) => current.metadata.labels?.[k] !== v)) {
        throw new SyncFailure('apply', `${formatRef(refOf(o))} exists and is not managed by app ${this.o.app} stage ${st.stage}; refusing to take it over`, formatRef(refOf(o)));
      }
      live.set(key, current);
    }
    const p = plan(desired, [...live.values()], inv, (d, l) => this.o.store.inSync(d, l));
    // what a diff shows of a live object: the part Spore applied, not what the server added
    for (const e of p.entries) {
      if (!e.live) continue;
      const mine = this.o.store.applied(e.live);
      e.live = { ...mine, metadata: { ...mine.metadata, namespace: e.live.metadata.namespace } } as StoredObject;
    }
    return p;
  }

  private async syncRevision(st: StageStatus, sha: string, trigger: string, given?: { objects: KubeObject[] }): Promise<SyncRecord> {
    const started = Date.now();
    const record: SyncRecord = { stage: st.stage, ref: st.ref, revision: sha, startedAt: started, durationMs: 0, result: 'failed', trigger };
    this.say(`reconciler: ${st.stage}: syncing ${sha.slice(0, 12)} (${trigger})`);
    st.running = { revision: sha, trigger, startedAt: started, step: given ? 'apply' : 'fetch', stepStartedAt: started };
    try {
      let desired: KubeObject[];
      const timings: Record<string, number> = {};
      record.timings = timings;
      if (given) desired = given.objects;
      else {
        const { objects, outdir } = await this.render(st, sha, timings);
        const t = performance.now();
        this.enter(st, 'validate');
        desired = this.prepare(st, objects, outdir);
        timings.validate = Math.round(performance.now() - t);
        this.enter(st, 'build');
        desired = await this.build(desired, timings);
      }
      this.enter(st, 'apply');
      const p = await this.planFor(st, desired);
      const last = this.o.history.getSync({ stage: st.stage, revision: st.liveRevision ?? '-', result: 'succeeded' });
      // drift: live objects that differ from what this stage last applied, where the desired object did not change
      const healed = p.entries
        .filter((e) => (e.action === 'update' || e.action === 'create') && e.object && last?.applied?.[refKey(e.ref)] === digest(e.object))
        .map((e) => formatRef(e.ref));
      const tApply = performance.now();
      let result: ApplyResult;
      try {
        result = await this.o.store.apply(
          p.entries.filter((e) => e.object).map((e) => e.object!),
          { prune: { labels: this.inventory(st) } },
        );
      } catch (err) {
        // the API server away, busy or in conflict: the revision is tried again after a backoff, not rejected
        const e = err as { object?: string; transient?: boolean };
        throw new SyncFailure('apply', (err as Error).message, e.object, e.transient ?? false);
      }
      await this.writeStatuses(desired, sha, result);
      timings.apply = Math.round(performance.now() - tApply);
      Object.assign(record, {
        result: 'succeeded',
        counts: p.counts,
        healed: healed.length ? healed : undefined,
        objects: desired,
        applied: Object.fromEntries(desired.map((o) => [refKey(refOf(o)), digest(o)])),
      });
      st.liveRevision = sha;
      if (st.retry?.revision === sha) st.retry = undefined; // a heal of the live revision leaves a pending retry be
      this.say(`reconciler: ${st.stage}: ${sha.slice(0, 12)} applied — ${formatPlan(p).split('\n')[0].replace('plan: ', '')}${healed.length ? `; healed drift of ${healed.join(', ')}` : ''}`);
    } catch (err) {
      if (this.closed) {
        // stopped by close(), not rejected: the next start tries this revision again
        st.running = undefined;
        this.say(`reconciler: ${st.stage}: ${sha.slice(0, 12)} not finished: shutting down`);
        return record;
      }
      const f = err instanceof SyncFailure ? err : new SyncFailure('sync', (err as Error).message);
      record.error = { step: f.step, object: f.object, message: f.message };
      let next = '';
      if (f.transient) {
        const attempts = (st.retry?.revision === sha ? st.retry.attempts : 0) + 1;
        if (attempts <= MAX_RETRIES) {
          const wait = this.backoff(attempts);
          st.retry = { revision: sha, attempts, at: Date.now() + wait };
          Object.assign(record.error, { retryAt: st.retry.at, attempts });
          next = `; trying again in ${Math.round(wait / 1000)}s (attempt ${attempts + 1} of ${MAX_RETRIES + 1})`;
        } else {
          st.retry = undefined;
          next = `; gave up after ${attempts} attempts (push again or spore sync --force)`;
        }
      }
      this.say(`reconciler: ${st.stage}: ${sha.slice(0, 12)} rejected at ${f.step}${f.object ? ` (${f.object})` : ''}: ${f.message}${next}\nreconciler: ${st.stage}: still serving ${st.liveRevision?.slice(0, 12) ?? 'nothing'}`);
    }
    st.running = undefined;
    // who pushed it and why, failed or not (unknown only when the fetch failed)
    const info = await this.o.source.commit(sha).catch(() => undefined);
    if (info) Object.assign(record, { author: info.author, message: info.message });
    record.durationMs = Date.now() - started;
    st.lastAttempt = { revision: sha, result: record.result, at: started, error: record.error };
    this.record(st, record);
    await this.writeStage(st);
    return record;
  }

  /** Puts back what changed in the store out of band since the live revision was applied (no render needed). */
  private async heal(st: StageStatus, trigger: string): Promise<void> {
    if (!st.liveRevision || (st.healAfter && Date.now() < st.healAfter.at)) return;
    // one record per poll (the live revision's latest good sync), not the stage's history
    const last = this.o.history.getSync({ stage: st.stage, revision: st.liveRevision, result: 'succeeded' });
    if (!last?.objects) return;
    const p = await this.planFor(st, last.objects).catch((err: Error) => {
      // an object of the app's replaced by one that is not: left alone, and said (once)
      this.once(`reconciler: ${st.stage}: cannot heal drift: ${err.message}`);
    });
    if (!p || p.counts.create + p.counts.update + p.counts.prune === 0) return;
    const rec = await this.syncRevision(st, st.liveRevision, `${trigger}: drift`, { objects: last.objects });
    const attempts = rec.result === 'failed' ? (st.healAfter?.attempts ?? 0) + 1 : 0;
    st.healAfter = attempts ? { attempts, at: Date.now() + this.backoff(attempts) } : undefined;
  }

  /** The wait before try number `attempts + 1`: doubling from retryBaseMs, at most 15 minutes. */
  private backoff(attempts: number): number {
    return Math.min((this.o.retryBaseMs ?? 30_000) * 2 ** (attempts - 1), 15 * 60_000);
  }

  /** The latest good sync of `revision` (a prefix) in the stage's current life, with the objects it applied. */
  private goodSync(st: StageStatus, revision: string): SyncRecord | undefined {
    return this.sinceTeardown(st.stage).find((s) => s.result === 'succeeded' && s.revision.startsWith(revision));
  }

  /** Removes a stage's objects (its instances stop as their functions go), records why, and forgets it. */
  private async teardown(st: StageStatus, why: string): Promise<void> {
    const started = Date.now();
    const r = await this.o.store.apply([], { prune: { labels: this.inventory(st) } });
    this.stages.delete(st.stage);
    this.saveStages();
    this.o.history.writeState(pinKey(st.stage), undefined);
    for (const sub of ['checkouts', 'renders']) rmSync(join(this.o.workDir, sub, st.stage), { recursive: true, force: true });
    const counts = { create: 0, update: 0, unchanged: 0, prune: r.pruned.length };
    this.record(st, { stage: st.stage, ref: st.ref, revision: st.liveRevision ?? '', startedAt: started, durationMs: Date.now() - started, result: 'succeeded', trigger: `teardown: ${why}`, counts, teardown: true });
    await this.writeStage(st, true);
    this.say(`reconciler: ${st.stage}: torn down, ${why}; removed ${r.pruned.length} object(s)`);
  }

  /** What syncing the branch head would change, object by object and field by field, without applying it. */
  diff(): Promise<Diff> {
    return this.serial(async () => {
      const st = this.stages.get(MAIN_STAGE)!;
      const sha = (await this.o.source.heads()).get(st.ref);
      if (!sha) throw new Error(`${st.ref} does not exist in ${this.o.source.url}`);
      const { objects, outdir } = await this.render(st, sha, {});
      const p = await this.planFor(st, await this.build(this.prepare(st, objects, outdir), {}));
      return { revision: sha, stage: st.stage, counts: p.counts, objects: planChanges(p) };
    });
  }

  /**
   * Re-applies a previous good revision and pins it until the next push or
   * sync. By default the one deployed before the live one, so that rolling
   * back twice goes two revisions back.
   */
  rollback(revision?: string, stage = MAIN_STAGE): Promise<SyncRecord> {
    return this.serial(async () => {
      const st = this.stages.get(stage);
      if (!st) throw new Error(`no stage ${stage}`);
      const target = revision ? this.goodSync(st, revision) : this.previousGood(st);
      if (!target?.objects) throw new Error(revision ? `no good sync of ${revision} in stage ${stage} to roll back to` : `no earlier good revision in stage ${stage} to roll back to`);
      // the head now, so that the pin lasts until it moves; if the remote cannot be listed, the head last seen
      const seen = st.pinned ? st.headAtPin : (st.head ?? st.lastAttempt?.revision);
      const head = (await this.o.source.heads().catch(() => undefined))?.get(st.ref) ?? seen;
      const rec = await this.syncRevision(st, target.revision, 'rollback', { objects: target.objects });
      if (rec.result === 'succeeded') {
        Object.assign(st, { pinned: target.revision, headAtPin: head });
        this.o.history.writeState(pinKey(stage), { revision: target.revision, head });
      }
      return rec;
    });
  }

  /** The good revision a push or sync deployed before the live one (rollbacks and heals do not count). */
  private previousGood(st: StageStatus): SyncRecord | undefined {
    const order: SyncRecord[] = []; // newest first, each revision at its latest deployment
    for (const s of this.sinceTeardown(st.stage)) {
      if (s.result !== 'succeeded' || !s.objects || syncKind(s) !== 'revision') continue;
      if (!order.some((o) => o.revision === s.revision)) order.push(s);
    }
    const i = order.findIndex((s) => s.revision === st.liveRevision);
    return i < 0 ? order.find((s) => s.revision !== st.liveRevision) : order[i + 1];
  }

  status(): StageStatus[] {
    return [...this.stages.values()].map((s) => {
      const failure = this.headFailure(s);
      const state = s.running ? 'syncing' : s.pinned ? 'pinned' : failure ? 'failed' : s.liveRevision && (!s.head || s.head === s.liveRevision) ? 'synced' : 'pending';
      return { ...s, running: s.running && { ...s.running }, state, failure };
    });
  }

  /** The failed attempt at the stage's head, when the head is not live because it failed. */
  private headFailure(s: StageStatus): StageStatus['failure'] {
    if (!s.head || s.head === s.liveRevision) return undefined;
    const last = s.lastAttempt?.revision === s.head ? { ...s.lastAttempt, startedAt: s.lastAttempt.at } : this.o.history.getSync({ stage: s.stage, revision: s.head });
    return last?.result === 'failed' ? { revision: s.head, at: last.startedAt, error: last.error } : undefined;
  }

  history(stage?: string, limit = 20): Omit<SyncRecord, 'objects' | 'applied'>[] {
    return this.o.history.listSyncs({ stage, limit }).map(({ objects: _o, applied: _a, ...rest }) => rest);
  }

  /** Stops polling and whatever step is running (npm ci, render, fetch), and waits for the queue to empty. */
  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.timer);
    this.stopping.abort();
    await this.queue.catch(() => {});
  }
}
