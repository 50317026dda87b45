// Building Python packages at deploy time, after prepare and before apply
// (`spore up` and the reconciler alike). A Package whose spec.build names a
// requirements file gets its dependencies installed with pip into the package
// itself — Fission's python builder: `pip install -r requirements.txt -t <pkg>`
// — and is applied as one archive of source and dependencies, so that any
// instance, local or in a pod, serves the pinned versions without a build of
// its own. Installs are cached by the requirements' bytes and the
// interpreter's version and platform: a revision that only changes code
// installs nothing.
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, posix } from 'node:path';
import { archiveLimitsFromEnv, packArchive, readArchive, readArchiveFile, readDirectory, type ArchiveEntry, type ArchiveLimits } from '../api/archive.js';
import { API_VERSION, ARCHIVES_DIR, localPython, type KubeObject, type PackageSpec } from '../api/index.js';
import { formatRef, refOf } from '../store/index.js';
import { runBounded } from './bounded.js';
import { isComplete, keepEntry, stagingFor, sweepStaging } from './cache-entry.js';
import { archiveUrlOf } from './prepare.js';

export class BuildError extends Error {
  constructor(
    message: string,
    /** The Package that failed to build. */
    readonly object?: string,
    /** The index or the network failed: the same requirements may install later. */
    readonly transient = false,
  ) {
    super(message);
    this.name = 'BuildError';
  }
}

export interface BuildOptions {
  /** Where archives are kept for the dataplane: source archives are read from it, built ones written to it. */
  archiveDir: string;
  /** The reconciler's server as the dataplane reaches it: built archives are referenced there (see PrepareOptions.archiveUrl). */
  archiveUrl?: string;
  /** Installed dependencies by requirements, Python version and platform. */
  cacheDir: string;
  /** @default localPython(): the interpreter the built-in python runtime runs */
  python?: string;
  /** Bound of one pip install. @default 600000 ms */
  timeoutMs?: number;
  /** Kills pip (and what it started) and fails the build. */
  signal?: AbortSignal;
  /** See runBounded. */
  owner?: string;
  /** pip's output, line by line, and a line per package built. */
  onProgress?: (line: string) => void;
  /** Bounds of the source archive read into memory. @default archiveLimitsFromEnv(): the SPORE_* variables, else DEFAULT_ARCHIVE_LIMITS */
  limits?: ArchiveLimits;
}

export interface Built {
  /** `Package/<namespace>/<name>` */
  object: string;
  /** The cache entry of its dependencies. */
  key: string;
  /** Whether the dependencies came from the cache (nothing was installed). */
  cached: boolean;
  sha256: string;
}

