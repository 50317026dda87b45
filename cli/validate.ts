import { existsSync } from 'node:fs';
import { formatErrors, validateSet } from '../api/index.js';
import { loadManifests } from '../reconciler/manifests.js';

export function validateCommand(paths: string[]): void {
  const missing = paths.filter((p) => !existsSync(p));
  if (missing.length) throw new Error(`not found: ${missing.join(', ')}`);
  const docs = loadManifests(paths);
  // nothing to check is not "valid": a wrong folder, or a synth that wrote nothing
  if (!docs.length) throw new Error(`no manifests found in ${paths.join(', ')} (looked for YAML documents in *.yaml and *.yml files)`);
  const errors = validateSet(docs.map((d) => d.object));
  if (errors.length) {
    console.error(formatErrors(errors));
    throw new Error(`${errors.length} error(s) in ${docs.length} object(s)`);
  }
  console.log(`${docs.length} object(s) valid`);
}
