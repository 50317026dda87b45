// By hand: `npm run cluster -- start DIR` starts etcd + kube-apiserver with their
// state in DIR (building the binaries first if needed) and the test node agent
// (node-agent.ts, in a detached process of its own), and prints the kubeconfig
// path; `npm run cluster -- stop DIR` stops all three.
import { spawn } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { Command } from 'commander';
import { ensureAssets } from './assets.js';
import { startCluster, stopCluster, terminate } from './harness.js';
import { NODE_NAME, startNodeAgent } from './node-agent.js';
import { KubeClient } from '../../store/kube-client.js';
import { KubeConfig } from '@kubernetes/client-node';

const AGENT_PID = 'node-agent.pid';

/** Starts the agent detached (it outlives this command) and waits until its Node is Ready. */
async function spawnAgent(dir: string, kubeconfig: string): Promise<void> {
  const log = join(dir, 'node-agent.log');
  const out = openSync(log, 'a');
  // the same node with the same loader (tsx) as this command
  const child = spawn(process.execPath, [...process.execArgv, new URL(import.meta.url).pathname, 'node-agent', kubeconfig], { stdio: ['ignore', out, out], detached: true });
  closeSync(out);
  child.unref();
  writeFileSync(join(dir, AGENT_PID), String(child.pid));
  const kc = new KubeConfig();
  kc.loadFromFile(kubeconfig);
  const client = new KubeClient(kc);
  try {
    for (let i = 0; ; i++) {
      if (child.exitCode !== null) throw new Error(`the test node agent exited (${child.exitCode}); see ${log}`);
      const node = await client.request('GET', `/api/v1/nodes/${NODE_NAME}`).catch(() => undefined);
      if (node?.status?.conditions?.some((c: any) => c.type === 'Ready' && c.status === 'True')) return;
      if (i === 600) throw new Error(`the test node agent did not make Node ${NODE_NAME} Ready; see ${log}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  } finally {
    client.close();
  }
}

async function stopAgent(dir: string): Promise<void> {
  const file = join(dir, AGENT_PID);
  if (!existsSync(file)) return;
  await terminate(Number(readFileSync(file, 'utf8')));
  rmSync(file);
}

const program = new Command('cluster').description("the tests' Kubernetes API server (etcd + kube-apiserver on loopback) and its test node");
program
  .command('start')
  .argument('<dir>', 'folder for its data, certificates, logs and kubeconfig')
  .description('start it; prints the kubeconfig path')
  .action(async (dir: string) => {
    dir = resolve(dir);
    mkdirSync(dir, { recursive: true });
    const assets = await ensureAssets(join(dir, 'build.log'));
    const cluster = await startCluster(dir, assets, { detached: true });
    try {
      await spawnAgent(dir, cluster.kubeconfig);
    } catch (err) {
      await stopAgent(dir);
      await stopCluster(dir);
      throw err;
    }
    console.log(cluster.kubeconfig);
  });
program
  .command('stop')
  .argument('<dir>', 'the folder given to start')
  .description('stop it and wait until the node agent (and its pods\' processes) and both servers are gone')
  .action(async (dir: string) => {
    await stopAgent(resolve(dir));
    await stopCluster(resolve(dir));
  });
program
  .command('node-agent', { hidden: true })
  .argument('<kubeconfig>')
  .description('run the test node agent in the foreground (start runs it detached)')
  .action(async (kubeconfig: string) => {
    const agent = await startNodeAgent(kubeconfig);
    const stop = () => void agent.stop().then(() => process.exit(0));
    process.once('SIGTERM', stop);
    process.once('SIGINT', stop);
  });

program.parseAsync().catch((err: Error) => {
  console.error(`cluster: ${err.message}`);
  process.exit(1);
});
