import yaml from 'js-yaml';
import { allCrds } from '../api/index.js';

export function crdsCommand(): void {
  process.stdout.write(allCrds().map((crd) => yaml.dump(crd, { noRefs: true, lineWidth: -1 })).join('---\n'));
}
