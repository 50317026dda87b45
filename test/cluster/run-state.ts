// One API server per test run, with its test node (node-agent.ts): the global
// setup starts both in the background and writes the outcome into the run's
// cluster folder; suites wait for that file.
import { appendFileSync, existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { AssetsUnavailable, ensureAssets } from './assets.js';
import { startCluster, type Cluster } from './harness.js';
import { startNodeAgent, type NodeAgent } from './node-agent.js';

export interface Outcome {
  /** The kubeconfig of the running server, when it started. */
  kubeconfig?: string;
  /** Why there is no server. */
  reason?: string;
  /** The reason is that the binaries cannot be had here (outside CI, suites skip). */
  unavailable?: boolean;
}

const OUTCOME = 'outcome.json';

/** Builds the binaries if needed, starts the server and its test node and records the outcome; the returned stop ends them all. */
export function startForRun(dir: string): () => Promise<void> {
  const abort = new AbortController();
  let cluster: Cluster | undefined;
  let agent: NodeAgent | undefined;
  const record = (o: Outcome) => {
    writeFileSync(join(dir, `${OUTCOME}.tmp`), JSON.stringify(o));
    renameSync(join(dir, `${OUTCOME}.tmp`), join(dir, OUTCOME)); // readers never see half a file
  };
  const starting = (async () => {
    try {
      const assets = await ensureAssets(join(dir, 'build.log'), abort.signal);
      if (abort.signal.aborted) return;
      cluster = await startCluster(dir, assets);
      agent = await startNodeAgent(cluster.kubeconfig, { log: (line) => appendFileSync(join(dir, 'node-agent.log'), `${new Date().toISOString()} ${line}\n`) });
      record({ kubeconfig: cluster.kubeconfig });
    } catch (err) {
      record({ reason: (err as Error).message, unavailable: err instanceof AssetsUnavailable });
    }
  })();
  return async () => {
    abort.abort();
    await starting;
    await agent?.stop();
    await cluster?.stop();
  };
}

/** The outcome once there is one (undefined while the server is still starting). */
export function readOutcome(dir: string): Outcome | undefined {
  const file = join(dir, OUTCOME);
  return existsSync(file) ? (JSON.parse(readFileSync(file, 'utf8')) as Outcome) : undefined;
}
