// The test cluster's binaries, envtest's way: KUBEBUILDER_ASSETS names a folder
// with kube-apiserver and etcd; without it, build-assets.sh builds both with Go
// into a cache folder keyed by their versions.
import { execFileSync, spawn } from 'node:child_process';
import { accessSync, constants, openSync } from 'node:fs';
import { join } from 'node:path';

const SCRIPT = new URL('./build-assets.sh', import.meta.url).pathname;
export const BINARIES = ['etcd', 'kube-apiserver'] as const;

/** The binaries cannot be had here (none given, none cached, no Go to build them). */
export class AssetsUnavailable extends Error {}

/** The folder the binaries are taken from: KUBEBUILDER_ASSETS, else build-assets.sh's cache. */
export function assetsDir(): string {
  return process.env.KUBEBUILDER_ASSETS || execFileSync('bash', [SCRIPT, '--dir'], { encoding: 'utf8' }).trim();
}

/** The binaries missing from a folder. */
export function missingBinaries(dir: string): string[] {
  return BINARIES.filter((b) => {
    try {
      accessSync(join(dir, b), constants.X_OK);
      return false;
    } catch {
      return true;
    }
  });
}

function hasGo(): boolean {
  try {
    execFileSync('go', ['version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/**
 * The folder with both binaries, built first when they are missing (a cold
 * build takes minutes; Go caches it). The build's output goes to `log`; the
 * signal stops the build (its whole process group).
 */
export async function ensureAssets(log: string, signal?: AbortSignal): Promise<string> {
  if (process.env.KUBEBUILDER_ASSETS) {
    const missing = missingBinaries(process.env.KUBEBUILDER_ASSETS);
    if (missing.length) throw new Error(`KUBEBUILDER_ASSETS=${process.env.KUBEBUILDER_ASSETS} has no ${missing.join(' or ')}`);
    return process.env.KUBEBUILDER_ASSETS;
  }
  const dir = assetsDir();
  if (!missingBinaries(dir).length) return dir;
  if (!hasGo()) throw new AssetsUnavailable(`no ${missingBinaries(dir).join(' or ')} in ${dir}, and no Go to build them: set KUBEBUILDER_ASSETS to a folder with kube-apiserver and etcd, or install Go and run test/cluster/build-assets.sh`);
  const out = openSync(log, 'a');
  const child = spawn('bash', [SCRIPT], { stdio: ['ignore', out, out], detached: true });
  const stop = () => child.pid && process.kill(-child.pid, 'SIGTERM');
  signal?.addEventListener('abort', stop, { once: true });
  const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));
  signal?.removeEventListener('abort', stop);
  if (code !== 0) throw new Error(`test/cluster/build-assets.sh failed (exit ${code}); its output is in ${log}`);
  return dir;
}
