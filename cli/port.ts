// A port given on the command line or in PORT: digits only, 0 to 65535.
export function portOf(value: string, flag: string): number {
  const n = Number(value);
  if (!/^\d+$/.test(value) || n > 65535) throw new Error(`${flag} must be a port number, 0 to 65535 (got "${value}")`);
  return n;
}
