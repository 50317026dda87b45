// The instance-provider seam: how a runtime instance comes to life and gets a
// function's code. Locally a child process; on Kubernetes a Pod. The pool
// manager only sees this interface.
import type { StoredObject } from '../../store/index.js';
import type { Specialization } from './specialization.js';

export interface LogLine {
  stream: 'stdout' | 'stderr';
  line: string;
  /** Set when the runtime tagged the line with the request it was serving. */
  requestId?: string;
}

export interface Instance {
  readonly id: string;
  /** Base URL of the runtime server, e.g. http://127.0.0.1:41234 */
  readonly url: string;
  /** The process id, where the instance is a local process. */
  readonly pid?: number;
  readonly startedAt: number;
  /** Resolves when the instance has exited, for whatever reason. */
  readonly exited: Promise<{ code: number | null; signal: string | null }>;
  /**
   * The instance's credential: sent as `X-Spore-Instance-Token` on every request
   * to it (specialize, health, calls). Only the pool manager and the router hold
   * it, so nothing else — another function included — can specialize or call it.
   */
  readonly token?: string;
  /** Whether the instance hit its memory limit (a process of it was killed for it), where that is known. */
  memoryLimited?(): boolean;
  /**
   * Turns the generic instance into the function: its code, Secrets and
   * ConfigMaps in place, then the runtime's /v2/specialize. Throws a
   * DataplaneError saying why not. `revision` names what it now serves
   * (a pod is labelled with it, so a restarted pool manager can adopt it).
   */
  specialize(request: Specialization, meta: { revision: string }): Promise<void>;
  /** Stops the instance (gracefully, then forcibly) and removes what it left. */
  kill(): Promise<void>;
}

/** An instance found running when the pool manager started (see InstanceProvider.adopt). */
export interface AdoptedInstance {
  instance: Instance;
  environment: { namespace: string; name: string; generation: string };
  /** Set when it was specialized: what for. */
  function?: { namespace: string; name: string; revision: string };
}

/** The header that carries an instance's credential. */
export const INSTANCE_TOKEN = 'x-spore-instance-token';

export interface StartOptions {
  /** Called for every line the instance prints. */
  onLog?: (line: LogLine) => void;
  /** Extra environment variables (a function's `env`). */
  env?: Record<string, string>;
}

export interface InstanceProvider {
  /** Starts a generic instance of an Environment and resolves once it answers its health check. */
  start(environment: StoredObject, options?: StartOptions): Promise<Instance>;
  /**
   * Instances that outlive the pool manager (pods) are found again by their
   * labels when it restarts: it takes them back instead of leaking or
   * duplicating them. Providers whose instances die with it have none.
   */
  adopt?(): Promise<AdoptedInstance[]>;
  /** True when instances outlive the pool manager: its shutdown leaves them to be adopted. */
  readonly keepsInstances?: boolean;
  /** Stops every instance this provider started (unless it keeps them). */
  shutdown(): Promise<void>;
}
