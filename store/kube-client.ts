// A thin REST client for the Kubernetes API that keeps objects as the wire
// has them (JSON in, JSON out): @kubernetes/client-node's typed clients read
// built-in kinds into models whose field names and defaults differ from the
// manifests Spore applies, and comparing those would see drift that is not.
// The kubeconfig's authentication (certificates, tokens, exec plugins) is the
// client library's; discovery and requests are here.
import http from 'node:http';
import https from 'node:https';
import type { KubeConfig } from '@kubernetes/client-node';

export class KubeError extends Error {
  constructor(
    /** The HTTP status (0 when the API server could not be reached). */
    readonly status: number,
    /** The API's reason: NotFound, Conflict, Invalid, AlreadyExists … */
    readonly reason: string,
    message: string,
  ) {
    super(message);
    this.name = 'KubeError';
  }
}

/** What discovery says of a kind: its path segment and whether it lives in a namespace. */
export interface KindInfo {
  apiVersion: string;
  kind: string;
  plural: string;
  namespaced: boolean;
}

export interface RequestOptions {
  query?: Record<string, string | undefined>;
  body?: unknown;
  contentType?: string;
  /** What the answer should be: JSON by default; a list of metadata only with PARTIAL_METADATA. */
  accept?: string;
}

/** How a cluster gets Spore's CRDs: what an error says when they are missing. */
export const INSTALL_CRDS = 'npx spore crds | kubectl apply --server-side -f -';

/** A list's items as metadata alone (no spec, no status): what is needed to count and delete objects that may be large. */
export const PARTIAL_METADATA = 'application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1';

function parseJson(text: string): any {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/** An error answer as a KubeError: the API's Status (reason, message) when it sent one. */
function failure(status: number, text: string): KubeError {
  const body = parseJson(text);
  return new KubeError(status, body?.reason ?? String(status), body?.message ?? (text.slice(0, 300) || `HTTP ${status}`));
}

export class KubeClient {
  readonly server: string;
  private agent?: http.Agent;
  private readonly kinds = new Map<string, Promise<Map<string, KindInfo>>>();
  /** API requests made (for the benchmark: requests per sync). */
  requests = 0;

  constructor(readonly kc: KubeConfig) {
    const cluster = kc.getCurrentCluster();
    if (!cluster?.server) throw new Error(`the kubeconfig has no current cluster with a server (context "${kc.getCurrentContext()}")`);
    this.server = cluster.server.replace(/\/+$/, '');
  }

  async request<T = any>(method: string, path: string, o: RequestOptions = {}): Promise<T> {
    const { status, text } = await this.send(method, path, o, 60_000).then(
      (res) =>
        new Promise<{ status: number; text: string }>((resolve, reject) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }));
          res.on('error', reject);
        }),
    );
    if (status >= 200 && status < 300) return (text ? parseJson(text) : undefined) as T;
    throw failure(status, text);
  }

  /**
   * A GET whose answer is read as it comes (a pod's log, followed): the
   * response once its status is 2xx, with no idle timeout; else a KubeError
   * with the API's message. The signal ends it.
   */
  async stream(path: string, o: { query?: RequestOptions['query']; signal?: AbortSignal } = {}): Promise<http.IncomingMessage> {
    const res = await this.send('GET', path, o);
    const status = res.statusCode ?? 0;
    if (status >= 200 && status < 300) return res;
    const chunks: Buffer[] = [];
    for await (const c of res) chunks.push(c as Buffer);
    throw failure(status, Buffer.concat(chunks).toString('utf8'));
  }

  /** Sends a request; resolves with the response as soon as its head is in. */
  private async send(method: string, path: string, o: RequestOptions & { signal?: AbortSignal }, idleTimeoutMs?: number): Promise<http.IncomingMessage> {
    const url = new URL(this.server + path);
    for (const [k, v] of Object.entries(o.query ?? {})) if (v !== undefined) url.searchParams.set(k, v);
    const options: https.RequestOptions = { method, headers: { accept: o.accept ?? 'application/json' }, signal: o.signal };
    // authentication may change (rotated tokens, exec plugins): asked for every request; the TLS connection pool is kept
    await this.kc.applyToHTTPSOptions(options);
    options.agent = this.agent ??= url.protocol === 'https:'
      ? new https.Agent({ keepAlive: true, ca: options.ca, cert: options.cert, key: options.key, rejectUnauthorized: options.rejectUnauthorized, servername: options.servername })
      : new http.Agent({ keepAlive: true });
    const payload = o.body === undefined ? undefined : Buffer.from(JSON.stringify(o.body));
    if (payload) Object.assign(options.headers!, { 'content-type': o.contentType ?? 'application/json', 'content-length': payload.length });
    this.requests++;
    return new Promise((resolve, reject) => {
      const req = (url.protocol === 'https:' ? https : http).request(url, options, resolve);
      if (idleTimeoutMs) req.setTimeout(idleTimeoutMs, () => req.destroy(new Error(`no answer in ${idleTimeoutMs / 1000} s`)));
      req.on('error', (err) => reject(new KubeError(0, 'Unreachable', `the Kubernetes API at ${this.server} cannot be reached: ${err.message}`)));
      req.end(payload);
    });
  }

  /** The kinds an API group version serves (discovery, cached; asked again when a kind is not found, as a CRD may be new). */
  async kind(apiVersion: string, kind: string): Promise<KindInfo> {
    const lookup = () => {
      let p = this.kinds.get(apiVersion);
      if (!p) {
        p = this.request<{ resources: { name: string; kind: string; namespaced: boolean }[] }>('GET', apiVersion.includes('/') ? `/apis/${apiVersion}` : `/api/${apiVersion}`).then(
          (list) => new Map(list.resources.filter((r) => !r.name.includes('/')).map((r) => [r.kind, { apiVersion, kind: r.kind, plural: r.name, namespaced: r.namespaced }])),
        );
        this.kinds.set(apiVersion, p);
        p.catch(() => this.kinds.delete(apiVersion));
      }
      return p;
    };
    let found = await lookup().catch((err) => {
      if (err instanceof KubeError && err.status === 404) return new Map<string, KindInfo>();
      throw err;
    });
    if (!found.has(kind)) {
      this.kinds.delete(apiVersion);
      found = await lookup().catch(() => new Map<string, KindInfo>());
    }
    const info = found.get(kind);
    if (!info) throw new KubeError(404, 'NotFound', `the cluster does not serve ${kind} in ${apiVersion} (is its CustomResourceDefinition installed?)`);
    return info;
  }

  /** The collection path of a kind (in a namespace when given and the kind is namespaced). */
  async collection(apiVersion: string, kind: string, namespace?: string): Promise<string> {
    const k = await this.kind(apiVersion, kind);
    const base = apiVersion.includes('/') ? `/apis/${apiVersion}` : `/api/${apiVersion}`;
    return k.namespaced && namespace ? `${base}/namespaces/${namespace}/${k.plural}` : `${base}/${k.plural}`;
  }

  /** The path of one object. */
  async path(ref: { apiVersion: string; kind: string; namespace?: string; name: string }): Promise<string> {
    return `${await this.collection(ref.apiVersion, ref.kind, ref.namespace)}/${encodeURIComponent(ref.name)}`;
  }

  close(): void {
    this.agent?.destroy();
  }
}
