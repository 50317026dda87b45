// An Invocation: one asynchronous call (`X-Spore-Async: true`) on a cluster,
// written by Spore's router from the moment it accepts the call until the
// call is done (store/kube-invocations.ts), never by an app. The spec is the
// call as it came (method, path, headers, body); the status is how it went:
// its state (a failed one is the dead letter, kept until retried), attempts,
// the last answer, and which router executes it.
import { Type } from '@sinclair/typebox';
import { Closed, MapOf, StringEnum } from './schema-kit.js';

export const InvocationSpec = Closed({
  function: Type.String({ description: 'the Function called (in the same namespace)' }),
  method: Type.String(),
  path: Type.String({ description: 'the path under the function, with its query' }),
  headers: MapOf(Type.String(), { description: "the caller's headers, kept to be sent with the call (credentials included: grant read access to Invocations as to Secrets)" }),
  params: MapOf(Type.String(), { description: "the route's parameters" }),
  body: Type.String({ description: 'the request body, base64' }),
});

export const InvocationStatus = Closed({
  state: StringEnum(['queued', 'running', 'succeeded', 'failed'] as const, { description: 'failed: the dead letter, kept until retried by hand (spore invocations retry)' }),
  attempts: Type.Integer({ minimum: 0 }),
  status: Type.Optional(Type.Integer({ description: "the last attempt's HTTP status (0: no answer)" })),
  error: Type.Optional(Type.String()),
  response: Type.Optional(Type.String({ description: "the start of the last answer's body (at most 4 KiB)" })),
  created: Type.Integer({ description: 'epoch milliseconds' }),
  updated: Type.Integer({ description: 'epoch milliseconds' }),
  nextAt: Type.Integer({ description: 'epoch milliseconds: when a queued call is due' }),
  bodyBytes: Type.Optional(Type.Integer({ minimum: 0, description: "the body's size, once the call succeeded (its body and headers are then no longer kept)" })),
  owner: Type.Optional(Type.String({ description: 'the router replica executing the call' })),
  heartbeat: Type.Optional(Type.Integer({ description: 'epoch milliseconds: when the owner last said it holds the call; a queued or running call whose heartbeat is stale is taken over' })),
});
