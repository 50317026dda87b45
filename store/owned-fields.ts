// The part of a live object that one field manager owns, read from its
// managedFields (the server-side apply field sets, format FieldsV1). Comparing
// that part with what Spore would apply tells a real change or an edit made
// out of band from what the API server and other managers add (defaults,
// status, their own fields), so a healthy object never looks changed.
import type { KubeObject } from '../api/index.js';

interface ManagedFieldsEntry {
  manager?: string;
  operation?: string;
  subresource?: string;
  fieldsType?: string;
  fieldsV1?: FieldSet;
}

type FieldSet = { [key: string]: FieldSet };

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Deep equality of JSON values (keys in any order). */
function same(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (Array.isArray(a) && Array.isArray(b)) return a.length === b.length && a.every((x, i) => same(x, b[i]));
  if (isObject(a) && isObject(b)) {
    const ka = Object.keys(a);
    return ka.length === Object.keys(b).length && ka.every((k) => same(a[k], b[k]));
  }
  return false;
}

/** Whether a list element is the one a set's key names: `k:{"name":"x"}` (merge keys), `v:<json>` (a set's value), `i:3` (index). */
function matches(key: string, item: unknown, index: number): boolean {
  if (key.startsWith('k:')) {
    const wanted = JSON.parse(key.slice(2)) as Record<string, unknown>;
    return isObject(item) && Object.entries(wanted).every(([k, v]) => same(item[k], v));
  }
  if (key.startsWith('v:')) return same(item, JSON.parse(key.slice(2)));
  if (key.startsWith('i:')) return Number(key.slice(2)) === index;
  return false;
}

/** `value` cut down to the fields `set` names; an empty set owns the whole value (a leaf, an atomic list or map). */
function project(value: unknown, set: FieldSet): unknown {
  const keys = Object.keys(set).filter((k) => k !== '.');
  if (keys.length === 0) return value;
  if (Array.isArray(value)) {
    const out: unknown[] = [];
    value.forEach((item, i) => {
      const key = keys.find((k) => matches(k, item, i));
      if (key) out.push(project(item, set[key]));
    });
    return out;
  }
  if (!isObject(value)) return value;
  const out: Record<string, unknown> = {};
  for (const k of keys) {
    if (!k.startsWith('f:')) continue;
    const name = k.slice(2);
    if (Object.hasOwn(value, name)) out[name] = project(value[name], set[k]);
  }
  return out;
}

/**
 * What `manager` applied of `live` (its server-side apply field set, not a
 * status write): identity, plus every field the set names. Undefined when the
 * manager owns nothing of it (the object was made by someone else).
 */
export function ownedBy(live: KubeObject, manager: string): KubeObject | undefined {
  const entries = ((live.metadata as { managedFields?: ManagedFieldsEntry[] }).managedFields ?? []).filter(
    (e) => e.manager === manager && e.operation === 'Apply' && !e.subresource && e.fieldsType === 'FieldsV1',
  );
  if (!entries.length) return undefined;
  const owned = project(live, entries[0].fieldsV1 ?? {}) as KubeObject;
  const identity = { name: live.metadata.name, ...(live.metadata.namespace ? { namespace: live.metadata.namespace } : {}) };
  return { ...owned, apiVersion: live.apiVersion, kind: live.kind, metadata: { ...(owned.metadata ?? {}), ...identity } };
}
