// Objects as comparable text: what apply and plan compare to tell a change from none.
import { createHash } from 'node:crypto';
import type { KubeObject } from '../api/index.js';

/** Server-set metadata, never compared or stored from input. */
const SERVER_META = ['resourceVersion', 'generation', 'creationTimestamp', 'uid', 'managedFields'];

/** The part of an object that a user wrote, as comparable text: what apply and plan compare. */
export function canonical(o: KubeObject): string {
  return bodyOf(o).body;
}

export function bodyOf(o: KubeObject): { body: string; labels: string } {
  const { status: _status, ...rest } = o as KubeObject & { status?: unknown };
  const metadata: Record<string, unknown> = { ...rest.metadata, namespace: rest.metadata.namespace ?? 'default' };
  for (const k of SERVER_META) delete metadata[k];
  return { body: stableJson({ ...rest, metadata }), labels: stableJson(rest.metadata.labels ?? {}) };
}

/** JSON with sorted keys, so equal objects compare equal as text. */
export function stableJson(value: unknown): string {
  return JSON.stringify(value, (_k, v) => (v && typeof v === 'object' && !Array.isArray(v) ? Object.fromEntries(Object.entries(v).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) : v));
}


/** A short digest of an object's canonical text. */
export function digest(o: KubeObject): string {
  return createHash('sha256').update(canonical(o)).digest('hex').slice(0, 16);
}
