// The images (images/*.Dockerfile), checked without a Docker engine: what each
// COPY takes is in the repository and not kept out by .dockerignore, the
// runtime images take nothing of Spore's node_modules, and the command each
// image starts is run here, from the files laid out as its COPY lines lay them.
import { spawn, spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, readFileSync, readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { App } from 'cdk8s';
import { afterEach, describe, expect, it } from 'vitest';
import { program } from '../cli/main.js';
import { Platform } from '../constructs/index.js';
import { NODE_RUNTIME_FLAGS } from '../dataplane/index.js';
import { freePort, tempDir } from './helpers.js';

const ROOT = new URL('..', import.meta.url).pathname;
const IMAGES = join(ROOT, 'images');
const { version, files: shipped } = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string; files: string[] };
const compiled = (JSON.parse(readFileSync(join(ROOT, 'tsconfig.build.json'), 'utf8')) as { include: string[] }).include;

interface Instruction {
  op: string;
  args: string;
  line: number;
}
interface Stage {
  from: string;
  name?: string;
  instructions: Instruction[];
}

/** The instructions these Dockerfiles use, by stage: continuations joined, comments dropped. */
function parseDockerfile(file: string): Stage[] {
  const stages: Stage[] = [];
  let pending = '';
  let start = 0;
  readFileSync(file, 'utf8').split('\n').forEach((raw, i) => {
    const line = raw.trim();
    if (line.startsWith('#') || (!line && !pending)) return; // comments, even inside a continued RUN, are not part of it
    if (!pending) start = i + 1;
    pending += (pending ? ' ' : '') + line.replace(/\\$/, '').trim();
    if (line.endsWith('\\')) return;
    const [, op, args] = /^(\S+)\s*(.*)$/.exec(pending)!;
    pending = '';
    const instruction = { op: op.toUpperCase(), args, line: start };
    if (instruction.op === 'FROM') {
      const [from, as, name] = args.split(/\s+/);
      stages.push({ from, name: as?.toUpperCase() === 'AS' ? name : undefined, instructions: [] });
    } else {
      if (!stages.length) throw new Error(`${file}:${start}: ${op} before FROM`);
      stages.at(-1)!.instructions.push(instruction);
    }
  });
  return stages;
}

const all = (stage: Stage, op: string) => stage.instructions.filter((i) => i.op === op);
const last = (stage: Stage, op: string) => all(stage, op).at(-1);

/** ENTRYPOINT and CMD in exec form (a JSON array), as these images write them. */
function execForm(i: Instruction | undefined): string[] {
  if (!i) return [];
  const argv = JSON.parse(i.args) as unknown;
  if (!Array.isArray(argv) || !argv.every((a) => typeof a === 'string')) throw new Error(`line ${i.line}: ${i.op} must be a JSON array of strings (exec form), got ${i.args}`);
  return argv;
}

