// `npm run bench`: every benchmark, side by side, on this machine.
import { coldStart, report as coldReport } from './cold-start.mjs';
import { push, report as pushReport } from './push.mjs';
import { warm, report as warmReport } from './warm.mjs';

const only = process.argv[2];
if (!only || only === 'cold') console.log(coldReport(await coldStart()) + '\n');
if (!only || only === 'warm') console.log(warmReport(await warm()) + '\n');
if (!only || only === 'push') console.log(pushReport(await push()));
