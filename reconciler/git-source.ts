// The Git source: a mirror of the repository in a cache, refs listed cheaply
// with ls-remote, and any revision exported into a clean folder for a render.
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import * as tar from 'tar';
import { simpleGit } from 'simple-git';

export class GitError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'GitError';
  }
}

export interface CommitInfo {
  sha: string;
  author: string;
  time: string;
  message: string;
}

export class GitSource {
  constructor(
    readonly url: string,
    private readonly mirror: string,
  ) {}

  /** Every ref of the remote and its commit (`git ls-remote`: no fetch). */
  async heads(): Promise<Map<string, string>> {
    let text: string;
    try {
      text = await simpleGit().listRemote([this.url]);
    } catch (err) {
      throw new GitError(`cannot list ${this.url}: ${(err as Error).message.trim()}`);
    }
    const refs = new Map<string, string>();
    for (const line of text.split('\n')) {
      const [sha, ref] = line.split('\t');
      if (sha && ref && !ref.endsWith('^{}')) refs.set(ref, sha);
    }
    return refs;
  }

  /** Brings the mirror up to date (cloning it the first time); `signal` stops git. */
  async fetch(signal?: AbortSignal): Promise<void> {
    try {
      if (!existsSync(join(this.mirror, 'HEAD'))) {
        rmSync(this.mirror, { recursive: true, force: true }); // a clone cut short
        mkdirSync(this.mirror, { recursive: true });
        await simpleGit({ abort: signal }).clone(this.url, this.mirror, ['--mirror', '--quiet']);
      } else {
        await simpleGit({ baseDir: this.mirror, abort: signal }).raw(['remote', 'update', '--prune']);
      }
    } catch (err) {
      throw new GitError(`cannot fetch ${this.url}: ${(err as Error).message.trim()}`);
    }
  }

  async commit(sha: string): Promise<CommitInfo> {
    try {
      const out = await simpleGit(this.mirror).raw(['show', '-s', '--format=%H%x00%an <%ae>%x00%cI%x00%s', sha]);
      const [full, author, time, message] = out.trim().split('\0');
      return { sha: full, author, time, message };
    } catch (err) {
      throw new GitError(`no commit ${sha} in ${this.url}: ${(err as Error).message.trim()}`);
    }
  }

  /** Writes the tree of a revision into `dir` (emptied first); no .git, nothing left from an earlier render. */
  async checkout(sha: string, dir: string): Promise<void> {
    rmSync(dir, { recursive: true, force: true });
    mkdirSync(dir, { recursive: true });
    const git = spawn('git', ['--git-dir', this.mirror, 'archive', '--format=tar', sha], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    git.stderr.on('data', (c) => (stderr += c));
    const exited = new Promise<number | null>((resolve) => git.on('close', resolve));
    try {
      await pipeline(git.stdout, tar.x({ cwd: dir, strict: true }));
    } catch (err) {
      if ((await exited) === 0) throw new GitError(`cannot check out ${sha}: ${(err as Error).message}`);
    }
    if ((await exited) !== 0) throw new GitError(`cannot check out ${sha}: ${stderr.trim() || 'git archive failed'}`);
  }
}
