import { EXECUTOR_DEFAULTS, type EnvironmentSpec } from './environment.js';
import type { ExecutorSpec } from './function.js';

export type ResolvedExecutor = Required<ExecutorSpec>;

/**
 * A Function's executor with every field set: the Function's own value, else
 * its Environment's default, else Spore's (Fission's) default. The constructs
 * write the result into manifests; the dataplane uses it for hand-written ones.
 */
export function resolveExecutor(executor: Partial<ExecutorSpec> | undefined, env?: Pick<EnvironmentSpec, 'defaults'>): ResolvedExecutor {
  const e = executor ?? {};
  const d = env?.defaults ?? {};
  return {
    type: e.type ?? 'pool',
    minScale: e.minScale ?? EXECUTOR_DEFAULTS.minScale,
    maxScale: e.maxScale ?? Math.max(EXECUTOR_DEFAULTS.maxScale, e.minScale ?? 0),
    concurrency: e.concurrency ?? d.concurrency ?? EXECUTOR_DEFAULTS.concurrency,
    requestsPerInstance: e.requestsPerInstance ?? EXECUTOR_DEFAULTS.requestsPerInstance,
    idleTimeoutSeconds: e.idleTimeoutSeconds ?? d.idleTimeoutSeconds ?? EXECUTOR_DEFAULTS.idleTimeoutSeconds,
    functionTimeoutSeconds: e.functionTimeoutSeconds ?? d.functionTimeoutSeconds ?? EXECUTOR_DEFAULTS.functionTimeoutSeconds,
    specializationTimeoutSeconds: e.specializationTimeoutSeconds ?? EXECUTOR_DEFAULTS.specializationTimeoutSeconds,
  };
}
