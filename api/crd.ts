// CustomResourceDefinitions generated from the same schemas the validator uses.
import { Ajv } from 'ajv';
import { API_VERSION, GROUP, KINDS, KIND_NAMES, VERSION, type KindName } from './kinds.js';

type Json = Record<string, unknown>;

// Defaults are completed (nested defaults filled in) and checked against the
// schema they sit in: the API server refuses a CRD whose default it would reject.
const ajv = new Ajv({ useDefaults: true, strict: false, allErrors: true });

function completeDefault(schema: Json, path: string): unknown {
  const { default: dflt, ...rest } = schema;
  const value = structuredClone(dflt);
  const holder = { value };
  const validate = ajv.compile({ type: 'object', properties: { value: rest } });
  if (!validate(holder)) {
    const why = (validate.errors ?? []).map((e) => `${e.instancePath.replace(/^\/value/, '') || '/'} ${e.message}`).join('; ');
    throw new Error(`the default of ${path || 'the schema'} is not valid against its own schema: ${why}`);
  }
  return holder.value;
}

const isScalarSchema = (s: unknown) => typeof s === 'object' && s !== null && ['string', 'integer', 'number', 'boolean'].includes((s as Json).type as string);

/**
 * Turns a validator schema into a structural OpenAPI v3 schema: drops what the
 * API server does not accept (`additionalProperties: false`, where pruning does
 * the job, and JSON-Schema-only keywords) and keeps types, bounds, patterns,
 * enums, complete defaults, descriptions and `x-kubernetes-*` rules.
 * `uniqueItems` (refused: quadratic) becomes a list of type set, which the API
 * server keeps free of duplicates too.
 */
export function toStructural(schema: unknown, path = ''): unknown {
  if (Array.isArray(schema)) return schema.map((s) => toStructural(s, path));
  if (typeof schema !== 'object' || schema === null) return schema;
  const out: Json = {};
  for (const [key, value] of Object.entries(schema)) {
    if (key === 'additionalProperties' && value === false) continue;
    if (key === '$id' || key === '$schema' || key === 'examples') continue;
    if (key === 'uniqueItems') {
      if (value !== true) continue;
      const items = (schema as Json).items;
      if (!isScalarSchema(items)) throw new Error(`${path}: uniqueItems needs a list of scalars in a CRD (x-kubernetes-list-type: set); for objects, use x-kubernetes-list-type: map`);
      out['x-kubernetes-list-type'] = 'set';
      continue;
    }
    if (key === 'default') out[key] = completeDefault(schema as Json, path);
    // enums and validation rules are data, not schemas: copy them as they are
    else if (key === 'enum' || key.startsWith('x-kubernetes-')) out[key] = value;
    else if (key === 'properties') out[key] = Object.fromEntries(Object.entries(value as Json).map(([k, v]) => [k, toStructural(v, `${path}.${k}`)]));
    else if (key === 'items') out[key] = toStructural(value, `${path}[]`);
    else if (key === 'additionalProperties') out[key] = toStructural(value, `${path}.*`);
    else out[key] = toStructural(value, path);
  }
  return out;
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
      spec: toStructural(info.spec, 'spec'),
      status: toStructural(info.status, 'status'),
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
          ...('runtime' in info ? {} : { subresources: { status: {} } }),
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
