// A cgroup per instance, where Spore may make one: everything the instance
// starts stays in it whatever it does (setsid, double fork, clearing its
// environment), it is stopped all at once, and the Environment's memory and CPU
// limits are set on it. cgroup v2 where its folder is writable (cgroup.kill;
// memory.max and cpu.max when those controllers are enabled there); on a hybrid
// host the v1 memory and cpu hierarchies carry the limits. Where Spore may not,
// the process provider still has the process group and the owner mark (api/process-owner.ts).
import { existsSync, mkdirSync, readdirSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { alive } from '../../api/process-owner.js';

const PREFIX = 'spore-instance.';
const PERIOD_US = 100_000;

/** What an instance may use: bytes of memory, and CPUs (0.5 = half of one). */
export interface InstanceLimits {
  memoryBytes?: number;
  cpus?: number;
}

/** One instance's folders: the processes go into each; `kill` stops them. */
export interface InstanceCgroup {
  /** The cgroup.procs files the instance's first process writes itself into. */
  readonly procs: string[];
  /** Which of the limits asked for are enforced. */
  readonly enforced: { memory: boolean; cpu: boolean };
  readonly dirs: string[];
  readonly v2?: string;
}

interface Hierarchy {
  base: string;
  version: 1 | 2;
  memory: boolean;
  cpu: boolean;
}

/** The folder this process is in, per mounted hierarchy, with the mount's type and options (v1: its controllers). */
function ownFolders(): { dir: string; fstype: string; options: string[] }[] {
  const own = new Map<string, string>(); // controller list (or '' for v2) → path
  for (const line of readFileSync('/proc/self/cgroup', 'utf8').split('\n')) {
    const m = /^\d+:([^:]*):(\/.*)$/.exec(line);
    if (m) own.set(m[1], m[2]);
  }
  const found: { dir: string; fstype: string; options: string[] }[] = [];
  for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const f = line.split(' ');
    const dash = f.indexOf('-');
    const fstype = f[dash + 1];
    if (fstype !== 'cgroup2' && fstype !== 'cgroup') continue;
    const options = (f[dash + 3] ?? '').split(',');
    const path = fstype === 'cgroup2' ? own.get('') : [...own.entries()].find(([k]) => k !== '' && k.split(',').some((c) => options.includes(c)))?.[1];
    if (path === undefined) continue;
    // the mount's root (f[3]) is a prefix of the path when the mount is of a sub-tree
    const rel = f[3] !== '/' && path.startsWith(f[3]) ? path.slice(f[3].length) : path;
    found.push({ dir: join(f[4], rel), fstype, options });
  }
  return found;
}

/** Whether Spore may make a folder in `base` (undefined if not), and whether the kernel can kill one (cgroup.kill, Linux 5.14+). */
function probe(base: string): { kill: boolean } | undefined {
  const dir = join(base, `${PREFIX}${process.pid}.probe`);
  try {
    mkdirSync(dir);
  } catch {
    return undefined;
  }
  const kill = existsSync(join(dir, 'cgroup.kill'));
  rmdirSync(dir);
  return { kill };
}

export class InstanceCgroups {
  private constructor(private readonly hierarchies: Hierarchy[]) {}

  /** The hierarchies where Spore may create folders; undefined if there is no cgroup v2 folder with cgroup.kill. */
  static detect(): InstanceCgroups | undefined {
    try {
      const hierarchies: Hierarchy[] = [];
      for (const { dir, fstype, options } of ownFolders()) {
        if (fstype === 'cgroup2') {
          if (!probe(dir)?.kill) continue;
          const control = join(dir, 'cgroup.subtree_control');
          const enabled = existsSync(control) ? readFileSync(control, 'utf8').split(/\s+/) : [];
          hierarchies.push({ base: dir, version: 2, memory: enabled.includes('memory'), cpu: enabled.includes('cpu') });
        } else if ((options.includes('memory') || options.includes('cpu')) && probe(dir)) {
          hierarchies.push({ base: dir, version: 1, memory: options.includes('memory'), cpu: options.includes('cpu') });
        }
      }
      return hierarchies.some((h) => h.version === 2) ? new InstanceCgroups(hierarchies) : undefined;
    } catch {
      return undefined;
    }
  }

