// A cgroup v2 folder per instance, where Spore may make one (as root with a
// writable cgroup2 mount, or in a delegated cgroup): everything the instance
// starts stays in it whatever it does (setsid, double fork, clearing its
// environment), and cgroup.kill stops it all at once. Where Spore may not, the
// process provider still has the process group and the owner mark (api/process-owner.ts).
import { existsSync, mkdirSync, readdirSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { alive } from '../../api/process-owner.js';

const PREFIX = 'spore-instance.';

export class InstanceCgroups {
  private constructor(private readonly base: string) {}

  /** The cgroup2 folder of this process, if cgroup.kill is there and Spore may create folders in it. */
  static detect(): InstanceCgroups | undefined {
    try {
      const mount = readFileSync('/proc/self/mountinfo', 'utf8')
        .split('\n')
        .map((l) => l.split(' '))
        .find((f) => f[f.indexOf('-') + 1] === 'cgroup2')?.[4];
      const own = /^0::(\/.*)$/m.exec(readFileSync('/proc/self/cgroup', 'utf8'))?.[1];
      if (!mount || own === undefined) return undefined;
      const base = join(mount, own);
      const probe = join(base, `${PREFIX}${process.pid}.probe`);
      mkdirSync(probe);
      const usable = existsSync(join(probe, 'cgroup.kill'));
      rmdirSync(probe);
      return usable ? new InstanceCgroups(base) : undefined;
    } catch {
      return undefined;
    }
  }

  /** Makes the folder of one instance. */
  create(id: string): string {
    const dir = join(this.base, `${PREFIX}${process.pid}.${id}`);
    mkdirSync(dir);
    return dir;
  }

  /**
   * The command, started inside the folder: a shell moves itself in, then runs
   * it, so not even its first child starts outside. If the move is refused the
   * command still runs (bounded then by its process group only).
   */
  static wrap(dir: string, command: string[]): string[] {
    return ['/bin/sh', '-c', 'echo $$ > "$0/cgroup.procs" 2>/dev/null; exec "$@"', dir, ...command];
  }

  /** Kills everything in the folder and removes it. */
  static async kill(dir: string): Promise<void> {
    try {
      writeFileSync(join(dir, 'cgroup.kill'), '1');
      // the kernel empties it at once, but the processes exit asynchronously
      for (let i = 0; i < 100 && /populated 1/.test(readFileSync(join(dir, 'cgroup.events'), 'utf8')); i++) await new Promise((r) => setTimeout(r, 10));
      rmdirSync(dir);
    } catch {
      // gone already, or not empty yet: the next start's sweep takes it
    }
  }

  /** Kills and removes the folders of Spore processes that are gone (killed with -9). Returns how many. */
  async sweep(): Promise<number> {
    let swept = 0;
    for (const name of readdirSync(this.base)) {
      const pid = name.startsWith(PREFIX) ? Number(name.slice(PREFIX.length).split('.')[0]) : NaN;
      if (!pid || pid === process.pid || alive(pid)) continue;
      await InstanceCgroups.kill(join(this.base, name));
      swept++;
    }
    return swept;
  }
}
