#!/usr/bin/env node
// The `spore` command. lib/ is built by `npm ci` (the package's prepare script).
const major = Number(process.versions.node.split('.')[0]);
if (major < 22) console.error(`spore: Node.js ${process.version} is not supported (it is past its end of life): use Node.js 22 or newer`);

const { main } = await import('../lib/cli/main.js');
main(process.argv).catch((err) => {
  console.error(`spore: ${err?.message ?? err}`);
  process.exitCode = typeof err?.exitCode === 'number' ? err.exitCode : 1; // spore diff's errors exit 2
});
