// Reading rendered manifests: every YAML document of every *.yaml/*.yml file under the given paths.
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import yaml from 'js-yaml';

export interface ManifestDocument {
  file: string;
  index: number;
  object: unknown;
}

function yamlFiles(path: string): string[] {
  if (!statSync(path).isDirectory()) return [path];
  return readdirSync(path)
    .sort()
    .flatMap((name) => (statSync(join(path, name)).isDirectory() ? yamlFiles(join(path, name)) : /\.ya?ml$/.test(name) ? [join(path, name)] : []));
}

/** Loads documents in a stable order; a YAML syntax error names its file and line. */
export function loadManifests(paths: string[]): ManifestDocument[] {
  const docs: ManifestDocument[] = [];
  for (const file of paths.flatMap(yamlFiles)) {
    let objects: unknown[];
    try {
      objects = yaml.loadAll(readFileSync(file, 'utf8'));
    } catch (err) {
      throw new Error(`${file}: ${(err as Error).message}`);
    }
    objects.forEach((object, index) => object != null && docs.push({ file, index, object }));
  }
  return docs;
}
