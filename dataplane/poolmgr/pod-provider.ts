// Instances as pods (the Kubernetes target), Fission's way: a pod per generic
// instance from the Environment's image, with Spore's fetcher beside the
// runtime. Specializing relabels the pod out of its pool and asks the fetcher
// to put the function's code, Secrets and ConfigMaps in the volumes it shares
// with the runtime, which it then specializes. Pods outlive the pool manager:
// a new one finds them by their labels (adopt).
import { randomBytes } from 'node:crypto';
import type { KubeConfig } from '@kubernetes/client-node';
import { request } from 'undici';
import { POOL_POD_LABEL, type KubeObject } from '../../api/index.js';
import { KindCache, type CacheEvent } from '../../store/kind-cache.js';
import { KubeError, type KubeClient } from '../../store/kube-client.js';
import type { StoredObject } from '../../store/index.js';
import { DataplaneError } from '../errors.js';
import { INSTANCE_TOKEN, type AdoptedInstance, type Instance, type InstanceProvider } from './provider.js';
import type { Specialization } from './specialization.js';

/** The runtime container's port, and the fetcher's. */
export const RUNTIME_PORT = 8888;
export const FETCHER_PORT = 8000;

/** Labels of the pods this provider makes. */
export const POD_LABELS = {
  managedBy: POOL_POD_LABEL.name,
  environment: 'spore.dev/environment',
  environmentNamespace: 'spore.dev/environment-namespace',
  generation: 'spore.dev/environment-generation',
  function: 'spore.dev/function',
  functionNamespace: 'spore.dev/function-namespace',
  revision: 'spore.dev/function-revision',
} as const;
const MANAGER = POOL_POD_LABEL.value;
/** What a pool pod's containers may not do: gain privileges, keep capabilities (function code runs in one). */
const LOCKED = { allowPrivilegeEscalation: false, capabilities: { drop: ['ALL'] } };

export interface PodProviderOptions {
  kubeconfig: KubeConfig;
  client: KubeClient;
  /** Where the pods (and their credentials' Secrets) live: the pool manager's namespace. */
  namespace: string;
  /** Images of the built-in runtimes (an Environment names `runtime.name`) and of the fetcher (Spore's platform image). */
  images: { node: string; python: string; fetcher: string };
  /** How long a new pod may take to be Ready. @default 120 s */
  startTimeoutMs?: number;
  /** Grace of a deleted pod. @default 5 s */
  gracePeriodSeconds?: number;
  report?: (message: string) => void;
}

interface Watcher {
  (pod: KubeObject | undefined): void;
}

export class PodProvider implements InstanceProvider {
  readonly keepsInstances = true;
  private readonly pods: KindCache;
  private readonly watchers = new Map<string, Set<Watcher>>();

  constructor(private readonly o: PodProviderOptions) {
    const onEvent = (e: CacheEvent) => {
      for (const w of this.watchers.get(e.object.metadata.name) ?? []) w(e.type === 'DELETED' ? undefined : e.object);
    };
    this.pods = new KindCache(o.kubeconfig, o.client, 'v1', 'Pod', `/api/v1/namespaces/${o.namespace}/pods`, onEvent, (m) => this.report(m), `${POD_LABELS.managedBy}=${MANAGER}`);
  }

  private report(message: string): void {
    (this.o.report ?? ((m) => process.stderr.write(`spore: ${m}\n`)))(message);
  }

  async start(environment: StoredObject): Promise<Instance> {
    await this.pods.ready;
    const env = environment.metadata;
    const name = `${env.name.slice(0, 40).replace(/[^a-z0-9-]/g, '-').replace(/-+$/, '')}-${randomBytes(4).toString('hex')}`;
    const labels = { [POD_LABELS.managedBy]: MANAGER, [POD_LABELS.environment]: env.name, [POD_LABELS.environmentNamespace]: env.namespace, [POD_LABELS.generation]: String(env.generation) };
    const pod = this.podSpec(environment, name, labels);
    const token = randomBytes(24).toString('base64url');
    try {
      // each pod its own credential: a function can read its own (its env), and it opens no other pod
      await this.o.client.request('POST', `/api/v1/namespaces/${this.o.namespace}/secrets`, {
        body: { apiVersion: 'v1', kind: 'Secret', metadata: { name: credentialSecret(name), namespace: this.o.namespace, labels: { [POD_LABELS.managedBy]: MANAGER } }, type: 'Opaque', data: { token: Buffer.from(token).toString('base64') } },
      });
      await this.o.client.request('POST', `/api/v1/namespaces/${this.o.namespace}/pods`, { body: pod });
    } catch (err) {
      await this.remove(name);
      throw new Error(`cannot create a pod for Environment ${env.namespace}/${env.name}: ${(err as Error).message}`);
    }
    try {
      const ready = await this.until(name, this.o.startTimeoutMs ?? 120_000, (p) => {
        if (!p) throw new Error(`pod ${name} was deleted while starting`);
        const failed = this.failure(p);
        if (failed) throw new Error(`pod ${name} ${failed}`);
        return p.status?.podIP && p.status?.conditions?.some((c: any) => c.type === 'Ready' && c.status === 'True') ? p : undefined;
      });
      return this.instance(ready, token);
    } catch (err) {
      await this.remove(name);
      throw err;
    }
  }

