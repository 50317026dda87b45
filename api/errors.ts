/** One problem with one field, at a dotted path such as `spec.functions[0].weight`. */
export interface FieldError {
  path: string;
  message: string;
}

/** A FieldError located in a set of objects: `object` is `Kind/namespace/name`. */
export interface ObjectError extends FieldError {
  object: string;
}

export function formatErrors(errors: readonly (FieldError | ObjectError)[]): string {
  return errors.map((e) => `${'object' in e ? `${e.object}: ` : ''}${e.path ? `${e.path}: ` : ''}${e.message}`).join('\n');
}

export class ValidationError extends Error {
  constructor(
    readonly errors: readonly (FieldError | ObjectError)[],
    what = 'invalid object',
  ) {
    super(`${what}:\n  ${formatErrors(errors).split('\n').join('\n  ')}`);
    this.name = 'ValidationError';
  }
}

/** `['spec', 'functions', 0, 'weight']` → `spec.functions[0].weight`. */
export function joinPath(parts: readonly (string | number)[]): string {
  let out = '';
  for (const p of parts) {
    if (typeof p === 'number' || /^\d+$/.test(p)) out += `[${p}]`;
    else if (/^[A-Za-z_$][\w$-]*$/.test(p)) out += out ? `.${p}` : p;
    else out += `[${JSON.stringify(p)}]`;
  }
  return out;
}
