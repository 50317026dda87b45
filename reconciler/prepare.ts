// From rendered objects to what is applied: placed in the stage's namespace,
// validated as a set, their URL archives copied where the dataplane reads
// them, and labelled with the inventory that marks them as the app's.
import { copyFileSync, existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { API_VERSION, CLUSTER_SCOPED_KINDS, formatErrors, validateSet, type KubeObject } from '../api/index.js';
import { formatRef, refOf } from '../store/index.js';
import { withInventory } from './plan.js';

export class PrepareError extends Error {
  constructor(
    message: string,
    readonly object?: string,
  ) {
    super(message);
    this.name = 'PrepareError';
  }
}

export interface PrepareOptions {
  /** Folder the objects were rendered into (relative archive URLs point into it). */
  outdir: string;
  /** Where archives are kept for the dataplane. */
  archiveDir: string;
  inventory: Record<string, string>;
  /**
   * A preview stage's namespace: every namespaced object is put in it, so that
   * nothing of the preview lands on the main stage's objects; cluster-scoped
   * objects are left to the main stage (and reported through `skipped`).
   */
  namespace?: string;
  skipped?: (object: string) => void;
}

export function prepareObjects(objects: readonly unknown[], o: PrepareOptions): KubeObject[] {
  if (objects.some((x) => typeof x !== 'object' || x === null || Array.isArray(x))) throw new PrepareError('a manifest document is not an object');
  const all = objects as KubeObject[];
  let placed = all;
  if (o.namespace) {
    const shared = all.filter((x) => CLUSTER_SCOPED_KINDS.has(x.kind));
    for (const x of shared) o.skipped?.(`${x.kind}/${x.metadata?.name}`);
    placed = all.filter((x) => !shared.includes(x)).map((x) => ({ ...x, metadata: { ...x.metadata, namespace: o.namespace } }));
  }
  const errors = validateSet(placed);
  if (errors.length) throw new PrepareError(formatErrors(errors), errors[0].object);
  for (const x of placed) {
    const url = x.kind === 'Package' && x.apiVersion === API_VERSION ? ((x as any).spec.archive.url as string | undefined) : undefined;
    if (!url || /^[a-z]+:\/\//.test(url)) continue;
    const file = join(o.outdir, url);
    if (!existsSync(file)) throw new PrepareError(`spec.archive.url: ${url} is not in the rendered output`, formatRef(refOf(x)));
    mkdirSync(o.archiveDir, { recursive: true });
    copyFileSync(file, join(o.archiveDir, url.split('/').pop()!));
  }
  return withInventory(placed, o.inventory);
}
