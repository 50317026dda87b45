// The archives the reconciler rendered, over HTTP (as Flux's source-controller
// serves artifacts): on a cluster, Packages over 256 KiB cannot travel in etcd,
// so their URL points at `GET /archives/<sha256>.tgz` on the reconciler's
// Service and the dataplane downloads them from here.
//
// No token is asked: pods download them, an archive holds only what the
// repository holds (its code, or code and the dependencies its requirements
// name), and names are content-addressed, so a name must be known to be asked for.
// Whoever downloads verifies size and sha256 against the Package.
import { closeSync, constants, createReadStream, fstatSync, openSync } from 'node:fs';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';

/** Path prefix of the archives on the reconciler's server. */
export const ARCHIVES_PATH = '/archives/';

/** The only names kept in the archive folder under a served URL: `<sha256>.tgz` (see prepare and build). */
export const SERVED_ARCHIVE = /^[a-f0-9]{64}\.tgz$/;

/** `GET` and `HEAD /archives/<sha256>.tgz`: the file of that name in `archiveDir`, streamed. */
export function archiveRoutes(app: FastifyInstance, archiveDir: string): void {
  app.route({
    method: ['GET', 'HEAD'],
    url: `${ARCHIVES_PATH}:name`,
    handler: async (req, reply) => {
      const { name } = req.params as { name: string };
      // the name is all that reaches the file system, and it can hold no `/` or `..`
      if (!SERVED_ARCHIVE.test(name)) {
        return reply.code(400).send({ status: 400, error: 'BadRequest', message: `archive name "${name}": expected <sha256>.tgz, the sha256 in 64 lowercase hex digits` });
      }
      let fd: number;
      try {
        // a link is never followed, even to a file in the folder: only files the reconciler wrote are served
        fd = openSync(join(archiveDir, name), constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === 'ELOOP') return reply.code(404).send({ status: 404, error: 'NotFound', message: `archive ${name} is a symbolic link; only regular files are served` });
        if (code === 'ENOENT') return reply.code(404).send({ status: 404, error: 'NotFound', message: `no archive ${name}: the reconciler has not rendered it` });
        throw err;
      }
      const stat = fstatSync(fd);
      if (!stat.isFile()) {
        closeSync(fd);
        return reply.code(404).send({ status: 404, error: 'NotFound', message: `archive ${name} is not a regular file; only regular files are served` });
      }
      reply.headers({
        'content-type': 'application/gzip',
        'content-length': stat.size,
        etag: `"${name.slice(0, 64)}"`,
        // the name is the content's hash: what it names never changes
        'cache-control': 'public, max-age=31536000, immutable',
      });
      if (req.method === 'HEAD') {
        closeSync(fd);
        return reply.send();
      }
      return reply.send(createReadStream('', { fd, start: 0 }));
    },
  });
}
