// CustomResourceDefinitions generated from the same schemas the validator uses.
import { API_VERSION, GROUP, KINDS, KIND_NAMES, VERSION, type KindName } from './kinds.js';

type Json = Record<string, unknown>;

/**
 * Turns a validator schema into a structural OpenAPI v3 schema: drops what the
 * API server does not accept (`additionalProperties: false`, where pruning does
 * the job, and JSON-Schema-only keywords) and keeps types, bounds, patterns,
 * enums, defaults and descriptions.
 */
export function toStructural(schema: unknown): unknown {
  if (Array.isArray(schema)) return schema.map(toStructural);
  if (typeof schema !== 'object' || schema === null) return schema;
  const out: Json = {};
  for (const [key, value] of Object.entries(schema)) {
    if (key === 'additionalProperties' && value === false) continue;
    if (key === '$id' || key === '$schema' || key === 'examples') continue;
    // defaults, enums and examples are data, not schemas: copy them as they are
    out[key] = key === 'default' || key === 'enum' ? value : key === 'properties' ? mapValues(value as Json, toStructural) : toStructural(value);
  }
  return out;
}

function mapValues(obj: Json, fn: (v: unknown) => unknown): Json {
  return Object.fromEntries(Object.entries(obj).map(([k, v]) => [k, fn(v)]));
}

/** The openAPIV3Schema of a kind's CRD. */
export function crdSchema(kind: KindName): Json {
  const info = KINDS[kind];
  return {
    type: 'object',
    description: info.description,
    required: ['spec'],
    properties: {
      apiVersion: { type: 'string' },
      kind: { type: 'string' },
      metadata: { type: 'object' },
      spec: toStructural(info.spec),
      status: toStructural(info.status),
    },
  };
}

/** The CustomResourceDefinition of a kind (apiextensions.k8s.io/v1). */
export function crdFor(kind: KindName, labels: Record<string, string> = {}): Json {
  const info = KINDS[kind];
  return {
    apiVersion: 'apiextensions.k8s.io/v1',
    kind: 'CustomResourceDefinition',
    metadata: { name: `${info.plural}.${GROUP}`, labels },
    spec: {
      group: GROUP,
      names: { kind, listKind: `${kind}List`, plural: info.plural, singular: kind.toLowerCase(), shortNames: info.shortNames, categories: ['spore'] },
      scope: 'Namespaced',
      versions: [
        {
          name: VERSION,
          served: true,
          storage: true,
          schema: { openAPIV3Schema: crdSchema(kind) },
          subresources: { status: {} },
          additionalPrinterColumns: info.printerColumns,
        },
      ],
    },
  };
}

/** Every spore.dev CRD, in a fixed order. */
export function allCrds(labels: Record<string, string> = {}): Json[] {
  return KIND_NAMES.map((k) => crdFor(k, labels));
}

export { API_VERSION };
