// The `spore` command: thin; each verb calls into api/, constructs/ and (as they land) the dataplane and reconciler.
import { createRequire } from 'node:module';
import { Command, Option } from 'commander';
import { diffCommand, historyCommand, invokeCommand, listCommand, logsCommand, rollbackCommand, statusCommand, syncCommand } from './client.js';
import { DEFAULT_PREVIEW_PATTERNS } from '../reconciler/reconciler.js';
import { runGit } from './git.js';
import { crdsCommand } from './crds.js';
import { poolmgrCommand, routerCommand } from './dataplane.js';
import { initCommand } from './init.js';
import { invocationsCommand } from './invocations.js';
import { publishCommand } from './publish.js';
import { withOutput } from './output.js';
import { upCommand } from './up.js';
import { validateCommand } from './validate.js';
import { workflowGetCommand, workflowRunCommand, workflowRunsCommand } from './workflow.js';

const { version } = createRequire(import.meta.url)('spore/package.json') as { version: string };

export function program(): Command {
  const cli = new Command('spore')
    .description('Git-driven functions on Kubernetes: describe functions as cdk8s constructs, push, and they serve.')
    .version(version, '-v, --version')
    .showHelpAfterError();
  cli
    .command('validate')
    .description('check rendered manifests (files or folders of *.yaml) against the spore.dev resource model')
    .argument('<paths...>', 'YAML files or folders (e.g. dist/); fails when they hold no manifests')
    .action(validateCommand);
  cli
    .command('up')
    .description('synthesize the app in DIR, apply it to a local store and serve it (router + pool manager)')
    .argument('[dir]', 'app folder (with cdk8s.yaml)', '.')
    .option('-p, --port <port>', 'router port', '8080')
    .option('--host <host>', 'address to listen on', '127.0.0.1')
    .option('-w, --watch', 're-synthesize and apply on file changes')
    .option('--state-dir <dir>', 'state folder (store, archives, instances)', '<dir>/.spore')
    .option('--secrets-dir <dir>', "the Secrets functions name: <dir>/<namespace>/<name>/<key> files, as Fission mounts them in a pod")
    .option('--kubeconfig <path>', 'the cluster the WatchTriggers watch (its current context); without it they are inactive');
  const gitOptions = (c: Command) =>
    c
      .option('--git <url>', 'follow this Git repository (file://, https, ssh) instead of a folder')
      .option('--branch <branch>', 'branch served as the main stage', 'main')
      .option('--poll <duration>', 'how often ls-remote looks for new revisions', '30s')
      .option('--webhook-secret <secret>', 'accept GitHub/GitLab webhooks signed with this secret')
      .option('--previews', 'give pull requests and preview/* branches a stage each (runs their code: see README)')
      .option('--preview-refs <patterns>', 'comma-separated ref patterns that get a preview', DEFAULT_PREVIEW_PATTERNS.join(','))
      .option('--max-previews <n>', 'live previews at most', '10')
      .option('--manifests', 'the repository holds rendered YAML (cdk8s synth in CI): apply it, run nothing')
      .option('--path <path>', 'folder in the repository with cdk8s.yaml (or the YAML with --manifests)')
      .option('--app <name>', "the app's name, which labels (and so owns) its objects in the store (default: its package.json name; with --git, the repository's name)")
      .option('--deps-cache <dir>', 'npm install cache (reconcilers may share one)', '<state-dir>/work/deps')
      .option('--allow-commands', "let the repository's Environments name local commands (runtime.command, builder.command): they run on this host")
      .option('--reconciler-port <port>', "port of the reconciler's webhook and API", '0')
      .option('--reconciler-host <host>', "address of the reconciler's webhook and API", '127.0.0.1');
  gitOptions(cli.commands.find((c) => c.name() === 'up')!).action((dir: string, o) => {
    // with --git, the reconciler's --kubeconfig would mean "apply to that cluster": spore up keeps it for the watches only
    if (o.git) return runGit({ ...o, kubeconfig: undefined, watchKubeconfig: o.kubeconfig, stateDir: o.stateDir === '<dir>/.spore' ? '.spore' : o.stateDir }, true);
    return upCommand(dir, { ...o, stateDir: o.stateDir === '<dir>/.spore' ? undefined : o.stateDir });
  });
  gitOptions(cli.command('reconciler').description('run the reconciler alone: follow a Git repository and apply each revision to the store (the local one, or a cluster)'))
    .option('--state-dir <dir>', 'state folder (local store; on a cluster: checkouts, caches, archives)', '.spore')
    .option('--kubeconfig <path>', 'apply to the cluster of this kubeconfig (its current context) instead of the local store')
    .option('--in-cluster', "apply to the cluster this pod runs in (its service account)")
    .option('--namespace <ns>', "on a cluster: the namespace of Spore's own objects (Stages, sync history)", 'spore-system')
    .option('--archive-url <url>', "the reconciler's address as the dataplane reaches it: Package archives are served from <url>/archives/")
    .action((o) => {
      if (!o.git) throw new Error('--git <url> is required');
      return runGit(o, false);
    });
  const target = (c: Command) =>
    c.option('--url <url>', 'address of the running spore up').option('--state-dir <dir>', "the running spore up's state folder", '.spore').option('-n, --namespace <ns>', 'namespace', 'default');
  const repeat = (v: string, all: string[] = []) => [...all, v];
  target(
    cli
      .command('invoke')
      .alias('test') // Fission's `fn test`
      .description('call a function as its routes, timers and queues do: method, path, query, headers and body; prints the answer (exits 1 on a 4xx/5xx)')
      .argument('<function>', 'name or namespace/name')
      .option('-X, --method <method>', 'HTTP method (default GET, POST with --data)')
      .addOption(new Option('--request <method>', 'same as --method (curl)').hideHelp())
      .option('--path <path>', 'path under the function, as a route passes it (default /; e.g. /orders/42)')
      .option('-q, --query <name=value>', 'query parameter (repeatable)', repeat)
      .option('-H, --header <header>', "header 'Name: value' (repeatable)", repeat)
      .option('-d, --data <data>', 'request body: text, @file to read a file, - to read stdin')
      .option('-i, --include', 'print the status line and response headers before the body (curl -i)'),
  ).action(invokeCommand);
  target(
    cli
      .command('logs')
      .description("print a function's logs")
      .argument('<function>', 'name or namespace/name')
      .option('-f, --follow', 'keep printing new lines (on a cluster: from every pod of the function, new ones too)')
      .option('--since <duration>', 'only lines newer than this, e.g. 5m')
      .option('--kubeconfig <path>', "read the function's pods' logs on the cluster of this kubeconfig (its current context), instead of a local spore up")
      .option('--pool-namespace <ns>', "on a cluster: the pool manager's namespace, where the pods are (default: SPORE_NAMESPACE, else spore-system)"),
  ).action(logsCommand);
  const reconcilerVerb = (name: string, description: string) => withOutput(target(cli.command(name).description(description)));
  reconcilerVerb('status', 'per stage: its state, the live revision, the sync under way (step and progress), the last attempt and why it failed; exits 1 when a head failed').action(statusCommand);
  reconcilerVerb('history', 'the syncs, newest first: revision, result (and why it failed), changes, author and commit message')
    .option('--stage <stage>', 'only this stage')
    .option('--limit <n>', 'how many', '20')
    .action(historyCommand);
  reconcilerVerb('diff', 'what syncing the branch head would change, field by field, without applying it; exits 0 when nothing, 1 when something would change, 2 on an error (as kubectl diff)')
    // an error must not look like "changes" (1): usage errors exit 2 too
    .exitOverride((err) => process.exit(err.exitCode === 0 ? 0 : 2))
    .action(diffCommand);
  reconcilerVerb('sync', 'look for new revisions now (and unpin a rollback), then print the status; exits 1 when a head failed').option('--force', 'also retry a revision that failed').action(syncCommand);
  target(cli.command('rollback').description('re-apply a previous good revision (the last one by default); pinned until the next push or sync').argument('[revision]', 'a revision (prefix) that synced well').option('--stage <stage>', 'stage', 'main')).action(rollbackCommand);
  withOutput(
    target(
      cli
        .command('list')
        .description('functions, routes, timers, queues, watches and environments, with their instances: of the running spore up, or a cluster')
        .option('--kubeconfig <path>', "read the spore.dev objects and the pool's pods on the cluster of this kubeconfig (its current context), instead of a local spore up")
        .option('--pool-namespace <ns>', "on a cluster: the pool manager's namespace, where the pods are (default: SPORE_NAMESPACE, else spore-system)"),
    ),
  ).action(async (o, cmd: Command) => {
    if (!o.kubeconfig) return listCommand(o);
    const { clusterListCommand } = await import('./cluster-list.js'); // the Kubernetes client only when needed
    // on a cluster every namespace unless one is given (-n's default is for a local spore up's verbs)
    const namespace = cmd.getOptionValueSource('namespace') === 'default' ? undefined : o.namespace;
    return clusterListCommand({ kubeconfig: o.kubeconfig, poolNamespace: o.poolNamespace ?? process.env.SPORE_NAMESPACE ?? 'spore-system', namespace, output: o.output });
  });
  withOutput(
    target(
      cli
        .command('invocations')
        .description('asynchronous calls (made with X-Spore-Async: true) of the running spore up or a cluster, newest first; `retry ID` queues a failed one again')
        .argument('[action]', 'retry')
        .argument('[id]', 'the call to retry')
        .option('--failed', 'only the failed calls (the dead letter)')
        .option('--state <state>', 'only calls in this state: queued, running, succeeded or failed')
        .option('--limit <n>', 'how many', '100')
        .option('--kubeconfig <path>', "the calls on the cluster of this kubeconfig (its current context: Invocation objects), instead of a local spore up"),
    ),
  ).action(invocationsCommand);
  const workflow = cli.command('workflow').description('Workflows of the running spore up: run one, list runs, show a run task by task');
  target(workflow.command('run').description("run a workflow and print its output (exits 1 when the run fails); the input is $.Invocation.Inputs.default").argument('<workflow>', 'NAME or NAMESPACE/NAME'))
    .option('--input <json>', 'the input, as JSON (a string is \'"text"\')')
    .option('--async', 'print the run id at once instead of waiting for the output')
    .action(workflowRunCommand);
  withOutput(target(workflow.command('runs').description('runs, newest first (kept 7 days, the last 1000 finished)').argument('[workflow]', 'only this workflow'))
    .option('--state <state>', 'only runs in this state: running, succeeded or failed')
    .option('--limit <n>', 'how many', '100')).action(workflowRunsCommand);
  withOutput(target(workflow.command('get').description('one run: each task with its state, attempts, duration, and output or error').argument('<run>', 'the run id'))).action(workflowGetCommand);
  cli
    .command('fetcher')
    .description("the sidecar of a pool pod: given one specialization by the pool manager, fetch and verify the code, write the Secrets and ConfigMaps, and specialize the runtime beside it (credential: env SPORE_INSTANCE_TOKEN)")
    .option('--port <port>', 'port to listen on (default: env PORT, else 8000)')
    .option('--host <host>', 'address to listen on (default: env HOST, else 0.0.0.0)')
    .option('--runtime-port <port>', "the runtime container's port, on the pod's own address", '8888')
    .option('--userfunc <dir>', 'code volume (default: env SPORE_MOUNT_USERFUNC, else /userfunc)')
    .option('--secrets <dir>', 'Secrets volume (default: env SPORE_MOUNT_SECRETS, else /secrets)')
    .option('--configs <dir>', 'ConfigMaps volume (default: env SPORE_MOUNT_CONFIGS, else /configs)')
    .action(async (o) => (await import('./fetcher.js')).fetcherCommand(o)); // loaded only for this verb
  const clusterComponent = (c: Command, port: string) =>
    c
      .option('--kubeconfig <path>', "the cluster of this kubeconfig (its current context); in a pod, its service account")
      .option('--in-cluster', 'the cluster this pod runs in (its service account)')
      .option('-p, --port <port>', `port to listen on (default: PORT, else ${port})`)
      .option('--host <host>', 'address to listen on', '0.0.0.0')
      .option('--namespace <ns>', "namespace of Spore's own objects: the pool's pods and the pool manager's credential (default: SPORE_NAMESPACE, else spore-system)")
      .option('--watch-namespace <ns,...>', "serve only the functions of these namespaces (default: every namespace); the router and the pool manager must be given the same");
  clusterComponent(cli.command('poolmgr').description('run the pool manager on a cluster: pools of runtime pods per Environment, specialized on a miss from the router'), '8081').action(poolmgrCommand);
  clusterComponent(cli.command('router').description("run the router on a cluster: serves the routes, holds the instances it was lent, asks the pool manager only on a miss; runs queue triggers, and timers and watch triggers while it holds the Lease spore-triggers"), '8080')
    .option('--poolmgr <url>', "the pool manager's address (default: SPORE_POOLMGR_URL)")
    .action(routerCommand);
  cli.command('crds').description('print the spore.dev CustomResourceDefinitions as YAML').action(crdsCommand);
  cli
    .command('init')
    .description('create a new app in DIR from the example, with spore packed into its vendor/ folder')
    .argument('<dir>', 'a new (or empty) folder')
    .option('--name <name>', "the app's name (default: the folder's name)")
    .action(initCommand);
  cli
    .command('publish')
    .description("synthesize the app in DIR, validate it, and commit the rendered manifests onto a branch of its repository, for Argo CD (or spore up --git --manifests) to sync")
    .argument('[dir]', 'app folder (with cdk8s.yaml)', '.')
    .option('--branch <branch>', 'branch that receives the rendered manifests', 'rendered')
    .option('--push [remote]', 'push the branch after committing (default remote: origin)')
    .action(publishCommand);
  return cli;
}

export async function main(argv: string[]): Promise<void> {
  await program().parseAsync(argv);
}
