// Without root there is no other user to run an instance as; where the kernel
// lets a normal user make namespaces, each instance runs in its own: a user and
// mount namespace where Spore's state folder is covered by an empty tmpfs (the
// instance's own folder mounted back), and a PID namespace with its own /proc,
// so it sees neither Spore's processes and environment nor other instances.
// A second user namespace then drops the first one's root: the mounts are
// locked, the function cannot unmount them. Everything else the user can read
// stays readable (README says so); when the instance's first process ends, the
// kernel ends everything in its PID namespace.
import { spawnSync } from 'node:child_process';

// $1 the folder to hide, $2 the instance's folder (inside it), $3 text of the
// package.json beside the instance folders, $4 uid, $5 gid; then the command.
const SCRIPT = [
  'hide=$1; work=$2; pkg=$3; uid=$4; gid=$5; shift 5',
  'exec 3<"$work" || exit 120',
  'mount -t tmpfs -o mode=0755 spore-hidden "$hide" || exit 121',
  // the open folder, not its path (which now leads into the tmpfs): --no-canonicalize keeps /proc/self/fd/3 as it is
  'mkdir -p "$work" && mount --no-canonicalize --bind /proc/self/fd/3 "$work" || exit 122',
  'exec 3<&-',
  'printf %s "$pkg" > "${work%/*}/package.json"',
  'exec unshare --user --mount --map-user="$uid" --map-group="$gid" -- "$@"',
].join('\n');

export class InstanceSandbox {
  private constructor() {}

  /** A sandbox for instances when Spore is not root and this kernel lets it make namespaces (SPORE_INSTANCE_SANDBOX=off turns it off). */
  static detect(): InstanceSandbox | undefined {
    if (process.getuid?.() === 0 || process.env.SPORE_INSTANCE_SANDBOX === 'off' || process.platform !== 'linux') return undefined;
    const probe = spawnSync('unshare', ['--user', '--map-root-user', '--mount', '--pid', '--fork', '--mount-proc', '--', 'unshare', '--user', '--mount', '--map-current-user', 'true'], { stdio: 'ignore', timeout: 5000 });
    return probe.status === 0 ? new InstanceSandbox() : undefined;
  }

  /** `command` run in the sandbox: `hide` (which holds `workDir`) covered, `workDir` mounted back. */
  wrap(command: string[], o: { hide: string; workDir: string; packageJson: string }): string[] {
    const uid = String(process.getuid!());
    const gid = String(process.getgid!());
    return ['unshare', '--user', '--map-root-user', '--mount', '--pid', '--fork', '--mount-proc', '--kill-child', '--', '/bin/sh', '-c', SCRIPT, 'spore-sandbox', o.hide, o.workDir, o.packageJson, uid, gid, ...command];
  }
}
