// Once per test run: Spore packed as a user gets it (`npm pack`), and an app
// template that depends on that tarball from inside its own repository, with
// its lockfile. Suites that deploy apps from Git copy the template; they share
// one dependency cache, so the template's dependencies install once per run.
// And one Kubernetes API server (etcd + kube-apiserver, test/cluster/) for the
// suites that need a cluster; they wait for it with clusterReady().
import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestProject } from 'vitest/node';
import { installDependencies } from '../reconciler/install.js';
import { startForRun } from './cluster/run-state.js';

declare module 'vitest' {
  export interface ProvidedContext {
    /** A folder with package.json (spore from vendor/<tarball>), package-lock.json, cdk8s.yaml and vendor/. */
    appTemplate: string;
    /** One npm install cache for every reconciler of the run. */
    depsCache: string;
    /** The run's API server folder: its state, logs and, once it is up, outcome.json. */
    clusterDir: string;
  }
}

const ROOT = new URL('..', import.meta.url).pathname;

export default function setup(project: TestProject): () => Promise<void> {
  const base = mkdtempSync(join(tmpdir(), 'spore-run-'));
  // lib/ is built by `npm test`'s pretest; packing runs no scripts
  const packed = JSON.parse(execFileSync('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', base, ROOT], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }))[0].filename as string;
  const template = join(base, 'template');
  mkdirSync(join(template, 'vendor'), { recursive: true });
  copyFileSync(join(base, packed), join(template, 'vendor', packed));
  writeFileSync(
    join(template, 'package.json'),
    JSON.stringify({ name: 'shop', private: true, type: 'module', dependencies: { spore: `file:vendor/${packed}`, cdk8s: '^2.70.106', constructs: '^10.8.1', tsx: '^4.23.15' } }, null, 2),
  );
  execFileSync('npm', ['install', '--package-lock-only', '--no-audit', '--no-fund', '--loglevel=error'], { cwd: template, stdio: 'pipe' });
  writeFileSync(join(template, 'cdk8s.yaml'), 'language: typescript\napp: npx tsx main.ts\n');
  project.provide('appTemplate', template);
  project.provide('depsCache', join(base, 'deps'));
  // Installed in the background: suites that need it wait for it (templateReady), the others do not.
  const installing = installDependencies(template, join(base, 'deps')).then(
    () => {},
    () => {}, // a failure shows again in the suites that wait
  );
  // Started in the background too (the first run on a machine builds the binaries).
  const clusterDir = join(base, 'cluster');
  mkdirSync(clusterDir);
  project.provide('clusterDir', clusterDir);
  const stopCluster = startForRun(clusterDir);
  return async () => {
    await installing;
    await stopCluster();
    rmSync(base, { recursive: true, force: true });
  };
}
