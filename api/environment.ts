import { Type, type Static } from '@sinclair/typebox';
import { Cel, Closed, EnvVar, MapOf, Name, Quantity, Seconds, StringEnum, commonStatus } from './schema-kit.js';

export const BUILTIN_RUNTIMES = ['node', 'python'] as const;
export type BuiltinRuntime = (typeof BUILTIN_RUNTIMES)[number];

/** The interpreter of the built-in python runtime on this host (SPORE_PYTHON, else python3): deploy-time builds install for it. */
export function localPython(): string {
  return process.env.SPORE_PYTHON ?? 'python3';
}

/**
 * Calls in flight on one instance, by built-in runtime, when neither the
 * Function nor its Environment says: Node serves many calls on its event loop,
 * the Python runtime a thread per call; Fission's 1 (a thread-per-request
 * runtime's value, EXECUTOR_DEFAULTS) stays the default of every other runtime.
 */
export const RUNTIME_REQUESTS_PER_INSTANCE: Record<BuiltinRuntime, number> = { node: 100, python: 10 };

/** Defaults a Function inherits from its Environment when it does not set its own (Fission's values). */
export const EXECUTOR_DEFAULTS = {
  concurrency: 500,
  requestsPerInstance: 1,
  idleTimeoutSeconds: 120,
  functionTimeoutSeconds: 60,
  specializationTimeoutSeconds: 120,
  minScale: 0,
  maxScale: 1,
} as const;

const ResourceList = Closed({
  cpu: Type.Optional(Quantity('CPU, e.g. 250m')),
  memory: Type.Optional(Quantity('memory, e.g. 128Mi')),
});

export const EnvironmentSpec = Closed(
  {
    runtime: Closed(
      {
        name: Type.Optional(StringEnum(BUILTIN_RUNTIMES, { description: 'built-in runtime; Spore knows its image and local command' })),
        image: Type.Optional(Type.String({ minLength: 1, description: 'container image of the runtime server (Kubernetes target)' })),
        command: Type.Optional(
          Type.Array(Type.String({ minLength: 1 }), { minItems: 1, description: 'command starting the runtime server locally; gets PORT in its environment' }),
        ),
      },
      {
        description: 'the runtime server: a built-in name, or an image and a local command',
        ...Cel({ rule: 'has(self.name) || has(self.image) || has(self.command)', message: 'set name (node or python), or an image and/or a command' }),
      },
    ),
    builder: Type.Optional(
      Closed(
        {
          image: Type.Optional(Type.String({ minLength: 1 })),
          command: Type.Optional(Type.Array(Type.String({ minLength: 1 }), { minItems: 1 })),
        },
        { description: 'builds source packages (e.g. installs requirements.txt) before they are served' },
      ),
    ),
    poolSize: Type.Integer({ minimum: 0, maximum: 100, default: 3, description: 'warm generic instances kept ready' }),
    resources: Type.Optional(
      Closed({ requests: Type.Optional(ResourceList), limits: Type.Optional(ResourceList) }, { description: 'per-instance resources' }),
    ),
    pod: Type.Optional(
      Closed(
        {
          serviceAccountName: Type.Optional(Name("ServiceAccount of the pool's pods, in the pool manager's namespace (default: none, and no API token)")),
          nodeSelector: Type.Optional(MapOf(Type.String({ maxLength: 63 }), { description: 'node labels the pool pods must be scheduled on' })),
          env: Type.Optional(Type.Array(EnvVar, { maxItems: 100, description: "environment variables of the runtime container (a function's own env comes on specialization)" })),
        },
        { description: 'the Kubernetes target: what the pool pods of this Environment get' },
      ),
    ),
    defaults: Type.Optional(
      Closed(
        {
          idleTimeoutSeconds: Type.Optional(Seconds('default idle time before an instance is released', 1, 86_400)),
          functionTimeoutSeconds: Type.Optional(Seconds('default time bound of one call', 1, 3_600)),
          concurrency: Type.Optional(Type.Integer({ minimum: 1, maximum: 10_000, description: 'default cap of instances per function' })),
          requestsPerInstance: Type.Optional(Type.Integer({ minimum: 1, maximum: 10_000, description: "default calls in flight on one instance (else the runtime's: node 100, python 10, others 1)" })),
        },
        { description: "defaults for the environment's functions; each Function may override them" },
      ),
    ),
  },
  { description: 'a language runtime and its pool of warm instances' },
);
export type EnvironmentSpec = Static<typeof EnvironmentSpec>;

export const EnvironmentStatus = Closed({ ...commonStatus });
