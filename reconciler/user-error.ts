// What a user reads when a step fails: their error (their synth's, npm's, the
// validation's), not the code that threw it. Node prints an uncaught error
// after the line of source that threw; when that source is a dependency's
// (cdk8s, esbuild, Spore) or Node's own, it is noise that hides the message.

/** `file:line` of Node's uncaught-error header, with the thrower outside the user's code. */
const FOREIGN_LOCATION = /^(file:\/\/)?(\S*\/node_modules\/\S*|node:\S+):\d+$/;
const CARET = /^\s*\^+\s*$/;

export function userMessage(message: string): string {
  const lines = message.split('\n');
  const kept: string[] = [];
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    // `<dependency>:308`, its source line, the caret under it
    if (FOREIGN_LOCATION.test(line.trim()) && CARET.test(lines[i + 2] ?? '')) {
      i += 2;
      continue;
    }
    // the source line alone (the caret already filtered out), when it only quotes the message that follows
    const next = lines.slice(i + 1).find((l) => l.trim());
    if (/\bthrow\b/.test(line) && next && line.includes(next.trim().split(/[:\n]/)[0])) continue;
    // the properties Node prints after an error's stack (`  name: 'TransformError'`, `}`)
    if (/^\s+\w+: /.test(line) && /^}\s*$/.test(lines.slice(i).filter((l) => l.trim()).pop() ?? '') && lines.slice(i).every((l) => /^\s+\w+: /.test(l) || /^}?\s*$/.test(l))) break;
    kept.push(line);
  }
  return kept.filter((l) => l.trim()).join('\n');
}
