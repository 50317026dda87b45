// A function's Secrets and ConfigMaps, in Fission's layout: Secrets from the
// folder `spore up --secrets-dir` names, ConfigMaps from the store, each key a
// file readable by the function's instance only; a missing one fails the call
// by name, and says so in Spore's log.
import { spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, expect, it } from 'vitest';
import type { KubeObject } from '../../api/index.js';
import { tempDir } from '../helpers.js';
import { environment, fn, harness, type Harness } from './harness.js';

let h: Harness | undefined;
afterEach(async () => {
  await h?.close();
  h = undefined;
});

const READER = {
  'index.mjs': `import { readFileSync, statSync } from 'node:fs';
export default (req) => {
  const file = new URL(req.url).searchParams.get('file');
  const path = file.startsWith('secrets/') ? process.env.SPORE_SECRETS_DIR + file.slice(7) : process.env.SPORE_CONFIGS_DIR + file.slice(7);
  return new Response(readFileSync(path, 'utf8') + ' ' + (statSync(path).mode & 0o777).toString(8));
};`,
};

/** A function with a route /<name> naming these Secrets and ConfigMaps. */
function withMounts(name: string, secrets: string[], configMaps: string[]): KubeObject[] {
  return fn(name, READER, { route: `/${name}` }).map((o) => (o.kind === 'Function' ? { ...o, spec: { ...(o as any).spec, secrets: secrets.map((n) => ({ name: n })), configMaps: configMaps.map((n) => ({ name: n })) } } : o));
}

const settings: KubeObject = { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'settings', namespace: 'default' }, data: { colour: 'blue' }, binaryData: { logo: Buffer.from('PNG').toString('base64') } } as KubeObject;

it("gives a function its Secrets and ConfigMaps at Fission's paths, one read-only file per key", async () => {
  const secrets = tempDir('spore-secrets-');
  mkdirSync(join(secrets, 'default', 'db'), { recursive: true });
  writeFileSync(join(secrets, 'default', 'db', 'password'), 'hunter2');
  h = await harness({ secretsDir: secrets });
  await h.apply([environment('node', 'node', 1), settings, ...withMounts('reader', ['db'], ['settings'])]);
  expect(await h.get('/reader?file=secrets/default/db/password')).toMatchObject({ status: 200, body: 'hunter2 400' });
  expect(await h.get('/reader?file=configs/default/settings/colour')).toMatchObject({ status: 200, body: 'blue 400' });
  expect(await h.get('/reader?file=configs/default/settings/logo')).toMatchObject({ status: 200, body: 'PNG 400' });
});

it('fails the call with a clear 500, and a log line, when a Secret or ConfigMap is not there', async () => {
  const secrets = tempDir('spore-secrets-');
  h = await harness({ secretsDir: secrets });
  await h.apply([environment('node', 'node', 1), ...withMounts('no-secret', ['db'], []), ...withMounts('no-config', [], ['settings'])]);
  const r = await h.get('/no-secret?file=secrets/default/db/password');
  expect(r.status).toBe(500);
  expect(JSON.parse(r.body)).toMatchObject({ error: 'SecretMissing', message: `function default/no-secret needs Secret db: there is no folder ${join(secrets, 'default', 'db')} (one file per key)` });
  expect(h.reports.join('\n')).toContain('function default/no-secret needs Secret db');
  const c = await h.get('/no-config?file=configs/default/settings/colour');
  expect(c.status).toBe(500);
  expect(JSON.parse(c.body)).toMatchObject({ error: 'ConfigMapMissing', message: 'function default/no-config needs ConfigMap settings, which is not applied in namespace default' });
});

it('says that spore up has no secrets folder when a function needs a Secret, and refuses a folder that does not exist', async () => {
  h = await harness();
  await h.apply([environment('node', 'node', 1), ...withMounts('reader', ['db'], [])]);
  const r = await h.get('/reader?file=secrets/default/db/password');
  expect(JSON.parse(r.body).message).toBe('function default/reader needs Secret db: spore up was started without --secrets-dir');
  const bin = new URL('../../bin/spore.js', import.meta.url).pathname;
  const up = spawnSync(process.execPath, [bin, 'up', tempDir('spore-app-'), '--secrets-dir', '/nonexistent/secrets'], { encoding: 'utf8' });
  expect(up.status).not.toBe(0);
  expect(up.stderr).toContain('--secrets-dir /nonexistent/secrets: no such folder (it holds <namespace>/<name>/<key> files, one per key of each Secret)');
});
