// Constructs for teams that sync Spore's manifests with Argo CD instead of
// Spore's reconciler. They write Argo's own kinds; they never write Argo's
// tracking annotation, which Argo manages itself.
//
// The flow (README, "Argo CD"): CI runs `spore publish`, which commits the
// app's rendered manifests onto the branch `rendered` (and `rendered/pr-<n>`
// for pull requests); Argo CD syncs those branches. The spore.dev CRDs come
// from the platform (`spore crds`, or the Platform chart), not from the app.
import { ApiObject } from 'cdk8s';
import type { Construct } from 'constructs';

export interface ArgoSourceProps {
  /** Git repository URL holding the rendered manifests (`spore publish` commits them onto a branch). */
  readonly repoUrl: string;
  /** Folder of the manifests on that branch. @default '.' (`spore publish` writes them at the branch's root) */
  readonly path?: string;
  /** The branch (or tag, or commit) of rendered manifests. @default 'rendered' (`spore publish`'s default branch) */
  readonly targetRevision?: string;
}

export interface ArgoDestinationProps {
  /** @default 'https://kubernetes.default.svc' */
  readonly server?: string;
  /** Namespace the app's objects go to. @default 'default' */
  readonly namespace?: string;
  /** Argo CD project. @default 'default' */
  readonly project?: string;
  /** Namespace Argo CD runs in. @default 'argocd' */
  readonly argoNamespace?: string;
  /** Prune what left the manifests and heal drift automatically. @default true */
  readonly automated?: boolean;
}

export interface ArgoApplicationProps extends ArgoSourceProps, ArgoDestinationProps {
  /** @default the construct id */
  readonly name?: string;
}

function syncPolicy(automated: boolean | undefined) {
  return {
    ...(automated ?? true ? { automated: { prune: true, selfHeal: true } } : {}),
    syncOptions: ['CreateNamespace=true', 'ServerSideApply=true'],
  };
}

/** An Argo CD Application syncing one folder of manifests. */
export class ArgoApplication extends ApiObject {
  constructor(scope: Construct, id: string, props: ArgoApplicationProps) {
    super(scope, id, {
      apiVersion: 'argoproj.io/v1alpha1',
      kind: 'Application',
      metadata: { name: props.name ?? id, namespace: props.argoNamespace ?? 'argocd' },
      spec: {
        project: props.project ?? 'default',
        source: { repoURL: props.repoUrl, path: props.path ?? '.', targetRevision: props.targetRevision ?? 'rendered' },
        destination: { server: props.server ?? 'https://kubernetes.default.svc', namespace: props.namespace ?? 'default' },
        syncPolicy: syncPolicy(props.automated),
      },
    });
  }
}

export interface ArgoPullRequestApplicationSetProps extends Omit<ArgoSourceProps, 'targetRevision'>, Omit<ArgoDestinationProps, 'namespace'> {
  /**
   * The branch of a pull request's rendered manifests; `{{number}}` is its number.
   * @default 'rendered/pr-{{number}}' (what `spore publish --branch rendered/pr-<n>` in the pull request's CI writes)
   */
  readonly targetRevisionTemplate?: string;
  /** @default the construct id */
  readonly name?: string;
  /** GitHub owner and repository the pull requests are read from. */
  readonly owner: string;
  readonly repo: string;
  /** Only pull requests with all these labels get a preview. @default every pull request */
  readonly labels?: string[];
  /** Secret holding a GitHub token (avoids rate limits, reaches private repos). */
  readonly tokenSecret?: { readonly name: string; readonly key: string };
  /** Seconds between polls of the pull request list. @default 60 */
  readonly requeueAfterSeconds?: number;
  /** Preview namespace; `{{number}}` is the pull request number. @default 'preview-{{number}}' */
  readonly namespaceTemplate?: string;
}

/**
 * An Argo CD ApplicationSet with the pull-request generator: one Application
 * per open pull request, synced from its rendered branch into its own namespace.
 */
export class ArgoPullRequestApplicationSet extends ApiObject {
  constructor(scope: Construct, id: string, props: ArgoPullRequestApplicationSetProps) {
    const name = props.name ?? id;
    super(scope, id, {
      apiVersion: 'argoproj.io/v1alpha1',
      kind: 'ApplicationSet',
      metadata: { name, namespace: props.argoNamespace ?? 'argocd' },
      spec: {
        goTemplate: false,
        generators: [
          {
            pullRequest: {
              github: {
                owner: props.owner,
                repo: props.repo,
                labels: props.labels,
                tokenRef: props.tokenSecret ? { secretName: props.tokenSecret.name, key: props.tokenSecret.key } : undefined,
              },
              requeueAfterSeconds: props.requeueAfterSeconds ?? 60,
            },
          },
        ],
        template: {
          metadata: { name: `${name}-{{number}}`, labels: { 'spore.dev/preview': '{{number}}', 'spore.dev/branch': '{{branch_slug}}' } },
          spec: {
            project: props.project ?? 'default',
            source: { repoURL: props.repoUrl, path: props.path ?? '.', targetRevision: props.targetRevisionTemplate ?? 'rendered/pr-{{number}}' },
            destination: { server: props.server ?? 'https://kubernetes.default.svc', namespace: props.namespaceTemplate ?? 'preview-{{number}}' },
            info: [{ name: 'branch', value: '{{branch}}' }],
            syncPolicy: syncPolicy(props.automated),
          },
        },
      },
    });
  }
}