  /** Why a pod cannot serve, if it cannot: a container ended or is stuck. */
  private failure(pod: any): string | undefined {
    if (pod.metadata.deletionTimestamp) return 'is being deleted';
    if (pod.status?.phase === 'Failed' || pod.status?.phase === 'Succeeded') return `ended (${pod.status.phase})`;
    for (const c of pod.status?.containerStatuses ?? []) {
      if (c.state?.terminated) return `container ${c.name} exited (${c.state.terminated.reason ?? `code ${c.state.terminated.exitCode}`})`;
      const w = c.state?.waiting;
      if (w && ['ErrImagePull', 'ImagePullBackOff', 'InvalidImageName', 'CreateContainerConfigError', 'CreateContainerError'].includes(w.reason)) return `container ${c.name} cannot start: ${w.reason}${w.message ? `: ${w.message}` : ''}`;
      if (c.restartCount > 0) return `container ${c.name} restarted`;
    }
    return undefined;
  }

  private podSpec(environment: StoredObject, name: string, labels: Record<string, string>): object {
    const spec = environment.spec as { runtime: { name?: 'node' | 'python'; image?: string }; resources?: object; pod?: { serviceAccountName?: string; nodeSelector?: Record<string, string>; env?: { name: string; value: string }[] } };
    const pod = spec.pod ?? {};
    const image = spec.runtime.image ?? (spec.runtime.name ? this.o.images[spec.runtime.name] : undefined);
    if (!image) throw new Error(`Environment ${environment.metadata.namespace}/${environment.metadata.name} has no image (set runtime.image, or runtime.name for a built-in runtime)`);
    const podIP = { name: 'HOST', valueFrom: { fieldRef: { fieldPath: 'status.podIP' } } };
    const credential = { name: 'SPORE_INSTANCE_TOKEN', valueFrom: { secretKeyRef: { name: credentialSecret(name), key: 'token' } } };
    const volumes = ['userfunc', 'secrets', 'configs'];
    return {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name, namespace: this.o.namespace, labels },
      spec: {
        // the function needs no API access (its Secrets and ConfigMaps come resolved through the fetcher), unless the Environment gives it an account
        ...(pod.serviceAccountName ? { serviceAccountName: pod.serviceAccountName } : { automountServiceAccountToken: false }),
        ...(pod.nodeSelector ? { nodeSelector: pod.nodeSelector } : {}),
        enableServiceLinks: false,
        // a runtime that dies has lost its function: the pod is replaced, not restarted
        restartPolicy: 'Never',
        terminationGracePeriodSeconds: this.o.gracePeriodSeconds ?? 5,
        securityContext: { seccompProfile: { type: 'RuntimeDefault' } },
        volumes: volumes.map((v) => ({ name: v, emptyDir: v === 'userfunc' ? {} : { medium: 'Memory' } })),
        containers: [
          {
            name: 'runtime',
            image,
            ports: [{ containerPort: RUNTIME_PORT, name: 'http' }],
            // the Environment's env first: Spore's own names are not overridden
            env: [...(pod.env ?? []).filter((e) => !['PORT', 'HOST', 'SPORE_INSTANCE_TOKEN', 'SPORE_INSTANCE'].includes(e.name)), { name: 'PORT', value: String(RUNTIME_PORT) }, podIP, credential, { name: 'SPORE_INSTANCE', value: name }],
            volumeMounts: volumes.map((v) => ({ name: v, mountPath: `/${v}`, readOnly: v !== 'userfunc' })),
            ...(spec.resources ? { resources: spec.resources } : {}),
            readinessProbe: { tcpSocket: { port: RUNTIME_PORT }, periodSeconds: 1 },
            securityContext: LOCKED,
          },
          {
            name: 'fetcher',
            image: this.o.images.fetcher,
            args: ['fetcher'],
            ports: [{ containerPort: FETCHER_PORT, name: 'fetcher' }],
            env: [{ name: 'PORT', value: String(FETCHER_PORT) }, podIP, credential],
            volumeMounts: volumes.map((v) => ({ name: v, mountPath: `/${v}` })),
            readinessProbe: { httpGet: { path: '/healthz', port: FETCHER_PORT }, periodSeconds: 1 },
            securityContext: LOCKED,
          },
        ],
      },
    };
  }

  /** The Instance of a Ready pod. */
  private instance(pod: any, token: string): Instance {
    const name: string = pod.metadata.name;
    const ip: string = pod.status.podIP;
    let gone!: (e: { code: number | null; signal: string | null }) => void;
    const exited = new Promise<{ code: number | null; signal: string | null }>((resolve) => (gone = resolve));
    const watch: Watcher = (p) => {
      const why = p ? this.failure(p) : 'deleted';
      if (!why) return;
      this.unwatch(name, watch);
      const t = (p as any)?.status?.containerStatuses?.find((c: any) => c.state?.terminated)?.state.terminated;
      gone({ code: t?.exitCode ?? null, signal: null });
    };
    this.watch(name, watch);
    watch(this.pods.get(this.o.namespace, name)); // it may have gone already
    let killing: Promise<void> | undefined;
    return {
      id: name,
      url: `http://${ip}:${RUNTIME_PORT}`,
      token,
      startedAt: Date.parse(pod.status?.startTime ?? '') || Date.now(),
      exited,
      kill: () => (killing ??= this.remove(name)),
      specialize: (req, meta) => this.specialize(pod, ip, token, req, meta.revision),
    };
  }

  private async specialize(pod: any, ip: string, token: string, req: Specialization, revision: string): Promise<void> {
    const name: string = pod.metadata.name;
    // out of the pool first: a pool manager that restarts mid-way sees a pod taken, not a generic one
    await this.o.client
      .request('PATCH', `/api/v1/namespaces/${this.o.namespace}/pods/${name}`, {
        contentType: 'application/merge-patch+json',
        body: { metadata: { labels: { [POD_LABELS.function]: req.function.name, [POD_LABELS.functionNamespace]: req.function.namespace, [POD_LABELS.revision]: revision } } },
      })
      .catch((err: Error) => {
        throw new DataplaneError(502, 'NoInstance', `pod ${name}: cannot label it for function ${req.function.namespace}/${req.function.name}: ${err.message}`);
      });
    const ms = req.timeoutSeconds * 1000;
    const res = await request(`http://${ip}:${FETCHER_PORT}/specialize`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', [INSTANCE_TOKEN]: token },
      body: JSON.stringify(req),
      headersTimeout: ms,
      bodyTimeout: ms,
    }).catch((err: Error) => {
      throw new DataplaneError(504, 'SpecializationTimeout', `function ${req.function.namespace}/${req.function.name}: the fetcher of pod ${name} did not answer within ${req.timeoutSeconds}s (${err.message})`);
    });
    const text = await res.body.text();
    if (res.statusCode === 200) return;
    let body: { error?: string; reason?: string } = {};
    try {
      body = JSON.parse(text);
    } catch {
      // plain text
    }
    throw new DataplaneError(res.statusCode >= 400 && res.statusCode < 600 ? res.statusCode : 502, body.reason ?? 'SpecializationFailed', body.error ?? `function ${req.function.namespace}/${req.function.name}: the fetcher of pod ${name} answered ${res.statusCode}: ${text.slice(0, 500)}`);
  }

  async adopt(): Promise<AdoptedInstance[]> {
    await this.pods.ready;
    const found: AdoptedInstance[] = [];
    for (const pod of this.pods.list() as any[]) {
      const l = pod.metadata.labels ?? {};
      const name = pod.metadata.name;
      const ready = pod.status?.podIP && !this.failure(pod) && pod.status?.conditions?.some((c: any) => c.type === 'Ready' && c.status === 'True');
      const environment = { namespace: l[POD_LABELS.environmentNamespace], name: l[POD_LABELS.environment], generation: l[POD_LABELS.generation] };
      // one not Ready yet was being started: its starter is gone, so it goes too
      if (!ready || !environment.namespace || !environment.name) {
        void this.remove(name);
        continue;
      }
      const token = await this.o.client.request('GET', `/api/v1/namespaces/${this.o.namespace}/secrets/${credentialSecret(name)}`).then(
        (secret) => Buffer.from(secret.data?.token ?? '', 'base64').toString() || undefined,
        () => undefined,
      );
      if (!token) {
        void this.remove(name);
        continue;
      }
      const fn = l[POD_LABELS.function] ? { namespace: l[POD_LABELS.functionNamespace], name: l[POD_LABELS.function], revision: l[POD_LABELS.revision] } : undefined;
      // labelled for a function is not yet specialized (a pool manager stopped in between): its fetcher says
      const specialized = await request(`http://${pod.status.podIP}:${FETCHER_PORT}/healthz`, { headersTimeout: 2000, bodyTimeout: 2000 })
        .then((r) => r.body.json() as Promise<{ specialized?: boolean }>)
        .then((b) => b.specialized === true, () => undefined);
      if (specialized === undefined || specialized !== Boolean(fn)) {
        void this.remove(name);
        continue;
      }
      found.push({ instance: this.instance(pod, token), environment, function: fn });
    }
    // credentials whose pod is gone (a pool manager stopped between the two deletions)
    const secrets = await this.o.client.request('GET', `/api/v1/namespaces/${this.o.namespace}/secrets`, { query: { labelSelector: `${POD_LABELS.managedBy}=${MANAGER}` } });
    const live = new Set((this.pods.list() as any[]).map((p) => credentialSecret(p.metadata.name)));
    for (const secret of secrets.items ?? []) if (!live.has(secret.metadata.name)) void this.deleteSecret(secret.metadata.name);
    return found;
  }

  private watch(name: string, w: Watcher): void {
    let set = this.watchers.get(name);
    if (!set) this.watchers.set(name, (set = new Set()));
    set.add(w);
  }

  private unwatch(name: string, w: Watcher): void {
    const set = this.watchers.get(name);
    set?.delete(w);
    if (set && !set.size) this.watchers.delete(name);
  }

  /** Resolves with what `test` returns for the pod (as the watch shows it) once it is defined; rejects with its throw or on timeout. */
  private until<T>(name: string, timeoutMs: number, test: (pod: any) => T | undefined): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const done = (f: () => void) => {
        clearTimeout(timer);
        this.unwatch(name, w);
        f();
      };
      const w: Watcher = (pod) => {
        try {
          const v = test(pod);
          if (v !== undefined) done(() => resolve(v));
        } catch (err) {
          done(() => reject(err));
        }
      };
      const timer = setTimeout(() => done(() => reject(new Error(`pod ${name} was not Ready within ${Math.round(timeoutMs / 1000)} s`))), timeoutMs);
      this.watch(name, w);
      const now = this.pods.get(this.o.namespace, name);
      if (now) w(now);
    });
  }

  /** Deletes a pod and its credential, and waits until the pod is gone (bounded). */
  private async remove(name: string): Promise<void> {
    const grace = this.o.gracePeriodSeconds ?? 5;
    try {
      await this.o.client.request('DELETE', `/api/v1/namespaces/${this.o.namespace}/pods/${name}`, { query: { gracePeriodSeconds: String(grace) } });
      await this.until(name, (grace + 10) * 1000, (p) => (p ? undefined : true)).catch(() => {});
    } catch (err) {
      if (!(err instanceof KubeError && err.status === 404)) this.report(`cannot delete pod ${name}: ${(err as Error).message}`);
    }
    await this.deleteSecret(credentialSecret(name));
  }

  private async deleteSecret(name: string): Promise<void> {
    await this.o.client.request('DELETE', `/api/v1/namespaces/${this.o.namespace}/secrets/${name}`).catch((err: Error) => {
      if (!(err instanceof KubeError && err.status === 404)) this.report(`cannot delete Secret ${name}: ${err.message}`);
    });
  }

  async shutdown(): Promise<void> {
    // the pods stay: the next pool manager adopts them
    await this.pods.stop();
  }
}

/** The Secret holding a pod's credential. */
export const credentialSecret = (pod: string) => `${pod}-credential`;
