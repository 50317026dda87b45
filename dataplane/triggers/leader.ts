// Leader election over a coordination.k8s.io/v1 Lease, so that of the
// router's replicas exactly one fires the timers and follows the watches.
// (@kubernetes/client-node 2.x has no elector of its own.)
//
// The leader renews the Lease every `renewMs`; the others try to take it every
// `retryMs`, and may only once it is released (no holder) or its holder has
// not renewed it for `leaseDurationSeconds`, measured on their own clock from
// when they last saw it change (clocks of two hosts need not agree). Every
// write names the resourceVersion it read, so of two contenders one wins and
// the other gets 409. A leader that cannot renew for `renewDeadlineMs` (less
// than the duration) steps down before anyone else may take over; one that
// finds the Lease held by another steps down at once. `close()` steps down
// and releases the Lease, so that the next replica takes over at its next try.
import type { KubeClient } from '../../store/kube-client.js';
import { KubeError } from '../../store/kube-client.js';

export interface LeaderElectorOptions {
  client: KubeClient;
  namespace: string;
  /** The Lease's name. */
  name: string;
  /** Who this replica is (unique per process). */
  identity: string;
  /** @default 15 */
  leaseDurationSeconds?: number;
  /** @default 5000 */
  renewMs?: number;
  /** @default 10000 */
  renewDeadlineMs?: number;
  /** @default 2000 */
  retryMs?: number;
  /** Became the leader. */
  onStart(): void | Promise<void>;
  /** Is no longer the leader (lost or closing): stop leading at once. */
  onStop(): void | Promise<void>;
  report?: (message: string) => void;
}

interface LeaseObject {
  metadata: { name: string; namespace: string; resourceVersion?: string };
  spec?: { holderIdentity?: string | null; leaseDurationSeconds?: number; acquireTime?: string | null; renewTime?: string | null; leaseTransitions?: number };
}

/** The API's MicroTime: RFC 3339 with microseconds. */
const microTime = (ms = Date.now()) => new Date(ms).toISOString().replace(/\.(\d{3})Z$/, '.$1000Z');

export class LeaderElector {
  private readonly duration: number;
  private leadingNow = false;
  private closed = false;
  private wake?: () => void;
  private loop?: Promise<void>;
  /** The Lease as last seen: its version and when (on this clock) that version was first seen. */
  private seen?: { resourceVersion: string; at: number };
  private deadline?: NodeJS.Timeout;
  /** Who else holds the Lease, as last read (undefined: nobody, or this replica). */
  private heldByOther?: string;

  constructor(private readonly o: LeaderElectorOptions) {
    this.duration = o.leaseDurationSeconds ?? 15;
  }

  get leading(): boolean {
    return this.leadingNow;
  }

  private get path(): string {
    return `/apis/coordination.k8s.io/v1/namespaces/${this.o.namespace}/leases`;
  }

  start(): void {
    this.loop ??= this.run();
  }

  /** Steps down (onStop), then releases the Lease if this replica holds it. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.wake?.();
    await this.loop; // a round under way (a start to lead included) ends first
    const held = this.leadingNow;
    await this.stepDown();
    if (held) await this.release();
  }

  private async run(): Promise<void> {
    let failing: string | undefined;
    while (!this.closed) {
      let ok = false;
      try {
        ok = await this.tryAcquireOrRenew();
        failing = undefined;
      } catch (err) {
        const message = (err as Error).message;
        if (message !== failing) this.say(`lease ${this.o.namespace}/${this.o.name}: ${message}; trying again`);
        failing = message;
      }
      if (this.closed) return;
      if (ok) {
        if (!this.leadingNow) {
          this.leadingNow = true;
          this.say(`leading (lease ${this.o.namespace}/${this.o.name}, as ${this.o.identity})`);
          await (async () => this.o.onStart())().catch((err) => this.say(`starting to lead: ${(err as Error).message}`));
        }
        this.armDeadline();
      } else if (this.leadingNow && this.heldByOther) {
        this.say(`no longer leading (lease ${this.o.namespace}/${this.o.name} now held by ${this.heldByOther})`);
        await this.stepDown();
      }
      await this.sleep(this.leadingNow ? (this.o.renewMs ?? 5000) : (this.o.retryMs ?? 2000));
    }
  }

  /** A leader not renewed by the deadline (an API server out of reach, a request hanging) steps down before another may take over. */
  private armDeadline(): void {
    clearTimeout(this.deadline);
    this.deadline = setTimeout(() => {
      if (!this.leadingNow || this.closed) return;
      this.say(`no longer leading (lease ${this.o.namespace}/${this.o.name} not renewed in time)`);
      void this.stepDown();
    }, this.o.renewDeadlineMs ?? 10_000);
    this.deadline.unref();
  }

