// A trigger's `Active` condition, written by the dataplane as the trigger's
// state changes — a timer scheduled, a queue consuming or failing to reach its
// broker, a watch following its resources or inactive — beside the
// reconciler's `Ready` (store.setCondition: each condition is kept by type).
// `kubectl get timertriggers` and the store show it. A state is written once
// (the same state again is not), writes to one trigger go one at a time, and
// a failing write is said once per trigger, not retried: the next change
// writes again.
import { API_VERSION } from '../../api/index.js';
import type { Condition, ResourceStore } from '../../store/index.js';

export const ACTIVE = 'Active';

export type TriggerKind = 'TimerTrigger' | 'QueueTrigger' | 'WatchTrigger';

/** True: working; False: not (the message says why); Unknown: on its way (connecting). */
export type Activity = Condition['status'];

/** The states timers, queues and watches are in. */
export type TriggerState = 'scheduled' | 'connecting' | 'consuming' | 'watching' | 'failed' | 'inactive';
const ACTIVITY: Record<TriggerState, Activity> = { scheduled: 'True', consuming: 'True', watching: 'True', connecting: 'Unknown', failed: 'False', inactive: 'False' };

export class TriggerConditions {
  private readonly written = new Map<string, { key: string; lastTransitionTime: string; writing: Promise<void>; failed?: boolean }>();

  constructor(
    private readonly store: Pick<ResourceStore, 'get' | 'setCondition'>,
    private readonly report: (message: string) => void,
  ) {}

  set(kind: TriggerKind, namespace: string, name: string, status: Activity, reason: string, message: string): void {
    const id = `${kind}/${namespace}/${name}`;
    const ref = { apiVersion: API_VERSION, kind, namespace, name };
    const last = this.written.get(id);
    const key = `${status}\n${reason}\n${message}`;
    if (last?.key === key) return;
    // the time it last changed between True, False and Unknown, as Kubernetes conditions keep it
    const entry = { key, lastTransitionTime: last?.key.startsWith(`${status}\n`) ? last.lastTransitionTime : new Date().toISOString(), writing: Promise.resolve(), failed: last?.failed };
    entry.writing = (last?.writing ?? Promise.resolve()).then(async () => {
      try {
        if (!last) {
          // the first word of this process: the time kept by the last one still holds if the status is the same
          const kept = ((await this.store.get(ref))?.status?.conditions as Condition[] | undefined)?.find((c) => c.type === ACTIVE);
          if (kept?.status === status && kept.lastTransitionTime) entry.lastTransitionTime = kept.lastTransitionTime;
        }
        await this.store.setCondition(ref, { type: ACTIVE, status, reason, message: message.slice(0, 1000), lastTransitionTime: entry.lastTransitionTime });
        entry.failed = false;
      } catch (err) {
        if (this.written.get(id) !== entry) return; // gone, or changed again since
        if (!entry.failed) this.report(`${kind} ${namespace}/${name}: could not write its ${ACTIVE} condition: ${(err as Error).message}`);
        entry.failed = true;
      }
    });
    this.written.set(id, entry);
  }

  /** A trigger's state as the dataplane says it (spore list shows the same): its condition. */
  state(kind: TriggerKind, namespace: string, name: string, state: TriggerState, detail = ''): void {
    this.set(kind, namespace, name, ACTIVITY[state], state[0].toUpperCase() + state.slice(1), detail || state);
  }

  /** The trigger is gone: nothing more is written for it. */
  forget(kind: TriggerKind, namespace: string, name: string): void {
    this.written.delete(`${kind}/${namespace}/${name}`);
  }

  /** Waits for the writes under way. */
  async flush(): Promise<void> {
    await Promise.all([...this.written.values()].map((e) => e.writing));
  }
}
