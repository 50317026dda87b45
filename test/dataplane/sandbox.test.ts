// What a function can reach when Spore is NOT root: each instance in its own
// user, mount and PID namespaces (where the kernel lets a user make them), so
// Spore's state folder, its processes and environment, and other instances are
// out of sight. The Spore under test runs as a normal user: uid 1000 when the
// suite runs as root (CI), else the suite's own user.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, copyFileSync, mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { request } from 'undici';
import { afterEach, describe, expect, it } from 'vitest';
import { environment, fn, waitFor } from './harness.js';

const ROOT = new URL('../..', import.meta.url).pathname;
const asRoot = process.getuid?.() === 0;
const user = asRoot ? { uid: 1000, gid: 1000 } : {};

/** Whether that user may read the built Spore (a checkout under a private folder, such as /root, is not). */
function readable(): boolean {
  return spawnSync(process.execPath, ['-e', `require('fs').accessSync(${JSON.stringify(join(ROOT, 'lib/dataplane/index.js'))})`], { ...user, stdio: 'ignore' }).status === 0;
}
const namespaces = spawnSync('unshare', ['--user', '--map-root-user', '--mount', '--pid', '--fork', '--mount-proc', 'true'], { ...user, stdio: 'ignore' }).status === 0;
const canRun = readable();
if (!canRun) console.warn(`skipping the sandbox suite: uid ${asRoot ? 1000 : process.getuid?.()} cannot read ${ROOT}lib (a checkout under a private folder); the sandbox is for a Spore that is not root`);

const PROBE = {
  'index.mjs': `import { readFileSync, readdirSync } from 'node:fs';
  export default async (req) => {
    const out = {};
    for (const p of JSON.parse(await req.text())) {
      try {
        out[p] = 'read: ' + readFileSync(p, 'utf8').slice(0, 30);
      } catch (err) {
        if (err.code !== 'EISDIR') out[p] = err.code;
        else try { out[p] = 'listed: ' + readdirSync(p).join(','); } catch (e) { out[p] = e.code; }
      }
    }
    const procs = readdirSync('/proc').filter((n) => /^\\d+$/.test(n)).length;
    return Response.json({ out, procs, uid: process.getuid(), home: process.env.HOME });
  };`,
};

let child: ChildProcess | undefined;
afterEach(() => {
  child?.kill('SIGKILL');
  child = undefined;
});

describe.runIf(canRun)(`not as root, an instance (Node or Python) runs in namespaces of its own (${namespaces ? 'this kernel allows them' : 'not allowed here: Spore says so'})`, () => {
  it("cannot see Spore's state folder, its processes or another instance's folder", async () => {
    const state = mkdtempSync(join(tmpdir(), 'spore-sandbox-'));
    chmodSync(state, 0o700);
    const objects = join(state, 'objects.json');
    writeFileSync(objects, JSON.stringify([environment('node', 'node', 1), ...fn('probe', PROBE, { route: '/probe' }), ...fn('other', { 'index.mjs': 'export default () => new Response(import.meta.dirname)' }, { route: '/other' }), { ...environment('local', 'node', 1), spec: { runtime: { command: [process.execPath, join(state, 'rt', 'server.mjs')] }, poolSize: 1 } }, ...fn('own', { 'index.mjs': 'export default () => new Response("runtime from the state folder")' }, { env: 'local', route: '/own' }), environment('python', 'python', 1), ...fn('py', { 'main.py': 'def main():\n    return "python in its sandbox"\n' }, { env: 'python', route: '/py' })]));
    writeFileSync(join(state, 'up.json'), JSON.stringify({ token: 'the-api-token' }));
    // a runtime whose program is inside the state folder (as with `--state-dir .` in an app that holds spore): that folder cannot be hidden from it
    mkdirSync(join(state, 'rt'));
    copyFileSync(join(ROOT, 'dataplane/runtimes/node/server.mjs'), join(state, 'rt', 'server.mjs'));
    if (asRoot) spawnSync('chown', ['-R', '1000:1000', state]);
    const script = `
      import { readFileSync } from 'node:fs';
      import { SqliteStore } from ${JSON.stringify(join(ROOT, 'lib/store/index.js'))};
      import { startDataplane } from ${JSON.stringify(join(ROOT, 'lib/dataplane/index.js'))};
      const store = new SqliteStore(${JSON.stringify(join(state, 'spore.db'))});
      const dp = await startDataplane({ store, stateDir: ${JSON.stringify(state)}, port: 0, report: (m) => console.log('report: ' + m) });
      await store.apply(JSON.parse(readFileSync(${JSON.stringify(objects)}, 'utf8')));
      await dp.router.reload();
      console.log('serving on ' + dp.url);`;
    child = spawn(process.execPath, ['--input-type=module', '-e', script], { ...user, cwd: state, env: { PATH: process.env.PATH, HOME: state }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout!.on('data', (c) => (out += c));
    child.stderr!.on('data', (c) => (out += c));
    const url = await waitFor('the dataplane of a non-root Spore', () => /serving on (\S+)/.exec(out)?.[1], 30_000);
    if (!namespaces) {
      expect(out).toContain('instances run as your user, with no sandbox');
      return;
    }
    expect(await (await request(`${url}/py`)).body.text()).toBe('python in its sandbox');
    expect(await (await request(`${url}/own`)).body.text()).toBe('runtime from the state folder');
    const otherDir = await (await request(`${url}/other`)).body.text();
    const targets = [join(state, 'up.json'), join(state, 'spore.db'), state, otherDir];
    const res = await request(`${url}/probe`, { method: 'POST', body: JSON.stringify(targets) });
    const body = (await res.body.json()) as { out: Record<string, string>; procs: number; uid: number; home: string };
    expect(res.statusCode).toBe(200);
    expect(body.uid).toBe(asRoot ? 1000 : process.getuid!());
    expect(body.out[join(state, 'up.json')]).toBe('ENOENT');
    expect(body.out[join(state, 'spore.db')]).toBe('ENOENT');
    // the state folder holds only the way to the instance's own folder
    expect(body.out[state]).toBe('listed: instances');
    expect(body.out[otherDir]).toBe('ENOENT');
    expect(body.procs).toBeLessThan(5); // its own processes, not Spore's
    expect(body.home.startsWith(join(state, 'instances'))).toBe(true);
  });
});
