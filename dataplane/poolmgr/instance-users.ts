// When Spore runs as root, every instance runs as a user of its own: a uid no
// account uses (it need not exist in /etc/passwd), so a function cannot read
// Spore's state folder, its database, its API token or its /proc entries, nor
// another instance's folder, and holds no capability. The instances' folders
// then live outside the state folder (whose parents are often private, e.g.
// under /root), in a root-owned folder others may traverse but not list.
// Without root there is no other user to run as: instances run as Spore's user
// (README says what that means).
import { createHash, randomInt } from 'node:crypto';
import { chmodSync, copyFileSync, lstatSync, mkdirSync, realpathSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, dirname, isAbsolute, join, resolve } from 'node:path';

/** Who owns an instance's processes and files. */
export interface InstanceOwner {
  uid: number;
  gid: number;
}

// 2^20 ids from 2,000,000,000: far above any account's, below the 32-bit limit
const BASE = 2_000_000_000;
const SPAN = 1 << 20;

export class InstanceUsers {
  private readonly used = new Set<number>();

  private constructor(readonly root: string) {}

  /**
   * Separate users for instances whose folders would otherwise be in `workRoot`,
   * when Spore is root (and SPORE_INSTANCE_USERS is not `off`).
   */
  static detect(workRoot: string): InstanceUsers | undefined {
    if (process.getuid?.() !== 0 || process.env.SPORE_INSTANCE_USERS === 'off') return undefined;
    mkdirSync(workRoot, { recursive: true });
    const key = createHash('sha256').update(realpathSync(workRoot)).digest('hex').slice(0, 16);
    const root = join(tmpdir(), `spore-instances-${key}`);
    mkdirSync(root, { recursive: true, mode: 0o711 });
    // a folder someone else made (or a link) in a shared temp folder is not ours to use
    const st = lstatSync(root);
    if (!st.isDirectory() || st.uid !== 0) throw new Error(`${root} exists and is not a folder owned by root: remove it (instances' folders go there when Spore runs as root)`);
    chmodSync(root, 0o711);
    return new InstanceUsers(root);
  }

  /** A uid (and gid) no other live instance of this Spore has. */
  next(): InstanceOwner {
    let id: number;
    do id = BASE + randomInt(SPAN);
    while (this.used.has(id));
    this.used.add(id);
    return { uid: id, gid: id };
  }

  release(owner: InstanceOwner): void {
    this.used.delete(owner.uid);
  }

  /** A copy of the runtimes' programs (`files` in `from`) that instance users can read; returns its folder. */
  runtimes(from: string, files: string[]): string {
    const dir = join(this.root, 'runtimes');
    for (const file of files) {
      const copy = join(dir, file);
      mkdirSync(dirname(copy), { recursive: true, mode: 0o755 });
      copyFileSync(join(from, file), copy);
      chmodSync(copy, 0o644);
    }
    return dir;
  }

  /**
   * The program `command[0]` as an instance user can run it: the first one on
   * PATH that every user may run (an interpreter under a private folder such as
   * /root/.pyenv is skipped, as the kernel would refuse it there).
   */
  static runnable(command: string[], path = process.env.PATH ?? ''): string[] {
    const [program, ...args] = command;
    const candidates = program.includes('/') ? [resolve(program)] : path.split(delimiter).filter(isAbsolute).map((dir) => join(dir, program));
    const found = candidates.find(openToAll);
    if (!found) throw new Error(`${program} cannot be run by the instances' users (${candidates.find(exists) ?? 'not found'}${candidates.some(exists) ? ' is in a folder other users cannot enter' : ''}): install it where every user may run it (e.g. /usr/bin), or run Spore with SPORE_INSTANCE_USERS=off`);
    return [found, ...args];
  }
}

function exists(file: string): boolean {
  try {
    statSync(file);
    return true;
  } catch {
    return false;
  }
}

/** Whether a user who is not the owner may run `file`: o+x on it (o+r too for a script) and on every folder above it. */
function openToAll(file: string): boolean {
  try {
    const real = realpathSync(file);
    const st = statSync(real);
    if (!st.isFile() || !(st.mode & 0o001)) return false;
    for (let dir = dirname(real); ; dir = dirname(dir)) {
      if (!(statSync(dir).mode & 0o001)) return false;
      if (dir === '/') return true;
    }
  } catch {
    return false;
  }
}