  /** Which limits this host can enforce. */
  get enforces(): { memory: boolean; cpu: boolean } {
    return { memory: this.hierarchies.some((h) => h.memory), cpu: this.hierarchies.some((h) => h.cpu) };
  }

  /** Makes the folders of one instance and sets its limits. */
  create(id: string, limits: InstanceLimits = {}): InstanceCgroup {
    const dirs: string[] = [];
    let v2: string | undefined;
    let memory = false;
    let cpu = false;
    for (const h of this.hierarchies) {
      const dir = join(h.base, `${PREFIX}${process.pid}.${id}`);
      mkdirSync(dir);
      dirs.push(dir);
      if (h.version === 2) v2 = dir;
      if (limits.memoryBytes && h.memory && !memory) {
        writeFileSync(join(dir, h.version === 2 ? 'memory.max' : 'memory.limit_in_bytes'), String(limits.memoryBytes));
        if (h.version === 2) writeFileSync(join(dir, 'memory.swap.max'), '0', { flag: 'w' });
        memory = true;
      }
      if (limits.cpus && h.cpu && !cpu) {
        const quota = Math.max(1000, Math.round(limits.cpus * PERIOD_US));
        if (h.version === 2) writeFileSync(join(dir, 'cpu.max'), `${quota} ${PERIOD_US}`);
        else {
          writeFileSync(join(dir, 'cpu.cfs_period_us'), String(PERIOD_US));
          writeFileSync(join(dir, 'cpu.cfs_quota_us'), String(quota));
        }
        cpu = true;
      }
    }
    return { procs: dirs.map((d) => join(d, 'cgroup.procs')), dirs, v2, enforced: { memory, cpu } };
  }

  /**
   * The command, started inside the folders: a shell moves itself in, then runs
   * it, so not even its first child starts outside. If a move is refused the
   * command still runs (bounded then by its process group only).
   */
  static wrap(cgroup: InstanceCgroup, command: string[]): string[] {
    return ['/bin/sh', '-c', 'while [ "$1" != -- ]; do echo $$ > "$1" 2>/dev/null; shift; done; shift; exec "$@"', 'spore-cgroup', ...cgroup.procs, '--', ...command];
  }

  /** Kills everything in the folders and removes them. */
  static async kill(cgroup: InstanceCgroup): Promise<void> {
    try {
      if (cgroup.v2) {
        writeFileSync(join(cgroup.v2, 'cgroup.kill'), '1');
        // the kernel empties it at once, but the processes exit asynchronously
        for (let i = 0; i < 100 && /populated 1/.test(readFileSync(join(cgroup.v2, 'cgroup.events'), 'utf8')); i++) await new Promise((r) => setTimeout(r, 10));
      }
    } catch {
      // gone already
    }
    for (const dir of cgroup.dirs.toReversed()) {
      try {
        rmdirSync(dir);
      } catch {
        // not empty yet: the next start's sweep takes it
      }
    }
  }

  /** Whether the instance's memory limit was hit (the kernel killed a process of it). */
  static oomKilled(cgroup: InstanceCgroup): boolean {
    for (const dir of cgroup.dirs) {
      try {
        const events = join(dir, 'memory.events');
        if (existsSync(events) && /oom_kill [1-9]/.test(readFileSync(events, 'utf8'))) return true;
        const control = join(dir, 'memory.oom_control');
        if (existsSync(control) && /oom_kill [1-9]/.test(readFileSync(control, 'utf8'))) return true;
      } catch {
        // gone
      }
    }
    return false;
  }

  /** Kills and removes the folders of Spore processes that are gone (killed with -9). Returns how many. */
  async sweep(): Promise<number> {
    let swept = 0;
    const byInstance = new Map<string, InstanceCgroup>();
    for (const h of this.hierarchies) {
      for (const name of readdirSync(h.base)) {
        const pid = name.startsWith(PREFIX) ? Number(name.slice(PREFIX.length).split('.')[0]) : NaN;
        if (!pid || pid === process.pid || alive(pid)) continue;
        const found = byInstance.get(name) ?? { procs: [], dirs: [], enforced: { memory: false, cpu: false } };
        byInstance.set(name, { ...found, dirs: [...found.dirs, join(h.base, name)], v2: h.version === 2 ? join(h.base, name) : found.v2 });
      }
    }
    for (const cgroup of byInstance.values()) {
      await InstanceCgroups.kill(cgroup);
      swept++;
    }
    return swept;
  }
}
