import type { Construct } from 'constructs';
import type { HttpMethod, TimerTriggerSpec } from '../api/index.js';
import { calleeRefs, type FunctionRef, type WorkflowRef } from './function-ref.js';
import { SporeObject, type SporeObjectOptions } from './spore-object.js';

export interface ScheduleOptions extends SporeObjectOptions {
  /** IANA time zone the cron is read in. @default UTC */
  readonly timeZone?: string;
  /** Method of the call. @default POST */
  readonly method?: HttpMethod;
  /** Path of the call (what the function sees). @default / */
  readonly path?: string;
  /** Headers of the call. */
  readonly headers?: Record<string, string>;
  /** Body of the call. @default empty */
  readonly body?: string;
  /** A run missed while the dataplane was down fires once when it starts again. @default false: missed runs are not replayed */
  readonly catchUp?: boolean;
}

export interface TimerTriggerProps extends ScheduleOptions {
  /** `*\/5 * * * *`, with an optional seconds field first; `@hourly`; or `@every 5m`. */
  readonly cron: string;
  /** The function called. Give this or `workflow`. */
  readonly function?: FunctionRef;
  /** A Workflow started instead of a function. */
  readonly workflow?: WorkflowRef;
}

/** Invokes a function on a schedule. `fn.addSchedule('@every 1m')` is the short form. */
export class TimerTrigger extends SporeObject {
  constructor(
    scope: Construct,
    id: string,
    private readonly config: TimerTriggerProps,
  ) {
    super(scope, id, 'TimerTrigger', config);
  }

  protected renderSpec(): TimerTriggerSpec {
    const c = this.config;
    return {
      cron: c.cron,
      timeZone: c.timeZone,
      ...calleeRefs(c),
      method: c.method ?? 'POST',
      path: c.path ?? '/',
      headers: c.headers,
      body: c.body,
      catchUp: c.catchUp || undefined,
    };
  }
}
