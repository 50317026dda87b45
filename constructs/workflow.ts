import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import type { Construct } from 'constructs';
import yaml from 'js-yaml';
import type { WorkflowSpec } from '../api/index.js';
import { functionName, type FunctionRef } from './function-ref.js';
import { SporeObject, type SporeObjectOptions } from './spore-object.js';

export interface TaskProps {
  /** A Function or a Workflow (by construct or name), or a control-flow task: noop, fail, sleep, compose, if, switch, foreach, while, repeat. */
  readonly run: FunctionRef;
  /** Inputs by name (literals, or expressions `"{$.Tasks.a.Output}"`), or one value: the default input. */
  readonly inputs?: unknown;
  /** Ids of tasks that must finish first. */
  readonly requires?: string[];
  /** Run a failed task again: `attempts` in all, waiting `backoff` (doubled each time). @default one attempt */
  readonly retry?: { readonly attempts: number; readonly backoff?: string };
  /** Bound on each attempt, e.g. `5s`. @default the function's own timeout */
  readonly timeout?: string;
  /** An action run when the task failed: its output becomes the task's (`$.Error` holds the failure). */
  readonly catch?: unknown;
}

export interface WorkflowProps extends SporeObjectOptions {
  /** Tasks by id. */
  readonly tasks: Record<string, TaskProps>;
  /** The task whose output is the workflow's. @default the last task to finish */
  readonly output?: string;
  /** Response headers; values may be expressions. */
  readonly outputHeaders?: Record<string, string>;
  /** Bound on a whole run, e.g. `30s`. @default none (each task is bounded) */
  readonly timeout?: string;
  /** Function calls one run makes at once. @default 10 */
  readonly parallelism?: number;
}

/** The fields of a Fission Workflows file (`apiVersion: 1`) Spore reads. */
const FISSION_FIELDS = ['apiVersion', 'description', 'output', 'outputHeaders', 'tasks'];

/** Functions composed into a graph of tasks, with control flow (Fission Workflows' model). */
export class Workflow extends SporeObject {
  /**
   * A Workflow from a Fission Workflows file (`apiVersion: 1`, `output`,
   * `tasks` with `run`, `inputs`, `requires`), kept as the Fission user wrote
   * it. Synth validates it like any Workflow.
   */
  static fromFile(scope: Construct, id: string, file: string, options: SporeObjectOptions = {}): Workflow {
    const path = resolve(file);
    let doc: unknown;
    try {
      doc = yaml.load(readFileSync(path, 'utf8'));
    } catch (err) {
      throw new Error(`Workflow ${id}: cannot read ${path}: ${(err as Error).message}`);
    }
    if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) throw new Error(`Workflow ${id}: ${path} must hold a YAML mapping (a Fission workflow: apiVersion, output, tasks)`);
    const d = doc as Record<string, unknown>;
    if (String(d.apiVersion) !== '1') throw new Error(`Workflow ${id}: ${path}: apiVersion must be 1, Fission Workflows' format (got ${JSON.stringify(d.apiVersion)})`);
    const unknown = Object.keys(d).filter((k) => !FISSION_FIELDS.includes(k));
    if (unknown.length) throw new Error(`Workflow ${id}: ${path}: unknown field${unknown.length > 1 ? 's' : ''} ${unknown.join(', ')} (known: ${FISSION_FIELDS.join(', ')})`);
    if (typeof d.tasks !== 'object' || d.tasks === null || Array.isArray(d.tasks)) throw new Error(`Workflow ${id}: ${path}: tasks must be a mapping of task ids to tasks`);
    return new Workflow(scope, id, { ...options, output: d.output as string | undefined, outputHeaders: d.outputHeaders as Record<string, string> | undefined, tasks: d.tasks as Record<string, TaskProps> });
  }

  constructor(
    scope: Construct,
    id: string,
    private readonly config: WorkflowProps,
  ) {
    super(scope, id, 'Workflow', config);
  }

  protected renderSpec(): WorkflowSpec {
    const c = this.config;
    const tasks: WorkflowSpec['tasks'] = {};
    for (const [id, t] of Object.entries(c.tasks)) {
      tasks[id] = { ...t, run: functionName(t.run) };
    }
    return { output: c.output, outputHeaders: c.outputHeaders, timeout: c.timeout, parallelism: c.parallelism ?? 10, tasks };
  }
}
