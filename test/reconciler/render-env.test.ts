// A repository's code runs in the reconciler's process tree (its synth, its npm
// scripts): Spore's own secrets are kept out of its environment.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, expect, it } from 'vitest';
import { renderApp } from '../../reconciler/render.js';
import { tempDir } from '../helpers.js';

const saved = { ...process.env };
afterEach(() => {
  for (const k of ['SPORE_API_TOKEN', 'SPORE_WEBHOOK_SECRET', 'SPORE_TEST_VISIBLE']) {
    if (saved[k] === undefined) delete process.env[k];
    else process.env[k] = saved[k];
  }
});

it("runs a synth without the reconciler's API token and webhook secret, with the rest of its environment", async () => {
  Object.assign(process.env, { SPORE_API_TOKEN: 'tok3n', SPORE_WEBHOOK_SECRET: 's3cret', SPORE_TEST_VISIBLE: 'yes' });
  const app = tempDir('spore-render-env-');
  writeFileSync(join(app, 'cdk8s.yaml'), 'app: node synth.mjs\n');
  writeFileSync(
    join(app, 'synth.mjs'),
    `import { writeFileSync } from 'node:fs';
const seen = (k) => process.env[k] ?? 'unset';
writeFileSync(process.env.CDK8S_OUTDIR + '/app.yaml', JSON.stringify({ apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'env' }, data: { token: seen('SPORE_API_TOKEN'), secret: seen('SPORE_WEBHOOK_SECRET'), visible: seen('SPORE_TEST_VISIBLE') } }));
`,
  );
  const out = join(tempDir('spore-render-out-'), 'dist');
  mkdirSync(out);
  const docs = await renderApp(app, out, {});
  expect((docs[0].object as any).data).toEqual({ token: 'unset', secret: 'unset', visible: 'yes' });
});
