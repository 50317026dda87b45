// `spore up --git URL` and `spore reconciler`: the reconciler following a Git
// repository, with the dataplane in the same process (up) or without (reconciler).
import { randomBytes } from 'node:crypto';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import parseDuration from 'parse-duration';
import { appName } from '../api/index.js';
import { startDataplane, type Dataplane } from '../dataplane/index.js';
import { GitSource } from '../reconciler/git-source.js';
import { DEFAULT_PREVIEW_PATTERNS, MAIN_STAGE, Reconciler } from '../reconciler/reconciler.js';
import { reconcilerServer } from '../reconciler/server.js';
import { SqliteStore, type ResourceStore, type SyncHistory } from '../store/index.js';
import { loadKubeConfig } from './kube.js';
import { portOf } from './port.js';
import { UP_FILE } from './target.js';
import { secretsFolder } from './up.js';

export interface GitOptions {
  git: string;
  branch: string;
  poll: string;
  webhookSecret?: string;
  previews?: boolean;
  previewRefs?: string;
  maxPreviews: string;
  app?: string;
  manifests?: boolean;
  path?: string;
  depsCache?: string;
  allowCommands?: boolean;
  stateDir: string;
  reconcilerPort: string;
  reconcilerHost: string;
  port?: string;
  host?: string;
  /** `spore reconciler` on a cluster: a kubeconfig file, or the pod's own service account. */
  kubeconfig?: string;
  inCluster?: boolean;
  namespace?: string;
  archiveUrl?: string;
  secretsDir?: string;
  /** spore up --git --kubeconfig: the cluster the WatchTriggers watch. */
  watchKubeconfig?: string;
}

/** The store and history the reconciler writes to: the state folder's SQLite file, or a cluster's API. */
async function openTarget(o: GitOptions, stateDir: string, app: string, say: (line: string) => void): Promise<{ store: ResourceStore; history: SyncHistory; local?: SqliteStore; close: () => Promise<void>; where: string }> {
  if (!o.kubeconfig && !o.inCluster) {
    const store = new SqliteStore(join(stateDir, 'spore.db'));
    return { store, history: store, local: store, close: () => store.close(), where: join(stateDir, 'spore.db') };
  }
  const kc = await loadKubeConfig(o);
  const { KubeStore } = await import('../store/kubernetes.js');
  const { KubeHistory } = await import('../store/kube-history.js');
  const namespace = o.namespace ?? 'spore-system';
  const store = await KubeStore.open({ kubeconfig: kc, namespace, report: say });
  try {
    const history = await KubeHistory.open(store.client, namespace, app, say);
    const close = async () => {
      // the history's last writes first (while the API answers), then stop
      await Promise.race([history.flush(), new Promise((r) => setTimeout(r, 10_000).unref())]);
      history.close();
      await store.close();
    };
    return { store, history, where: `${store.client.server} (namespace ${namespace})`, close };
  } catch (err) {
    await store.close();
    throw err;
  }
}


