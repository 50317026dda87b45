// `-o json|yaml` (kubectl's flag): the data the server returned, for scripts,
// instead of the text for people.
import { Option, type Command } from 'commander';
import yaml from 'js-yaml';

export type Format = 'json' | 'yaml';

export const withOutput = (c: Command) => c.addOption(new Option('-o, --output <format>', 'print the data as json or yaml (for scripts) instead of text').choices(['json', 'yaml']));

/** Prints `data` in `format` and returns true; with no format, prints nothing and returns false (the caller prints text). */
export function printData(data: unknown, format: Format | undefined): boolean {
  if (!format) return false;
  process.stdout.write(format === 'json' ? `${JSON.stringify(data, null, 2)}\n` : yaml.dump(data, { noRefs: true, lineWidth: -1 }));
  return true;
}
