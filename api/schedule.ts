// Timer schedules: cron (5 or 6 fields, seconds optional), descriptors such as
// @hourly, and Go-style `@every <duration>` (what Fission's robfig/cron accepts).
import { Cron } from 'croner';
import parseDuration from 'parse-duration';

export type Schedule = { kind: 'every'; everyMs: number } | { kind: 'cron'; cron: Cron };

const GO_DURATION = /^(\d+(\.\d+)?(ms|s|m|h))+$/;

/** Parses a schedule, throwing an Error whose message says what is wrong. */
export function parseSchedule(expr: string, timeZone?: string): Schedule {
  if (timeZone !== undefined) assertTimeZone(timeZone);
  const every = /^@every\s+(.*)$/.exec(expr.trim());
  if (every) {
    const text = every[1].trim();
    const ms = GO_DURATION.test(text) ? parseDuration(text) : null;
    if (ms == null) throw new Error(`"@every ${text}": the interval must be a duration such as 30s, 5m or 1h30m`);
    if (ms < 1000) throw new Error(`"@every ${text}": the interval must be at least 1s`);
    return { kind: 'every', everyMs: ms };
  }
  try {
    const cron = new Cron(expr, { timezone: timeZone, paused: true, mode: '5-or-6-parts' });
    if (!cron.nextRun()) throw new Error('it never fires');
    return { kind: 'cron', cron };
  } catch (err) {
    const why = (err as Error).message.replace(/^Cron\w*:\s*/, '');
    throw new Error(`"${expr}" is not a valid cron expression (min hour day month weekday, seconds optional first; or @hourly, @every 5m): ${why}`);
  }
}

export function assertTimeZone(timeZone: string): void {
  try {
    new Intl.DateTimeFormat('en', { timeZone });
  } catch {
    throw new Error(`"${timeZone}" is not an IANA time zone (e.g. UTC, Europe/Paris, America/New_York)`);
  }
}
