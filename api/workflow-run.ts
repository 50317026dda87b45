// A WorkflowRun: one run of a Workflow on a cluster, written by Spore's router
// as the run goes (store/kube-workflow-runs.ts), never by an app. The spec is
// what the run started with (the workflow's spec then, and the input); the
// status is how it is going: its state, each task, and which router executes
// it (owner, and a heartbeat that router refreshes, by which a stale run is
// taken over).
import { Type } from '@sinclair/typebox';
import { Closed, Json, StringEnum } from './schema-kit.js';

const RunErrorSchema = Closed({
  message: Type.String(),
  task: Type.Optional(Type.String({ description: 'the task that failed (its path)' })),
  status: Type.Optional(Type.Integer({ description: "the function's HTTP status, when a function call failed" })),
  body: Type.Optional(Type.String({ description: "the start of the function's answer" })),
});

export const WorkflowRunSpec = Closed({
  workflow: Type.String({ description: 'the Workflow run (in the same namespace)' }),
  input: Json({ description: '$.Invocation.Inputs: the caller\'s body (default), headers, query, method' }),
  workflowSpec: Json({ description: "the Workflow's spec as the run started (a later change of the Workflow does not change the run)" }),
  requestId: Type.String({ description: "the caller's request id" }),
});

export const WorkflowRunTask = Closed({
  path: Type.String({ description: 'the task: its id, or inside control flow parent.then, parent.3 …' }),
  state: StringEnum(['running', 'succeeded', 'failed'] as const),
  attempts: Type.Integer({ minimum: 0 }),
  started: Type.Integer({ description: 'epoch milliseconds' }),
  finished: Type.Optional(Type.Integer({ description: 'epoch milliseconds' })),
  output: Type.Optional(Json()),
  error: Type.Optional(RunErrorSchema),
});

export const WorkflowRunStatus = Closed({
  state: StringEnum(['running', 'succeeded', 'failed'] as const),
  output: Type.Optional(Json()),
  error: Type.Optional(RunErrorSchema),
  tasks: Type.Optional(Type.Array(WorkflowRunTask)),
  created: Type.Integer({ description: 'epoch milliseconds' }),
  updated: Type.Integer({ description: 'epoch milliseconds' }),
  owner: Type.Optional(Type.String({ description: 'the router replica executing the run' })),
  heartbeat: Type.Optional(Type.Integer({ description: 'epoch milliseconds: when the owner last said it is executing the run; a running run whose heartbeat is stale is taken over' })),
});
