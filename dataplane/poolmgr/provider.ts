// The instance-provider seam: how a runtime instance comes to life. Locally a
// child process; on Kubernetes a Pod. The pool manager only sees this interface.
import type { StoredObject } from '../../store/index.js';

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
  readonly pid?: number;
  readonly startedAt: number;
  /** Resolves when the instance has exited, for whatever reason. */
  readonly exited: Promise<{ code: number | null; signal: string | null }>;
  /** A folder only this instance uses (its code goes here). */
  readonly workDir: string;
  /**
   * The instance's credential: sent as `X-Spore-Instance-Token` on every request
   * to it (specialize, health, calls). Only the pool manager and the router hold
   * it, so nothing else — another function included — can specialize or call it.
   */
  readonly token?: string;
  /** The user the instance runs as, when not Spore's own: files put in `workDir` for it must be its. */
  readonly owner?: { uid: number; gid: number };
  /** Whether the instance hit its memory limit (a process of it was killed for it), where that is known. */
  memoryLimited?(): boolean;
  /** Stops the instance (gracefully, then forcibly) and removes its folder. */
  kill(): Promise<void>;
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
  /** Stops every instance this provider started. */
  shutdown(): Promise<void>;
}
