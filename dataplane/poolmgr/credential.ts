// The credential routers present to the pool manager, which hands out
// instances and their tokens. The pool manager makes it once, in a Secret of
// its namespace; routers read it there (their service account may get that
// one Secret). SPORE_POOLMGR_CREDENTIAL overrides both, e.g. outside a cluster.
import { randomBytes } from 'node:crypto';
import { POOLMGR_CREDENTIAL_SECRET as CREDENTIAL_SECRET } from '../../api/index.js';
import { KubeError, type KubeClient } from '../../store/kube-client.js';

const path = (namespace: string) => `/api/v1/namespaces/${namespace}/secrets`;
const decode = (secret: { data?: { credential?: string } }) => {
  const v = secret.data?.credential;
  if (!v) throw new Error(`Secret ${CREDENTIAL_SECRET} has no "credential" key`);
  return Buffer.from(v, 'base64').toString();
};

/** The pool manager's side: the credential, made on first start. */
export async function ensureCredential(client: KubeClient, namespace: string): Promise<string> {
  if (process.env.SPORE_POOLMGR_CREDENTIAL) return process.env.SPORE_POOLMGR_CREDENTIAL;
  try {
    return decode(await client.request('GET', `${path(namespace)}/${CREDENTIAL_SECRET}`));
  } catch (err) {
    if (!(err instanceof KubeError && err.status === 404)) throw err;
  }
  const credential = randomBytes(24).toString('base64url');
  const body = { apiVersion: 'v1', kind: 'Secret', metadata: { name: CREDENTIAL_SECRET, namespace, labels: { 'app.kubernetes.io/part-of': 'spore' } }, type: 'Opaque', data: { credential: Buffer.from(credential).toString('base64') } };
  try {
    await client.request('POST', path(namespace), { body });
    return credential;
  } catch (err) {
    // another pool manager replica made it first
    if (err instanceof KubeError && err.status === 409) return decode(await client.request('GET', `${path(namespace)}/${CREDENTIAL_SECRET}`));
    throw err;
  }
}

/** The router's side: waits (bounded) for the pool manager to have made it. */
export async function readCredential(client: KubeClient, namespace: string, timeoutMs = 120_000): Promise<string> {
  if (process.env.SPORE_POOLMGR_CREDENTIAL) return process.env.SPORE_POOLMGR_CREDENTIAL;
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return decode(await client.request('GET', `${path(namespace)}/${CREDENTIAL_SECRET}`));
    } catch (err) {
      if (!(err instanceof KubeError && err.status === 404) || Date.now() > deadline) {
        throw new Error(`cannot read the pool manager's credential (Secret ${namespace}/${CREDENTIAL_SECRET}): ${err instanceof KubeError && err.status === 404 ? 'it does not exist: is spore poolmgr running with this namespace?' : (err as Error).message}`);
      }
    }
    await new Promise((r) => setTimeout(r, 1000));
  }
}
