import { existsSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { Construct } from 'constructs';
import { Code, DEFAULT_EXCLUDES, type CodeConfig } from './code.js';
import { Function, type FunctionOptions } from './function.js';

export interface PythonFunctionProps extends FunctionOptions {
  /** The function's folder, relative to the app folder; packed whole (caches and virtualenvs left out). */
  readonly path: string;
  /**
   * `module.function`: `main.main` when empty, `main.<name>` for one word, dotted
   * packages such as `pkg.sub.mod.fn` work.
   * @default 'main.main'
   */
  readonly handler?: string;
}

class PythonSourceCode extends Code {
  constructor(private readonly props: PythonFunctionProps) {
    super();
  }

  bind(): CodeConfig {
    const dir = resolve(this.props.path);
    if (!existsSync(dir) || !statSync(dir).isDirectory()) throw new Error(`folder "${this.props.path}" not found (looked for ${dir})`);
    const { archive } = Code.fromDirectory(dir, { exclude: [...DEFAULT_EXCLUDES, '*.pyc'] }).bind();
    return {
      archive,
      entrypoint: this.props.handler ?? 'main.main',
      requirements: existsSync(join(dir, 'requirements.txt')) ? 'requirements.txt' : undefined,
    };
  }
}

/**
 * A Python function from a folder. `main(request)` returns a str, bytes, a
 * dict (sent as JSON) or `(body, status, headers)`; Fission's `main()` with no
 * arguments works too. A requirements.txt in the folder is recorded in the
 * Package and installed into it at deploy time (pip, by `spore up` and the
 * reconciler's build step).
 */
export class PythonFunction extends Function {
  constructor(scope: Construct, id: string, props: PythonFunctionProps) {
    super(scope, id, { ...props, code: new PythonSourceCode(props) });
  }
}
