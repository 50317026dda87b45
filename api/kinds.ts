// The registry of spore.dev kinds: one entry per kind holds its schemas and how
// it is presented (plural, short names, printer columns) and ordered (sync wave).
import type { TSchema, Static } from '@sinclair/typebox';
import { EnvironmentSpec, EnvironmentStatus } from './environment.js';
import { PackageSpec, PackageStatus } from './package.js';
import { FunctionSpec, FunctionStatus } from './function.js';
import { HttpTriggerSpec, QueueTriggerSpec, TimerTriggerSpec, TriggerStatus, WatchTriggerSpec } from './triggers.js';
import { WorkflowSpec, WorkflowStatus } from './workflow.js';
import { StageSpec, StageStatus } from './stage.js';
import { WorkflowRunSpec, WorkflowRunStatus } from './workflow-run.js';
import { InvocationSpec, InvocationStatus } from './invocation.js';

export const GROUP = 'spore.dev';
export const VERSION = 'v1alpha1';
export const API_VERSION = `${GROUP}/${VERSION}`;

export interface PrinterColumn {
  name: string;
  type: 'string' | 'integer' | 'number' | 'boolean' | 'date';
  jsonPath: string;
  description?: string;
  priority?: number;
}

export interface KindInfo {
  kind: string;
  plural: string;
  shortNames: string[];
  spec: TSchema;
  status: TSchema;
  printerColumns: PrinterColumn[];
  /** Argo CD sync wave: Environments and Packages before Functions before what calls them. */
  wave: number;
  description: string;
  /**
   * Objects Spore's router writes as it runs (not part of an app): an app may
   * not declare them, the reconciler does not watch them, and their CRD has
   * no status subresource (the router writes each object whole, in one request).
   */
  runtime?: true;
}

const ready: PrinterColumn = { name: 'Ready', type: 'string', jsonPath: '.status.conditions[?(@.type=="Ready")].status' };
/** A timer's, queue's or watch's state as the dataplane last said it (dataplane/triggers/conditions.ts). */
const active: PrinterColumn[] = [
  { name: 'Active', type: 'string', jsonPath: '.status.conditions[?(@.type=="Active")].status' },
  { name: 'State', type: 'string', jsonPath: '.status.conditions[?(@.type=="Active")].message', priority: 1 },
];
const fn: PrinterColumn = { name: 'Function', type: 'string', jsonPath: '.spec.function.name' };
const age: PrinterColumn = { name: 'Age', type: 'date', jsonPath: '.metadata.creationTimestamp' };
const revision: PrinterColumn = { name: 'Revision', type: 'string', jsonPath: '.status.revision', description: 'the Git revision that last changed the object' };

/** Waves of what is not a spore.dev kind but comes before it. */
export const WAVE_FOUNDATION = -1; // CustomResourceDefinitions, Namespaces
export const WAVE_PLATFORM = 0; // the platform's own RBAC, Deployments, Services

