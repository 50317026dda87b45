// What the pool manager hands an instance to turn it into a function: the
// same request whether the instance is a local process (the process provider
// does the steps itself) or a pod (the pool manager POSTs it to the pod's
// fetcher sidecar, which does the same steps there). The Secrets and
// ConfigMaps travel resolved, so a pod needs no API credential to read them.

/** A Secret's or ConfigMap's keys, each value base64. */
export interface MountData {
  namespace: string;
  name: string;
  data: Record<string, string>;
}

export interface Specialization {
  /** The function, for messages and labels. */
  function: { namespace: string; name: string };
  /** The Package whose archive is the code: `archive` as its spec holds it (inline bytes, or a URL). */
  package: { namespace: string; name: string; archive: { sha256: string; size: number; inline?: string; url?: string } };
  /** The runtime's `functionName` (Fission's): the module, or module.export. Empty: the runtime's default. */
  entrypoint: string;
  /** The function's env, applied by Spore's runtimes on specialization. */
  env: Record<string, string>;
  secrets: MountData[];
  configMaps: MountData[];
  /** How long fetching, extracting and the runtime's /v2/specialize may take together. */
  timeoutSeconds: number;
}
