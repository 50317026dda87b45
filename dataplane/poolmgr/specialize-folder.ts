// Turning a generic instance into a function, in folders it shares with us:
// the steps the local process provider and a pod's fetcher sidecar both take.
// Fetch and verify the Package's archive, extract it into the code folder,
// write the Secrets and ConfigMaps in Fission's layout
// (`<secrets>/<namespace>/<name>/<key>`, `<configs>/...`), then ask the
// runtime to load the code (Fission's `POST /v2/specialize`).
import { chownSync, mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { request } from 'undici';
import { DataplaneError } from '../errors.js';
import { PackageError, type PackageFetcher } from './package-fetcher.js';
import type { MountData, Specialization } from './specialization.js';

export interface FolderOptions {
  fetcher: PackageFetcher;
  /** Where the code is extracted: new or empty; removed again if specialization fails. */
  codeDir: string;
  secretsDir: string;
  configsDir: string;
  /** The runtime's address, e.g. http://127.0.0.1:8888. */
  runtimeUrl: string;
  /** The instance's credential, sent as X-Spore-Instance-Token (Fission's runtimes ignore it). */
  token?: string;
  /** The instance's user: the code, Secrets and ConfigMaps become its own. */
  owner?: { uid: number; gid: number };
}

export const INSTANCE_TOKEN_HEADER = 'x-spore-instance-token';

/** Specializes the runtime at `o.runtimeUrl` with `req`; throws a DataplaneError saying what failed. */
export async function specializeInFolder(req: Specialization, o: FolderOptions): Promise<void> {
  const fn = `function ${req.function.namespace}/${req.function.name}`;
  const deadline = Date.now() + req.timeoutSeconds * 1000;
  try {
    const pkg = { metadata: { namespace: req.package.namespace, name: req.package.name }, spec: { archive: req.package.archive } };
    const bytes = await o.fetcher.bytes(pkg);
    await o.fetcher.extract(bytes, o.codeDir, `Package ${req.package.namespace}/${req.package.name}`, o.owner);
    writeMountFiles({ secrets: o.secretsDir, configs: o.configsDir }, req, o.owner);
    const left = deadline - Date.now();
    if (left <= 0) throw new DataplaneError(504, 'SpecializationTimeout', `${fn}: specialization did not finish within ${req.timeoutSeconds}s (fetching and extracting the code took all of it)`);
    await callRuntime(req, o, fn, left);
  } catch (err) {
    // a failed attempt leaves no half-written code behind: a retry starts clean
    rmSync(o.codeDir, { recursive: true, force: true });
    if (err instanceof PackageError) throw new DataplaneError(500, 'BadPackage', err.message);
    throw err;
  }
}

async function callRuntime(req: Specialization, o: FolderOptions, fn: string, timeoutMs: number): Promise<void> {
  const env = { ...req.env, SPORE_SECRETS_DIR: o.secretsDir, SPORE_CONFIGS_DIR: o.configsDir };
  const res = await request(`${o.runtimeUrl}/v2/specialize`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(o.token ? { [INSTANCE_TOKEN_HEADER]: o.token } : {}) },
    body: JSON.stringify({ filepath: o.codeDir, functionName: req.entrypoint, env }),
    headersTimeout: timeoutMs,
    bodyTimeout: timeoutMs,
  }).catch((err: Error & { code?: string }) => {
    if (err.code === 'UND_ERR_HEADERS_TIMEOUT' || err.code === 'UND_ERR_BODY_TIMEOUT') {
      throw new DataplaneError(504, 'SpecializationTimeout', `${fn}: specialization did not finish within ${req.timeoutSeconds}s (${err.message})`);
    }
    throw new DataplaneError(500, 'SpecializationFailed', `${fn}: cannot reach the runtime at ${o.runtimeUrl}: ${err.message}`);
  });
  const text = await res.body.text();
  if (res.statusCode < 200 || res.statusCode > 299) {
    let message = text;
    try {
      message = JSON.parse(text).error ?? text;
    } catch {
      // plain text (Fission's runtimes)
    }
    throw new DataplaneError(500, 'SpecializationFailed', `${fn}: ${message}`);
  }
}

/** Keys are file names: what Kubernetes allows in a Secret or ConfigMap key, nothing that climbs. */
const KEY = /^[-._a-zA-Z0-9]+$/;
/** A namespace or object name (DNS-1123 subdomain): one path segment, never `.` or `..`. */
const NAME = /^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/;

/**
 * Writes Secrets and ConfigMaps (values base64) as one file per key, 0400 in
 * 0700 folders, owned by `owner` if given. Every name and key is checked
 * before anything is written.
 */
export function writeMountFiles(dirs: { secrets: string; configs: string }, req: Pick<Specialization, 'function' | 'secrets' | 'configMaps'>, owner?: { uid: number; gid: number }): void {
  const sets: [string, string, MountData[]][] = [
    ['Secret', dirs.secrets, req.secrets],
    ['ConfigMap', dirs.configs, req.configMaps],
  ];
  for (const [kind, , list] of sets) {
    for (const m of list) {
      const where = `function ${req.function.namespace}/${req.function.name}: ${kind} ${m.namespace}/${m.name}`;
      if (!NAME.test(m.namespace) || !NAME.test(m.name)) throw new DataplaneError(500, 'BadMount', `${where}: the namespace and name must be DNS-1123 names`);
      for (const key of Object.keys(m.data)) {
        if (!KEY.test(key) || key === '.' || key === '..') {
          throw new DataplaneError(500, 'BadMount', `${where}: key ${JSON.stringify(key)} cannot be a file name (keys are letters, digits, '-', '_' and '.', and not "." or "..")`);
        }
      }
    }
  }
  for (const [, root, list] of sets) {
    mkdirSync(root, { recursive: true, mode: 0o700 });
    for (const m of list) {
      const dir = join(root, m.namespace, m.name);
      mkdirSync(dir, { recursive: true, mode: 0o700 });
      for (const [key, value] of Object.entries(m.data)) {
        const file = join(dir, key);
        rmSync(file, { force: true }); // a file left by a failed attempt is 0400: replaced, not rewritten
        writeFileSync(file, Buffer.from(value, 'base64'), { mode: 0o400 });
      }
    }
    if (owner) for (const path of [root, ...walk(root)]) chownSync(path, owner.uid, owner.gid);
  }
}

function walk(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = join(dir, e.name);
    return e.isDirectory() ? [p, ...walk(p)] : [p];
  });
}
