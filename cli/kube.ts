// Opening a cluster for the commands that run on one (reconciler, poolmgr,
// router): a kubeconfig file, or the pod's own service account. The Kubernetes
// client is loaded only here: it is large, and spore up never needs it.
import { resolve } from 'node:path';
import type { KubeConfig } from '@kubernetes/client-node';

export interface ClusterOptions {
  kubeconfig?: string;
  inCluster?: boolean;
}

export async function loadKubeConfig(o: ClusterOptions): Promise<KubeConfig> {
  if (o.kubeconfig && o.inCluster) throw new Error('give --kubeconfig or --in-cluster, not both');
  if (!o.kubeconfig && !o.inCluster) throw new Error('give --kubeconfig PATH, or --in-cluster in a pod');
  const { KubeConfig } = await import('@kubernetes/client-node');
  const kc = new KubeConfig();
  if (o.inCluster) kc.loadFromCluster();
  else {
    try {
      kc.loadFromFile(resolve(o.kubeconfig!));
    } catch (err) {
      throw new Error(`--kubeconfig ${o.kubeconfig}: ${(err as Error).message}`);
    }
  }
  return kc;
}
