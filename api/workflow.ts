import { Type, type Static } from '@sinclair/typebox';
import { Closed, Json, MapOf, StringEnum, commonStatus } from './schema-kit.js';

/**
 * Control-flow tasks built into the engine (Fission Workflows' set). Their
 * inputs hold expressions and nested tasks; `required` lists the inputs each
 * needs.
 */
export const CONTROL_FLOW: Record<string, { required: readonly string[] }> = {
  noop: { required: [] },
  fail: { required: [] },
  sleep: { required: ['duration'] },
  compose: { required: [] },
  if: { required: ['if', 'then'] },
  switch: { required: ['switch', 'cases'] },
  foreach: { required: ['foreach', 'do'] },
  while: { required: ['expr', 'do'] },
  repeat: { required: ['times', 'do'] },
};

export const TASK_ID = '^[A-Za-z_][A-Za-z0-9_-]*$';

export const Task = Closed({
  run: Type.String({ minLength: 1, description: 'a Function name in this namespace, or a control-flow task: ' + Object.keys(CONTROL_FLOW).join(', ') }),
  inputs: Type.Optional(MapOf(Json(), { description: 'inputs; values may be literals or expressions' })),
  requires: Type.Optional(Type.Array(Type.String({ pattern: TASK_ID }), { uniqueItems: true, description: 'tasks that must finish first' })),
});
export type Task = Static<typeof Task>;

export const WorkflowSpec = Closed(
  {
    output: Type.Optional(Type.String({ pattern: TASK_ID, description: "the task whose output is the workflow's" })),
    outputHeaders: Type.Optional(MapOf(Type.String())),
    tasks: MapOf(Task, { minProperties: 1, description: 'tasks by id' }),
  },
  { description: 'functions composed into a graph of tasks' },
);
export type WorkflowSpec = Static<typeof WorkflowSpec>;

export const WorkflowStatus = Closed({
  ...commonStatus,
  phase: Type.Optional(StringEnum(['Pending', 'Ready', 'Failed'] as const)),
});
