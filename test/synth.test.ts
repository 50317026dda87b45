// The root app, synthesized the way a user does it: `npx cdk8s synth` at the root.
import { execFileSync, spawnSync } from 'node:child_process';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { Ajv } from 'ajv';
import yaml from 'js-yaml';
import { beforeAll, describe, expect, it } from 'vitest';
import { validateSet } from '../api/index.js';
import { tempDir } from './helpers.js';

const ROOT = new URL('..', import.meta.url).pathname;

function synth(outdir: string): void {
  execFileSync(join(ROOT, 'node_modules/.bin/cdk8s'), ['synth', '--output', outdir], {
    cwd: ROOT,
    env: { ...process.env, CDK8S_CHECK_UPGRADE: 'false' },
    stdio: 'pipe',
  });
}

function files(dir: string): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  const walk = (d: string) => {
    for (const name of readdirSync(d).sort()) {
      const full = join(d, name);
      if (statSync(full).isDirectory()) walk(full);
      else out.set(relative(dir, full), readFileSync(full));
    }
  };
  walk(dir);
  return out;
}

const load = (dir: string) =>
  [...files(dir)].filter(([f]) => f.endsWith('.yaml')).flatMap(([f, b]) => (yaml.loadAll(b.toString()) as any[]).map((o) => ({ file: f, ...o })));

describe('npx cdk8s synth at the root', () => {
  let first: string;
  let objects: any[];

  beforeAll(() => {
    first = tempDir('spore-dist-');
    synth(first);
    objects = load(first);
  });

  it('writes the platform and the example app', () => {
    expect([...files(first).keys()].filter((f) => f.endsWith('.yaml'))).toEqual(['examples/shop.k8s.yaml', 'platform.k8s.yaml']);
    const kinds = new Set(objects.map((o) => o.kind));
    // the root Platform names no repository: its chart is the CRDs and the namespace (the reconciler's pod needs one)
    for (const k of ['CustomResourceDefinition', 'Namespace', 'Environment', 'Package', 'Function', 'HttpTrigger', 'TimerTrigger', 'QueueTrigger']) {
      expect(kinds, k).toContain(k);
    }
  });

  it('gives byte-identical output when run twice', () => {
    const second = tempDir('spore-dist-');
    synth(second);
    const a = files(first);
    const b = files(second);
    expect([...b.keys()]).toEqual([...a.keys()]);
    for (const [name, bytes] of a) expect(b.get(name)!.equals(bytes), name).toBe(true);
  });

  it('every spore.dev object validates against its generated CRD schema', () => {
    const crds = new Map(objects.filter((o) => o.kind === 'CustomResourceDefinition').map((c) => [c.spec.names.kind, c.spec.versions[0].schema.openAPIV3Schema]));
    const ajv = new Ajv({ strict: false, allErrors: true }); // the CRD holds OpenAPI's x-kubernetes-* keywords
    const sporeObjects = objects.filter((o) => o.apiVersion === 'spore.dev/v1alpha1');
    expect(sporeObjects.length).toBeGreaterThan(20);
    for (const o of sporeObjects) {
      const { file, ...obj } = o;
      const validate = ajv.compile(crds.get(o.kind));
      expect(validate(obj) ? [] : validate.errors, `${o.kind}/${o.metadata.name} in ${file}`).toEqual([]);
    }
    // and the set as a whole passes Spore's own validator
    expect(validateSet(sporeObjects.map(({ file, ...o }) => o))).toEqual([]);
  });

  it('orders objects by sync wave: CRDs and namespaces, then environments and packages, then functions, then triggers', () => {
    const wave = (o: any) => Number(o.metadata.annotations?.['argocd.argoproj.io/sync-wave']);
    const waves = (kind: string) => new Set(objects.filter((o) => o.kind === kind).map(wave));
    expect(waves('CustomResourceDefinition')).toEqual(new Set([-1]));
    expect(waves('Namespace')).toEqual(new Set([-1]));
    for (const k of ['Environment', 'Package']) expect(waves(k), k).toEqual(new Set([0]));
    expect(waves('Function')).toEqual(new Set([1]));
    for (const k of ['HttpTrigger', 'TimerTrigger', 'QueueTrigger']) expect(waves(k), k).toEqual(new Set([2]));
    for (const o of objects) expect(Number.isInteger(wave(o)), `${o.kind}/${o.metadata.name}`).toBe(true);
  });

  it('writes explicit names, standard labels, and never Argo CD’s tracking marks', () => {
    const text = [...files(first).values()].map((b) => b.toString()).join('\n');
    expect(text).not.toContain('argocd.argoproj.io/tracking-id');
    expect(text).not.toContain('app.kubernetes.io/instance');
    const names = objects.filter((o) => o.apiVersion === 'spore.dev/v1alpha1').map((o) => `${o.kind}/${o.metadata.name}`);
    expect(names).toEqual(expect.arrayContaining(['Function/hello', 'HttpTrigger/hello-route', 'Environment/node', 'HttpTrigger/greeting', 'TimerTrigger/tick-schedule', 'QueueTrigger/process-order-queue']));
    for (const o of objects) {
      expect(o.metadata.labels?.['app.kubernetes.io/managed-by'], `${o.kind}/${o.metadata.name}`).toBe('spore');
      expect(o.metadata.labels?.['app.kubernetes.io/part-of']).toBeTruthy();
    }
  });

  it('keeps cluster-scoped objects out of namespaces', () => {
    for (const o of objects.filter((x) => ['CustomResourceDefinition', 'Namespace', 'ClusterRole', 'ClusterRoleBinding'].includes(x.kind))) {
      expect(o.metadata.namespace, `${o.kind}/${o.metadata.name}`).toBeUndefined();
    }
    for (const o of objects.filter((x) => ['Deployment', 'Service', 'ServiceAccount', 'Role', 'RoleBinding'].includes(x.kind))) {
      expect(o.metadata.namespace, `${o.kind}/${o.metadata.name}`).toBe('spore-system');
    }
  });
});

describe("an app's own synth, offline", () => {
  it('npm run synth in the example app makes no update check (it would fail without the internet)', () => {
    const out = tempDir('spore-dist-');
    // an unreachable registry and a fresh home (no cached answer), as on a machine with no internet
    const { CDK8S_CHECK_UPGRADE: _set, ...env } = process.env; // the app's own script must say it
    const r = spawnSync('npm', ['run', 'synth', '--', '--output', out], {
      cwd: join(ROOT, 'examples'),
      encoding: 'utf8',
      env: { ...env, HOME: tempDir('spore-home-'), npm_config_registry: 'http://127.0.0.1:9/' },
    });
    expect(r.status, r.stderr).toBe(0);
    expect(`${r.stdout}${r.stderr}`).not.toMatch(/new version|cdk8s-cli is available|ECONNREFUSED/);
    expect(readdirSync(out)).toContain('shop.k8s.yaml');
  });
});
