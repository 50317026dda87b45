// The `spore` package: the cdk8s constructs users describe their functions with.
export { Environment, type EnvironmentProps, type EnvironmentOptions, type ResourceProps } from './environment.js';
export { Code, DEFAULT_EXCLUDES, type CodeConfig, type DirectoryOptions } from './code.js';
export { Package, ARCHIVES_DIR, type PackageProps } from './package.js';
export { Function, type FunctionProps, type FunctionOptions } from './function.js';
export { NodeFunction, NODE_BUNDLE, type NodeFunctionProps, type BundlingOptions } from './node-function.js';
export { PythonFunction, type PythonFunctionProps } from './python-function.js';
export { HttpTrigger, type HttpTriggerProps, type RouteOptions, type WeightedFunction } from './http-trigger.js';
export { TimerTrigger, type TimerTriggerProps, type ScheduleOptions } from './timer-trigger.js';
export { QueueTrigger, type QueueTriggerProps, type QueueOptions } from './queue-trigger.js';
export { WatchTrigger, type WatchTriggerProps, type WatchOptions } from './watch-trigger.js';
export { Workflow, type WorkflowProps, type TaskProps } from './workflow.js';
export { Platform, DEFAULT_WATCHABLE, type PlatformProps, type ComponentProps, type ReconcilerProps, type RouterProps, type WatchableResources, type SecretKeyRef } from './platform.js';
export { ArgoApplication, ArgoPullRequestApplicationSet, type ArgoApplicationProps, type ArgoPullRequestApplicationSetProps } from './argo.js';
export { SporeObject, SYNC_WAVE, type SporeObjectOptions } from './spore-object.js';
export type { FunctionRef } from './function-ref.js';
export { packArchive, readDirectory, type Archive, type ArchiveEntry } from './archive.js';
