// A real NATS server with JetStream for the queue suites: `nats-server` (the
// Debian package; .ci/run installs it) on a free loopback port, its store in
// a temp folder. Outside CI, a machine without it skips those suites, saying
// why; under CI=true its absence is a failure.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import type { Msg, NatsConnection } from '@nats-io/transport-node';
import { freePort, tempDir } from './helpers.js';

export const natsInstalled = spawnSync('nats-server', ['--version'], { stdio: 'ignore' }).status === 0;
if (!natsInstalled) {
  if (process.env.CI === 'true') throw new Error('nats-server is not installed: the queue trigger suites need it (apt-get install nats-server)');
  console.warn('skipping the NATS queue trigger suites: nats-server is not installed (apt-get install nats-server)');
}


export interface Nats {
  url: string;
  port: number;
  stop(): Promise<void>;
}

/** Starts nats-server -js on `port` (a free one by default) and waits until it accepts connections. */
export async function startNats(port?: number, storeDir = tempDir('spore-nats-')): Promise<Nats> {
  port ??= await freePort();
  const child: ChildProcess = spawn('nats-server', ['-js', '-a', '127.0.0.1', '-p', String(port), '-sd', storeDir], { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  child.stderr!.on('data', (d) => (err += d));
  for (let i = 0; ; i++) {
    if (child.exitCode !== null) throw new Error(`nats-server exited: ${err}`);
    if (err.includes('Server is ready')) break;
    if (i > 200) throw new Error(`nats-server did not start: ${err}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    url: `nats://127.0.0.1:${port}`,
    port,
    stop: () =>
      new Promise<void>((resolve) => {
        if (child.exitCode !== null) return resolve();
        child.once('exit', () => resolve());
        child.kill('SIGTERM');
      }),
  };
}

/** What arrives on a subject, as it comes. */
export function collect(nc: NatsConnection, subject: string): Msg[] {
  const got: Msg[] = [];
  const sub = nc.subscribe(subject);
  void (async () => {
    for await (const m of sub) got.push(m);
  })();
  return got;
}
