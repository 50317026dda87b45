import { describe, expect, it } from 'vitest';
import { allCrds, crdFor, KIND_NAMES } from '../../api/index.js';
import { toStructural } from '../../api/crd.js';

/** Walks a schema and lists what a structural schema (apiextensions.k8s.io/v1) must not have. */
function structuralProblems(schema: any, path = ''): string[] {
  const problems: string[] = [];
  if (schema.type === undefined && !schema['x-kubernetes-preserve-unknown-fields'] && !schema['x-kubernetes-int-or-string']) problems.push(`${path || '/'}: no type`);
  for (const bad of ['anyOf', 'oneOf', 'allOf', 'not', 'const', 'patternProperties', '$ref', '$id', 'definitions']) {
    if (bad in schema) problems.push(`${path}: uses ${bad}`);
  }
  if (schema.additionalProperties === false) problems.push(`${path}: additionalProperties: false`);
  if (schema.properties && schema.additionalProperties) problems.push(`${path}: both properties and additionalProperties`);
  for (const [k, v] of Object.entries(schema.properties ?? {})) problems.push(...structuralProblems(v, `${path}/${k}`));
  if (typeof schema.additionalProperties === 'object') problems.push(...structuralProblems(schema.additionalProperties, `${path}/*`));
  if (schema.items) problems.push(...structuralProblems(schema.items, `${path}[]`));
  return problems;
}

describe('CRDs', () => {
  it('has one CRD per kind, namespaced, with the status subresource and short names', () => {
    const crds = allCrds();
    expect(crds.map((c: any) => c.metadata.name)).toEqual([
      'environments.spore.dev', 'packages.spore.dev', 'functions.spore.dev', 'httptriggers.spore.dev',
      'timertriggers.spore.dev', 'queuetriggers.spore.dev', 'watchtriggers.spore.dev', 'workflows.spore.dev', 'stages.spore.dev', 'workflowruns.spore.dev', 'invocations.spore.dev',
    ]);
    for (const crd of crds as any[]) {
      expect(crd.apiVersion).toBe('apiextensions.k8s.io/v1');
      expect(crd.spec.scope).toBe('Namespaced');
      expect(crd.spec.names.shortNames.length).toBeGreaterThan(0);
      expect(crd.spec.names.categories).toEqual(['spore']);
      expect(crd.spec.versions).toHaveLength(1);
      expect(crd.spec.versions[0]).toMatchObject({ name: 'v1alpha1', served: true, storage: true });
      // a WorkflowRun or an Invocation is written whole by the router (labels and status in one request): no status subresource
      expect(crd.spec.versions[0].subresources).toEqual(['WorkflowRun', 'Invocation'].includes(crd.spec.names.kind) ? undefined : { status: {} });
    }
  });

  it.each(KIND_NAMES)('%s has a structural schema', (kind) => {
    const schema = (crdFor(kind) as any).spec.versions[0].schema.openAPIV3Schema;
    expect(structuralProblems(schema)).toEqual([]);
    expect(schema.required).toEqual(['spec']);
  });

  it('keeps defaults, bounds and enums in the CRD so the API server applies them too', () => {
    const fnSchema = (crdFor('Function') as any).spec.versions[0].schema.openAPIV3Schema;
    const executor = fnSchema.properties.spec.properties.executor;
    expect(executor.properties.type).toMatchObject({ type: 'string', enum: ['pool', 'dedicated'], default: 'pool' });
    expect(executor.properties.functionTimeoutSeconds).toMatchObject({ type: 'integer', minimum: 1, maximum: 3600 });
    const env = (crdFor('Environment') as any).spec.versions[0].schema.openAPIV3Schema;
    expect(env.properties.spec.properties.poolSize).toMatchObject({ type: 'integer', default: 3 });
  });

  it('completes defaults with their nested defaults (the API server validates a default against its own schema)', () => {
    const fnSchema = (crdFor('Function') as any).spec.versions[0].schema.openAPIV3Schema;
    expect(fnSchema.properties.spec.properties.executor.default).toEqual({ type: 'pool' });
    expect(() => toStructural({ type: 'object', properties: { n: { type: 'integer', minimum: 1 } }, default: { n: 0 } }, 'spec.x')).toThrow(
      'the default of spec.x is not valid against its own schema: /n must be >= 1',
    );
  });

  it('writes lists of unique values as x-kubernetes-list-type: set, never uniqueItems (refused by the API server)', () => {
    const spec = (kind: (typeof KIND_NAMES)[number]) => (crdFor(kind) as any).spec.versions[0].schema.openAPIV3Schema.properties.spec;
    expect(JSON.stringify(allCrds())).not.toContain('uniqueItems');
    expect(spec('HttpTrigger').properties.methods['x-kubernetes-list-type']).toBe('set');
    expect(spec('Workflow').properties.tasks.additionalProperties.properties.requires['x-kubernetes-list-type']).toBe('set');
    expect(spec('HttpTrigger').properties.functions).toMatchObject({ 'x-kubernetes-list-type': 'map', 'x-kubernetes-list-map-keys': ['name'] });
    expect(spec('HttpTrigger')['x-kubernetes-validations'].map((v: any) => v.message)).toContain('set exactly one of path or prefix');
  });

  it('shows environment, executor and readiness for Functions and path/function for HttpTriggers', () => {
    const cols = (kind: (typeof KIND_NAMES)[number]) => (crdFor(kind) as any).spec.versions[0].additionalPrinterColumns.map((c: any) => `${c.name}=${c.jsonPath}`);
    expect(cols('Function')).toEqual(expect.arrayContaining(['Environment=.spec.environment.name', 'Executor=.spec.executor.type', 'Ready=.status.conditions[?(@.type=="Ready")].status']));
    expect(cols('HttpTrigger')).toEqual(expect.arrayContaining(['Path=.spec.path', 'Function=.spec.function.name']));
  });
});
