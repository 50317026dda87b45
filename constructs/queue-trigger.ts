import type { Construct } from 'constructs';
import type { QueueTriggerSpec } from '../api/index.js';
import { calleeRefs, type FunctionRef, type WorkflowRef } from './function-ref.js';
import { SporeObject, type SporeObjectOptions } from './spore-object.js';

export interface QueueOptions extends SporeObjectOptions {
  /** Message broker. @default 'nats' */
  readonly broker?: 'nats' | 'kafka';
  /** Broker address, e.g. nats://nats.spore-system:4222. Give this or `secret`. */
  readonly url?: string;
  /** A Secret key holding the broker address. */
  readonly secret?: { readonly name: string; readonly key: string };
  /** Where successful responses are published. @default not published */
  readonly responseTopic?: string;
  /** Where failures are published after the last retry. @default not published */
  readonly errorTopic?: string;
  /** Retries of a failed call. @default 0 */
  readonly maxRetries?: number;
  /** Content-Type of the call. @default application/json */
  readonly contentType?: string;
  /** Messages processed at once. @default 1 */
  readonly concurrency?: number;
}

export interface QueueTriggerProps extends QueueOptions {
  /** NATS subject or Kafka topic consumed. */
  readonly topic: string;
  /** The function called. Give this or `workflow`. */
  readonly function?: FunctionRef;
  /** A Workflow started instead of a function. */
  readonly workflow?: WorkflowRef;
}

/** Invokes a function for each message on a topic; `fn.addQueue('orders', { url })` is the short form. */
export class QueueTrigger extends SporeObject {
  constructor(
    scope: Construct,
    id: string,
    private readonly config: QueueTriggerProps,
  ) {
    super(scope, id, 'QueueTrigger', config);
  }

  protected renderSpec(): QueueTriggerSpec {
    const c = this.config;
    return {
      broker: { kind: c.broker ?? 'nats', connection: { url: c.url, secretRef: c.secret ? { name: c.secret.name, key: c.secret.key } : undefined } },
      topic: c.topic,
      responseTopic: c.responseTopic,
      errorTopic: c.errorTopic,
      maxRetries: c.maxRetries ?? 0,
      contentType: c.contentType ?? 'application/json',
      concurrency: c.concurrency ?? 1,
      ...calleeRefs(c),
    };
  }
}
