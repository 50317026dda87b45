export * from './types.js';
export { SqliteStore, type SqliteStoreOptions } from './sqlite.js';
export { canonical, digest } from './canonical.js';
export { SqliteInvocations, type Invocation, type InvocationState, type InvocationStore, type NewInvocation } from './invocations.js';
export { SqliteWorkflowRuns, KEEP_RUNS, type RunError, type RunState, type TaskRecord, type TaskState, type WorkflowRun, type WorkflowRunStore } from './workflow-runs.js';
