// The `spore` command: thin; each verb calls into api/, constructs/ and (as they land) the dataplane and reconciler.
import { createRequire } from 'node:module';
import { Command } from 'commander';
import { invokeCommand, listCommand, logsCommand } from './client.js';
import { crdsCommand } from './crds.js';
import { upCommand } from './up.js';
import { validateCommand } from './validate.js';

const { version } = createRequire(import.meta.url)('spore/package.json') as { version: string };

export function program(): Command {
  const cli = new Command('spore')
    .description('Git-driven functions on Kubernetes: describe functions as cdk8s constructs, push, and they serve.')
    .version(version, '-v, --version')
    .showHelpAfterError();
  cli
    .command('validate')
    .description('check rendered manifests (files or folders of *.yaml) against the spore.dev resource model')
    .argument('<paths...>', 'YAML files or folders (e.g. dist/)')
    .action(validateCommand);
  cli
    .command('up')
    .description('synthesize the app in DIR, apply it to a local store and serve it (router + pool manager)')
    .argument('[dir]', 'app folder (with cdk8s.yaml)', '.')
    .option('-p, --port <port>', 'router port', '8080')
    .option('--host <host>', 'address to listen on', '127.0.0.1')
    .option('-w, --watch', 're-synthesize and apply on file changes')
    .option('--state-dir <dir>', 'state folder (store, archives, instances)', '<dir>/.spore')
    .action((dir: string, o) => upCommand(dir, { ...o, stateDir: o.stateDir === '<dir>/.spore' ? undefined : o.stateDir }));
  const target = (c: Command) =>
    c.option('--url <url>', 'address of the running spore up').option('--state-dir <dir>', "the running spore up's state folder", '.spore').option('-n, --namespace <ns>', 'namespace', 'default');
  target(
    cli
      .command('invoke')
      .description('call a function through the router (as routes, timers and queues do)')
      .argument('<function>', 'name or namespace/name')
      .option('-X, --request <method>', 'HTTP method (default GET, POST with -d)')
      .option('-d, --data <data>', 'request body')
      .option('-H, --header <header>', "header 'Name: value' (repeatable)", (v: string, all: string[]) => [...all, v], [] as string[]),
  ).action(invokeCommand);
  target(
    cli
      .command('logs')
      .description("print a function's logs")
      .argument('<function>', 'name or namespace/name')
      .option('-f, --follow', 'keep printing new lines')
      .option('--since <duration>', 'only lines newer than this, e.g. 5m'),
  ).action(logsCommand);
  target(cli.command('list').description('functions, routes and instances of the running spore up')).action(listCommand);
  cli.command('crds').description('print the spore.dev CustomResourceDefinitions as YAML').action(crdsCommand);
  return cli;
}

export async function main(argv: string[]): Promise<void> {
  await program().parseAsync(argv);
}