export const KINDS = {
  Environment: {
    kind: 'Environment', plural: 'environments', shortNames: ['env', 'envs'], spec: EnvironmentSpec, status: EnvironmentStatus, wave: 0,
    description: 'A language runtime and its pool of warm generic instances.',
    printerColumns: [
      { name: 'Runtime', type: 'string', jsonPath: '.spec.runtime.name' },
      { name: 'Image', type: 'string', jsonPath: '.spec.runtime.image', priority: 1 },
      { name: 'Pool', type: 'integer', jsonPath: '.spec.poolSize' },
      ready,
      age,
    ],
  },
  Package: {
    kind: 'Package', plural: 'packages', shortNames: ['pkg', 'pkgs'], spec: PackageSpec, status: PackageStatus, wave: 0,
    description: 'A code archive, inline or by URL, with its checksum.',
    printerColumns: [
      { name: 'Size', type: 'integer', jsonPath: '.spec.archive.size' },
      { name: 'Sha256', type: 'string', jsonPath: '.spec.archive.sha256', priority: 1 },
      { name: 'Build', type: 'string', jsonPath: '.status.buildStatus' },
      ready,
      age,
    ],
  },
  Function: {
    kind: 'Function', plural: 'functions', shortNames: ['fn', 'fns'], spec: FunctionSpec, status: FunctionStatus, wave: 1,
    description: 'Code from a Package run in an Environment.',
    printerColumns: [
      { name: 'Environment', type: 'string', jsonPath: '.spec.environment.name' },
      { name: 'Executor', type: 'string', jsonPath: '.spec.executor.type' },
      ready,
      revision,
      age,
    ],
  },
  HttpTrigger: {
    kind: 'HttpTrigger', plural: 'httptriggers', shortNames: ['ht', 'route', 'routes'], spec: HttpTriggerSpec, status: TriggerStatus, wave: 2,
    description: 'Routes HTTP requests to a function or a weighted set of functions.',
    printerColumns: [
      { name: 'Methods', type: 'string', jsonPath: '.spec.methods' },
      { name: 'Path', type: 'string', jsonPath: '.spec.path' },
      { name: 'Prefix', type: 'string', jsonPath: '.spec.prefix', priority: 1 },
      { name: 'Host', type: 'string', jsonPath: '.spec.host', priority: 1 },
      fn,
      ready,
      revision,
      age,
    ],
  },
  TimerTrigger: {
    kind: 'TimerTrigger', plural: 'timertriggers', shortNames: ['tt', 'timer', 'timers'], spec: TimerTriggerSpec, status: TriggerStatus, wave: 2,
    description: 'Invokes a function on a cron schedule.',
    printerColumns: [{ name: 'Cron', type: 'string', jsonPath: '.spec.cron' }, fn, ready, ...active, age],
  },
  QueueTrigger: {
    kind: 'QueueTrigger', plural: 'queuetriggers', shortNames: ['qt', 'mqt'], spec: QueueTriggerSpec, status: TriggerStatus, wave: 2,
    description: 'Invokes a function for each message on a topic.',
    printerColumns: [
      { name: 'Broker', type: 'string', jsonPath: '.spec.broker.kind' },
      { name: 'Topic', type: 'string', jsonPath: '.spec.topic' },
      fn,
      ready,
      ...active,
      age,
    ],
  },
  WatchTrigger: {
    kind: 'WatchTrigger', plural: 'watchtriggers', shortNames: ['wt', 'watch', 'watches'], spec: WatchTriggerSpec, status: TriggerStatus, wave: 2,
    description: 'Invokes a function when watched Kubernetes objects change.',
    printerColumns: [{ name: 'Kind', type: 'string', jsonPath: '.spec.resource.kind' }, fn, ready, ...active, age],
  },
  Workflow: {
    kind: 'Workflow', plural: 'workflows', shortNames: ['wf', 'wfs'], spec: WorkflowSpec, status: WorkflowStatus, wave: 2,
    description: 'Functions composed into a graph of tasks.',
    printerColumns: [{ name: 'Output', type: 'string', jsonPath: '.spec.output' }, { name: 'Phase', type: 'string', jsonPath: '.status.phase' }, ready, age],
  },
  Stage: {
    kind: 'Stage', plural: 'stages', shortNames: ['stg'], spec: StageSpec, status: StageStatus, wave: WAVE_PLATFORM,
    description: 'An app deployed from one Git ref, as the reconciler keeps it: revisions, failure, history, inventory.',
    printerColumns: [
      { name: 'App', type: 'string', jsonPath: '.spec.app' },
      { name: 'Stage', type: 'string', jsonPath: '.spec.stage' },
      { name: 'Revision', type: 'string', jsonPath: '.status.lastAppliedRevision' },
      ready,
      { name: 'Message', type: 'string', jsonPath: '.status.conditions[?(@.type=="Ready")].message', priority: 1 },
      age,
    ],
  },
  WorkflowRun: {
    kind: 'WorkflowRun', plural: 'workflowruns', shortNames: ['wfr', 'wfrs'], spec: WorkflowRunSpec, status: WorkflowRunStatus, wave: WAVE_PLATFORM, runtime: true,
    description: 'One run of a Workflow, written by the router as it goes: the input, each task, the output.',
    printerColumns: [
      { name: 'Workflow', type: 'string', jsonPath: '.spec.workflow' },
      { name: 'State', type: 'string', jsonPath: '.status.state' },
      { name: 'Owner', type: 'string', jsonPath: '.status.owner', priority: 1 },
      age,
    ],
  },
  Invocation: {
    kind: 'Invocation', plural: 'invocations', shortNames: ['inv', 'invs'], spec: InvocationSpec, status: InvocationStatus, wave: WAVE_PLATFORM, runtime: true,
    description: 'One asynchronous call of a function, written by the router from its acceptance until it is done; a failed one is the dead letter.',
    printerColumns: [
      { name: 'Function', type: 'string', jsonPath: '.spec.function' },
      { name: 'State', type: 'string', jsonPath: '.status.state' },
      { name: 'Attempts', type: 'integer', jsonPath: '.status.attempts' },
      { name: 'Status', type: 'integer', jsonPath: '.status.status' },
      { name: 'Error', type: 'string', jsonPath: '.status.error', priority: 1 },
      { name: 'Owner', type: 'string', jsonPath: '.status.owner', priority: 1 },
      age,
    ],
  },
} satisfies Record<string, KindInfo>;

