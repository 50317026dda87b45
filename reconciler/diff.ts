// What a plan would change, object by object and, for updates, field by
// field (`kubectl diff` / `argocd app diff` as data): what `spore diff` shows.
import { canonical, type ObjectRef } from '../store/index.js';
import type { Plan } from './plan.js';

/** One field that differs: `old` absent when it is added, `new` absent when it is removed. */
export interface FieldChange {
  /** `spec.executor.minScale`, `spec.methods[1]`, `metadata.labels["app.kubernetes.io/name"]`. */
  path: string;
  old?: unknown;
  new?: unknown;
}

export interface ObjectChange extends ObjectRef {
  action: 'create' | 'update' | 'prune';
  wave: number;
  /** Updates only: the fields whose value changes (what the user wrote; status and server-set metadata do not count). */
  fields?: FieldChange[];
}

export interface Diff {
  revision: string;
  stage: string;
  counts: Plan['counts'];
  /** Objects created, updated or pruned, in the order they would be applied (unchanged ones are counted only). */
  objects: ObjectChange[];
}

export function planChanges(p: Plan): ObjectChange[] {
  return p.entries.flatMap((e): ObjectChange[] => {
    if (e.action === 'unchanged') return [];
    const fields = e.action === 'update' && e.live && e.object ? fieldChanges(JSON.parse(canonical(e.live)), JSON.parse(canonical(e.object))) : undefined;
    return [{ action: e.action, ...e.ref, wave: e.wave, ...(fields ? { fields } : {}) }];
  });
}

const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Leaf by leaf: objects by key, arrays by index; a value that changes type is one change. */
export function fieldChanges(before: unknown, after: unknown, path = ''): FieldChange[] {
  const both = (isRecord(before) && isRecord(after)) || (Array.isArray(before) && Array.isArray(after));
  if (!both) return JSON.stringify(before) === JSON.stringify(after) ? [] : [{ path: path || '.', ...(before === undefined ? {} : { old: before }), ...(after === undefined ? {} : { new: after }) }];
  const a = before as Record<string, unknown>;
  const b = after as Record<string, unknown>;
  const keys = Array.isArray(before) ? [...Array(Math.max((before as unknown[]).length, (after as unknown[]).length)).keys()].map(String) : [...new Set([...Object.keys(a), ...Object.keys(b)])].sort();
  return keys.flatMap((k) => fieldChanges(a[k], b[k], Array.isArray(before) ? `${path}[${k}]` : joinKey(path, k)));
}

/** `a.b`, or `a["x.y/z"]` for keys that are not identifiers (labels, annotations). */
const joinKey = (path: string, key: string) => (/^[A-Za-z_$][\w$]*$/.test(key) ? (path ? `${path}.${key}` : key) : `${path}[${JSON.stringify(key)}]`);