/** pip failures that are the network or the index, not the requirements: the same install may pass later. */
const UNREACHABLE =
  /Retrying \(Retry\(|NewConnectionError|ConnectTimeoutError|ReadTimeoutError|Max retries exceeded|ProxyError|Temporary failure in name resolution|Name or service not known|Connection (refused|reset)|Network is unreachable|HTTP error (429|5\d\d)|\b(429|50[0-4]) (Client|Server) Error/;
const SITE = 'site';

/** Builds every Package that names a requirements file; returns the objects to apply, built Packages replaced. */
export async function buildPackages(objects: readonly KubeObject[], o: BuildOptions): Promise<{ objects: KubeObject[]; built: Built[] }> {
  const out: KubeObject[] = [];
  const built: Built[] = [];
  let python: Interpreter | undefined;
  for (const x of objects) {
    const spec = x.kind === 'Package' && x.apiVersion === API_VERSION ? (x.spec as PackageSpec) : undefined;
    // built already (a recorded sync applied again): its archive is the built one
    if (!spec?.build?.requirements || spec.build.sourceSha256) {
      out.push(x);
      continue;
    }
    const name = formatRef(refOf(x));
    try {
      python ??= await probe(o);
      const b = await buildOne(spec, python, o);
      o.onProgress?.(`${name}: ${b.cached ? 'dependencies from the cache' : 'dependencies installed'} (${spec.build.requirements}, ${python.tag}) → ${ARCHIVES_DIR}/${b.sha256}.tgz`);
      built.push({ object: name, ...b });
      out.push({
        ...x,
        spec: { ...spec, archive: { sha256: b.sha256, size: b.size, url: archiveUrlOf(b.sha256, o.archiveUrl) }, build: { ...spec.build, sourceSha256: spec.archive.sha256 } },
      } as KubeObject);
    } catch (err) {
      throw err instanceof BuildError ? new BuildError(err.message, err.object ?? name, err.transient) : new BuildError((err as Error).message, name);
    }
  }
  return { objects: out, built };
}

interface Interpreter {
  command: string;
  /** `cpython-3.11-linux-x86_64`: what the installed files depend on. */
  tag: string;
}

async function probe(o: BuildOptions): Promise<Interpreter> {
  const command = o.python ?? localPython();
  const code = "import sys, sysconfig; print('%s-%d.%d-%s' % (sys.implementation.name, sys.version_info[0], sys.version_info[1], sysconfig.get_platform()))";
  const r = await runBounded(command, ['-c', code], { cwd: tmpdir(), timeoutMs: 30_000, signal: o.signal, owner: o.owner }).catch((err: Error) => {
    throw new BuildError(`cannot run the Python interpreter "${command}" (set SPORE_PYTHON to one): ${err.message}`);
  });
  if (r.ended === 'stopped') throw new BuildError('the build was stopped');
  if (r.code !== 0) throw new BuildError(`the Python interpreter "${command}" failed (exit code ${r.code}): ${r.output.trim().split('\n').slice(-3).join('\n')}`);
  return { command, tag: r.output.trim().split('\n').pop()! };
}

async function buildOne(spec: PackageSpec, python: Interpreter, o: BuildOptions) {
  const requirements = spec.build!.requirements!;
  const limits = o.limits ?? archiveLimitsFromEnv();
  const source = await readArchive(sourceBytes(spec, o.archiveDir, limits, o.archiveUrl), { limits }).catch((err: Error) => {
    throw new BuildError(`the source archive: ${err.message}`);
  });
  const file = posix.normalize(requirements.replace(/^\.\//, ''));
  const listed = source.find((e) => e.path === file);
  if (!listed) throw new BuildError(`spec.build.requirements: ${requirements} is not in the package's archive`);
  // requirements that name other files of the package (-r, -c, -e, local paths) depend on those too: key on the whole source then
  const namesFiles = listed.data.toString('utf8').split('\n').some((l) => /^\s*(-[rce]\b|--(requirement|constraint|editable)\b|\.{0,2}\/|file:)/.test(l));
  const key = createHash('sha256').update(namesFiles ? `source ${spec.archive.sha256}` : listed.data).update('\0').update(python.tag).digest('hex').slice(0, 24);
  const entry = join(o.cacheDir, key);
  const cached = isComplete(entry);
  if (!cached) await install(source, file, python, entry, o);
  // the function's own files win over a dependency's of the same path
  const files = new Map<string, ArchiveEntry>();
  for (const e of readDirectory(join(entry, SITE), { exclude: ['__pycache__', '*.pyc'] })) files.set(e.path, e);
  for (const e of source) files.set(e.path, e);
  const archive = packArchive([...files.values()]);
  const target = join(o.archiveDir, `${archive.sha256}.tgz`);
  if (!existsSync(target) || statSync(target).size !== archive.size) {
    mkdirSync(o.archiveDir, { recursive: true });
    const partial = `${target}.partial-${randomBytes(4).toString('hex')}`;
    writeFileSync(partial, archive.bytes);
    renameSync(partial, target); // the dataplane never reads half an archive
  }
  return { key, cached, sha256: archive.sha256, size: archive.size };
}

function sourceBytes(spec: PackageSpec, archiveDir: string, limits: ArchiveLimits, archiveUrl?: string): Buffer {
  const { inline, url, sha256, size } = spec.archive;
  let bytes: Buffer;
  if (size > limits.maxArchiveBytes) throw new BuildError(`spec.archive.size is ${size} bytes, more than the ${limits.maxArchiveBytes} an archive may have (SPORE_ARCHIVE_MAX_BYTES)`);
  if (inline !== undefined) bytes = Buffer.from(inline, 'base64');
  // where prepare copied it: a relative URL, or one it pointed at the reconciler's server
  else if (url && (!/^[a-z]+:\/\//.test(url) || url === archiveUrlOf(sha256, archiveUrl))) {
    const file = join(archiveDir, url.split('/').pop()!);
    if (!existsSync(file)) throw new BuildError(`spec.archive.url: ${url} is not in the archive folder ${archiveDir}`);
    try {
      bytes = readArchiveFile(file, size);
    } catch (err) {
      throw new BuildError(`spec.archive.url: ${url}: ${(err as Error).message}`);
    }
  } else throw new BuildError(`spec.archive.url: ${url}: a package built at deploy time must be in the rendered output (inline or archives/<sha256>.tgz)`);
  const actual = createHash('sha256').update(bytes).digest('hex');
  if (actual !== sha256) throw new BuildError(`the source archive's sha256 is ${actual}, spec.archive.sha256 says ${sha256}`);
  return bytes;
}

/** pip installs into a staging folder, moved into the cache whole when it succeeded. */
async function install(source: ArchiveEntry[], requirements: string, python: Interpreter, entry: string, o: BuildOptions): Promise<void> {
  const cacheDir = join(entry, '..');
  mkdirSync(cacheDir, { recursive: true });
  sweepStaging(cacheDir);
  const staging = stagingFor(entry);
  const src = join(staging, 'src');
  try {
    // pip runs in the source, as in Fission's builder: what the requirements name relative to it (-r, -c, ./lib) is there
    for (const e of source) {
      mkdirSync(join(src, e.path, '..'), { recursive: true });
      writeFileSync(join(src, e.path), e.data);
    }
    mkdirSync(join(staging, SITE));
    const timeoutMs = o.timeoutMs ?? 600_000;
    const args = ['-m', 'pip', 'install', '--target', join(staging, SITE), '--no-compile', '--disable-pip-version-check', '--no-input', '-r', requirements];
    const env = { ...process.env, PIP_ROOT_USER_ACTION: 'ignore', PYTHONDONTWRITEBYTECODE: '1' };
    const onOutput = (chunk: string) => chunk.split('\n').forEach((line) => line.trim() && o.onProgress?.(`pip: ${line.trimEnd()}`));
    const r = await runBounded(python.command, args, { cwd: src, env, timeoutMs, signal: o.signal, onOutput, owner: o.owner }).catch((err: Error) => {
      throw new BuildError(`cannot run ${python.command} -m pip: ${err.message}`);
    });
    if (r.ended === 'stopped') throw new BuildError('pip install was stopped');
    if (r.ended === 'timed out') throw new BuildError(`pip install -r ${requirements} did not finish within ${timeoutMs / 1000}s`, undefined, true);
    if (r.code !== 0) throw new BuildError(`pip install -r ${requirements} failed (exit code ${r.code}):\n${summarizePip(r.output)}`, undefined, UNREACHABLE.test(r.output));
    rmSync(src, { recursive: true, force: true });
    try {
      keepEntry(staging, entry);
    } catch (err) {
      throw new BuildError(`cannot keep the installed dependencies in ${entry}: ${(err as Error).message}`);
    }
  } finally {
    rmSync(staging, { recursive: true, force: true });
  }
}

/** pip's own words about what failed: from its first error on, without its progress and warnings. */
export function summarizePip(output: string): string {
  const lines = output.split('\n').map((l) => l.trimEnd());
  const first = lines.findIndex((l) => /^\s*(ERROR:|error:)/.test(l));
  const kept = (first < 0 ? lines : lines.slice(first)).filter((l) => l.trim() && !/^(WARNING:|Looking in |\[notice\])/.test(l));
  return kept.slice(0, 20).join('\n');
}

