import type { Duration } from 'cdk8s';
import type { Construct } from 'constructs';
import type { BuiltinRuntime, EnvironmentSpec } from '../api/index.js';
import { SporeObject, type SporeObjectOptions } from './spore-object.js';

/** CPU and memory of one instance, as Kubernetes quantities ('250m', '128Mi'). */
export interface ResourceProps {
  readonly cpuRequest?: string;
  readonly cpuLimit?: string;
  readonly memoryRequest?: string;
  readonly memoryLimit?: string;
}

export interface EnvironmentOptions extends SporeObjectOptions {
  /**
   * Warm generic instances kept ready for first calls.
   * @default 3
   */
  readonly poolSize?: number;
  /** Resources of each instance. @default none set */
  readonly resources?: ResourceProps;
  /** Default idle time before a function's instance is released. @default Duration.seconds(120) */
  readonly idleTimeout?: Duration;
  /** Default time bound of one call. @default Duration.seconds(60) */
  readonly functionTimeout?: Duration;
  /** Default cap of instances per function. @default 500 */
  readonly concurrency?: number;
  /** Default calls in flight on one instance. @default 100 for node, 10 for python, 1 (Fission's) for other runtimes */
  readonly requestsPerInstance?: number;
  /** Container image of the runtime server, for the Kubernetes target. @default the built-in runtime's image */
  readonly image?: string;
  /** Image and command that build source packages (e.g. install requirements.txt). @default no builder */
  readonly builder?: { readonly image?: string; readonly command?: string[] };
  /**
   * The Kubernetes target: the pool pods' ServiceAccount (in the pool
   * manager's namespace), node selector and runtime container env.
   * @default none of them
   */
  readonly pod?: { readonly serviceAccountName?: string; readonly nodeSelector?: Record<string, string>; readonly env?: Record<string, string> };
}

export interface EnvironmentProps extends EnvironmentOptions {
  /** A built-in runtime. Give this, or `image` and/or `command` for a runtime of your own. */
  readonly runtime?: BuiltinRuntime;
  /** Command that starts the runtime server locally; it gets its port in PORT. */
  readonly command?: string[];
}

/**
 * A language runtime and its pool of warm generic instances. Functions name
 * the Environment they run in; the first call of a function specializes one of
 * the pool's instances with its code.
 *
 * ```ts
 * const node = Environment.node(chart, 'node', { poolSize: 5 });
 * ```
 */
export class Environment extends SporeObject {
  /** The built-in Node.js runtime (Web Request → Response and Fission-style handlers). */
  static node(scope: Construct, id: string, options: EnvironmentOptions = {}): Environment {
    return new Environment(scope, id, { ...options, runtime: 'node' });
  }

  /** The built-in Python runtime (standard library; `main(request)` handlers). */
  static python(scope: Construct, id: string, options: EnvironmentOptions = {}): Environment {
    return new Environment(scope, id, { ...options, runtime: 'python' });
  }

  constructor(
    scope: Construct,
    id: string,
    private readonly config: EnvironmentProps,
  ) {
    super(scope, id, 'Environment', config);
  }

  /** The Environment's own defaults for its functions (used to resolve each Function's executor). */
  get spec(): EnvironmentSpec {
    return this.renderSpec();
  }

  protected renderSpec(): EnvironmentSpec {
    const p = this.config;
    const r = p.resources ?? {};
    const requests = { cpu: r.cpuRequest, memory: r.memoryRequest };
    const limits = { cpu: r.cpuLimit, memory: r.memoryLimit };
    const some = (o: object) => (Object.values(o).some((v) => v !== undefined) ? o : undefined);
    return {
      runtime: { name: p.runtime, image: p.image, command: p.command },
      builder: p.builder ? { image: p.builder.image, command: p.builder.command } : undefined,
      poolSize: p.poolSize ?? 3,
      resources: some({ requests: some(requests), limits: some(limits) }),
      pod: p.pod
        ? some({ serviceAccountName: p.pod.serviceAccountName, nodeSelector: p.pod.nodeSelector, env: p.pod.env ? Object.entries(p.pod.env).map(([name, value]) => ({ name, value })) : undefined })
        : undefined,
      defaults: some({
        idleTimeoutSeconds: p.idleTimeout?.toSeconds({ integral: false }),
        functionTimeoutSeconds: p.functionTimeout?.toSeconds({ integral: false }),
        concurrency: p.concurrency,
        requestsPerInstance: p.requestsPerInstance,
      }),
    } as EnvironmentSpec;
  }
}
