import type { Construct } from 'constructs';
import type { WorkflowSpec } from '../api/index.js';
import { functionName, type FunctionRef } from './function-ref.js';
import { SporeObject, type SporeObjectOptions } from './spore-object.js';

export interface TaskProps {
  /** A Function, or a control-flow task: noop, fail, sleep, compose, if, switch, foreach, while, repeat. */
  readonly run: FunctionRef;
  /** Inputs: literals, or expressions the engine evaluates. */
  readonly inputs?: Record<string, unknown>;
  /** Ids of tasks that must finish first. */
  readonly requires?: string[];
}

export interface WorkflowProps extends SporeObjectOptions {
  /** Tasks by id. */
  readonly tasks: Record<string, TaskProps>;
  /** The task whose output is the workflow's. @default the engine's choice (the last task) */
  readonly output?: string;
}

/** Functions composed into a graph of tasks, with control flow. */
export class Workflow extends SporeObject {
  constructor(
    scope: Construct,
    id: string,
    private readonly config: WorkflowProps,
  ) {
    super(scope, id, 'Workflow', config);
  }

  protected renderSpec(): WorkflowSpec {
    const tasks: WorkflowSpec['tasks'] = {};
    for (const [id, t] of Object.entries(this.config.tasks)) {
      tasks[id] = { run: functionName(t.run), inputs: t.inputs, requires: t.requires };
    }
    return { output: this.config.output, tasks };
  }
}