/** KEY=value pairs of ENV, LABEL and ARG (values unquoted or in double quotes). */
function pairs(args: string): Record<string, string> {
  return Object.fromEntries([...args.matchAll(/([\w.-]+)=("(?:[^"\\]|\\.)*"|\S*)/g)].map(([, k, v]) => [k, v.startsWith('"') ? JSON.parse(v) : v]));
}

interface Copy {
  from?: string;
  sources: string[];
  dest: string;
}
function copies(stage: Stage): Copy[] {
  return stage.instructions
    .filter((i) => i.op === 'COPY' || i.op === 'ADD')
    .map((i) => {
      const words = i.args.split(/\s+/);
      const flags = words.filter((w) => w.startsWith('--'));
      const paths = words.filter((w) => !w.startsWith('--'));
      const from = flags.find((f) => f.startsWith('--from='))?.slice('--from='.length);
      return { from, sources: paths.slice(0, -1), dest: paths.at(-1)! };
    });
}

/** .dockerignore's patterns as a test of a context path (the forms used there: `**\/x`, `x`, `*`). */
function ignored(path: string): boolean {
  const patterns = readFileSync(join(ROOT, '.dockerignore'), 'utf8').split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#'));
  return patterns.some((p) => {
    const re = p.split('/').map((seg) => (seg === '**' ? '(?:[^/]+/)*' : seg.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '[^/]*') + '/')).join('');
    return new RegExp(`^${re}`).test(`${path.replace(/\/$/, '')}/`);
  });
}

const dockerfiles = readdirSync(IMAGES).filter((f) => f.endsWith('.Dockerfile')).sort();
const image = (name: string) => parseDockerfile(join(IMAGES, `${name}.Dockerfile`));

/** The chart's containers (reconciler and dataplane on), with the images it names by default. */
function chart() {
  const app = new App({ outdir: tempDir() });
  new Platform(app, 'platform', { reconciler: { repository: 'https://git.example.com/acme/shop.git' }, dataplane: { enabled: true } });
  const objects = app.charts.flatMap((c) => c.toJson());
  return objects.filter((o: any) => o.kind === 'Deployment').flatMap((d: any) => d.spec.template.spec.containers.map((c: any) => ({ pod: d.spec.template.spec, c })));
}

const running: ReturnType<typeof spawn>[] = [];
afterEach(() => {
  for (const p of running.splice(0)) p.kill('SIGKILL');
});


describe('images', () => {
  it('has the platform image and one image per built-in runtime, named as the chart names them by default', () => {
    expect(dockerfiles).toEqual(['platform.Dockerfile', 'runtime-node.Dockerfile', 'runtime-python.Dockerfile']);
    const containers = chart();
    for (const { c } of containers) expect(c.image).toBe(`ghcr.io/spore-dev/spore:${version}`);
    const poolmgrEnv = Object.fromEntries(containers.find(({ c }) => c.name === 'poolmgr')!.c.env.map((e: any) => [e.name, e.value]));
    expect(poolmgrEnv.SPORE_RUNTIME_NODE_IMAGE).toBe(`ghcr.io/spore-dev/runtime-node:${version}`);
    expect(poolmgrEnv.SPORE_RUNTIME_PYTHON_IMAGE).toBe(`ghcr.io/spore-dev/runtime-python:${version}`);
  });

  it.each(dockerfiles)('%s: official slim bases pinned by tag, labels with the source and the package version, the chart user (uid 1000), exec-form commands', (file) => {
    const stages = parseDockerfile(join(IMAGES, file));
    for (const s of stages) expect(s.from, `${file}: FROM ${s.from}`).toMatch(/^(node|python):\d+(\.\d+)*-(bookworm-slim|slim-bookworm)$/);
    const final = stages.at(-1)!;
    const args = Object.assign({}, ...all(final, 'ARG').map((i) => pairs(i.args)));
    expect(args.VERSION, `${file}: ARG VERSION's default is package.json's version`).toBe(version);
    const labels = Object.assign({}, ...all(final, 'LABEL').map((i) => pairs(i.args)));
    expect(labels['org.opencontainers.image.source']).toMatch(/^https:\/\/github\.com\/spore-dev\//);
    expect(labels['org.opencontainers.image.version']).toBe('${VERSION}');
    // the chart runs every container as 1000:1000 with a read-only root
    const uid = chart()[0].pod.securityContext.runAsUser;
    expect(last(final, 'USER')?.args).toBe(`${uid}:${uid}`);
    expect(execForm(last(final, 'ENTRYPOINT')).length + execForm(last(final, 'CMD')).length).toBeGreaterThan(0);
  });

  it.each(dockerfiles)('%s: every COPY source is in the repository and not kept out of the build context by .dockerignore', (file) => {
    const stages = parseDockerfile(join(IMAGES, file));
    const names = new Set(stages.map((s) => s.name));
    const sources = stages.flatMap(copies).flatMap((c) => {
      if (c.from) {
        expect(names, `${file}: COPY --from=${c.from} names a stage of this file`).toContain(c.from);
        return [];
      }
      return c.sources;
    });
    expect(sources.length).toBeGreaterThan(0);
    for (const src of sources) {
      expect(existsSync(join(ROOT, src)), `${file}: COPY ${src}`).toBe(true);
      expect(ignored(src), `${file}: COPY ${src} is in .dockerignore`).toBe(false);
      expect(src).not.toMatch(/(^|\/)(node_modules|lib|\.spore|dist)(\/|$)/); // installed or built in the image, never copied in
    }
    expect(ignored('node_modules') && ignored('examples/node_modules') && ignored('lib') && ignored('.spore') && ignored('examples/dist')).toBe(true);
  });

  it('the platform image builds from a clean clone: it copies every folder tsc compiles and everything the package ships, and builds lib/ itself', () => {
    const [build, final] = image('platform');
    const copied = copies(build).flatMap((c) => c.sources.map((s) => s.replace(/\/$/, '')));
    for (const dir of compiled) expect(copied, `tsconfig.build.json compiles ${dir}`).toContain(dir);
    for (const path of shipped.filter((p) => p !== 'lib')) expect(copied.some((c) => path === c || path.startsWith(`${c}/`)), `package.json ships ${path}`).toBe(true);
    const run = all(build, 'RUN').map((i) => i.args).join(' && ');
    expect(run).toMatch(/npm ci\b/);
    expect(run).toMatch(/npm run build\b/);
    expect(run).toMatch(/npm prune --omit=dev\b/);
    // git for the reconciler's repositories, python3 and pip for Python requirements (npm comes with the base image)
    const installs = all(final, 'RUN').map((i) => i.args).join(' ');
    for (const tool of ['git', 'openssh-client', 'python3', 'python3-pip']) expect(installs).toMatch(new RegExp(`apt-get install .*\\b${tool}\\b`));
    expect(copies(final)).toEqual([{ from: build.name, sources: ['/out/spore'], dest: '/opt/spore' }]);
  });

  it("the platform image's entrypoint is the spore bin, and every chart container's args start with a verb it accepts", async () => {
    const final = image('platform').at(-1)!;
    const entrypoint = execForm(last(final, 'ENTRYPOINT'));
    expect(entrypoint).toEqual(['/usr/bin/tini', '--', 'node', '/opt/spore/bin/spore.js']);
    // /opt/spore holds the package as the repository lays it out (lib/ built): run the same command here
    const local = (args: string[]) => spawnSync(process.execPath, [entrypoint[3].replace('/opt/spore/', ROOT), ...args], { encoding: 'utf8' });
    const v = local(['--version']);
    expect(v.stdout.trim(), v.stderr).toBe(version);
    const verbs = new Set(program().commands.map((c) => c.name()));
    const missing: string[] = [];
    for (const { c } of chart()) {
      expect(c.command, `${c.name}: the image's entrypoint runs, not a command of the chart's`).toBeUndefined();
      if (!verbs.has(c.args[0])) {
        missing.push(c.args[0]);
        continue;
      }
      const help = local([c.args[0], '--help']);
      expect(help.status, `${c.name}: spore ${c.args[0]} --help: ${help.stderr}`).toBe(0);
    }
    expect(missing).toEqual([]);
    expect(verbs).toContain('reconciler');
  });

  it.each([
    ['runtime-node', /^node:/],
    ['runtime-python', /^python:/],
  ])('%s: laid out from its COPY lines alone (no node_modules anywhere), its command answers /healthz', async (name, base) => {
    const stages = image(name);
    expect(stages).toHaveLength(1);
    const [stage] = stages;
    expect(stage.from).toMatch(base);
    // the image's filesystem, as far as Spore puts files in it: a folder holding only what COPY takes
    const root = tempDir();
    for (const c of copies(stage)) {
      expect(c.from).toBeUndefined();
      for (const src of c.sources) {
        expect(src).toMatch(/^dataplane\/runtimes\//);
        const to = join(root, c.dest.endsWith('/') ? join(c.dest, src.split('/').at(-1)!) : c.dest);
        mkdirSync(dirname(to), { recursive: true });
        copyFileSync(join(ROOT, src), to);
      }
    }
    const entrypoint = execForm(last(stage, 'ENTRYPOINT'));
    const cmd = execForm(last(stage, 'CMD'));
    expect(entrypoint).toEqual(['/usr/bin/tini', '--']); // tini only forwards signals and reaps: the command runs without it here
    // the interpreter is the base image's (node, python); paths are the image's, under the laid-out folder
    const interpreter = { node: process.execPath, python: process.env.SPORE_PYTHON ?? 'python3' }[cmd[0]];
    expect(interpreter, `CMD ${cmd.join(' ')}`).toBeDefined();
    // a pod runs the runtime as spore up does
    if (cmd[0] === 'node') expect(cmd.slice(1, -1), 'node flags of the image vs NODE_RUNTIME_FLAGS').toEqual([...NODE_RUNTIME_FLAGS]);
    const argv = cmd.slice(1).map((a) => (a.startsWith('/') ? join(root, a) : a));
    expect(argv.filter((a) => a.startsWith(root)).every((a) => existsSync(a))).toBe(true);
    const env = Object.assign({}, ...all(stage, 'ENV').map((i) => pairs(i.args)));
    expect(env).toMatchObject({ HOST: '0.0.0.0', PORT: '8888' }); // every interface of the pod, Fission's port
    const port = await freePort();
    // the pool manager's way: a port, loopback here, and the instance's credential on stdin
    const child = spawn(interpreter!, argv, {
      cwd: root,
      env: { PATH: process.env.PATH, LANG: 'C.UTF-8', ...env, HOME: root, HOST: '127.0.0.1', PORT: String(port) },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    running.push(child);
    let output = '';
    child.stdout!.on('data', (d) => (output += d));
    child.stderr!.on('data', (d) => (output += d));
    child.stdin!.write('image-test-token\n');
    let res: Response | undefined;
    for (let i = 0; i < 200 && !res; i++) {
      if (child.exitCode !== null) throw new Error(`${cmd.join(' ')} exited (${child.exitCode}): ${output}`);
      res = await fetch(`http://127.0.0.1:${port}/healthz`, { headers: { 'x-spore-instance-token': 'image-test-token' } }).catch(() => undefined);
      if (!res) await new Promise((r) => setTimeout(r, 50));
    }
    expect(res?.status, output).toBe(200);
    expect(await res!.json()).toMatchObject({ status: 'ok', specialized: false });
  });
});
