// What a failed call said, in one line, for a trigger's logs and records:
// Spore's error shape's `message`, else the status and the start of the body.
export function failureOf(body: string, status: number): string {
  try {
    const m = (JSON.parse(body) as { message?: unknown }).message;
    if (typeof m === 'string') return m;
  } catch {
    // not JSON
  }
  const text = body.replace(/\s+/g, ' ').trim();
  return `HTTP ${status}${text ? `: ${text.length > 200 ? `${text.slice(0, 200)}…` : text}` : ''}`;
}
