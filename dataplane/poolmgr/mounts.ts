// A function's Secrets and ConfigMaps, resolved to their keys and values
// (base64) for its instance, which writes them as Fission lays them out in a
// pod (specialize-folder.ts). Locally, Secrets come from the folder
// `spore up --secrets-dir` names (`<namespace>/<name>/<key>` files); without
// one, from the store's v1 Secrets (as on a cluster). ConfigMaps come from the
// store. One that is not there fails the specialization, by name.
import { existsSync, lstatSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { ResourceStore } from '../../store/index.js';
import { DataplaneError } from '../errors.js';
import { writeMountFiles } from './specialize-folder.js';
import type { MountData } from './specialization.js';

export interface MountSources {
  store: ResourceStore;
  /** Folder of Secrets: `<namespace>/<name>/<key>` files. */
  secretsDir?: string;
}

type Ref = { name: string };
type FunctionMounts = { namespace: string; name: string; secrets?: Ref[]; configMaps?: Ref[] };

/** The function's Secrets and ConfigMaps, each key's value base64. */
export async function resolveMounts(fn: FunctionMounts, sources: MountSources): Promise<{ secrets: MountData[]; configMaps: MountData[] }> {
  const secrets: MountData[] = [];
  for (const s of fn.secrets ?? []) secrets.push(sources.secretsDir ? secretFromFolder(fn, s.name, sources.secretsDir) : await secretFromStore(fn, s.name, sources.store));
  const configMaps: MountData[] = [];
  for (const c of fn.configMaps ?? []) {
    const cm = (await sources.store.get({ apiVersion: 'v1', kind: 'ConfigMap', namespace: fn.namespace, name: c.name })) as
      | { data?: Record<string, string>; binaryData?: Record<string, string> }
      | undefined;
    if (!cm) throw new DataplaneError(500, 'ConfigMapMissing', `function ${fn.namespace}/${fn.name} needs ConfigMap ${c.name}, which is not applied in namespace ${fn.namespace}`);
    const data = { ...base64(cm.data), ...cm.binaryData };
    configMaps.push({ namespace: fn.namespace, name: c.name, data });
  }
  return { secrets, configMaps };
}

function secretFromFolder(fn: FunctionMounts, name: string, secretsDir: string): MountData {
  const dir = join(secretsDir, fn.namespace, name);
  if (!existsSync(dir) || !lstatSync(dir).isDirectory()) {
    throw new DataplaneError(500, 'SecretMissing', `function ${fn.namespace}/${fn.name} needs Secret ${name}: there is no folder ${dir} (one file per key)`);
  }
  const data: Record<string, string> = {};
  for (const key of readdirSync(dir)) {
    const file = join(dir, key);
    // a key is a plain file: links and folders in the secrets folder are not followed
    if (lstatSync(file).isFile()) data[key] = readFileSync(file).toString('base64');
  }
  return { namespace: fn.namespace, name, data };
}

async function secretFromStore(fn: FunctionMounts, name: string, store: ResourceStore): Promise<MountData> {
  const secret = (await store.get({ apiVersion: 'v1', kind: 'Secret', namespace: fn.namespace, name })) as { data?: Record<string, string>; stringData?: Record<string, string> } | undefined;
  if (!secret) throw new DataplaneError(500, 'SecretMissing', `function ${fn.namespace}/${fn.name} needs Secret ${name}: spore up was started without --secrets-dir`);
  return { namespace: fn.namespace, name, data: { ...secret.data, ...base64(secret.stringData) } };
}

const base64 = (data: Record<string, string> = {}) => Object.fromEntries(Object.entries(data).map(([k, v]) => [k, Buffer.from(v).toString('base64')]));

/**
 * Resolves and writes the function's Secrets and ConfigMaps under `root` (its
 * instance's folder), readable by `owner` only, and returns the two folders.
 * The pool manager's step until it hands the instance a Specialization.
 */
export async function writeMounts(fn: FunctionMounts, root: string, sources: MountSources, owner?: { uid: number; gid: number }): Promise<{ secrets: string; configs: string }> {
  const mounts = await resolveMounts(fn, sources);
  const dirs = { secrets: join(root, 'secrets'), configs: join(root, 'configs') };
  writeMountFiles(dirs, { function: { namespace: fn.namespace, name: fn.name }, ...mounts }, owner);
  return dirs;
}
