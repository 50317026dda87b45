// The route table: HttpTriggers compiled into a find-my-way router (the one
// fastify uses), rebuilt whole on every change and swapped in atomically.
import FindMyWay from 'find-my-way';
import type { HTTPVersion } from 'find-my-way';
import { HTTP_METHODS, MAIN_STAGE, STAGE_LABEL, STAGE_PREFIX } from '../../api/index.js';
import type { StoredObject } from '../../store/index.js';

export interface Target {
  namespace: string;
  /** The trigger that matched (for errors and listings). */
  trigger: string;
  /** One function, or a weighted split. */
  functions: { name: string; weight: number }[];
  prefix?: string;
  keepPrefix: boolean;
}

export type Match =
  | { kind: 'found'; target: Target; params: Record<string, string>; path: string }
  | { kind: 'method'; allow: string[] }
  | { kind: 'none' };

export interface RouteTableOptions {
  /** Stage hosts and prefixes come with the reconciler's previews; the table only needs the routes. */
  onConflict?: (message: string) => void;
}

export interface RouteInfo {
  stage: string;
  namespace: string;
  trigger: string;
  methods: string[];
  path: string;
  host?: string;
  functions: { name: string; weight: number }[];
}

const newRouter = () => FindMyWay<HTTPVersion.V1>({ ignoreTrailingSlash: true, caseSensitive: true, ignoreDuplicateSlashes: true });

/**
 * Routes of the main stage answer as they are; a preview stage's routes answer
 * at host `<stage>.<any base host>` and under the path prefix `/_stage/<stage>/`.
 */
export class RouteTable {
  private readonly routers = new Map<string, ReturnType<typeof newRouter>>();
  readonly routes: RouteInfo[] = [];

  constructor(triggers: readonly StoredObject[], options: RouteTableOptions = {}) {
    const sorted = [...triggers].sort((a, b) => Number(a.metadata.resourceVersion) - Number(b.metadata.resourceVersion)); // the first applied wins a conflict
    for (const t of sorted) {
      const spec = t.spec as { methods?: string[]; path?: string; prefix?: string; keepPrefix?: boolean; host?: string; function?: { name: string }; functions?: { name: string; weight: number }[]; workflow?: { name: string } };
      const target: Target = {
        namespace: t.metadata.namespace,
        trigger: t.metadata.name,
        // a workflow is called by name like a function (the router tells them apart)
        functions: spec.functions ?? [{ name: (spec.function ?? spec.workflow)!.name, weight: 100 }],
        prefix: spec.prefix,
        keepPrefix: spec.keepPrefix ?? false,
      };
      const methods = spec.methods ?? ['GET'];
      const paths = spec.prefix !== undefined ? [spec.prefix, `${spec.prefix.replace(/\/$/, '')}/*`] : [spec.path!];
      // a wildcard host (*.example.com) matches any one label in its place
      const host = spec.host?.startsWith('*.') ? new RegExp(`^[^.]+${spec.host.slice(1).replace(/\./g, '\\.')}$`) : spec.host;
      const constraints = host ? { host } : undefined;
      const stage = t.metadata.labels?.[STAGE_LABEL] ?? MAIN_STAGE;
      let router = this.routers.get(stage);
      if (!router) this.routers.set(stage, (router = newRouter()));
      try {
        // HEAD is GET without the body (RFC 9110): a GET route answers it too
        const routed = methods.includes('GET') && !methods.includes('HEAD') ? [...methods, 'HEAD'] : methods;
        for (const path of paths) for (const m of routed) router.on(m as any, path, constraints ? { constraints } : {}, () => {}, target);
        this.routes.push({ stage, namespace: target.namespace, trigger: target.trigger, methods, path: spec.path ?? `${spec.prefix}/*`, host: spec.host, functions: target.functions });
      } catch (err) {
        options.onConflict?.(`HttpTrigger ${t.metadata.namespace}/${t.metadata.name} not routed: ${(err as Error).message}`);
      }
    }
  }

  match(method: string, host: string | undefined, fullPath: string): Match {
    let hostname = host?.replace(/:\d+$/, '').toLowerCase();
    let path = fullPath;
    let stage = MAIN_STAGE;
    if (path.startsWith(STAGE_PREFIX)) {
      const rest = path.slice(STAGE_PREFIX.length);
      const name = rest.split('/')[0];
      if (name && name !== MAIN_STAGE && this.routers.has(name)) {
        stage = name;
        path = rest.slice(name.length) || '/';
      }
    } else if (hostname?.includes('.')) {
      const first = hostname.slice(0, hostname.indexOf('.'));
      if (first !== MAIN_STAGE && this.routers.has(first)) {
        stage = first;
        hostname = hostname.slice(first.length + 1); // hosts of the stage's own routes are matched without the stage label
      }
    }
    const router = this.routers.get(stage);
    if (!router) return { kind: 'none' };
    const found = this.find(router, method, hostname, path);
    if (found) {
      const target = found.store as Target;
      const params: Record<string, string> = {};
      for (const [k, v] of Object.entries(found.params)) if (k !== '*' && v !== undefined) params[k] = v;
      let forward = path;
      if (target.prefix !== undefined && !target.keepPrefix) forward = '/' + (found.params['*'] ?? '');
      return { kind: 'found', target, params, path: forward };
    }
    const allow = HTTP_METHODS.filter((m) => m !== method && this.find(router, m, hostname, path));
    return allow.length ? { kind: 'method', allow } : { kind: 'none' };
  }

  private find(router: ReturnType<typeof newRouter>, method: string, host: string | undefined, path: string) {
    return router.find(method as any, path, host ? { host } : {}) ?? (host ? router.find(method as any, path, {}) : null);
  }
}
