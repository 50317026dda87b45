import { existsSync, readFileSync } from 'node:fs';
import { dirname, extname, relative, resolve } from 'node:path';
import { buildSync, type Message } from 'esbuild';
import type { Construct } from 'constructs';
import { packArchive } from './archive.js';
import { Code, type CodeConfig } from './code.js';
import { Function, type FunctionOptions } from './function.js';

/** The bundle's file name inside the archive. */
export const NODE_BUNDLE = 'index.mjs';

// An ES module bundle may hold CommonJS dependencies that call require(); give them one.
const REQUIRE_SHIM = "import { createRequire as __sporeCreateRequire } from 'node:module'; const require = __sporeCreateRequire(import.meta.url);";

export interface BundlingOptions {
  /** Minify the bundle. @default false */
  readonly minify?: boolean;
  /** Packages left out of the bundle (they must exist in the runtime). @default none */
  readonly external?: string[];
  /** Inline a source map for readable stack traces. @default false */
  readonly sourceMap?: boolean;
  /** Replace global identifiers with constant expressions (esbuild `define`). */
  readonly define?: Record<string, string>;
}

export interface NodeFunctionProps extends FunctionOptions {
  /** The entry file, TypeScript or JavaScript, relative to the app folder. */
  readonly entry: string;
  /** The exported handler. @default the default export (`export default`, or `module.exports`) */
  readonly handler?: string;
  readonly bundling?: BundlingOptions;
}

function formatMessages(messages: Message[]): string {
  return messages
    .map((m) => (m.location ? `${m.location.file}:${m.location.line}:${m.location.column}: ${m.text}` : m.text))
    .join('; ');
}

class NodeBundleCode extends Code {
  constructor(private readonly props: NodeFunctionProps) {
    super();
  }

  bind(): CodeConfig {
    const entry = resolve(this.props.entry);
    if (!existsSync(entry)) throw new Error(`entry file "${this.props.entry}" not found (looked for ${entry})`);
    const b = this.props.bundling ?? {};
    // A .js entry is CommonJS unless it uses ES module syntax itself, as in
    // Fission, whatever the app's package.json "type" says: read through stdin,
    // esbuild decides by the file's own syntax.
    const byOwnSyntax = ['.js', '.jsx'].includes(extname(entry));
    let result;
    try {
      result = buildSync({
        ...(byOwnSyntax
          ? { stdin: { contents: readFileSync(entry, 'utf8'), resolveDir: dirname(entry), sourcefile: relative(process.cwd(), entry), loader: extname(entry) === '.jsx' ? 'jsx' : 'js' } }
          : { entryPoints: [entry] }),
        absWorkingDir: process.cwd(), // paths in the bundle's comments stay relative, so bundles match across checkouts
        bundle: true,
        platform: 'node',
        format: 'esm',
        target: 'node22',
        outfile: NODE_BUNDLE,
        write: false,
        banner: { js: REQUIRE_SHIM },
        minify: b.minify ?? false,
        external: b.external,
        sourcemap: b.sourceMap ? 'inline' : false,
        define: b.define,
        legalComments: 'none',
        logLevel: 'silent',
      });
    } catch (err) {
      const errors = (err as { errors?: Message[] }).errors;
      throw new Error(`bundling "${this.props.entry}" failed: ${errors?.length ? formatMessages(errors) : (err as Error).message}`);
    }
    const esmOnly = result.warnings.find((w) => w.id === 'commonjs-variable-in-esm' && w.location && !w.location.file.includes('node_modules'));
    if (esmOnly) {
      const file = esmOnly.location!.file;
      throw new Error(
        `bundling "${this.props.entry}" failed: ${file} uses CommonJS (module.exports / exports) but is loaded as an ES module ` +
          `(the nearest package.json says "type": "module"): rename it to ${file.replace(/\.js$/, '.cjs')}, or use export instead of module.exports`,
      );
    }
    const file = result.outputFiles.find((f) => f.path.endsWith(NODE_BUNDLE))!;
    return {
      archive: packArchive([{ path: NODE_BUNDLE, data: Buffer.from(file.contents) }]),
      entrypoint: this.props.handler ? `index.${this.props.handler}` : 'index',
    };
  }
}

/**
 * A Node.js function from one entry file (TypeScript or JavaScript), bundled
 * with its npm dependencies into a single ES module. The handler is either a
 * Web one, `export default (req: Request) => Response` (or `{ fetch }`), or
 * Fission's `module.exports = async (context) => ({ status, body, headers })`.
 */
export class NodeFunction extends Function {
  constructor(scope: Construct, id: string, props: NodeFunctionProps) {
    super(scope, id, { ...props, code: new NodeBundleCode(props) });
  }
}
