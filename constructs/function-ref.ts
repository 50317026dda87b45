/** Anything naming a Function: the construct, or its name in the same namespace. */
export type FunctionRef = { readonly name: string } | string;

export function functionName(ref: FunctionRef): string {
  return typeof ref === 'string' ? ref : ref.name;
}

/** Anything naming a Workflow: the construct, or its name in the same namespace. */
export type WorkflowRef = { readonly name: string } | string;

/** A trigger's callee as the spec writes it: `function` or `workflow`, each `{ name }` when given. */
export function calleeRefs(c: { function?: FunctionRef; workflow?: WorkflowRef }): { function?: { name: string }; workflow?: { name: string } } {
  return {
    function: c.function === undefined ? undefined : { name: functionName(c.function) },
    workflow: c.workflow === undefined ? undefined : { name: functionName(c.workflow) },
  };
}
