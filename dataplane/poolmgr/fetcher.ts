// The fetcher: Spore's sidecar in every pool pod (Fission's fetcher, ours).
// It shares the pod's /userfunc, /secrets and /configs volumes with the
// runtime container; the pool manager sends it one Specialization, and it
// fetches and verifies the code, extracts it, writes the Secrets and
// ConfigMaps it was handed, then calls the runtime's /v2/specialize over the
// pod's own address. So a runtime image (Spore's or Fission's) needs nothing
// of Spore's, and a pod needs no API credential: Secrets travel resolved.
import { createHash, timingSafeEqual } from 'node:crypto';
import { join } from 'node:path';
import { Type } from '@sinclair/typebox';
import { Ajv, type ErrorObject } from 'ajv';
import Fastify, { type FastifyInstance } from 'fastify';
import { joinPath } from '../../api/errors.js';
import { PackageSpec } from '../../api/package.js';
import { Closed, DNS_LABEL, MapOf } from '../../api/schema-kit.js';
import { DataplaneError } from '../errors.js';
import { PackageFetcher } from './package-fetcher.js';
import { INSTANCE_TOKEN_HEADER, specializeInFolder } from './specialize-folder.js';
import type { Specialization } from './specialization.js';

export interface FetcherOptions {
  port: number;
  host: string;
  /** The runtime container's address: the pod's own. */
  runtimeUrl: string;
  /** The shared volumes. */
  userfunc: string;
  secrets: string;
  configs: string;
  /** The pod's credential: asked of the pool manager, and passed on to the runtime. */
  token: string;
  /** Where the one line per specialization goes. @default stdout */
  log?: (line: string) => void;
}

const Label = (what: string) => Type.String({ pattern: DNS_LABEL, maxLength: 63, description: what });
const Base64 = Type.String({ pattern: '^[A-Za-z0-9+/]*={0,2}$' });
const Mount = Closed({ namespace: Label('namespace'), name: Type.String({ pattern: '^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$', maxLength: 253 }), data: MapOf(Base64) });

/** What POST /specialize takes: a Specialization (specialization.ts), bounded. */
const Body = Closed({
  function: Closed({ namespace: Label('namespace'), name: Label('function name') }),
  package: Closed({ namespace: Label('namespace'), name: Label('package name'), archive: PackageSpec.properties.archive }),
  entrypoint: Type.String({ maxLength: 1024 }),
  env: MapOf(Type.String(), { maxProperties: 1000 }),
  secrets: Type.Array(Mount, { maxItems: 256 }),
  configMaps: Type.Array(Mount, { maxItems: 256 }),
  timeoutSeconds: Type.Integer({ minimum: 1, maximum: 3600 }),
});

const ajv = new Ajv({ allErrors: true, strict: true });
ajv.addKeyword({ keyword: 'x-kubernetes-validations' }); // checked below (exactly one of inline or url)
const validBody = ajv.compile(Body);

/** Every problem with the body, each at its path (`body.package.archive.sha256: ...`). */
function bodyProblems(body: unknown): string[] {
  if (!validBody(body)) return (validBody.errors ?? []).map(describe);
  const archive = (body as Specialization).package.archive;
  if ((archive.inline === undefined) === (archive.url === undefined)) return ['body.package.archive: set exactly one of inline or url'];
  return [];
}

function describe(e: ErrorObject): string {
  const parts = ['body', ...e.instancePath.split('/').slice(1).map((p) => p.replace(/~1/g, '/').replace(/~0/g, '~'))];
  if (e.keyword === 'required') return `${joinPath([...parts, e.params.missingProperty])}: is required`;
  if (e.keyword === 'additionalProperties') return `${joinPath([...parts, e.params.additionalProperty])}: is not a known field`;
  return `${joinPath(parts)}: ${e.message}`;
}

/** The same digest length whatever was sent: compared in constant time. */
const digest = (s: string) => createHash('sha256').update(s).digest();

export async function startFetcher(o: FetcherOptions): Promise<{ url: string; close(): Promise<void> }> {
  const log = o.log ?? ((line: string) => process.stdout.write(`${line}\n`));
  const fetcher = new PackageFetcher({ cacheEntries: 1 }); // no archive folder: only inline or absolute URLs
  const token = digest(o.token);
  // once per pod: a runtime serves one function for life
  let state: 'generic' | 'specializing' | 'specialized' = 'generic';

  const app: FastifyInstance = Fastify({ logger: false, bodyLimit: 8 * 1024 * 1024 });
  const fail = (status: number, reason: string, error: string) => ({ status, payload: { error, reason } });

  app.get('/healthz', async () => ({ status: 'ok', specialized: state === 'specialized' }));
  // the credential is asked before the body is read
  app.addHook('onRequest', async (req, reply) => {
    if (req.routeOptions.url !== '/specialize') return;
    const given = req.headers[INSTANCE_TOKEN_HEADER];
    if (typeof given !== 'string' || !timingSafeEqual(digest(given), token)) {
      return reply.code(401).send({ error: `missing or wrong ${INSTANCE_TOKEN_HEADER} header: only the pool manager may specialize this pod`, reason: 'Unauthorized' });
    }
  });
  // a body that is not JSON, or too large, in the same shape as every other answer
  app.setErrorHandler((err: { statusCode?: number; message: string }, _req, reply) => {
    const status = err.statusCode && err.statusCode < 500 ? err.statusCode : 500;
    const message = status === 415 ? 'the content-type must be application/json' : err.message;
    return reply.code(status).send({ error: `body: ${message}`, reason: status < 500 ? 'BadRequest' : 'InternalError' });
  });
  app.post('/specialize', async (req, reply) => {
    const problems = bodyProblems(req.body);
    const answer = problems.length
      ? fail(400, 'BadRequest', problems.join('; '))
      : state !== 'generic'
        ? fail(409, 'AlreadySpecialized', state === 'specialized' ? 'this pod is already specialized: a pod serves one function for life' : 'this pod is already being specialized')
        : await specialize(req.body as Specialization);
    return reply.code(answer.status).send(answer.payload);
  });

  async function specialize(s: Specialization) {
    state = 'specializing';
    const started = Date.now();
    const what = `function ${s.function.namespace}/${s.function.name} package ${s.package.namespace}/${s.package.name} (sha256 ${s.package.archive.sha256.slice(0, 12)})`;
    try {
      await specializeInFolder(s, {
        fetcher,
        codeDir: join(o.userfunc, `${s.package.name}-${s.package.archive.sha256.slice(0, 12)}`),
        secretsDir: o.secrets,
        configsDir: o.configs,
        runtimeUrl: o.runtimeUrl,
        token: o.token,
      });
      state = 'specialized';
      log(`specialize ${what}: ok in ${Date.now() - started} ms`);
      return { status: 200, payload: { specialized: true } };
    } catch (err) {
      state = 'generic'; // nothing half-done is left: the pool manager may try again
      const e = err instanceof DataplaneError ? err : new DataplaneError(500, 'SpecializationFailed', `function ${s.function.namespace}/${s.function.name}: ${(err as Error).message}`);
      log(`specialize ${what}: failed in ${Date.now() - started} ms: ${e.reason}: ${e.message}`);
      return fail(e.status, e.reason, e.message);
    }
  }

  const url = await app.listen({ port: o.port, host: o.host });
  return { url, close: () => app.close() };
}
