// Real Git repositories for the reconciler's tests: a bare "remote" reached
// through a file:// URL, and a working clone that commits and pushes.
import { execFileSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { inject } from 'vitest';
import { installDependencies } from '../../reconciler/install.js';
import { tempDir } from '../helpers.js';

export const git = (cwd: string, ...args: string[]) => execFileSync('git', args, { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim();

/**
 * The app template of the run (see test/global-setup.ts): package.json with
 * spore from a tarball inside the repository, its lockfile, cdk8s.yaml.
 */
export function appTemplate(): string {
  return inject('appTemplate');
}

/** The run's shared npm install cache (the template's dependencies install once). */
export function depsCache(): string {
  return inject('depsCache');
}

/**
 * Waits for the template's dependencies in the shared cache (installed once for
 * the run, in the background from the global setup). Installs into a copy of
 * the template: suites run at once, and each links its own node_modules.
 */
export async function templateReady(): Promise<void> {
  const copy = tempDir('spore-template-');
  for (const f of ['package.json', 'package-lock.json', 'vendor']) cpSync(join(appTemplate(), f), join(copy, f), { recursive: true });
  await installDependencies(copy, depsCache());
}

/** For a beforeAll: installing spore's dependencies (better-sqlite3 compiles) takes minutes on a cold cache. */
export const INSTALL_BOUND_MS = 900_000;

/** main.ts with `functions` NodeFunctions, each with a GET route /<name>. */
export function mainTs(functions: string[], extra = ''): string {
  return `import { App, Chart } from 'cdk8s';
import { Environment, NodeFunction } from 'spore';
const app = new App();
const chart = new Chart(app, 'shop');
const node = Environment.node(chart, 'node', { poolSize: 1 });
${functions.map((f) => `new NodeFunction(chart, '${f}', { environment: node, entry: 'functions/${f}.ts' }).addRoute('GET', '/${f}');`).join('\n')}
${extra}
app.synth();
`;
}

export const handler = (text: string) => `export default () => new Response(${JSON.stringify(text)});\n`;

export class Repo {
  readonly remote: string;
  readonly work: string;

  constructor(template?: string) {
    const base = tempDir('spore-git-');
    this.remote = join(base, 'origin.git');
    this.work = join(base, 'work');
    git(base, 'init', '--quiet', '--bare', '--initial-branch=main', this.remote);
    git(base, 'init', '--quiet', '--initial-branch=main', this.work);
    git(this.work, 'remote', 'add', 'origin', this.remote);
    git(this.work, 'config', 'user.email', 'dev@example.com');
    git(this.work, 'config', 'user.name', 'Dev');
    if (template) {
      for (const f of ['package.json', 'package-lock.json', 'cdk8s.yaml', 'vendor']) cpSync(join(template, f), join(this.work, f), { recursive: true });
      writeFileSync(join(this.work, '.gitignore'), 'node_modules/\ndist/\n');
    }
  }

  get url(): string {
    return `file://${this.remote}`;
  }

  /** Writes files (undefined deletes), commits, pushes to `branch`; returns the commit. */
  commit(message: string, files: Record<string, string | undefined>, branch = 'main'): string {
    const current = git(this.work, 'symbolic-ref', '--short', 'HEAD');
    if (current !== branch) {
      const exists = git(this.work, 'branch', '--list', branch);
      git(this.work, 'checkout', '--quiet', ...(exists ? [branch] : ['-b', branch]));
    }
    for (const [path, text] of Object.entries(files)) {
      const full = join(this.work, path);
      if (text === undefined) rmSync(full, { force: true });
      else {
        mkdirSync(join(full, '..'), { recursive: true });
        writeFileSync(full, text);
      }
    }
    git(this.work, 'add', '-A');
    git(this.work, 'commit', '--quiet', '--allow-empty', '-m', message);
    git(this.work, 'push', '--quiet', '--force', 'origin', `HEAD:refs/heads/${branch}`);
    const sha = git(this.work, 'rev-parse', 'HEAD');
    if (branch !== 'main') git(this.work, 'checkout', '--quiet', 'main');
    return sha;
  }

  deleteBranch(branch: string): void {
    this.deleteRef(`refs/heads/${branch}`);
  }

  /** Points any ref of the remote at a commit, as GitHub does with refs/pull/<n>/head. */
  pushRef(ref: string, sha: string): void {
    git(this.work, 'push', '--quiet', '--force', 'origin', `${sha}:${ref}`);
  }

  deleteRef(ref: string): void {
    git(this.work, 'push', '--quiet', 'origin', `:${ref}`);
  }

  has(path: string): boolean {
    return existsSync(join(this.work, path));
  }
}
