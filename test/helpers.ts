import { mkdtempSync, readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { App, Chart } from 'cdk8s';

export function tempDir(prefix = 'spore-test-'): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

/** A fresh app writing to a temp folder, and a chart in it. */
export function appAndChart(id = 'test', namespace?: string): { app: App; chart: Chart; outdir: string } {
  const outdir = tempDir('spore-synth-');
  const app = new App({ outdir });
  const chart = new Chart(app, id, { namespace });
  return { app, chart, outdir };
}

/** Synthesizes and returns the error message a user would see, or throws if synth succeeded. */
export function synthError(app: App): string {
  try {
    app.synth();
  } catch (err) {
    return (err as Error).message;
  }
  throw new Error('synth succeeded but an error was expected');
}

/** Every object of a chart, as the manifests hold them. */
export function objectsOf(app: App): any[] {
  return app.charts.flatMap((c) => c.toJson());
}

export const spore = (kind: string, name: string, spec: any, namespace?: string) => ({
  apiVersion: 'spore.dev/v1alpha1',
  kind,
  metadata: { name, ...(namespace ? { namespace } : {}) },
  spec,
});

import { writeFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';

/** Extracts a .tgz with the system's GNU tar (a real consumer of our archives) and returns the folder. */
export function extract(bytes: Buffer): string {
  const dir = tempDir('spore-extract-');
  const file = join(dir, '..', `${dir.split('/').pop()}.tgz`);
  writeFileSync(file, bytes);
  execFileSync('tar', ['-xzf', file, '-C', dir]);
  return dir;
}

/** `tar -tvzf` lines: mode, owner, size, date, name. */
export function listArchive(bytes: Buffer): string[] {
  const dir = tempDir('spore-list-');
  const file = join(dir, 'a.tgz');
  writeFileSync(file, bytes);
  return execFileSync('tar', ['--numeric-owner', '--utc', '-tvzf', file]).toString().trim().split('\n');
}

/** The archive bytes of a synthesized Package object (inline or written under the output folder). */
export function packageBytes(pkg: any, outdir: string): Buffer {
  const a = pkg.spec.archive;
  return a.inline ? Buffer.from(a.inline, 'base64') : readFileSync(join(outdir, a.url));
}

/** A loopback port free at the time of asking (for a server a test starts as a child process). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
    s.on('error', reject);
  });
}
