// The `spore` command as a user runs it: the bin, from the built package.
import { execFileSync, spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import yaml from 'js-yaml';
import { describe, expect, it } from 'vitest';
import { tempDir } from './helpers.js';

const BIN = new URL('../bin/spore.js', import.meta.url).pathname;
const run = (...args: string[]) => spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8' });

describe('spore CLI', () => {
  it('prints help and version', () => {
    const help = run('--help');
    expect(help.status).toBe(0);
    expect(help.stdout).toContain('Usage: spore');
    expect(help.stdout).toContain('validate');
    expect(run('--version').stdout.trim()).toMatch(/^\d+\.\d+\.\d+$/);
  });

  it('prints the CRDs as YAML', () => {
    const docs = yaml.loadAll(execFileSync(process.execPath, [BIN, 'crds']).toString()) as any[];
    expect(docs.map((d) => d.spec.names.kind)).toEqual(['Environment', 'Package', 'Function', 'HttpTrigger', 'TimerTrigger', 'QueueTrigger', 'WatchTrigger', 'Workflow', 'Stage', 'WorkflowRun', 'Invocation']);
  });

  it('validate says what is wrong and where, and exits non-zero', () => {
    const dir = tempDir();
    writeFileSync(
      join(dir, 'app.yaml'),
      [
        'apiVersion: spore.dev/v1alpha1\nkind: Environment\nmetadata: {name: node}\nspec: {runtime: {name: node}}',
        'apiVersion: spore.dev/v1alpha1\nkind: Function\nmetadata: {name: hello}\nspec: {environment: {name: nod}, package: {name: hello}, executor: {functionTimeoutSeconds: 0}}',
      ].join('\n---\n'),
    );
    const r = run('validate', dir);
    expect(r.status).toBe(1);
    expect(r.stderr).toContain('Function/default/hello: spec.executor.functionTimeoutSeconds: must be >= 1 (got 0)');
    expect(r.stderr).toContain('spore: 1 error(s) in 2 object(s)');
    writeFileSync(join(dir, 'app.yaml'), 'apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {a: "1"}\n');
    expect(run('validate', dir).stdout).toContain('1 object(s) valid');
  });

  it('validate fails on a folder without manifests rather than calling it valid', () => {
    const dir = tempDir();
    const r = run('validate', dir);
    expect(r.status).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toBe(`spore: no manifests found in ${dir} (looked for YAML documents in *.yaml and *.yml files)\n`);
    writeFileSync(join(dir, 'empty.yaml'), '---\n# nothing\n');
    expect(run('validate', dir).status).toBe(1);
  });

  it('diff exits 2 when it cannot diff, so that an error never reads as "changes" (1)', () => {
    const none = run('diff', '--state-dir', tempDir());
    expect(none.status).toBe(2);
    expect(none.stderr).toContain('spore: no running "spore up" found');
    const usage = run('diff', '--bogus');
    expect(usage.status).toBe(2);
    expect(usage.stderr).toContain("unknown option '--bogus'");
    expect(run('diff', '--help').status).toBe(0);
  });

  it('validate names the file of a YAML syntax error and missing paths', () => {
    const dir = tempDir();
    writeFileSync(join(dir, 'bad.yaml'), 'kind: [unclosed\n');
    const r = run('validate', join(dir, 'bad.yaml'));
    expect(r.status).toBe(1);
    expect(r.stderr).toContain(`spore: ${join(dir, 'bad.yaml')}: `);
    expect(run('validate', join(dir, 'missing')).stderr).toContain(`spore: not found: ${join(dir, 'missing')}`);
  });
});
