// `spore init DIR`: a new app from the example, with Spore itself packed into
// the app's vendor/ folder (the package is not on the npm registry): the app
// installs from its own repository, so a reconciler or CI can install it too.
import { execFileSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { basename, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { appName } from '../api/index.js';

/** The spore package's root (lib/cli/ → ../..), a checkout or an installed copy. */
const PACKAGE_ROOT = fileURLToPath(new URL('../..', import.meta.url));
const TEMPLATE_FILES = ['main.ts', 'cdk8s.yaml', 'tsconfig.json', 'functions'];

export function initCommand(dir: string, o: { name?: string }): void {
  const target = resolve(dir);
  if (existsSync(target) && readdirSync(target).length) throw new Error(`${target} is not empty: give a new folder (spore init my-app)`);
  const name = appName(o.name ?? basename(target));
  if (o.name && name !== o.name) throw new Error(`--name "${o.name}": an app name is a DNS label (lowercase letters, digits and -), e.g. "${name}"`);
  const template = join(PACKAGE_ROOT, 'examples');
  mkdirSync(join(target, 'vendor'), { recursive: true });
  for (const f of TEMPLATE_FILES) cpSync(join(template, f), join(target, f), { recursive: true });
  writeFileSync(join(target, '.gitignore'), 'node_modules/\ndist/\n.spore/\n');
  let tarball: string;
  try {
    const out = execFileSync('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', join(target, 'vendor'), PACKAGE_ROOT], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    tarball = (JSON.parse(out) as { filename: string }[])[0].filename;
  } catch (err) {
    throw new Error(`cannot pack spore from ${PACKAGE_ROOT} (npm pack): ${(err as { stderr?: string }).stderr?.trim() || (err as Error).message}`);
  }
  const example = JSON.parse(readFileSync(join(template, 'package.json'), 'utf8')) as { dependencies: Record<string, string>; devDependencies: Record<string, string> };
  const pkg = {
    name,
    version: '0.1.0',
    private: true,
    type: 'module',
    scripts: { synth: 'CDK8S_CHECK_UPGRADE=false cdk8s synth', up: 'spore up .', 'publish-rendered': 'spore publish' },
    dependencies: { ...example.dependencies, spore: `file:vendor/${tarball}` },
    devDependencies: example.devDependencies,
  };
  writeFileSync(join(target, 'package.json'), `${JSON.stringify(pkg, null, 2)}\n`);
  const near = relative(process.cwd(), target) || '.';
  const at = near.startsWith('..') ? target : near;
  console.log(`spore: created app "${name}" in ${target} (spore ${tarball.replace(/^spore-|\.tgz$/g, '')} packed into vendor/)`);
  console.log(`next:\n  cd ${at}\n  npm install\n  npx spore up          # serves it on http://127.0.0.1:8080\n  git init && git add -A && git commit -m "my app"   # vendor/ included: a reconciler installs from the repository`);
}
