// The plan: what applying a desired set would do to the target's inventory —
// create, update, unchanged, prune — in sync-wave order (prunes in reverse).
import { waveOf, type KubeObject } from '../api/index.js';
import { canonical, formatRef, refOf, type ObjectRef, type StoredObject } from '../store/index.js';

export type Action = 'create' | 'update' | 'unchanged' | 'prune';

export interface PlanEntry {
  action: Action;
  ref: ObjectRef;
  wave: number;
  /** The desired object (absent for prunes). */
  object?: KubeObject;
  /** The object in the store now (updates and prunes), for a field-level diff. */
  live?: StoredObject;
}

export interface Plan {
  entries: PlanEntry[];
  counts: Record<Action, number>;
}

export const refKey = (r: ObjectRef) => `${r.apiVersion}|${formatRef(r)}`;

/** Adds the inventory labels that mark an object as this app's and stage's. */
export function withInventory(objects: readonly KubeObject[], inventory: Record<string, string>): KubeObject[] {
  return objects.map((o) => ({ ...o, metadata: { ...o.metadata, namespace: o.metadata.namespace ?? 'default', labels: { ...o.metadata.labels, ...inventory } } }));
}

/**
 * Compares desired objects (already labelled) with the live ones. Only live
 * objects carrying every inventory label can be pruned; nothing else is touched.
 */
export function plan(
  desired: readonly KubeObject[],
  live: readonly StoredObject[],
  inventory: Record<string, string>,
  /** Whether applying the desired object would change nothing of the live one (the store's inSync). */
  same: (desired: KubeObject, live: StoredObject) => boolean = (d, l) => canonical(l) === canonical(d),
): Plan {
  const liveByKey = new Map(live.map((o) => [refKey(refOf(o)), o]));
  const desiredKeys = new Set<string>();
  const entries: PlanEntry[] = [];
  for (const o of desired) {
    const ref = refOf(o);
    const key = refKey(ref);
    desiredKeys.add(key);
    const current = liveByKey.get(key);
    const action: Action = !current ? 'create' : same(o, current) ? 'unchanged' : 'update';
    entries.push({ action, ref, wave: waveOf(o), object: o, ...(action === 'update' ? { live: current } : {}) });
  }
  const owned = (o: StoredObject) => Object.entries(inventory).every(([k, v]) => o.metadata.labels?.[k] === v);
  const prunes = live.filter((o) => owned(o) && !desiredKeys.has(refKey(refOf(o)))).map((o) => ({ action: 'prune' as const, ref: refOf(o), wave: waveOf(o), live: o }));
  entries.sort((a, b) => a.wave - b.wave);
  prunes.sort((a, b) => b.wave - a.wave);
  const all = [...entries, ...prunes];
  const counts = { create: 0, update: 0, unchanged: 0, prune: 0 };
  for (const e of all) counts[e.action]++;
  return { entries: all, counts };
}

export function formatPlan(p: Plan): string {
  const sign: Record<Action, string> = { create: '+', update: '~', unchanged: '=', prune: '-' };
  const lines = p.entries.filter((e) => e.action !== 'unchanged').map((e) => `  ${sign[e.action]} ${formatRef(e.ref)} (wave ${e.wave})`);
  return [`plan: ${p.counts.create} to create, ${p.counts.update} to update, ${p.counts.prune} to prune, ${p.counts.unchanged} unchanged`, ...lines].join('\n');
}
