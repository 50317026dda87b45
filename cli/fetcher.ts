// `spore fetcher`: the sidecar of a pool pod (see dataplane/poolmgr/fetcher.ts).
// Its defaults fit the pod the platform chart describes; the volumes' paths
// may be moved by env (the test node agent sets SPORE_MOUNT_* for each mount).
import { startFetcher } from '../dataplane/poolmgr/fetcher.js';
import { portOf } from './port.js';

export interface FetcherCommandOptions {
  port?: string;
  host?: string;
  runtimePort: string;
  userfunc?: string;
  secrets?: string;
  configs?: string;
}


export async function fetcherCommand(o: FetcherCommandOptions): Promise<void> {
  const env = process.env;
  const token = env.SPORE_INSTANCE_TOKEN;
  if (!token) throw new Error('SPORE_INSTANCE_TOKEN is not set: the fetcher takes its credential from it (in a pod, from the Secret the pool manager made); refusing to start without one');
  const host = o.host ?? env.HOST ?? '0.0.0.0';
  const listenPort = portOf(o.port ?? env.PORT ?? '8000', o.port ? '--port' : 'PORT');
  // the runtime listens beside us in the pod: on our address, or loopback when we listen on all
  const runtimeHost = host === '0.0.0.0' || host === '::' ? '127.0.0.1' : host;
  const runtimeUrl = `http://${runtimeHost.includes(':') ? `[${runtimeHost}]` : runtimeHost}:${portOf(o.runtimePort, '--runtime-port')}`;
  const fetcher = await startFetcher({
    port: listenPort,
    host,
    runtimeUrl,
    userfunc: o.userfunc ?? env.SPORE_MOUNT_USERFUNC ?? '/userfunc',
    secrets: o.secrets ?? env.SPORE_MOUNT_SECRETS ?? '/secrets',
    configs: o.configs ?? env.SPORE_MOUNT_CONFIGS ?? '/configs',
    token,
  });
  process.stdout.write(`spore fetcher listening on ${fetcher.url}, runtime at ${runtimeUrl}\n`);
  for (const signal of ['SIGTERM', 'SIGINT'] as const) process.once(signal, () => void fetcher.close().then(() => process.exit(0)));
}
