// A function's Secrets and ConfigMaps, laid out for its instance as Fission
// lays them out in a pod (`secrets/<namespace>/<name>/<key>`,
// `configs/<namespace>/<name>/<key>`, one file per key). Locally, Secrets come
// from the folder `spore up --secrets-dir` names (the same layout), ConfigMaps
// from the store. One that is not there fails the specialization, by name.
import { chownSync, existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { ResourceStore } from '../../store/index.js';
import { DataplaneError } from '../errors.js';

export interface MountSources {
  store: ResourceStore;
  /** Folder of Secrets: `<namespace>/<name>/<key>` files. */
  secretsDir?: string;
}

type Ref = { name: string };

/** Keys are file names: what Kubernetes allows in a Secret or ConfigMap key, nothing that climbs. */
const KEY = /^[-._a-zA-Z0-9]+$/;

/**
 * Writes the function's Secrets and ConfigMaps under `root` (its instance's
 * folder), readable by `owner` only, and returns the two folders.
 */
export async function writeMounts(
  fn: { namespace: string; name: string; secrets?: Ref[]; configMaps?: Ref[] },
  root: string,
  sources: MountSources,
  owner?: { uid: number; gid: number },
): Promise<{ secrets: string; configs: string }> {
  const secrets = join(root, 'secrets');
  const configs = join(root, 'configs');
  const files = new Map<string, Buffer>();
  for (const s of fn.secrets ?? []) {
    const dir = sources.secretsDir && join(sources.secretsDir, fn.namespace, s.name);
    if (!dir || !existsSync(dir) || !lstatSync(dir).isDirectory()) {
      const where = sources.secretsDir ? `there is no folder ${join(sources.secretsDir, fn.namespace, s.name)} (one file per key)` : 'spore up was started without --secrets-dir';
      throw new DataplaneError(500, 'SecretMissing', `function ${fn.namespace}/${fn.name} needs Secret ${s.name}: ${where}`);
    }
    for (const key of readdirSync(dir)) {
      const file = join(dir, key);
      // a key is a plain file: links and folders in the secrets folder are not followed
      if (KEY.test(key) && lstatSync(file).isFile()) files.set(join(secrets, fn.namespace, s.name, key), readFileSync(file));
    }
  }
  for (const c of fn.configMaps ?? []) {
    const cm = (await sources.store.get({ apiVersion: 'v1', kind: 'ConfigMap', namespace: fn.namespace, name: c.name })) as
      | { data?: Record<string, string>; binaryData?: Record<string, string> }
      | undefined;
    if (!cm) throw new DataplaneError(500, 'ConfigMapMissing', `function ${fn.namespace}/${fn.name} needs ConfigMap ${c.name}, which is not applied in namespace ${fn.namespace}`);
    for (const [key, value] of Object.entries(cm.data ?? {})) if (KEY.test(key)) files.set(join(configs, fn.namespace, c.name, key), Buffer.from(value));
    for (const [key, value] of Object.entries(cm.binaryData ?? {})) if (KEY.test(key)) files.set(join(configs, fn.namespace, c.name, key), Buffer.from(value, 'base64'));
  }
  for (const dir of [secrets, configs]) mkdirSync(dir, { recursive: true, mode: 0o700 });
  for (const [file, bytes] of files) {
    mkdirSync(join(file, '..'), { recursive: true, mode: 0o700 });
    writeFileSync(file, bytes, { mode: 0o400 });
  }
  if (owner) for (const path of [secrets, configs, ...walk(secrets), ...walk(configs)]) chownSync(path, owner.uid, owner.gid);
  return { secrets, configs };
}

function walk(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = join(dir, e.name);
    return e.isDirectory() ? [p, ...walk(p)] : [p];
  });
}
