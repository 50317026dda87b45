// Data between tasks: JSONata. Its `$` is the scope's root, so Fission
// Workflows' `{$.Invocation.Inputs.default}` and `{$.Tasks.a.Output}` read as
// written, and a user gets a whole query language (filters, maps, string and
// number functions) rather than a path syntax of ours. An input whose whole
// string is `{…}` is an expression; its value keeps its JSON type. Anything
// else is a literal (objects and lists are walked: their strings may be
// expressions too).
import jsonata from 'jsonata';
import { expressionOf } from '../../api/index.js';

/** What expressions see as `$`. */
export interface Scope {
  Invocation: { Inputs: Record<string, unknown> };
  /** The tasks of the graph being run, by id: their Inputs, Output and Status. */
  Tasks: Record<string, { Inputs?: unknown; Output?: unknown; Status: string }>;
  /** foreach: the element and its index; while/repeat: the previous output and the iteration; catch: the failure. */
  Item?: unknown;
  Index?: number;
  Prev?: unknown;
  Error?: unknown;
}

export class ExpressionError extends Error {}

const compiled = new Map<string, jsonata.Expression>();
const COMPILED_MAX = 1000;

function compile(text: string): jsonata.Expression {
  let e = compiled.get(text);
  if (!e) {
    try {
      e = jsonata(text);
    } catch (err) {
      throw new ExpressionError(`{${text}} is not a valid JSONata expression: ${(err as Error).message}`);
    }
    if (compiled.size >= COMPILED_MAX) compiled.clear();
    compiled.set(text, e);
  }
  return e;
}

/** A value with its expressions evaluated (at any depth), types kept. */
export async function evaluate(value: unknown, scope: Scope): Promise<unknown> {
  const text = expressionOf(value);
  if (text !== undefined) {
    try {
      const result = await compile(text).evaluate(scope);
      // JSONata's sequences are arrays with extra flags: plain JSON from here on
      const json = JSON.stringify(result);
      return json === undefined ? undefined : JSON.parse(json);
    } catch (err) {
      if (err instanceof ExpressionError) throw err;
      throw new ExpressionError(`{${text}} failed: ${(err as Error).message}`);
    }
  }
  if (Array.isArray(value)) return Promise.all(value.map((v) => evaluate(v, scope)));
  if (typeof value === 'object' && value !== null) {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) out[k] = await evaluate(v, scope);
    return out;
  }
  return value;
}

/** Inputs by name, evaluated, except those given as `lazy` (kept as written: a control-flow task evaluates them itself). */
export async function evaluateInputs(inputs: Record<string, unknown>, scope: Scope, lazy: readonly string[] = []): Promise<Record<string, unknown>> {
  const out: Record<string, unknown> = {};
  for (const [name, v] of Object.entries(inputs)) {
    try {
      out[name] = lazy.includes(name) ? v : await evaluate(v, scope);
    } catch (err) {
      throw new ExpressionError(`input "${name}": ${(err as Error).message}`);
    }
  }
  return out;
}
