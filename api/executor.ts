import { EXECUTOR_DEFAULTS, RUNTIME_REQUESTS_PER_INSTANCE, type BuiltinRuntime, type EnvironmentSpec } from './environment.js';
import type { ExecutorSpec } from './function.js';

export type ResolvedExecutor = Required<ExecutorSpec>;

/**
 * A Function's executor with every field set: the Function's own value, else
 * its Environment's default, else Spore's default (Fission's, but for the calls
 * an instance of a built-in runtime takes at once). The constructs
 * write the result into manifests; the dataplane uses it for hand-written ones.
 */
export function resolveExecutor(executor: Partial<ExecutorSpec> | undefined, env?: Pick<EnvironmentSpec, 'defaults'> & { runtime?: { name?: string } }): ResolvedExecutor {
  const e = executor ?? {};
  const d = env?.defaults ?? {};
  return {
    type: e.type ?? 'pool',
    minScale: e.minScale ?? EXECUTOR_DEFAULTS.minScale,
    maxScale: e.maxScale ?? Math.max(EXECUTOR_DEFAULTS.maxScale, e.minScale ?? 0),
    concurrency: e.concurrency ?? d.concurrency ?? EXECUTOR_DEFAULTS.concurrency,
    requestsPerInstance: e.requestsPerInstance ?? d.requestsPerInstance ?? RUNTIME_REQUESTS_PER_INSTANCE[env?.runtime?.name as BuiltinRuntime] ?? EXECUTOR_DEFAULTS.requestsPerInstance,
    idleTimeoutSeconds: e.idleTimeoutSeconds ?? d.idleTimeoutSeconds ?? EXECUTOR_DEFAULTS.idleTimeoutSeconds,
    functionTimeoutSeconds: e.functionTimeoutSeconds ?? d.functionTimeoutSeconds ?? EXECUTOR_DEFAULTS.functionTimeoutSeconds,
    specializationTimeoutSeconds: e.specializationTimeoutSeconds ?? EXECUTOR_DEFAULTS.specializationTimeoutSeconds,
  };
}
