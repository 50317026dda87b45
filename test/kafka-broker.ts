// A real single-node Kafka broker for the Kafka queue suite: KRaft mode, one
// process that is both broker and controller, run with Java 17 from the jars
// test/kafka-jars.sh fetched from Maven Central into a cache folder outside the
// repository (.ci/run fetches them first; here they are fetched on first use).
// Outside CI, a machine without Java or Maven skips that suite, saying why;
// under CI=true their absence is a failure.
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { freePort, tempDir } from './helpers.js';

const JARS_SCRIPT = new URL('./kafka-jars.sh', import.meta.url).pathname;

const has = (cmd: string, arg: string) => spawnSync(cmd, [arg], { stdio: 'ignore' }).status === 0;
const missing = [!has('java', '-version') && 'java (apt-get install openjdk-17-jre-headless)', !has('mvn', '-v') && 'mvn (apt-get install maven)'].filter(Boolean);
export const kafkaRunnable = missing.length === 0;
if (!kafkaRunnable) {
  if (process.env.CI === 'true') throw new Error(`the Kafka queue trigger suite needs ${missing.join(' and ')}`);
  console.warn(`skipping the Kafka queue trigger suite: ${missing.join(' and ')} not installed`);
}

export interface KafkaBroker {
  /** host:port of its client listener. */
  brokers: string;
  port: number;
  stop(): Promise<void>;
}

/** The classpath of the broker's jars, fetched once (cached across runs). */
function classpath(): string {
  const dir = execFileSync('bash', [JARS_SCRIPT], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] }).trim();
  return join(dir, '*');
}

const java = (cp: string, args: string[]) => ['-Xmx512m', '-XX:+UseSerialGC', '-XX:TieredStopAtLevel=1', '-cp', cp, ...args];

/** Formats a fresh log folder and starts the broker on a free port (or `port`); resolves once it accepts connections. */
export async function startKafka(port?: number): Promise<KafkaBroker> {
  port ??= await freePort();
  const controller = await freePort();
  const dir = tempDir('spore-kafka-');
  const config = join(dir, 'server.properties');
  writeFileSync(
    config,
    [
      'process.roles=broker,controller',
      'node.id=1',
      `controller.quorum.voters=1@127.0.0.1:${controller}`,
      `listeners=PLAINTEXT://127.0.0.1:${port},CONTROLLER://127.0.0.1:${controller}`,
      `advertised.listeners=PLAINTEXT://127.0.0.1:${port}`,
      'controller.listener.names=CONTROLLER',
      'inter.broker.listener.name=PLAINTEXT',
      'listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT',
      `log.dirs=${join(dir, 'data')}`,
      'num.partitions=1',
      'offsets.topic.replication.factor=1',
      'offsets.topic.num.partitions=1',
      'transaction.state.log.replication.factor=1',
      'transaction.state.log.min.isr=1',
      'share.coordinator.state.topic.replication.factor=1',
      'share.coordinator.state.topic.min.isr=1',
      'group.initial.rebalance.delay.ms=0',
      '',
    ].join('\n'),
  );
  const cp = classpath();
  // a 22-character cluster id, as `kafka-storage random-uuid` makes
  const clusterId = randomBytes(16).toString('base64url');
  // joined with `=`: an id starting with '-' (1 in 64) is otherwise read as an option
  execFileSync('java', java(cp, ['kafka.tools.StorageTool', 'format', `--cluster-id=${clusterId}`, '-c', config]), { stdio: 'pipe' });
  const child: ChildProcess = spawn('java', [`-Dkafka.logs.dir=${dir}`, ...java(cp, ['kafka.Kafka', config])], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout!.on('data', (d) => (out = (out + d).slice(-20_000)));
  child.stderr!.on('data', (d) => (out = (out + d).slice(-20_000)));
  const stop = () =>
    new Promise<void>((resolve) => {
      if (child.exitCode !== null || child.signalCode !== null) return resolve();
      child.once('exit', () => resolve());
      child.kill('SIGKILL'); // its data is thrown away: no clean shutdown to wait for
    });
  for (let i = 0; ; i++) {
    if (child.exitCode !== null) throw new Error(`the Kafka broker exited (${child.exitCode}): ${out}`);
    if (/Kafka Server started/.test(out) && (await accepts(port))) break;
    if (i > 3000) {
      await stop();
      throw new Error(`the Kafka broker did not start in 150 s: ${out}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return { brokers: `127.0.0.1:${port}`, port, stop };
}

const accepts = (port: number) =>
  new Promise<boolean>((resolve) => {
    const s = connect(port, '127.0.0.1');
    s.once('connect', () => (s.destroy(), resolve(true)));
    s.once('error', () => resolve(false));
  });
