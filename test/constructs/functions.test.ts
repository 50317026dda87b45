import { createHash, randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Duration } from 'cdk8s';
import { describe, expect, it } from 'vitest';
import { INLINE_ARCHIVE_LIMIT } from '../../api/index.js';
import { Code, Environment, Function, NodeFunction, PythonFunction, packArchive } from '../../constructs/index.js';
import { appAndChart, extract, listArchive, objectsOf, packageBytes, synthError, tempDir } from '../helpers.js';

const FIXTURES = new URL('../fixtures/', import.meta.url).pathname;
const find = (objects: any[], kind: string, name: string) => objects.find((o) => o.kind === kind && o.metadata.name === name);

describe('NodeFunction', () => {
  it('bundles a TypeScript Web handler with its npm dependencies into one module that runs', async () => {
    const { app, chart, outdir } = appAndChart();
    const node = Environment.node(chart, 'node');
    new NodeFunction(chart, 'web', { environment: node, entry: join(FIXTURES, 'node/web.ts') });
    app.synth();
    const objects = objectsOf(app);
    const fn = find(objects, 'Function', 'web');
    expect(fn.spec).toMatchObject({ environment: { name: 'node' }, package: { name: 'web' }, entrypoint: 'index' });
    const pkg = find(objects, 'Package', 'web');
    expect(pkg.spec.archive.inline).toBeDefined();
    const bytes = packageBytes(pkg, outdir);
    expect(listArchive(bytes).map((l) => l.split(/\s+/).pop())).toEqual(['index.mjs']);
    const dir = extract(bytes);
    const source = readFileSync(join(dir, 'index.mjs'), 'utf8');
    expect(source).not.toMatch(/from ['"]slugify['"]/); // the dependency is inside, not imported
    const mod = await import(pathToFileURL(join(dir, 'index.mjs')).href);
    const res: Response = await mod.default(new Request('http://fn/', { headers: { 'x-spore-param-name': 'Ada Lovelace' } }));
    expect(res.status).toBe(201);
    expect(await res.text()).toBe('Hello, ada-lovelace!');
  });

  it('bundles a Fission-style CommonJS handler as the default export', async () => {
    const { app, chart, outdir } = appAndChart();
    new NodeFunction(chart, 'legacy', { environment: Environment.node(chart, 'node'), entry: join(FIXTURES, 'node/fission.js') });
    app.synth();
    const dir = extract(packageBytes(find(objectsOf(app), 'Package', 'legacy'), outdir));
    const mod = await import(pathToFileURL(join(dir, 'index.mjs')).href);
    expect(await mod.default({ request: {} })).toEqual({ status: 200, body: 'fission on string' });
  });

  it('fails synth naming the file and the fix when a CommonJS helper sits in a "type": "module" package', () => {
    const dir = tempDir('spore-esm-app-');
    writeFileSync(join(dir, 'package.json'), JSON.stringify({ type: 'module' }));
    writeFileSync(join(dir, 'helper.js'), 'module.exports = { greeting: "hi" };\n');
    writeFileSync(join(dir, 'fn.js'), 'const h = require("./helper.js");\nmodule.exports = async () => ({ status: 200, body: h.greeting });\n');
    const { app, chart } = appAndChart();
    new NodeFunction(chart, 'fn', { environment: Environment.node(chart, 'node'), entry: join(dir, 'fn.js') });
    const message = synthError(app);
    expect(message).toContain('helper.js uses CommonJS (module.exports / exports) but is loaded as an ES module');
    expect(message).toContain('rename it to');
    expect(message).toContain('helper.cjs');
  });

  it('names a chosen export in the entrypoint', () => {
    const { app, chart } = appAndChart();
    new NodeFunction(chart, 'web', { environment: Environment.node(chart, 'node'), entry: join(FIXTURES, 'node/web.ts'), handler: 'other' });
    expect(find(objectsOf(app), 'Function', 'web').spec.entrypoint).toBe('index.other');
  });

  it('resolves the entry from the app folder (the current folder) and bundles the same bytes every time', () => {
    const cwd = process.cwd();
    process.chdir(FIXTURES);
    try {
      const shas = [1, 2].map(() => {
        const { app, chart } = appAndChart();
        new NodeFunction(chart, 'web', { environment: Environment.node(chart, 'node'), entry: 'node/web.ts' });
        return find(objectsOf(app), 'Package', 'web').spec.archive.sha256;
      });
      expect(shas[0]).toMatch(/^[a-f0-9]{64}$/);
      expect(shas[1]).toBe(shas[0]);
    } finally {
      process.chdir(cwd);
    }
  });

  it('fails synth with the construct path when the entry file is missing', () => {
    const { app, chart } = appAndChart('shop');
    new NodeFunction(chart, 'hello', { environment: Environment.node(chart, 'node'), entry: 'functions/nope.ts' });
    expect(synthError(app)).toBe(
      `Validation failed with the following errors:\n  [shop/hello] entry file "functions/nope.ts" not found (looked for ${join(process.cwd(), 'functions/nope.ts')})`,
    );
  });

  it('fails synth with file, line and column when the code does not parse', () => {
    const { app, chart } = appAndChart('shop');
    new NodeFunction(chart, 'broken', { environment: Environment.node(chart, 'node'), entry: join(FIXTURES, 'node/broken.ts') });
    expect(synthError(app)).toMatch(/\[shop\/broken\] bundling ".*broken\.ts" failed: .*broken\.ts:2:\d+: Unterminated string literal/);
  });
});

describe('PythonFunction', () => {
  it('packs the folder, records requirements.txt for the builder and defaults the entrypoint', () => {
    const { app, chart, outdir } = appAndChart();
    const py = Environment.python(chart, 'python');
    new PythonFunction(chart, 'py', { environment: py, path: join(FIXTURES, 'python') });
    new PythonFunction(chart, 'nested', { environment: py, path: join(FIXTURES, 'python'), handler: 'pkg.sub.mod.fn' });
    app.synth();
    const objects = objectsOf(app);
    expect(find(objects, 'Function', 'py').spec.entrypoint).toBe('main.main');
    expect(find(objects, 'Function', 'nested').spec.entrypoint).toBe('pkg.sub.mod.fn');
    const pkg = find(objects, 'Package', 'py');
    expect(pkg.spec.build).toEqual({ requirements: 'requirements.txt' });
    expect(listArchive(packageBytes(pkg, outdir)).map((l) => l.split(/\s+/).pop())).toEqual(['main.py', 'pkg/__init__.py', 'pkg/sub/mod.py', 'requirements.txt']);
  });

  it('records no build when there is no requirements.txt', () => {
    const dir = tempDir();
    writeFileSync(join(dir, 'main.py'), 'def main():\n    return "x"\n');
    const { app, chart } = appAndChart();
    new PythonFunction(chart, 'py', { environment: Environment.python(chart, 'python'), path: dir });
    expect(find(objectsOf(app), 'Package', 'py').spec.build).toBeUndefined();
  });

  it('fails synth when the folder is missing', () => {
    const { app, chart } = appAndChart('shop');
    new PythonFunction(chart, 'py', { environment: Environment.python(chart, 'python'), path: 'nowhere' });
    expect(synthError(app)).toContain(`[shop/py] folder "nowhere" not found (looked for ${join(process.cwd(), 'nowhere')})`);
  });
});

describe('Function from a prebuilt archive', () => {
  it('uses the archive byte for byte', () => {
    const dir = tempDir();
    const archive = packArchive([{ path: 'main.py', data: Buffer.from('def main():\n  return "prebuilt"\n') }]);
    writeFileSync(join(dir, 'fn.tgz'), archive.bytes);
    const { app, chart } = appAndChart();
    new Function(chart, 'pre', { environment: Environment.python(chart, 'python'), code: Code.fromArchive(join(dir, 'fn.tgz')), entrypoint: 'main.main' });
    const pkg = find(objectsOf(app), 'Package', 'pre');
    expect(pkg.spec.archive).toEqual({ sha256: archive.sha256, size: archive.size, inline: archive.bytes.toString('base64') });
  });

  it('refuses a file that is not gzip-compressed', () => {
    const dir = tempDir();
    writeFileSync(join(dir, 'fn.zip'), 'PK\u0003\u0004 not a tgz');
    const { app, chart } = appAndChart('shop');
    new Function(chart, 'pre', { environment: Environment.python(chart, 'python'), code: Code.fromArchive(join(dir, 'fn.zip')) });
    expect(synthError(app)).toContain(`[shop/pre] archive "${join(dir, 'fn.zip')}" is not gzip-compressed (expected a .tgz)`);
  });
});

describe('Package size threshold', () => {
  function folderOf(bytes: number): string {
    const dir = tempDir();
    writeFileSync(join(dir, 'blob.bin'), randomBytes(bytes)); // incompressible: the archive is about as big
    return dir;
  }

  it('inlines archives up to 256 KiB', () => {
    const { app, chart, outdir } = appAndChart();
    new Function(chart, 'small', { environment: Environment.node(chart, 'node'), code: Code.fromDirectory(folderOf(200 * 1024)) });
    app.synth();
    const pkg = find(objectsOf(app), 'Package', 'small');
    expect(pkg.spec.archive.size).toBeLessThanOrEqual(INLINE_ARCHIVE_LIMIT);
    expect(pkg.spec.archive.url).toBeUndefined();
    expect(Buffer.from(pkg.spec.archive.inline, 'base64').length).toBe(pkg.spec.archive.size);
    expect(existsSync(join(outdir, 'archives'))).toBe(false);
  });

  it('writes bigger archives under archives/<sha256>.tgz and references them by URL', () => {
    const { app, chart, outdir } = appAndChart();
    new Function(chart, 'big', { environment: Environment.node(chart, 'node'), code: Code.fromDirectory(folderOf(300 * 1024)) });
    app.synth();
    const pkg = find(objectsOf(app), 'Package', 'big');
    const { sha256, size, url, inline } = pkg.spec.archive;
    expect(size).toBeGreaterThan(INLINE_ARCHIVE_LIMIT);
    expect(inline).toBeUndefined();
    expect(url).toBe(`archives/${sha256}.tgz`);
    const written = readFileSync(join(outdir, url));
    expect(written.length).toBe(size);
    expect(createHash('sha256').update(written).digest('hex')).toBe(sha256);
  });
});

describe('Function options', () => {
  it('writes the resolved executor: own values, else the environment’s defaults, else Spore’s', () => {
    const { app, chart } = appAndChart();
    const node = Environment.node(chart, 'node', { functionTimeout: Duration.seconds(30), idleTimeout: Duration.minutes(10), concurrency: 50 });
    new NodeFunction(chart, 'a', { environment: node, entry: join(FIXTURES, 'node/web.ts'), functionTimeout: Duration.seconds(5), requestsPerInstance: 4 });
    new NodeFunction(chart, 'b', { environment: 'node', entry: join(FIXTURES, 'node/web.ts'), env: { B: '2', A: '1' }, secrets: ['db'], configMaps: ['cfg'] });
    const objects = objectsOf(app);
    expect(find(objects, 'Function', 'a').spec.executor).toEqual({
      type: 'pool', minScale: 0, maxScale: 1, concurrency: 50, requestsPerInstance: 4, idleTimeoutSeconds: 600, functionTimeoutSeconds: 5, specializationTimeoutSeconds: 120,
    });
    const b = find(objects, 'Function', 'b').spec;
    expect(b.executor).toMatchObject({ functionTimeoutSeconds: 30, concurrency: 50 }); // found by name
    expect(b.env).toEqual([{ name: 'A', value: '1' }, { name: 'B', value: '2' }]);
    expect(b.secrets).toEqual([{ name: 'db' }]);
    expect(b.configMaps).toEqual([{ name: 'cfg' }]);
  });

  it('rejects an unknown environment, naming the ones there are', () => {
    const { app, chart } = appAndChart('shop');
    Environment.node(chart, 'node');
    new NodeFunction(chart, 'hello', { environment: 'nodejs', entry: join(FIXTURES, 'node/web.ts') });
    expect(synthError(app)).toBe('Validation failed with the following errors:\n  [shop/hello] spec.environment.name: unknown Environment "nodejs" (known: node)');
  });

  it('rejects zero, fractional and absurd timeouts and bad names', () => {
    const { app, chart } = appAndChart('shop');
    const node = Environment.node(chart, 'node');
    const entry = join(FIXTURES, 'node/web.ts');
    new NodeFunction(chart, 'zero', { environment: node, entry, functionTimeout: Duration.seconds(0) }); // cdk8s refuses negative Durations itself
    new NodeFunction(chart, 'frac', { environment: node, entry, idleTimeout: Duration.millis(1500) });
    new NodeFunction(chart, 'huge', { environment: node, entry, functionTimeout: Duration.days(2) });
    new NodeFunction(chart, 'Bad_Name', { environment: node, entry });
    const message = synthError(app);
    expect(message).toContain('[shop/zero] spec.executor.functionTimeoutSeconds: must be >= 1 (got 0)');
    expect(message).toContain('[shop/frac] spec.executor.idleTimeoutSeconds: must be integer (got 1.5)');
    expect(message).toContain('[shop/huge] spec.executor.functionTimeoutSeconds: must be <= 3600 (got 172800)');
    expect(message).toContain("[shop/Bad_Name] metadata.name: must be a DNS-1123 label: lowercase letters, digits and '-', starting and ending with a letter or digit (got \"Bad_Name\")");
  });

  it('rejects a dedicated executor whose minScale exceeds maxScale', () => {
    const { app, chart } = appAndChart('shop');
    new NodeFunction(chart, 'd', { environment: Environment.node(chart, 'node'), entry: join(FIXTURES, 'node/web.ts'), executor: 'dedicated', minScale: 5, maxScale: 2 });
    expect(synthError(app)).toContain('[shop/d] spec.executor.minScale: is 5, more than maxScale (2)');
  });

  it('keeps the chart namespace on the function and its package', () => {
    const { app, chart } = appAndChart('shop', 'team-a');
    new NodeFunction(chart, 'web', { environment: Environment.node(chart, 'node'), entry: join(FIXTURES, 'node/web.ts') });
    app.synth();
    for (const o of objectsOf(app)) expect(o.metadata.namespace, o.kind).toBe('team-a');
  });
});

describe('Environment', () => {
  it('renders the built-in runtimes and their options', () => {
    const { app, chart } = appAndChart();
    Environment.node(chart, 'node', { poolSize: 5, resources: { cpuRequest: '100m', memoryLimit: '256Mi' }, idleTimeout: Duration.minutes(5) });
    Environment.python(chart, 'python');
    new Environment(chart, 'ruby', { image: 'example/ruby-env:3', command: ['ruby', 'server.rb'], builder: { image: 'example/ruby-builder:3' } });
    const objects = objectsOf(app);
    expect(find(objects, 'Environment', 'node').spec).toEqual({
      runtime: { name: 'node' },
      poolSize: 5,
      resources: { requests: { cpu: '100m' }, limits: { memory: '256Mi' } },
      defaults: { idleTimeoutSeconds: 300 },
    });
    expect(find(objects, 'Environment', 'python').spec).toEqual({ runtime: { name: 'python' }, poolSize: 3 });
    expect(find(objects, 'Environment', 'ruby').spec).toEqual({
      runtime: { image: 'example/ruby-env:3', command: ['ruby', 'server.rb'] },
      builder: { image: 'example/ruby-builder:3' },
      poolSize: 3,
    });
  });

  it('rejects a runtime with nothing to run, a bad pool size and bad quantities', () => {
    const { app, chart } = appAndChart('shop');
    new Environment(chart, 'empty', {});
    Environment.node(chart, 'big', { poolSize: 1000, resources: { cpuRequest: 'lots' } });
    const message = synthError(app);
    expect(message).toContain('[shop/empty] spec.runtime: set name (node or python), or an image and/or a command');
    expect(message).toContain('[shop/big] spec.poolSize: must be <= 100 (got 1000)');
    expect(message).toContain('[shop/big] spec.resources.requests.cpu: must match');
  });

  it('rejects two objects of a kind with the same name in one namespace', () => {
    const { app, chart } = appAndChart('shop');
    Environment.node(chart, 'node');
    Environment.node(chart, 'node2', { name: 'node' });
    expect(synthError(app)).toContain('[shop/node2] metadata.name: is defined twice');
  });
});

describe('Environment on the Kubernetes target', () => {
  it("renders the pool pods' ServiceAccount, node selector and env, and refuses a bad env name at synth", () => {
    const { app, chart } = appAndChart();
    Environment.node(chart, 'node', { pod: { serviceAccountName: 'runner', nodeSelector: { 'pool': 'fast' }, env: { REGION: 'eu-1' } } });
    expect(find(objectsOf(app), 'Environment', 'node').spec.pod).toEqual({ serviceAccountName: 'runner', nodeSelector: { pool: 'fast' }, env: [{ name: 'REGION', value: 'eu-1' }] });
    const bad = appAndChart();
    Environment.node(bad.chart, 'node', { pod: { env: { 'NOT OK': 'x' } } });
    expect(synthError(bad.app)).toMatch(/spec\.pod\.env\/0\/name|pod.*env/);
  });
});
