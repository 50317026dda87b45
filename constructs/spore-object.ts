// The base of every spore.dev construct: explicit names, standard labels, the
// Argo CD sync wave, and validation against the resource model (the object
// itself, and its references and routes within the whole app) at synth time.
import { ApiObject, App, Chart } from 'cdk8s';
import type { Construct } from 'constructs';
import { API_VERSION, crossCheck, describeObject, validateObject, waveOf, type KindName, type KubeObject, type ObjectError } from '../api/index.js';

export const SYNC_WAVE = 'argocd.argoproj.io/sync-wave';

/** Labels every object Spore writes carries (never Argo's own tracking label or annotation). */
export function standardLabels(scope: Construct, name: string, component: string): Record<string, string> {
  return {
    'app.kubernetes.io/name': name,
    'app.kubernetes.io/component': component,
    'app.kubernetes.io/part-of': Chart.of(scope).node.id,
    'app.kubernetes.io/managed-by': 'spore',
  };
}

export interface SporeObjectOptions {
  /**
   * Name of the object in the cluster: a DNS-1123 label.
   * @default the construct id
   */
  readonly name?: string;
}

export abstract class SporeObject extends ApiObject {
  /** Finds the spore.dev object of a kind and name in the same app and namespace, if any. */
  static find<T extends SporeObject>(scope: Construct, kind: KindName, name: string, namespace?: string): T | undefined {
    return sporeObjects(App.of(scope)).find((o) => o.kind === kind && o.name === name && o.metadata.namespace === namespace) as T | undefined;
  }

  constructor(scope: Construct, id: string, kind: KindName, options: SporeObjectOptions = {}) {
    const name = options.name ?? id;
    super(scope, id, {
      apiVersion: API_VERSION,
      kind,
      metadata: {
        name,
        labels: standardLabels(scope, name, kind.toLowerCase()),
        annotations: { [SYNC_WAVE]: String(waveOf({ apiVersion: API_VERSION, kind })) },
      },
    });
    this.node.addValidation({ validate: () => this.problems() });
  }

  /** The spec as it goes into the manifest; called at synth time so later changes (routes added, …) count. */
  protected abstract renderSpec(): object;

  // The spec is rendered here rather than through cdk8s's Lazy: an app may hold
  // a second copy of cdk8s (a linked `spore`), and Lazy does not cross copies.
  override toJson(): any {
    return { ...super.toJson(), spec: clean(this.renderSpec()) };
  }

  /** Problems found before rendering (a missing file, a bundling error); reported at synth. */
  protected readonly buildErrors: string[] = [];

  private problems(): string[] {
    if (this.buildErrors.length) return [...this.buildErrors];
    const own = validateObject(this.toJson()).map((e) => (e.path ? `${e.path}: ${e.message}` : e.message));
    if (own.length) return own;
    const me = describeObject(this.toJson());
    return appErrors(App.of(this))
      .filter((e) => e.object === me)
      .map((e) => `${e.path}: ${e.message}`);
  }
}

function sporeObjects(app: Construct): SporeObject[] {
  return app.node.findAll().filter((c): c is SporeObject => c instanceof SporeObject);
}

// cdk8s validates construct by construct; checks across the app are computed
// once per validation pass (until the next microtask) instead of once per object.
const cache = new WeakMap<Construct, { count: number; errors: ObjectError[] }>();

function appErrors(app: Construct): ObjectError[] {
  const objects = sporeObjects(app);
  const hit = cache.get(app);
  if (hit && hit.count === objects.length) return hit.errors;
  const rendered = objects.map((o) => o.toJson() as KubeObject).filter((o) => validateObject(o).length === 0);
  const errors = crossCheck(rendered);
  cache.set(app, { count: objects.length, errors });
  queueMicrotask(() => cache.delete(app));
  return errors;
}

/** Drops undefined values and sorts keys, as cdk8s does for the rest of the object. */
function clean(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(clean);
  if (value === null || typeof value !== 'object' || Buffer.isBuffer(value)) return value;
  const out: Record<string, unknown> = {};
  for (const k of Object.keys(value).sort()) {
    const v = (value as Record<string, unknown>)[k];
    if (v !== undefined) out[k] = clean(v);
  }
  return out;
}
