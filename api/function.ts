import { Type, type Static } from '@sinclair/typebox';
import { Cel, Closed, EnvVar, LocalRef, Name, Seconds, StringEnum, commonStatus } from './schema-kit.js';

export const EXECUTOR_TYPES = ['pool', 'dedicated'] as const;

export const ExecutorSpec = Closed(
  {
    type: StringEnum(EXECUTOR_TYPES, {
      default: 'pool',
      description: 'pool: specialize warm generic instances on demand; dedicated: keep minScale..maxScale instances of this function',
    }),
    minScale: Type.Optional(Type.Integer({ minimum: 0, maximum: 1_000, description: 'dedicated: instances kept running' })),
    maxScale: Type.Optional(Type.Integer({ minimum: 1, maximum: 1_000, description: 'dedicated: instances at most' })),
    concurrency: Type.Optional(Type.Integer({ minimum: 1, maximum: 10_000, description: 'instances of this function at most (pool)' })),
    requestsPerInstance: Type.Optional(Type.Integer({ minimum: 1, maximum: 10_000, description: 'calls in flight on one instance' })),
    idleTimeoutSeconds: Type.Optional(Seconds('idle time before an instance is released', 1, 86_400)),
    functionTimeoutSeconds: Type.Optional(Seconds('time bound of one call; past it the call gets 504 and the instance is killed', 1, 3_600)),
    specializationTimeoutSeconds: Type.Optional(Seconds('time bound for loading the code into an instance', 1, 600)),
  },
  {
    description: 'how instances are created, shared and released',
    default: {},
    ...Cel({ rule: '!has(self.minScale) || !has(self.maxScale) || self.minScale <= self.maxScale', message: 'minScale must not be more than maxScale', fieldPath: '.minScale' }),
  },
);
export type ExecutorSpec = Static<typeof ExecutorSpec>;


export const FunctionSpec = Closed(
  {
    environment: LocalRef('Environment'),
    package: LocalRef('Package'),
    entrypoint: Type.Optional(
      Type.String({ minLength: 1, description: 'Node: file[.export]; Python: module.function (empty: main.main)' }),
    ),
    executor: Type.Optional(ExecutorSpec),
    env: Type.Optional(Type.Array(EnvVar, { description: 'environment variables of the instance' })),
    secrets: Type.Optional(Type.Array(Closed({ name: Name('Secret name') }), { description: 'Secrets mounted read-only' })),
    configMaps: Type.Optional(Type.Array(Closed({ name: Name('ConfigMap name') }), { description: 'ConfigMaps mounted read-only' })),
  },
  { description: 'code (a Package) run in an Environment' },
);
export type FunctionSpec = Static<typeof FunctionSpec>;

export const FunctionStatus = Closed({ ...commonStatus });
