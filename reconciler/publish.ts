// Publishing rendered manifests for Argo CD (the rendered-manifests pattern):
// synthesize an app, validate what it wrote, and commit exactly that onto a
// branch of the app's own repository, one commit per source commit. Argo CD
// (or `spore up --git … --manifests`) then syncs that branch and runs nothing.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { simpleGit } from 'simple-git';
import { prepareObjects } from './prepare.js';
import { renderApp } from './render.js';

export interface PublishOptions {
  /** Branch that receives the rendered manifests. @default 'rendered' */
  branch?: string;
  /** Push the branch to this remote after committing. */
  push?: string;
}

export interface PublishResult {
  branch: string;
  /** The new commit on the branch, or the branch's head when nothing changed. */
  commit: string;
  changed: boolean;
  objects: number;
  source: string;
}

/** What git needs from the environment; simple-git refuses to pass on editors, askpass and the like. */
function gitEnv(): Record<string, string> {
  return Object.fromEntries(Object.entries(process.env).filter((e): e is [string, string] => e[1] !== undefined && /^(PATH|HOME|LANG|LC_\w+|TMPDIR|GIT_CONFIG_\w+|XDG_CONFIG_HOME)$/.test(e[0])));
}

const BRANCH = /^(?!.*\.\.)(?!.*\/\/)(?!\/)(?!.*\/$)[A-Za-z0-9._/-]+$/;

export async function publishRendered(appDir: string, options: PublishOptions = {}): Promise<PublishResult> {
  const branch = options.branch ?? 'rendered';
  if (!BRANCH.test(branch)) throw new Error(`--branch "${branch}" is not a branch name`);
  const git = simpleGit(appDir);
  if (!(await git.checkIsRepo())) throw new Error(`${appDir} is not in a Git repository: publish commits the rendered manifests onto a branch of the app's repository`);
  const source = (await git.revparse(['HEAD']).catch(() => '')).trim();
  if (!source) throw new Error(`the repository of ${appDir} has no commit yet: commit the app first`);
  // the rendered branch is the tool's alone: writing onto a branch someone has checked out would turn their work tree into a diff
  const worktrees = await git.raw(['worktree', 'list', '--porcelain']);
  if (worktrees.split('\n').includes(`branch refs/heads/${branch}`)) throw new Error(`--branch ${branch} is checked out in a work tree of this repository: publish onto a branch of its own (the default, rendered)`);
  const dirty = (await git.status()).files.length > 0;
  const outdir = mkdtempSync(join(tmpdir(), 'spore-publish-'));
  const index = join(outdir, '..', `${outdir.split('/').pop()}.index`);
  try {
    const docs = await renderApp(appDir, outdir);
    if (!docs.length) throw new Error(`the synth of ${appDir} wrote no manifests`);
    // what a reconciler or Argo CD will be given must be valid as a whole, archives included
    const scratch = mkdtempSync(join(tmpdir(), 'spore-publish-check-'));
    try {
      prepareObjects(
        docs.map((d) => d.object),
        { outdir, archiveDir: scratch, inventory: {}, allowCommands: true }, // a local command means nothing on a cluster; validity is what is checked here
      );
    } finally {
      rmSync(scratch, { recursive: true, force: true });
    }
    // a tree of exactly the output folder, built in an index of our own: the user's index and work tree are left alone
    const inOutput = simpleGit(appDir).env({ ...gitEnv(), GIT_INDEX_FILE: index });
    await inOutput.raw(['--work-tree', outdir, 'add', '--all', '--force', '.']);
    const tree = (await inOutput.raw(['write-tree'])).trim();
    const ref = `refs/heads/${branch}`;
    const parent = (await git.raw(['rev-parse', '--verify', '--quiet', ref]).catch(() => '')).trim();
    const parentTree = parent ? (await git.raw(['rev-parse', `${parent}^{tree}`])).trim() : '';
    let commit = parent;
    if (tree !== parentTree) {
      const subject = (await git.raw(['log', '-1', '--format=%s', source])).trim();
      const message = `Rendered from ${source.slice(0, 12)}${dirty ? ' (with uncommitted changes)' : ''}: ${subject}\n\nspore publish: ${docs.length} objects, source commit ${source}\n`;
      const named = (await git.raw(['config', 'user.email']).catch(() => '')).trim();
      // CI machines often have no Git identity: the commit is then signed as the tool that made it
      const identity = named ? {} : { GIT_AUTHOR_NAME: 'spore publish', GIT_AUTHOR_EMAIL: 'publish@spore.invalid', GIT_COMMITTER_NAME: 'spore publish', GIT_COMMITTER_EMAIL: 'publish@spore.invalid' };
      commit = (await simpleGit(appDir).env({ ...gitEnv(), ...identity }).raw(['commit-tree', tree, ...(parent ? ['-p', parent] : []), '-m', message])).trim();
      await git.raw(['update-ref', ref, commit, parent || '0'.repeat(40)]); // only if the branch is still where we read it (or still absent)
    }
    if (options.push) await git.raw(['push', options.push, `${ref}:${ref}`]);
    return { branch, commit, changed: commit !== parent, objects: docs.length, source };
  } finally {
    rmSync(outdir, { recursive: true, force: true });
    rmSync(index, { force: true });
  }
}
