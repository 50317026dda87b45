// Where a function's code comes from. Each source turns into one deterministic
// archive; Function wraps it in a Package.
import { existsSync, readFileSync, statSync } from 'node:fs';
import { resolve } from 'node:path';
import { createHash } from 'node:crypto';
import { packArchive, readDirectory, type Archive } from './archive.js';

export interface CodeConfig {
  readonly archive: Archive;
  /** Entrypoint implied by the source (e.g. the bundle's file); a Function's own entrypoint wins. */
  readonly entrypoint?: string;
  /** A pip requirements file in the archive (e.g. requirements.txt), installed into the package at deploy time. */
  readonly requirements?: string;
}

/** Files and folders never packed from a source folder. */
export const DEFAULT_EXCLUDES = ['.git', 'node_modules', '__pycache__', '.venv', 'venv', '.DS_Store', '.spore'];

export interface DirectoryOptions {
  /** Names skipped at any depth. @default DEFAULT_EXCLUDES */
  readonly exclude?: string[];
}

/** A function's code. Paths are relative to the current folder (the app's, when cdk8s runs it). */
export abstract class Code {
  /** A prebuilt gzip-compressed tar archive, used byte for byte. */
  static fromArchive(path: string): Code {
    return new ArchiveFileCode(path);
  }

  /** Every file under a folder, packed deterministically. */
  static fromDirectory(path: string, options: DirectoryOptions = {}): Code {
    return new DirectoryCode(path, options);
  }

  /** Produces the archive; throws an Error that says what is wrong. */
  abstract bind(): CodeConfig;
}

class ArchiveFileCode extends Code {
  constructor(private readonly path: string) {
    super();
  }

  bind(): CodeConfig {
    const abs = resolve(this.path);
    if (!existsSync(abs) || !statSync(abs).isFile()) throw new Error(`archive "${this.path}" not found (looked for ${abs})`);
    const bytes = readFileSync(abs);
    if (bytes.length < 2 || bytes[0] !== 0x1f || bytes[1] !== 0x8b) throw new Error(`archive "${this.path}" is not gzip-compressed (expected a .tgz)`);
    return { archive: { bytes, size: bytes.length, sha256: createHash('sha256').update(bytes).digest('hex') } };
  }
}

class DirectoryCode extends Code {
  constructor(
    private readonly path: string,
    private readonly options: DirectoryOptions,
  ) {
    super();
  }

  bind(): CodeConfig {
    const abs = resolve(this.path);
    if (!existsSync(abs) || !statSync(abs).isDirectory()) throw new Error(`folder "${this.path}" not found (looked for ${abs})`);
    const entries = readDirectory(abs, { exclude: this.options.exclude ?? DEFAULT_EXCLUDES });
    if (entries.length === 0) throw new Error(`folder "${this.path}" holds no files`);
    return { archive: packArchive(entries) };
  }
}
