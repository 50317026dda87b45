#!/usr/bin/env node
// The `spore` command. lib/ is built by `npm ci` (the package's prepare script).
import { main } from '../lib/cli/main.js';

main(process.argv).catch((err) => {
  console.error(`spore: ${err?.message ?? err}`);
  process.exitCode = typeof err?.exitCode === 'number' ? err.exitCode : 1; // spore diff's errors exit 2
});
