/** Anything naming a Function: the construct, or its name in the same namespace. */
export type FunctionRef = { readonly name: string } | string;

export function functionName(ref: FunctionRef): string {
  return typeof ref === 'string' ? ref : ref.name;
}
