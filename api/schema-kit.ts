// Schema building blocks. Every schema in api/ is written with these so that the
// same object is (1) a TypeScript type, (2) a JSON Schema that ajv validates and
// (3) a structural OpenAPI schema for the CRDs. TypeBox's own Union/Record/Any
// produce anyOf/patternProperties/{} which Kubernetes rejects, so we use these.
import { Type, type TSchema, type TObject, type TProperties, type ObjectOptions, type SchemaOptions } from '@sinclair/typebox';

/** A closed set of strings, rendered as `enum` (Kubernetes has no `const`/`anyOf` of literals). */
export function StringEnum<const T extends readonly string[]>(values: T, options: SchemaOptions = {}) {
  return Type.Unsafe<T[number]>({ type: 'string', enum: [...values], ...options });
}

/** An object with string keys and values of one schema (`additionalProperties`, never `patternProperties`). */
export function MapOf<T extends TSchema>(value: T, options: SchemaOptions = {}) {
  return Type.Unsafe<Record<string, T['static']>>({ type: 'object', additionalProperties: value, ...options });
}

/** Free-form JSON kept as written (workflow inputs, request bodies). */
export function Json(options: SchemaOptions = {}) {
  return Type.Unsafe<unknown>({ 'x-kubernetes-preserve-unknown-fields': true, ...options });
}

/** A closed object: unknown fields are errors in the validator; the CRD generator drops the flag (the API server prunes). */
export function Closed<T extends TProperties>(properties: T, options: ObjectOptions = {}): TObject<T> {
  return Type.Object(properties, { additionalProperties: false, ...options });
}

/**
 * Rules the API server checks (CEL, `x-kubernetes-validations`) for what a
 * schema cannot say. Spore's validator checks the same in rules.ts, naming
 * the field; these make the API server refuse what `kubectl apply` sends too.
 */
export function Cel(...rules: { rule: string; message: string; fieldPath?: string }[]) {
  return { 'x-kubernetes-validations': rules };
}

/** The CEL rule "exactly one of two optional fields". */
export const exactlyOneOf = (a: string, b: string) => ({ rule: `has(self.${a}) != has(self.${b})`, message: `set exactly one of ${a} or ${b}` });

/** DNS-1123 label: what Kubernetes requires of names used in URLs, labels and pods. */
export const DNS_LABEL = '^[a-z0-9]([-a-z0-9]*[a-z0-9])?$';

export const Name = (description: string) =>
  Type.String({ pattern: DNS_LABEL, minLength: 1, maxLength: 63, description });

/** A reference to another spore.dev object in the same namespace. */
export const LocalRef = (what: string) =>
  Closed({ name: Name(`name of the ${what}`) }, { description: `reference to a ${what} in the same namespace` });

/** Kubernetes resource quantity such as `250m`, `1`, `128Mi`. */
export const Quantity = (description: string) =>
  Type.String({ pattern: '^[0-9]+(\\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$', description });

/** A whole number of seconds within [min, max]: timeouts are bounded so a typo cannot become a day. */
export const Seconds = (description: string, min: number, max: number, dflt?: number) =>
  Type.Integer({ minimum: min, maximum: max, description: `${description} (seconds)`, ...(dflt === undefined ? {} : { default: dflt }) });

export const HTTP_METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'] as const;
export type HttpMethod = (typeof HTTP_METHODS)[number];

export const Condition = Closed({
  type: Type.String({ description: 'condition type, e.g. Ready' }),
  status: StringEnum(['True', 'False', 'Unknown'] as const),
  reason: Type.Optional(Type.String()),
  message: Type.Optional(Type.String()),
  lastTransitionTime: Type.Optional(Type.String({ description: 'RFC 3339 time' })),
});

/** Status fields every kind shares; a kind adds its own next to them. */
export const commonStatus = {
  observedGeneration: Type.Optional(Type.Integer({ minimum: 0 })),
  revision: Type.Optional(Type.String({ description: 'the Git revision that last changed the object' })),
  // keyed by type: each writer owns its own (the reconciler Ready, the dataplane a trigger's Active), server-side apply keeps the others'
  conditions: Type.Optional(Type.Array(Condition, { 'x-kubernetes-list-type': 'map', 'x-kubernetes-list-map-keys': ['type'] })),
};

/** An environment variable: a name a shell accepts, a value. */
export const EnvVar = Closed({
  name: Type.String({ pattern: '^[A-Za-z_][A-Za-z0-9_]*$', description: 'environment variable name' }),
  value: Type.String(),
});
