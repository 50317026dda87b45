import { Type, type Static } from '@sinclair/typebox';
import { Cel, Closed, exactlyOneOf, StringEnum, commonStatus } from './schema-kit.js';

/** Archives up to this size travel inside the manifest; larger ones are written beside it and referenced by URL. */
export const INLINE_ARCHIVE_LIMIT = 256 * 1024;
/** Folder beside the manifests (and the prefix of relative archive URLs) where archives are written: `archives/<sha256>.tgz`. */
export const ARCHIVES_DIR = 'archives';

export const PackageSpec = Closed(
  {
    archive: Closed(
      {
        sha256: Type.String({ pattern: '^[a-f0-9]{64}$', description: 'sha256 of the archive bytes, lowercase hex' }),
        size: Type.Integer({ minimum: 1, description: 'archive size in bytes' }),
        inline: Type.Optional(
          Type.String({
            pattern: '^[A-Za-z0-9+/]*={0,2}$',
            maxLength: Math.ceil(INLINE_ARCHIVE_LIMIT / 3) * 4,
            description: 'the gzip-compressed tar archive, base64 (at most 256 KiB decoded)',
          }),
        ),
        url: Type.Optional(
          Type.String({ minLength: 1, description: 'where the archive is fetched: absolute URL, or a path relative to the manifests (archives/<sha256>.tgz)' }),
        ),
      },
      { description: 'the code archive (.tgz): exactly one of inline or url', ...Cel(exactlyOneOf('inline', 'url')) },
    ),
    build: Type.Optional(
      Closed(
        {
          requirements: Type.Optional(
            Type.String({ minLength: 1, description: 'path in the archive of a pip requirements file (requirements.txt): installed into the package at deploy time' }),
          ),
          sourceSha256: Type.Optional(
            Type.String({
              pattern: '^[a-f0-9]{64}$',
              description: 'set by the deploy-time build: sha256 of the source archive it built from; archive is then the built package (source and dependencies)',
            }),
          ),
        },
        { description: 'present when the package is built from source at deploy time before it is served' },
      ),
    ),
  },
  { description: 'a code archive a Function runs' },
);
export type PackageSpec = Static<typeof PackageSpec>;

export const BUILD_STATUSES = ['none', 'pending', 'running', 'succeeded', 'failed'] as const;
export const PackageStatus = Closed({
  ...commonStatus,
  buildStatus: Type.Optional(StringEnum(BUILD_STATUSES)),
  buildLog: Type.Optional(Type.String()),
});
