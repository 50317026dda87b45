// One reconciler with its store and dataplane per test, on a real Git
// repository, sharing the run's dependency cache.
import { join } from 'node:path';
import { request } from 'undici';
import { afterEach, beforeAll } from 'vitest';
import { startDataplane, type Dataplane } from '../../dataplane/index.js';
import { GitSource } from '../../reconciler/git-source.js';
import { Reconciler, type ReconcilerOptions, type StageStatus } from '../../reconciler/reconciler.js';
import { SqliteStore } from '../../store/index.js';
import { tempDir } from '../helpers.js';
import { appTemplate, depsCache, handler, INSTALL_BOUND_MS, mainTs, Repo, templateReady } from './gitrepo.js';

export interface Env {
  repo: Repo;
  state: string;
  store: SqliteStore;
  dp: Dataplane;
  rec: Reconciler;
  lines: string[];
  get(path: string, headers?: Record<string, string>): Promise<{ status: number; body: string }>;
  /** Closes the reconciler and starts a new one on the same store, as a restarted process would (with other options if given). */
  restart(overrides?: Partial<ReconcilerOptions>): Promise<Reconciler>;
}

/** Registers the file's hooks; `template()` is the app template (package.json, lockfile, cdk8s.yaml). */
export function reconcilerHarness() {
  const template = appTemplate();
  const deps = depsCache(); // one dependency cache for the run: the lockfile is the same everywhere
  const envs: Env[] = [];
  beforeAll(templateReady, INSTALL_BOUND_MS);
  afterEach(async () => {
    for (const e of envs.splice(0)) {
      await e.rec.close();
      await e.dp.close();
      await e.store.close();
    }
  });

  async function setup(options: Partial<ReconcilerOptions> = {}, repo = new Repo(template)): Promise<Env> {
    const state = tempDir('spore-rec-');
    const store = new SqliteStore(join(state, 'spore.db'));
    const dp = await startDataplane({ store, stateDir: state, port: 0, report: () => {} });
    const lines: string[] = [];
    const make = (overrides: Partial<ReconcilerOptions> = {}) =>
      new Reconciler({
        store,
        history: store,
        source: new GitSource(repo.url, join(state, 'mirror')),
        workDir: join(state, 'work'),
        archiveDir: join(state, 'archives'),
        app: 'shop',
        pollMs: 3_600_000,
        depsCache: deps,
        report: (l) => lines.push(l),
        ...options,
        ...overrides,
      });
    const env: Env = {
      repo,
      state,
      store,
      dp,
      rec: make(),
      lines,
      async get(path, headers) {
        const res = await request(`${dp.url}${path}`, { headers });
        return { status: res.statusCode, body: await res.body.text() };
      },
      async restart(overrides) {
        await env.rec.close();
        env.rec = make(overrides);
        return env.rec;
      },
    };
    envs.push(env);
    return env;
  }

  return { setup, template: () => template, deps: () => deps };
}

/** Files of a revision: one NodeFunction per name, answering `<text> <name>` at GET /<name>. */
export const v = (text: string, fns = ['hello']) => ({ 'main.ts': mainTs(fns), ...Object.fromEntries(fns.map((f) => [`functions/${f}.ts`, handler(`${text} ${f}`)])) });

export const stageOf = (e: Env, stage: string): StageStatus | undefined => e.rec.status().find((s) => s.stage === stage);
export const mainStage = (e: Env): StageStatus => stageOf(e, 'main')!;
