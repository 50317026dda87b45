// The root cdk8s app: `npx cdk8s synth` here writes the platform's manifests to
// dist/ and the example app's (run in its own folder, as its own app) to dist/examples/.
import { execSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { App } from 'cdk8s';
import yaml from 'js-yaml';
import { Platform } from './constructs/index.js';

const app = new App();
new Platform(app, 'platform');
app.synth();

const examples = resolve('examples');
const { app: command } = yaml.load(readFileSync(resolve(examples, 'cdk8s.yaml'), 'utf8')) as { app: string };
execSync(command, { cwd: examples, stdio: 'inherit', env: { ...process.env, CDK8S_OUTDIR: resolve(app.outdir, 'examples') } });