  private async stepDown(): Promise<void> {
    clearTimeout(this.deadline);
    if (!this.leadingNow) return;
    this.leadingNow = false;
    await (async () => this.o.onStop())().catch((err) => this.say(`stepping down: ${(err as Error).message}`));
  }

  /** One round: true when this replica holds the Lease afterwards. */
  private async tryAcquireOrRenew(): Promise<boolean> {
    const now = Date.now();
    let lease: LeaseObject;
    try {
      lease = await this.o.client.request('GET', `${this.path}/${this.o.name}`);
    } catch (err) {
      if (!(err instanceof KubeError && err.status === 404)) throw err;
      const created = { apiVersion: 'coordination.k8s.io/v1', kind: 'Lease', metadata: { name: this.o.name, namespace: this.o.namespace }, spec: this.claim(now, 0) };
      return this.write('POST', this.path, created);
    }
    const rv = lease.metadata.resourceVersion ?? '';
    if (this.seen?.resourceVersion !== rv) this.seen = { resourceVersion: rv, at: now };
    const holder = lease.spec?.holderIdentity || undefined;
    this.heldByOther = holder && holder !== this.o.identity ? holder : undefined;
    const duration = (lease.spec?.leaseDurationSeconds ?? this.duration) * 1000;
    if (this.heldByOther && now < this.seen.at + duration) return false;
    // ours to renew, released, or expired: claim it, guarded by the version read
    const transitions = (lease.spec?.leaseTransitions ?? 0) + (holder === this.o.identity ? 0 : 1);
    const spec = holder === this.o.identity ? { ...lease.spec, renewTime: microTime(now), leaseDurationSeconds: this.duration } : this.claim(now, transitions);
    return this.write('PUT', `${this.path}/${this.o.name}`, { ...lease, metadata: { ...lease.metadata, resourceVersion: rv }, spec });
  }

  private claim(now: number, leaseTransitions: number): LeaseObject['spec'] {
    return { holderIdentity: this.o.identity, leaseDurationSeconds: this.duration, acquireTime: microTime(now), renewTime: microTime(now), leaseTransitions };
  }

  /** A create or a version-guarded update: false when another replica wrote first. */
  private async write(method: 'POST' | 'PUT', path: string, body: LeaseObject & { apiVersion?: string; kind?: string }): Promise<boolean> {
    try {
      const written = await this.o.client.request<LeaseObject>(method, path, { body });
      this.seen = { resourceVersion: written.metadata.resourceVersion ?? '', at: Date.now() };
      this.heldByOther = undefined;
      return true;
    } catch (err) {
      if (err instanceof KubeError && (err.status === 409 || err.reason === 'AlreadyExists' || err.reason === 'Conflict')) return false;
      throw err;
    }
  }

  /** No holder, expiring at once: the next replica to try takes it. */
  private async release(): Promise<void> {
    try {
      const lease = await this.o.client.request<LeaseObject>('GET', `${this.path}/${this.o.name}`);
      if (lease.spec?.holderIdentity !== this.o.identity) return;
      await this.o.client.request('PUT', `${this.path}/${this.o.name}`, { body: { ...lease, spec: { ...lease.spec, holderIdentity: null, leaseDurationSeconds: 1, renewTime: microTime() } } });
      this.say(`released lease ${this.o.namespace}/${this.o.name}`);
    } catch (err) {
      this.say(`could not release lease ${this.o.namespace}/${this.o.name} (another replica takes it once it expires): ${(err as Error).message}`);
    }
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const t = setTimeout(resolve, ms);
      this.wake = () => {
        clearTimeout(t);
        resolve();
      };
    });
  }

  private say(message: string): void {
    (this.o.report ?? ((m) => process.stderr.write(`spore: ${m}\n`)))(message);
  }
}
