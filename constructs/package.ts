import { mkdirSync, writeFileSync, existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { App } from 'cdk8s';
import type { Construct } from 'constructs';
import { ARCHIVES_DIR, INLINE_ARCHIVE_LIMIT, type PackageSpec } from '../api/index.js';
import type { Archive } from './archive.js';
import { SporeObject, type SporeObjectOptions } from './spore-object.js';

export { ARCHIVES_DIR };

export interface PackageProps extends SporeObjectOptions {
  readonly archive: Archive;
  /** A pip requirements file in the archive (e.g. requirements.txt), installed into the package at deploy time. */
  readonly requirements?: string;
}

/**
 * A code archive. Up to 256 KiB it travels inline in the manifest; beyond, it
 * is written as `archives/<sha256>.tgz` next to the manifests and referenced by
 * that relative URL. Functions create their Package; you rarely need this.
 */
export class Package extends SporeObject {
  constructor(
    scope: Construct,
    id: string,
    private readonly config: PackageProps,
  ) {
    super(scope, id, 'Package', config);
  }

  get inline(): boolean {
    return this.config.archive.size <= INLINE_ARCHIVE_LIMIT;
  }

  get url(): string | undefined {
    return this.inline ? undefined : `${ARCHIVES_DIR}/${this.config.archive.sha256}.tgz`;
  }

  protected renderSpec(): PackageSpec {
    const { archive, requirements } = this.config;
    return {
      archive: { sha256: archive.sha256, size: archive.size, inline: this.inline ? archive.bytes.toString('base64') : undefined, url: this.url },
      build: requirements ? { requirements } : undefined,
    };
  }

  /** Rendering the manifest also writes the archive it points at (content-addressed, so writing twice is harmless). */
  override toJson(): any {
    const json = super.toJson();
    if (this.url) {
      const file = join(App.of(this).outdir, this.url);
      if (!existsSync(file) || statSync(file).size !== this.config.archive.size) {
        mkdirSync(join(App.of(this).outdir, ARCHIVES_DIR), { recursive: true });
        writeFileSync(file, this.config.archive.bytes);
      }
    }
    return json;
  }
}
