// By hand: `npm run cluster -- start DIR` starts etcd + kube-apiserver with their
// state in DIR (building the binaries first if needed) and prints the kubeconfig
// path; `npm run cluster -- stop DIR` stops both.
import { mkdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { Command } from 'commander';
import { ensureAssets } from './assets.js';
import { startCluster, stopCluster } from './harness.js';

const program = new Command('cluster').description("the tests' Kubernetes API server (etcd + kube-apiserver on loopback)");
program
  .command('start')
  .argument('<dir>', 'folder for its data, certificates, logs and kubeconfig')
  .description('start it; prints the kubeconfig path')
  .action(async (dir: string) => {
    dir = resolve(dir);
    mkdirSync(dir, { recursive: true });
    const assets = await ensureAssets(join(dir, 'build.log'));
    const cluster = await startCluster(dir, assets, { detached: true });
    console.log(cluster.kubeconfig);
  });
program
  .command('stop')
  .argument('<dir>', 'the folder given to start')
  .description('stop it and wait until both servers are gone')
  .action(async (dir: string) => stopCluster(resolve(dir)));

program.parseAsync().catch((err: Error) => {
  console.error(`cluster: ${err.message}`);
  process.exit(1);
});