export async function runGit(o: GitOptions, withDataplane: boolean): Promise<void> {
  const pollMs = parseDuration(o.poll);
  if (pollMs == null || pollMs < 1000) throw new Error(`--poll "${o.poll}": give a duration of at least 1s, such as 30s or 5m`);
  const maxPreviews = Number(o.maxPreviews);
  if (!Number.isInteger(maxPreviews) || maxPreviews < 0) throw new Error(`--max-previews must be a whole number (got "${o.maxPreviews}")`);
  const reconcilerPort = portOf(o.reconcilerPort, '--reconciler-port');
  const stateDir = resolve(o.stateDir);
  mkdirSync(stateDir, { recursive: true });
  const app = appName(o.app ?? basename(o.git.replace(/\/+$/, '')));
  if (o.app && app !== o.app) throw new Error(`--app "${o.app}": an app name is a DNS label (lowercase letters, digits and -), e.g. "${app}"`);
  const patterns = o.previewRefs ? o.previewRefs.split(',').map((p) => p.trim()).filter(Boolean) : DEFAULT_PREVIEW_PATTERNS;
  const badPattern = patterns.find((p) => !p.startsWith('refs/'));
  if (badPattern) throw new Error(`--preview-refs: "${badPattern}" is not a ref pattern (e.g. refs/heads/preview/*)`);
  // the API's token: whoever can read the state folder can use the CLI; nobody else
  const apiToken = process.env.SPORE_API_TOKEN || randomBytes(24).toString('base64url');
  // on a terminal, npm's progress lines overwrite one another; elsewhere they are plain lines
  const tty = process.stdout.isTTY;
  const say = (m: string) => {
    if (tty && m.startsWith('  npm:')) process.stdout.write(`\r\x1b[K${m.slice(0, (process.stdout.columns ?? 80) - 1)}`);
    else process.stdout.write(`${tty ? '\r\x1b[K' : ''}${m}\n`);
  };
  const { store, history, local, close: closeStore, where } = await openTarget(o, stateDir, app, say);
  let reconciler: Reconciler;
  let server: ReturnType<typeof reconcilerServer>;
  let dataplane: Dataplane | undefined;
  try {
    reconciler = new Reconciler({
      store,
      history,
      source: new GitSource(o.git, join(stateDir, 'git', 'mirror')),
      workDir: join(stateDir, 'work'),
      archiveDir: join(stateDir, 'archives'),
      app,
      branch: o.branch,
      mode: o.manifests ? 'manifests' : 'render',
      path: o.path,
      depsCache: o.depsCache && o.depsCache !== '<state-dir>/work/deps' ? resolve(o.depsCache) : undefined,
      pollMs,
      allowCommands: o.allowCommands ?? false,
      previews: o.previews ? { patterns, max: maxPreviews } : undefined,
      archiveUrl: o.archiveUrl,
      namespace: o.namespace,
      report: say,
    });
    server = reconcilerServer({ reconciler, webhookSecret: o.webhookSecret ?? process.env.SPORE_WEBHOOK_SECRET, apiToken, report: say });
    if (withDataplane && local) {
      const kubeconfig = o.watchKubeconfig ? await loadKubeConfig({ kubeconfig: o.watchKubeconfig }) : undefined;
      dataplane = await startDataplane({ store: local, stateDir, port: portOf(o.port ?? '8080', '--port'), host: o.host, secretsDir: secretsFolder(o.secretsDir), kubeconfig });
    }
    await server.listen({ port: reconcilerPort, host: o.reconcilerHost });
  } catch (err) {
    await dataplane?.close();
    await closeStore();
    throw err;
  }
  const reconcilerUrl = `http://${o.reconcilerHost}:${(server.server.address() as { port: number }).port}`;
  // a new file each start, so that it is created owner-only (mode applies only to new files)
  rmSync(join(stateDir, UP_FILE), { force: true });
  writeFileSync(join(stateDir, UP_FILE), JSON.stringify({ url: dataplane?.url ?? reconcilerUrl, reconcilerUrl, apiToken, pid: process.pid, git: o.git }), { mode: 0o600 });
  say(`spore: following ${o.git} (${o.branch}), polling every ${o.poll}, applying to ${where}`);
  if (dataplane) say(`spore: serving on ${dataplane.url}`);
  say(`spore: reconciler on ${reconcilerUrl}${o.webhookSecret ? ` (webhook: POST ${reconcilerUrl}/webhook)` : ''}`);
  // stop cleanly on a signal even while the first sync runs
  let stopped = false;
  const finished = new Promise<void>((done) => {
    const stop = async (signal: string) => {
      stopped = true;
      say(`spore: ${signal}, shutting down`);
      // together: the reconciler stops its running step (npm ci, render), which ends the CLI calls waiting on it
      await Promise.all([reconciler.close(), server.close()]);
      await dataplane?.close();
      await closeStore();
      rmSync(join(stateDir, UP_FILE), { force: true });
      done();
    };
    process.once('SIGINT', () => void stop('SIGINT'));
    process.once('SIGTERM', () => void stop('SIGTERM'));
  });
  await reconciler.start();
  if (!stopped && !reconciler.status().find((s) => s.stage === MAIN_STAGE)?.liveRevision) {
    say('spore: nothing is served yet: the branch has no good revision (push a fix, or see spore status)');
  }
  await finished;
}
