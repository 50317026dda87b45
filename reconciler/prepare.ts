// From rendered objects to what is applied: placed in the stage's namespace,
// validated as a set, their URL archives copied where the dataplane reads
// them (or, on a cluster, where the reconciler serves them, the URL
// rewritten to there), and labelled with the inventory that marks them as the app's.
import { createHash } from 'node:crypto';
import { mkdirSync, realpathSync, renameSync, writeFileSync } from 'node:fs';
import { dirname, join, relative, sep } from 'node:path';
import { ArchiveError, archiveLimitsFromEnv, readArchiveFile, type ArchiveLimits } from '../api/archive.js';
import { API_VERSION, ARCHIVES_DIR, CLUSTER_SCOPED_KINDS, formatErrors, validateSet, type KubeObject } from '../api/index.js';
import { formatRef, refOf } from '../store/index.js';
import { ARCHIVES_PATH } from './archive-server.js';
import { withInventory } from './plan.js';

export class PrepareError extends Error {
  constructor(
    message: string,
    readonly object?: string,
  ) {
    super(message);
    this.name = 'PrepareError';
  }
}

export interface PrepareOptions {
  /** Folder the objects were rendered into (relative archive URLs point into it). */
  outdir: string;
  /** Where archives are kept for the dataplane (and served from, with archiveUrl). */
  archiveDir: string;
  /**
   * The reconciler's server as the dataplane reaches it (`http://spore-reconciler.spore-system:8082`):
   * each relative archive URL becomes `<archiveUrl>/archives/<sha256>.tgz`, served from archiveDir.
   * Unset (`spore up`): relative URLs stay, and the dataplane reads archiveDir itself.
   */
  archiveUrl?: string;
  inventory: Record<string, string>;
  /**
   * A preview stage's namespace: every namespaced object is put in it, so that
   * nothing of the preview lands on the main stage's objects; cluster-scoped
   * objects are left to the main stage (and reported through `skipped`).
   */
  namespace?: string;
  skipped?: (object: string) => void;
  /**
   * Whether an Environment may name a local command (`spec.runtime.command`,
   * `spec.builder.command`): a command runs on this host as Spore, so only the
   * operator may allow it for what a repository holds.
   */
  allowCommands: boolean;
  /** @default archiveLimitsFromEnv(): the SPORE_* variables, else DEFAULT_ARCHIVE_LIMITS */
  limits?: ArchiveLimits;
}

/** The object and field of each local command in the set. */
function commandsIn(objects: readonly KubeObject[]): { object: string; field: string; command: string[] }[] {
  const found = [];
  for (const x of objects) {
    if (x.kind !== 'Environment' || x.apiVersion !== API_VERSION) continue;
    const spec = (x as { spec?: { runtime?: { command?: string[] }; builder?: { command?: string[] } } }).spec;
    for (const [field, command] of [['spec.runtime.command', spec?.runtime?.command], ['spec.builder.command', spec?.builder?.command]] as const) {
      if (command?.length) found.push({ object: formatRef(refOf(x)), field, command });
    }
  }
  return found;
}

/** The base of served archive URLs, checked: an http(s) URL with a host and nothing after the path. */
export function archiveUrlBase(url: string): string {
  let u: URL | undefined;
  try {
    u = new URL(url);
  } catch {
    // reported below
  }
  if (!u || !/^https?:$/.test(u.protocol) || !u.host || u.search || u.hash || u.username || u.password) {
    throw new Error(`archive URL "${url}": expected the reconciler's address as the dataplane reaches it, http(s)://host[:port][/path] (e.g. http://spore-reconciler.spore-system:8082)`);
  }
  return url.replace(/\/+$/, '');
}

/** Where the dataplane finds the archive of this sha256: served by the reconciler, or (no archiveUrl) in its archive folder. */
export function archiveUrlOf(sha256: string, archiveUrl?: string): string {
  return archiveUrl ? `${archiveUrlBase(archiveUrl)}${ARCHIVES_PATH}${sha256}.tgz` : `${ARCHIVES_DIR}/${sha256}.tgz`;
}

export function prepareObjects(objects: readonly unknown[], o: PrepareOptions): KubeObject[] {
  if (objects.some((x) => typeof x !== 'object' || x === null || Array.isArray(x))) throw new PrepareError('a manifest document is not an object');
  const all = objects as KubeObject[];
  let placed = all;
  if (o.namespace) {
    const shared = all.filter((x) => CLUSTER_SCOPED_KINDS.has(x.kind));
    for (const x of shared) o.skipped?.(`${x.kind}/${x.metadata?.name}`);
    placed = all.filter((x) => !shared.includes(x)).map((x) => ({ ...x, metadata: { ...x.metadata, namespace: o.namespace } }));
  }
  const errors = validateSet(placed);
  if (errors.length) throw new PrepareError(formatErrors(errors), errors[0].object);
  const commands = o.allowCommands ? [] : commandsIn(placed);
  if (commands.length) {
    const c = commands[0];
    throw new PrepareError(
      `${c.object}: ${c.field}: ${JSON.stringify(c.command)} would run on this host, and commands from a repository are refused ` +
        `(use a built-in runtime: runtime.name node or python; or, if you trust everyone who can push, start the reconciler with --allow-commands)`,
      c.object,
    );
  }
  const served = new Map<KubeObject, KubeObject>();
  for (const x of placed) {
    const archive = x.kind === 'Package' && x.apiVersion === API_VERSION ? ((x as any).spec.archive as { url?: string; size: number; sha256: string }) : undefined;
    const url = archive?.url;
    if (!url || /^[a-z]+:\/\//i.test(url)) continue;
    const fail = (message: string) => new PrepareError(`spec.archive.url: ${url}: ${message}`, formatRef(refOf(x)));
    // validateSet let only plain relative paths through; a folder on the way may still be a link out
    const file = join(o.outdir, url);
    let folder: string;
    try {
      folder = realpathSync(dirname(file));
    } catch {
      throw fail('is not in the rendered output');
    }
    const inside = relative(realpathSync(o.outdir), folder);
    if (inside.split(sep)[0] === '..') throw fail(`leads out of the rendered output ${o.outdir} through a symbolic link`);
    const limit = (o.limits ?? archiveLimitsFromEnv()).maxArchiveBytes;
    if (archive.size > limit) throw fail(`spec.archive.size is ${archive.size} bytes, more than the ${limit} an archive may have (SPORE_ARCHIVE_MAX_BYTES)`);
    let bytes: Buffer;
    try {
      bytes = readArchiveFile(join(folder, url.split('/').pop()!), archive.size);
    } catch (err) {
      if (err instanceof ArchiveError) throw fail(err.message);
      throw err;
    }
    let name = url.split('/').pop()!;
    if (o.archiveUrl) {
      // served under its sha256, the file must be what its name says (or it would replace another Package's)
      const sha = createHash('sha256').update(bytes).digest('hex');
      if (sha !== archive.sha256) throw fail(`the file's sha256 is ${sha}, spec.archive.sha256 says ${archive.sha256}`);
      name = `${sha}.tgz`;
      served.set(x, { ...x, spec: { ...(x.spec as object), archive: { ...archive, url: archiveUrlOf(sha, o.archiveUrl) } } } as KubeObject);
    }
    mkdirSync(o.archiveDir, { recursive: true });
    const target = join(o.archiveDir, name);
    const partial = `${target}.partial-${process.pid}`;
    writeFileSync(partial, bytes);
    renameSync(partial, target); // the dataplane never reads half an archive
  }
  return withInventory(placed.map((x) => served.get(x) ?? x), o.inventory);
}
