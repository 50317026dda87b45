// Function logs: lines read from instances with a bound on each line's bytes,
// batched into the store (which keeps a bounded number and bytes per function).
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

/** Bytes kept of one log line; the rest of a longer line is dropped. */
export const MAX_LINE_BYTES = 16 * 1024;

/**
 * Splits a stream into lines as they come, holding at most `max` bytes of a
 * line: a longer one is cut there, marked, and the rest of it skipped as it
 * streams by (a function printing a 200 MiB line costs Spore 16 KiB, not 200 MiB).
 */
export function readLines(input: NodeJS.ReadableStream, onLine: (line: string) => void, onCut?: (droppedBytes: number) => void, max = MAX_LINE_BYTES): void {
  let parts: Buffer[] = [];
  let held = 0;
  let dropped = 0;
  const end = () => {
    let line = Buffer.concat(parts, held).toString('utf8');
    if (dropped) {
      onCut?.(dropped);
      line = `${line.replace(/\uFFFD$/, '')} … [line cut at ${max} bytes]`; // the cut may split a character
    } else if (line.endsWith('\r')) line = line.slice(0, -1);
    parts = [];
    held = dropped = 0;
    onLine(line);
  };
  const take = (seg: Buffer) => {
    const keep = Math.min(seg.length, max - held);
    if (keep > 0) {
      parts.push(Buffer.from(seg.subarray(0, keep))); // a copy: a slice would hold the whole chunk
      held += keep;
    }
    dropped += seg.length - Math.max(keep, 0);
  };
  input.on('data', (chunk: Buffer) => {
    for (let pos = 0; pos < chunk.length; ) {
      const nl = chunk.indexOf(10, pos);
      take(chunk.subarray(pos, nl === -1 ? chunk.length : nl));
      if (nl === -1) break;
      end();
      pos = nl + 1;
    }
  });
  input.on('end', () => {
    if (held || dropped) end();
  });
}
