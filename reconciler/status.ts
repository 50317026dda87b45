// What the reconciler says of each spore.dev object it applied, on the object
// (Flux's model): a Ready condition with a reason and message, the generation
// it saw, and the revision that last changed the object. Written only when it
// differs from what the object already says, so a sync that changes nothing
// writes nothing.
import { API_VERSION, type KubeObject } from '../api/index.js';
import type { StoredObject } from '../store/index.js';

export interface Condition {
  type: string;
  status: 'True' | 'False' | 'Unknown';
  reason: string;
  message: string;
  lastTransitionTime?: string;
}

/** Kinds the dataplane does not serve (wholly): their objects are accepted, and say so. Every kind is served now (workflows in spore up and spore router). */
const NOT_SERVED: Record<string, string> = {};

type Ref = { name: string };

/** The Ready condition of a spore.dev object, from the set it was applied with (what it refers to must be there). */
export function readiness(o: KubeObject, set: readonly KubeObject[]): Omit<Condition, 'lastTransitionTime'> {
  const ns = o.metadata.namespace ?? 'default';
  const has = (kind: string, name: string) => set.some((x) => x.apiVersion === API_VERSION && x.kind === kind && x.metadata.name === name && (x.metadata.namespace ?? 'default') === ns);
  const spec = (o as { spec?: Record<string, unknown> }).spec ?? {};
  const missing = (kind: string, refs: (Ref | undefined)[]) => refs.filter((r): r is Ref => Boolean(r?.name) && !has(kind, r!.name)).map((r) => `${kind} ${r.name}`);
  let absent: string[] = [];
  let found = 'accepted';
  if (o.kind === 'Function') {
    const env = spec.environment as Ref;
    const pkg = spec.package as Ref;
    absent = [...missing('Environment', [env]), ...missing('Package', [pkg])];
    found = `environment ${env?.name}, package ${pkg?.name}`;
  } else if (o.kind.endsWith('Trigger')) {
    const fns = [spec.function as Ref | undefined, ...((spec.functions as Ref[] | undefined) ?? [])].filter(Boolean);
    const workflow = spec.workflow as Ref | undefined;
    absent = [...missing('Function', fns), ...missing('Workflow', [workflow])];
    found = `calls ${[...fns.map((f) => `function ${f!.name}`), ...(workflow ? [`workflow ${workflow.name}`] : [])].join(', ')}`;
  }
  if (absent.length) return { type: 'Ready', status: 'False', reason: 'MissingReference', message: `${absent.join(', ')} not found in namespace ${ns}` };
  if (NOT_SERVED[o.kind]) return { type: 'Ready', status: 'Unknown', reason: 'NotServed', message: NOT_SERVED[o.kind] };
  return { type: 'Ready', status: 'True', reason: 'Applied', message: found };
}

/**
 * Whether an apply changed what the object runs: itself, or for a Function its
 * Package (new code) or Environment. `changed(kind, name)` answers for objects
 * of the same namespace.
 */
export function touched(o: KubeObject, changed: (kind: string, name: string) => boolean): boolean {
  if (changed(o.kind, o.metadata.name)) return true;
  if (o.kind !== 'Function') return false;
  const spec = (o as { spec?: { environment?: Ref; package?: Ref } }).spec;
  return Boolean((spec?.package && changed('Package', spec.package.name)) || (spec?.environment && changed('Environment', spec.environment.name)));
}

/**
 * The status to write on `live` (the object as stored after the apply), or
 * undefined when it already says this. `changed`: the apply changed it (see
 * touched()), so its revision becomes `revision`; else it keeps the one it has.
 */
export function statusFor(live: StoredObject, set: readonly KubeObject[], revision: string, changed: boolean, now = new Date()): Record<string, unknown> | undefined {
  const current = (live.status ?? {}) as { observedGeneration?: number; revision?: string; conditions?: Condition[] };
  const ready = readiness(live, set);
  const before = current.conditions?.find((c) => c.type === 'Ready');
  // only the fields the reconciler owns: what another writer keeps in the status is theirs
  const next = {
    observedGeneration: live.metadata.generation,
    revision: changed || !current.revision ? revision : current.revision,
    conditions: [{ ...ready, lastTransitionTime: before?.status === ready.status && before.lastTransitionTime ? before.lastTransitionTime : now.toISOString() }],
  };
  const same =
    current.observedGeneration === next.observedGeneration &&
    current.revision === next.revision &&
    before?.status === ready.status &&
    before.reason === ready.reason &&
    before.message === ready.message;
  return same ? undefined : next;
}
