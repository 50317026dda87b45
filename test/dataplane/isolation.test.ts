// What a function can reach on the local target. As root (CI runs as root),
// each instance runs as a user of its own: it cannot read Spore's state folder,
// its database, its process's environment, nor another function's code. Memory
// and CPU limits are enforced where the host gives Spore a cgroup for them; the
// tests say which case they saw.
import { existsSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { InstanceCgroups } from '../../dataplane/poolmgr/cgroup.js';
import { environment, fn, harness, type Harness } from './harness.js';

let h: Harness | undefined;
afterEach(async () => {
  await h?.close();
  h = undefined;
});

const root = process.getuid?.() === 0;

// Tries to read each path it is given; answers what happened to each.
const PROBE = {
  'index.mjs': `import { readFileSync, readdirSync, statSync } from 'node:fs';
  export default async (req) => {
    const paths = JSON.parse(await req.text());
    const out = {};
    for (const p of paths) {
      try {
        out[p] = statSync(p).isDirectory() ? 'listed: ' + readdirSync(p).join(',') : 'read: ' + readFileSync(p, 'utf8').slice(0, 40);
      } catch (err) {
        out[p] = err.code;
      }
    }
    return Response.json({ out, uid: process.getuid(), home: process.env.HOME });
  };`,
};
const SECRET = {
  'index.mjs': `export default () => new Response(process.env.PASSWORD + ' from ' + import.meta.dirname);`,
};

describe.runIf(root)('as root, an instance runs as a user of its own', () => {
  it("cannot read Spore's state folder, database, environment or another function's code and env", async () => {
    h = await harness();
    writeFileSync(join(h.dir, 'up.json'), JSON.stringify({ token: 'the-api-token' })); // as `spore up --git` keeps it
    await h.apply([environment('node', 'node', 2), ...fn('probe', PROBE, { route: '/probe' }), ...fn('secret', SECRET, { route: '/secret', vars: { PASSWORD: 'hunter2' } })]);
    const secret = await h.get('/secret');
    expect(secret.body).toMatch(/^hunter2 from \//);
    const secretCode = secret.body.split(' from ')[1];
    const targets = [join(h.dir, 'up.json'), join(h.dir, 'spore.db'), join(h.dir, 'spore.db-wal'), h.dir, `/proc/${process.pid}/environ`, secretCode, join(secretCode, 'index.mjs'), join(secretCode, '..')];
    const res = await h.get('/probe', { method: 'POST', body: JSON.stringify(targets) });
    expect(res.status).toBe(200);
    const { out, uid, home } = JSON.parse(res.body);
    expect(uid).toBeGreaterThanOrEqual(2_000_000_000);
    expect(out).toEqual(Object.fromEntries(targets.map((t) => [t, 'EACCES'])));
    // its own folder is its home, in the instances' root outside the state folder, which goes when Spore stops
    expect(home).toMatch(/\/spore-instances-[0-9a-f]+\/[0-9a-f]+$/);
    await h.close();
    h = undefined;
    expect(existsSync(dirname(home))).toBe(false);
  });
});

const hasCgroups = InstanceCgroups.detect();
const enforced = hasCgroups?.enforces ?? { memory: false, cpu: false };

const withLimits = (limits: Record<string, string>) => ({ ...environment('small', 'node'), spec: { runtime: { name: 'node' }, poolSize: 1, resources: { limits } } });

describe(`memory limit (${enforced.memory ? 'enforced by a memory cgroup on this host' : 'not enforced on this host: Spore says so'})`, () => {
  it('an instance that goes over its Environment memory limit is stopped, and the call says why', async () => {
    h = await harness();
    const hog = { 'index.mjs': `const held = []; export default () => { for (let i = 0; i < 64; i++) held.push(Buffer.alloc(8 << 20, 1)); return new Response('held ' + held.length * 8 + ' MiB'); };` };
    await h.apply([withLimits({ memory: '128Mi' }), ...fn('hog', hog, { route: '/hog', env: 'small' })]);
    const res = await h.get('/hog');
    if (enforced.memory) {
      expect(res.status).toBe(502);
      expect(JSON.parse(res.body)).toMatchObject({ error: 'OutOfMemory', message: "the instance of default/hog was stopped: it went over its Environment's memory limit" });
      expect((await h.get('/hog')).status).toBe(502); // a new instance, the same limit
    } else {
      expect(res.body).toBe('held 512 MiB');
      expect(h.reports.join('\n')).toContain('Environment default/small: its memory limit is not enforced on this host');
    }
  });
});

describe(`cpu limit (${enforced.cpu ? 'enforced by a cpu cgroup on this host' : 'not enforced on this host: Spore says so'})`, () => {
  it("a busy function gets at most about its Environment's share of a CPU", async () => {
    h = await harness();
    // busy for 1.5 s of wall time; reports the CPU time it got for it
    const busy = { 'index.mjs': `export default () => { const t = Date.now(); const c = process.cpuUsage(); while (Date.now() - t < 1500); const u = process.cpuUsage(c); return Response.json({ share: (u.user + u.system) / 1000 / (Date.now() - t) }); };` };
    await h.apply([withLimits({ cpu: '250m' }), ...fn('busy', busy, { route: '/busy', env: 'small' })]);
    const { share } = JSON.parse((await h.get('/busy')).body);
    if (enforced.cpu) expect(share).toBeLessThan(0.45);
    else expect(h.reports.join('\n')).toContain('Environment default/small: its cpu limit is not enforced on this host');
  });
});
