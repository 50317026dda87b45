// Function logs: lines from instances, batched into the store (which keeps a
// bounded number per function).
import type { LogEntry, LogStore } from '../store/index.js';

export class LogSink {
  private buffer: LogEntry[] = [];
  private timer?: NodeJS.Timeout;

  constructor(
    private readonly store: LogStore,
    private readonly flushMs = 100,
  ) {}

  write(entry: LogEntry): void {
    this.buffer.push(entry);
    if (this.buffer.length >= 500) this.flush();
    else this.timer ??= setTimeout(() => this.flush(), this.flushMs);
  }

  flush(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    const batch = this.buffer;
    this.buffer = [];
    try {
      this.store.appendLogs(batch);
    } catch (err) {
      process.stderr.write(`spore: could not store ${batch.length} log line(s): ${(err as Error).message}\n`);
    }
  }
}
