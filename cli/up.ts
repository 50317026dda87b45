// `spore up`: synthesize an app, apply it to the local store, and serve it
// with the dataplane, in one process.
import { existsSync, readFileSync, rmSync, statSync, watch, writeFileSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import { APP_LABEL, MAIN_STAGE, STAGE_LABEL, appName } from '../api/index.js';
import { startDataplane, type Dataplane } from '../dataplane/index.js';
import { buildPackages } from '../reconciler/build.js';
import { prepareObjects } from '../reconciler/prepare.js';
import { renderApp } from '../reconciler/render.js';
import { SqliteStore, type ApplyResult } from '../store/index.js';
import { loadKubeConfig } from './kube.js';
import { UP_FILE } from './target.js';


export interface UpOptions {
  port: string;
  host: string;
  watch?: boolean;
  stateDir?: string;
  /** The app's name (labels its objects); by default its package.json name, else its folder's. */
  app?: string;
  /** The Secrets functions name: `<dir>/<namespace>/<name>/<key>` files. */
  secretsDir?: string;
  /** The cluster WatchTriggers watch. */
  kubeconfig?: string;
}

/** The --secrets-dir folder, checked at start: a typo would otherwise show only at a function's first call. */
export function secretsFolder(dir: string | undefined): string | undefined {
  if (dir === undefined) return undefined;
  const full = resolve(dir);
  if (!existsSync(full) || !statSync(full).isDirectory()) throw new Error(`--secrets-dir ${dir}: no such folder (it holds <namespace>/<name>/<key> files, one per key of each Secret)`);
  return full;
}

export interface LocalApp {
  dir: string;
  stateDir: string;
  store: SqliteStore;
  /** Synthesizes, validates and applies; throws with a message that says what is wrong. */
  deploy(): Promise<ApplyResult>;
}

/**
 * Who the app is: `--app`, else its package.json name, else its folder's
 * name. It comes from the app, so a copied folder is the same app until its
 * package.json says otherwise.
 */
export function appIdentity(dir: string, given?: string): string {
  if (given) {
    const name = appName(given);
    if (name !== given) throw new Error(`--app "${given}": an app name is a DNS label (lowercase letters, digits and -), e.g. "${name}"`);
    return name;
  }
  const pkg = join(dir, 'package.json');
  let fromPackage: unknown;
  try {
    fromPackage = existsSync(pkg) ? (JSON.parse(readFileSync(pkg, 'utf8')) as { name?: unknown }).name : undefined;
  } catch (err) {
    throw new Error(`${pkg} is not valid JSON: ${(err as Error).message}`);
  }
  return appName(typeof fromPackage === 'string' && fromPackage ? fromPackage.replace(/^@[^/]+\//, '') : basename(dir));
}

/** A state folder serves one app: objects labelled as another's mean it was copied or shared by mistake. */
async function checkOwner(store: SqliteStore, app: string, stateDir: string, dir: string): Promise<void> {
  const others = new Set((await store.list()).map((o) => o.metadata.labels?.[APP_LABEL]).filter((a): a is string => Boolean(a) && a !== app));
  if (!others.size) return;
  throw new Error(
    `the state folder ${stateDir} holds the objects of app ${[...others].map((a) => `"${a}"`).join(', ')}, not of "${app}" (${dir}): ` +
      `was it copied along with the app folder? Delete it to start afresh (rm -rf ${stateDir}), pass another --state-dir, ` +
      `or --app ${[...others][0]} if this is that app renamed.`,
  );
}

export function localApp(dir: string, stateDir: string, report: (line: string) => void = () => {}, app = appIdentity(dir)): LocalApp {
  const store = new SqliteStore(join(stateDir, 'spore.db'));
  const inventory = { [APP_LABEL]: app, [STAGE_LABEL]: MAIN_STAGE };
  return {
    dir,
    stateDir,
    store,
    async deploy() {
      await checkOwner(store, app, stateDir, dir);
      const outdir = join(stateDir, 'render');
      const archiveDir = join(stateDir, 'archives');
      const docs = await renderApp(dir, outdir);
      let objects;
      try {
        objects = prepareObjects(docs.map((d) => d.object), { outdir, archiveDir, inventory, allowCommands: true });
      } catch (err) {
        throw new Error(`the rendered manifests are invalid:\n${(err as Error).message}`);
      }
      const built = await buildPackages(objects, { archiveDir, cacheDir: join(stateDir, 'cache', 'python'), onProgress: (l) => report(`  ${l}`) }).catch((err) => {
        throw new Error(`cannot build ${err.object ?? 'a package'}: ${err.message}`);
      });
      return store.apply(built.objects, { prune: { labels: inventory } });
    },
  };
}

function summary(r: ApplyResult): string {
  return `${r.created.length} created, ${r.updated.length} updated, ${r.unchanged.length} unchanged, ${r.pruned.length} pruned`;
}

export async function upCommand(dirArg: string | undefined, options: UpOptions): Promise<void> {
  const dir = resolve(dirArg ?? '.');
  const port = Number(options.port);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`--port must be a port number (got "${options.port}")`);
  const stateDir = resolve(options.stateDir ?? join(dir, '.spore'));
  const secretsDir = secretsFolder(options.secretsDir);
  const say = (m: string) => process.stdout.write(`${m}\n`);
  const app = localApp(dir, stateDir, say, appIdentity(dir, options.app));
  say(`spore: synthesizing ${dir}`);
  try {
    say(`spore: applied (${summary(await app.deploy())})`);
  } catch (err) {
    await app.store.close();
    throw err;
  }
  let dataplane: Dataplane;
  try {
    const kubeconfig = options.kubeconfig ? await loadKubeConfig({ kubeconfig: options.kubeconfig }) : undefined;
    dataplane = await startDataplane({ store: app.store, stateDir, port, host: options.host, secretsDir, kubeconfig });
  } catch (err) {
    await app.store.close();
    throw new Error(`cannot start the dataplane on ${options.host}:${port}: ${(err as Error).message}`);
  }
  writeFileSync(join(stateDir, UP_FILE), JSON.stringify({ url: dataplane.url, pid: process.pid }));
  const printRoutes = () => {
    for (const r of dataplane.router.routeList) {
      const target = r.functions.length === 1 ? r.functions[0].name : r.functions.map((f) => `${f.name} ${f.weight}%`).join(', ');
      say(`  ${r.methods.join(',').padEnd(8)} ${dataplane.url}${r.path}${r.host ? ` (host ${r.host})` : ''} → ${target}`);
    }
  };
  // one line per timer: what it calls, its schedule and its next run
  const printTimers = () => {
    for (const t of dataplane.timers.list()) say(`  timer    ${t.name} "${t.cron}" ${t.timeZone} → ${t.function}, next ${t.nextRun ?? 'never'}`);
  };
  say(`spore: serving on ${dataplane.url}`);
  printRoutes();
  printTimers();

  let watcher: ReturnType<typeof watch> | undefined;
  if (options.watch) {
    let timer: NodeJS.Timeout | undefined;
    let running = Promise.resolve();
    const ignored = /(^|\/)(node_modules|dist|\.spore|\.git|cdk8s\.out)(\/|$)/;
    watcher = watch(dir, { recursive: true }, (_event, file) => {
      if (!file || ignored.test(String(file)) || String(file).startsWith(basename(stateDir))) return;
      clearTimeout(timer);
      timer = setTimeout(() => {
        running = running.then(async () => {
          say(`spore: ${file} changed, synthesizing`);
          try {
            say(`spore: applied (${summary(await app.deploy())})`);
            await dataplane.router.reload();
            printRoutes();
            printTimers();
          } catch (err) {
            say(`spore: ${(err as Error).message}\nspore: still serving the last good version`);
          }
        });
      }, 200);
    });
    say(`spore: watching ${dir} for changes`);
  }

  await new Promise<void>((done) => {
    const stop = async (signal: string) => {
      say(`spore: ${signal}, shutting down`);
      watcher?.close();
      await dataplane.close();
      await app.store.close();
      rmSync(join(stateDir, UP_FILE), { force: true });
      done();
    };
    process.once('SIGINT', () => void stop('SIGINT'));
    process.once('SIGTERM', () => void stop('SIGTERM'));
  });
}
