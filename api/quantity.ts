// Kubernetes resource quantities (the Quantity pattern of schema-kit.ts) as
// numbers, for the targets that enforce them themselves (the local one).
const SUFFIX: Record<string, number> = {
  '': 1,
  m: 1e-3,
  k: 1e3,
  M: 1e6,
  G: 1e9,
  T: 1e12,
  P: 1e15,
  E: 1e18,
  Ki: 2 ** 10,
  Mi: 2 ** 20,
  Gi: 2 ** 30,
  Ti: 2 ** 40,
  Pi: 2 ** 50,
  Ei: 2 ** 60,
};

/** `128Mi` → 134217728, `500m` → 0.5; undefined for what is not a quantity. */
export function parseQuantity(q: string | undefined): number | undefined {
  const m = q === undefined ? null : /^([0-9]+(?:\.[0-9]+)?)(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$/.exec(q);
  return m ? Number(m[1]) * SUFFIX[m[2] ?? ''] : undefined;
}
