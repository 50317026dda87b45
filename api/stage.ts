// A Stage: one app deployed from one Git ref (the main branch, or a preview).
// The reconciler keeps on it what `spore status` tells a developer — the
// revisions, the failing step, the recent history — and the store keeps on it
// the inventory: the list of objects applied, which is what prune compares.
import { Type } from '@sinclair/typebox';
import { Closed, Name, StringEnum, commonStatus } from './schema-kit.js';

export const StageSpec = Closed({
  app: Name('the app whose objects the stage holds'),
  stage: Name('the stage: main, or a preview such as pr-12'),
  ref: Type.Optional(Type.String({ description: 'the Git ref the stage follows, e.g. refs/heads/main' })),
  namespace: Type.Optional(Type.String({ description: "a preview's own namespace" })),
});

export const InventoryEntry = Closed({
  apiVersion: Type.String(),
  kind: Type.String(),
  namespace: Type.Optional(Type.String()),
  name: Type.String(),
  /** Digests of what Spore applied and of what the API server made of it, to tell its rewrites from drift. */
  digest: Type.Optional(Type.String()),
  owned: Type.Optional(Type.String()),
});

const SyncSummary = Closed({
  revision: Type.String(),
  result: StringEnum(['succeeded', 'failed'] as const),
  trigger: Type.String(),
  startedAt: Type.String({ description: 'RFC 3339 time' }),
  durationMs: Type.Integer({ minimum: 0 }),
  step: Type.Optional(Type.String({ description: 'the step that failed' })),
  message: Type.Optional(Type.String({ description: 'why it failed' })),
});

export const StageStatus = Closed({
  ...commonStatus,
  /** Kept by the store: every object the stage's last apply wrote, so prune deletes exactly what left it. */
  inventory: Type.Optional(Type.Array(InventoryEntry)),
  lastAppliedRevision: Type.Optional(Type.String()),
  lastAttemptedRevision: Type.Optional(Type.String()),
  /** The step of the last attempt when it failed (checkout, install, render, validate, build, apply) and the object to blame. */
  failure: Type.Optional(Closed({ revision: Type.String(), step: Type.String(), object: Type.Optional(Type.String()), message: Type.String() })),
  /** The newest syncs first, a few of them. */
  history: Type.Optional(Type.Array(SyncSummary)),
});

/** The name of an app's Stage object. */
export const stageObjectName = (app: string, stage: string) => `${app}-${stage}`;
