// Asynchronous calls on a cluster: one Invocation object per call, in the
// function's namespace, named by the call's id (spec: the call as it came;
// status: state, attempts, the last answer). The router that accepted a call
// executes it, retries included, and owns its object; a call whose router
// stopped is taken over by the replica holding the Lease (kube-owned.ts). A
// failed call — the dead letter — is queued again by `spore invocations retry`:
// its object set back to queued with no owner, so the Lease holder takes it.
// Done calls beyond the newest KEEP_SUCCEEDED / KEEP_FAILED of a namespace go.
import { randomUUID } from 'node:crypto';
import { API_VERSION, GROUP, KINDS } from '../api/index.js';
import { KEEP_FAILED, KEEP_SUCCEEDED, type Invocation, type InvocationState, type InvocationStore, type NewInvocation } from './invocations.js';
import { OwnedObjects, type OwnedObject, type OwnedObjectsOptions } from './kube-owned.js';

export const FUNCTION_LABEL = `${GROUP}/function`;
export const CALL_STATE_LABEL = `${GROUP}/invocation-state`;
/** The largest body kept with a call: its object (the body in base64) must fit in one etcd value (~1.5 MB). */
export const MAX_BODY_BYTES = 1024 * 1024;

type Spec = Pick<Invocation, 'function' | 'method' | 'path' | 'headers' | 'params'> & { body: string };
type Status = Pick<Invocation, 'state' | 'attempts' | 'status' | 'error' | 'response' | 'created' | 'updated' | 'nextAt' | 'bodyBytes'>;

/**
 * The object of a call. A call that succeeded will not run again: its body
 * and headers (the caller's credentials among them) are no longer kept, only
 * the body's size — so the objects kept stay small, and what they hold short-lived.
 */
export function objectOf(inv: Invocation): OwnedObject {
  const done = inv.state === 'succeeded';
  const spec: Spec = { function: inv.function, method: inv.method, path: inv.path, headers: done ? {} : inv.headers, params: inv.params, body: done ? '' : inv.body.toString('base64') };
  const status: Status = { state: inv.state, attempts: inv.attempts, status: inv.status, error: inv.error, response: inv.response, created: inv.created, updated: inv.updated, nextAt: inv.nextAt, ...(done ? { bodyBytes: inv.bodyBytes ?? inv.body.length } : {}) };
  return {
    apiVersion: API_VERSION,
    kind: 'Invocation',
    metadata: { name: inv.id, namespace: inv.namespace, labels: { [FUNCTION_LABEL]: inv.function, [CALL_STATE_LABEL]: inv.state } },
    spec,
    status,
  };
}

export function toInvocation(o: OwnedObject): Invocation {
  const spec = o.spec as unknown as Spec;
  const s = (o.status ?? {}) as Partial<Status>;
  const created = s.created ?? (Date.parse(o.metadata.creationTimestamp ?? '') || 0);
  return {
    id: o.metadata.name,
    namespace: o.metadata.namespace,
    function: spec.function,
    method: spec.method,
    path: spec.path,
    headers: spec.headers ?? {},
    params: spec.params ?? {},
    body: Buffer.from(spec.body ?? '', 'base64'),
    state: s.state ?? 'queued',
    attempts: s.attempts ?? 0,
    ...(s.status !== undefined ? { status: s.status } : {}),
    ...(s.error !== undefined ? { error: s.error } : {}),
    ...(s.response !== undefined ? { response: s.response } : {}),
    ...(s.bodyBytes !== undefined ? { bodyBytes: s.bodyBytes } : {}),
    created,
    updated: s.updated ?? created,
    nextAt: s.nextAt ?? created,
  };
}

export class KubeInvocations implements InvocationStore {
  private readonly objects: OwnedObjects<Invocation>;

  constructor(o: OwnedObjectsOptions) {
    this.objects = new OwnedObjects<Invocation>(
      { plural: KINDS.Invocation.plural, noun: 'asynchronous call', namespaceOf: (i) => i.namespace, updatedOf: (i) => i.updated, done: (i) => i.state === 'succeeded' || i.state === 'failed', objectOf },
      o,
    );
  }

  async enqueue(call: NewInvocation): Promise<Invocation> {
    const now = Date.now();
    const inv: Invocation = { ...call, id: randomUUID(), state: 'queued', attempts: 0, created: now, updated: now, nextAt: now };
    await this.objects.create(inv.id, inv);
    return { ...inv };
  }

  claim(now: number): Invocation | undefined {
    const due = this.objects.items().filter((i) => i.state === 'queued' && i.nextAt <= now);
    const inv = due.sort((a, b) => a.nextAt - b.nextAt || a.created - b.created)[0];
    if (!inv) return undefined;
    Object.assign(inv, { state: 'running', attempts: inv.attempts + 1, updated: now });
    this.objects.save(inv.id).catch(() => {}); // said by the store; written at the next heartbeat (the call runs meanwhile: at least once)
    return { ...inv };
  }

  async finish(id: string, r: { state: 'succeeded' | 'failed' | 'queued'; status: number; error?: string; response?: string; nextAt?: number }): Promise<void> {
    const inv = this.objects.mine(id);
    if (!inv) return; // taken over by another router: not ours to write
    const now = Date.now();
    Object.assign(inv, { state: r.state, status: r.status, error: r.error, response: r.response, updated: now, nextAt: r.nextAt ?? now });
    const saved = this.objects.save(id).catch(() => {}); // said by the store; tried again every heartbeat
    if (r.state !== 'queued') void this.objects.prune(inv.namespace, `${CALL_STATE_LABEL}=${r.state}`, r.state === 'succeeded' ? KEEP_SUCCEEDED : KEEP_FAILED);
    await saved;
  }

  async getInvocation(id: string): Promise<Invocation | undefined> {
    const mine = this.objects.mine(id);
    if (mine) return { ...mine };
    const o = await this.objects.find(id);
    return o && toInvocation(o);
  }

  async listInvocations(q: { state?: InvocationState; limit?: number }): Promise<Invocation[]> {
    const calls = (await this.objects.list(undefined, { labelSelector: q.state ? `${CALL_STATE_LABEL}=${q.state}` : undefined })).map(toInvocation);
    return calls.sort((a, b) => b.created - a.created).slice(0, q.limit ?? 100);
  }

  /**
   * A failed call queued again, its attempts from zero, with no owner: the
   * router holding the Lease takes it over and runs it (within 10 s). False
   * when it is not failed, or changed meanwhile.
   */
  async retryInvocation(id: string): Promise<boolean> {
    const o = await this.objects.find(id);
    if (!o || toInvocation(o).state !== 'failed') return false;
    const now = Date.now();
    return this.objects.handOver(o, { ...toInvocation(o), state: 'queued', attempts: 0, updated: now, nextAt: now });
  }

  /** Queued and running calls whose router stopped heartbeating, taken over here: the running ones run again. */
  async requeueRunning(): Promise<number> {
    const taken = await this.objects.takeOver(`${CALL_STATE_LABEL} in (queued,running)`, (o) => {
      const inv = toInvocation(o);
      return inv.state === 'running' ? { ...inv, state: 'queued', nextAt: Date.now() } : inv;
    });
    return taken.length;
  }

  nextDue(): number | undefined {
    const queued = this.objects.items().filter((i) => i.state === 'queued');
    return queued.length ? Math.min(...queued.map((i) => i.nextAt)) : undefined;
  }

  /** Stops heartbeating; calls still queued or running here are written with heartbeat 0, for another router to take over at once. */
  close(): Promise<void> {
    return this.objects.close();
  }
}