export type KindName = keyof typeof KINDS;
export const KIND_NAMES = Object.keys(KINDS) as KindName[];

export function isKindName(kind: unknown): kind is KindName {
  return typeof kind === 'string' && Object.hasOwn(KINDS, kind);
}

export interface ObjectMeta {
  name: string;
  namespace?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  [extra: string]: unknown;
}

/** A spore.dev object of kind K as it appears in a manifest. */
export interface SporeObject<K extends KindName = KindName> {
  apiVersion: typeof API_VERSION;
  kind: K;
  metadata: ObjectMeta;
  spec: Static<(typeof KINDS)[K]['spec']>;
  status?: Static<(typeof KINDS)[K]['status']>;
}

/** Any Kubernetes object (a manifest document). */
export interface KubeObject {
  apiVersion: string;
  kind: string;
  metadata: ObjectMeta;
  [field: string]: unknown;
}

/**
 * Kubernetes kinds that live outside any namespace. A preview stage, which is
 * a namespace, cannot have its own copy of these. Kinds not listed (custom
 * resources included) are taken as namespaced, as most are.
 */
export const CLUSTER_SCOPED_KINDS = new Set([
  'Namespace', 'Node', 'PersistentVolume', 'StorageClass', 'CSIDriver', 'CSINode', 'VolumeAttachment', 'RuntimeClass', 'PriorityClass', 'IngressClass',
  'ClusterRole', 'ClusterRoleBinding', 'CustomResourceDefinition', 'APIService', 'CertificateSigningRequest',
  'ValidatingWebhookConfiguration', 'MutatingWebhookConfiguration', 'ValidatingAdmissionPolicy', 'ValidatingAdmissionPolicyBinding', 'FlowSchema', 'PriorityLevelConfiguration',
]);

/** The sync wave of any object Spore writes: foundation, platform, then the spore.dev kinds by their order. */
export function waveOf(obj: { apiVersion: string; kind: string }): number {
  if (obj.kind === 'CustomResourceDefinition' || obj.kind === 'Namespace') return WAVE_FOUNDATION;
  if (obj.apiVersion === API_VERSION && isKindName(obj.kind)) return KINDS[obj.kind].wave;
  return WAVE_PLATFORM;
}
