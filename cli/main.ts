// The `spore` command: thin; each verb calls into api/, constructs/ and (as they land) the dataplane and reconciler.
import { createRequire } from 'node:module';
import { Command } from 'commander';
import { crdsCommand } from './crds.js';
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
  cli.command('crds').description('print the spore.dev CustomResourceDefinitions as YAML').action(crdsCommand);
  return cli;
}

export async function main(argv: string[]): Promise<void> {
  await program().parseAsync(argv);
}
