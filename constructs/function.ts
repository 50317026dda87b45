import type { Duration } from 'cdk8s';
import type { Construct } from 'constructs';
import { resolveExecutor, type FunctionSpec, type HttpMethod } from '../api/index.js';
import type { Code, CodeConfig } from './code.js';
import { Environment } from './environment.js';
import { HttpTrigger, type RouteOptions } from './http-trigger.js';
import { Package } from './package.js';
import { QueueTrigger, type QueueOptions } from './queue-trigger.js';
import { SporeObject, type SporeObjectOptions } from './spore-object.js';
import { TimerTrigger, type ScheduleOptions } from './timer-trigger.js';
import { WatchTrigger, type WatchOptions } from './watch-trigger.js';

export interface FunctionOptions extends SporeObjectOptions {
  /** The Environment the function runs in: the construct, or its name in the same namespace. */
  readonly environment: Environment | string;
  /** Which handler to call; the form depends on the runtime (Node: file[.export]; Python: module.function). @default the code's own */
  readonly entrypoint?: string;
  /** `pool`: specialize warm generic instances on demand; `dedicated`: keep minScale..maxScale instances. @default 'pool' */
  readonly executor?: 'pool' | 'dedicated';
  /** dedicated: instances kept running. @default 0 */
  readonly minScale?: number;
  /** dedicated: instances at most. @default 1 */
  readonly maxScale?: number;
  /** Instances of this function at most. @default the environment's, else 500 */
  readonly concurrency?: number;
  /** Calls in flight on one instance. @default 1 */
  readonly requestsPerInstance?: number;
  /** Idle time before an instance is released. @default the environment's, else 120 s */
  readonly idleTimeout?: Duration;
  /** Time bound of one call: past it the caller gets 504 and the instance is killed. @default the environment's, else 60 s */
  readonly functionTimeout?: Duration;
  /** Time bound for loading the code into an instance. @default 120 s */
  readonly specializationTimeout?: Duration;
  /** Environment variables of the function's instances. */
  readonly env?: Record<string, string>;
  /** Secrets (same namespace) mounted read-only. */
  readonly secrets?: string[];
  /** ConfigMaps (same namespace) mounted read-only. */
  readonly configMaps?: string[];
}

export interface FunctionProps extends FunctionOptions {
  /** The code: `Code.fromArchive('fn.tgz')` or `Code.fromDirectory('fn/')`. */
  readonly code: Code;
}

const seconds = (d: Duration | undefined) => d?.toSeconds({ integral: false });

/**
 * Code run in an Environment. Its code becomes a Package of the same name.
 * NodeFunction and PythonFunction build the code from sources; this class
 * takes a prebuilt archive or a folder as it is.
 */
export class Function extends SporeObject {
  /** The Package holding this function's code (undefined if the code could not be read). */
  readonly package?: Package;
  private readonly code?: CodeConfig;
  private readonly counters = new Map<string, number>();

  constructor(
    scope: Construct,
    id: string,
    private readonly config: FunctionProps,
  ) {
    super(scope, id, 'Function', config);
    try {
      this.code = config.code.bind();
    } catch (err) {
      this.buildErrors.push((err as Error).message);
      return;
    }
    this.package = new Package(this, 'package', { name: this.name, archive: this.code.archive, requirements: this.code.requirements });
    this.addDependency(this.package);
  }

  protected renderSpec(): FunctionSpec {
    const c = this.config;
    const env = typeof c.environment === 'string' ? SporeObject.find<Environment>(this, 'Environment', c.environment, this.metadata.namespace) : c.environment;
    return {
      environment: { name: typeof c.environment === 'string' ? c.environment : c.environment.name },
      package: { name: this.name },
      entrypoint: c.entrypoint ?? this.code?.entrypoint,
      executor: resolveExecutor(
        {
          type: c.executor,
          minScale: c.minScale,
          maxScale: c.maxScale,
          concurrency: c.concurrency,
          requestsPerInstance: c.requestsPerInstance,
          idleTimeoutSeconds: seconds(c.idleTimeout),
          functionTimeoutSeconds: seconds(c.functionTimeout),
          specializationTimeoutSeconds: seconds(c.specializationTimeout),
        },
        env?.spec,
      ),
      env: c.env ? Object.entries(c.env).sort(([a], [b]) => (a < b ? -1 : 1)).map(([name, value]) => ({ name, value })) : undefined,
      secrets: c.secrets?.map((name) => ({ name })),
      configMaps: c.configMaps?.map((name) => ({ name })),
    };
  }

  // Triggers added here are children of the function, so the output lists them after it.
  /** `hello-route`, then `hello-route-2`, …: stable names for triggers added in order. */
  private childId(kind: string, options: SporeObjectOptions): string {
    if (options.name) return options.name;
    const n = (this.counters.get(kind) ?? 0) + 1;
    this.counters.set(kind, n);
    return n === 1 ? `${this.name}-${kind}` : `${this.name}-${kind}-${n}`;
  }

  /** Routes HTTP requests for `path` (with `:params`) to this function. */
  addRoute(methods: HttpMethod | HttpMethod[], path: string, options: RouteOptions = {}): HttpTrigger {
    const name = this.childId('route', options);
    return new HttpTrigger(this, name, {
      name,
      methods: Array.isArray(methods) ? methods : [methods],
      ...(options.prefix ? { prefix: path, keepPrefix: options.keepPrefix } : { path, keepPrefix: options.keepPrefix }),
      host: options.host,
      function: this,
    });
  }

  /** Invokes this function on a schedule: cron (seconds optional), `@hourly` or `@every 5m`. */
  addSchedule(cron: string, options: ScheduleOptions = {}): TimerTrigger {
    const name = this.childId('schedule', options);
    return new TimerTrigger(this, name, { ...options, name, cron, function: this });
  }

  /** Invokes this function for each message on a topic. */
  addQueue(topic: string, options: QueueOptions = {}): QueueTrigger {
    const name = this.childId('queue', options);
    return new QueueTrigger(this, name, { ...options, name, topic, function: this });
  }

  /** Invokes this function when objects of a Kubernetes kind change. */
  addWatch(kind: string, options: WatchOptions = {}): WatchTrigger {
    const name = this.childId('watch', options);
    return new WatchTrigger(this, name, { ...options, name, kind, function: this });
  }
}
