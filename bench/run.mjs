// `npm run bench`: every benchmark, side by side, on this machine.
// `npm run bench -- cold|warm|push|cluster|triggers|kafka|workflows` runs one of them. A benchmark that fails
// is reported and the others still run; the exit code says that one failed.
import { cluster, report as clusterReport } from './cluster.mjs';
import { coldStart, report as coldReport } from './cold-start.mjs';
import { kafkaQueue, report as kafkaReport } from './kafka.mjs';
import { push, report as pushReport } from './push.mjs';
import { triggers, report as triggersReport } from './triggers.mjs';
import { closeAll } from './util.mjs';
import { warm, report as warmReport } from './warm.mjs';
import { workflows, report as workflowsReport } from './workflows.mjs';

const benches = { cold: [coldStart, coldReport], warm: [warm, warmReport], push: [push, pushReport], cluster: [cluster, clusterReport], triggers: [triggers, triggersReport], kafka: [kafkaQueue, kafkaReport], workflows: [workflows, workflowsReport] };
const only = process.argv[2];
if (only && !benches[only]) {
  console.error(`unknown benchmark "${only}": use one of ${Object.keys(benches).join(', ')}`);
  process.exit(2);
}

// interrupted: stop what the running benchmark started, then go (no further benchmark starts meanwhile)
let stopping;
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.once(signal, () => {
    console.error(`\nbench: ${signal}, stopping its processes`);
    stopping ??= closeAll().finally(() => process.exit(130));
  });
}

let failed = false;
const results = {}; // a benchmark may show another's figure next to its own (cluster: the local push)
for (const [name, [run, report]] of Object.entries(benches)) {
  if (only && only !== name) continue;
  if (stopping) break;
  try {
    const result = (results[name] = await run(results));
    console.log(report(result) + '\n');
    if (result.failed) failed = true; // a part of it could not be measured (said in the report)
  } catch (err) {
    failed = true;
    if (!stopping) console.log(`${name}: FAILED: ${err.stack ?? err.message}\n`);
  }
}
await stopping; // interrupted: it exits once every process is stopped
process.exit(failed ? 1 : 0);
