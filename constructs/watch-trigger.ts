import type { Construct } from 'constructs';
import type { WatchTriggerSpec } from '../api/index.js';
import { calleeRefs, type FunctionRef, type WorkflowRef } from './function-ref.js';
import { SporeObject, type SporeObjectOptions } from './spore-object.js';

export interface WatchOptions extends SporeObjectOptions {
  /** API version of the watched kind. @default v1 */
  readonly apiVersion?: string;
  /** Namespace watched. @default every namespace the platform may see */
  readonly namespace?: string;
  /** Labels the watched objects must carry. @default all objects */
  readonly labelSelector?: Record<string, string>;
}

export interface WatchTriggerProps extends WatchOptions {
  /** Kind watched, e.g. Pod or ConfigMap. */
  readonly kind: string;
  /** The function called. Give this or `workflow`. */
  readonly function?: FunctionRef;
  /** A Workflow started instead of a function. */
  readonly workflow?: WorkflowRef;
}

/** Invokes a function for each change of watched Kubernetes objects. */
export class WatchTrigger extends SporeObject {
  constructor(
    scope: Construct,
    id: string,
    private readonly config: WatchTriggerProps,
  ) {
    super(scope, id, 'WatchTrigger', config);
  }

  protected renderSpec(): WatchTriggerSpec {
    const c = this.config;
    return {
      resource: { apiVersion: c.apiVersion ?? 'v1', kind: c.kind },
      namespace: c.namespace,
      labelSelector: c.labelSelector,
      ...calleeRefs(c),
    };
  }
}
