// The Node.js versions Spore says it supports are ones its dependencies support too.
import { readFileSync } from 'node:fs';
import semver from 'semver';
import { describe, expect, it } from 'vitest';

const ROOT = new URL('..', import.meta.url).pathname;
const json = (f: string) => JSON.parse(readFileSync(`${ROOT}/${f}`, 'utf8'));

describe('supported Node.js versions', () => {
  it("start at 22 (20 is past its end of life), and every locked dependency accepts Spore's oldest", () => {
    const range = json('package.json').engines.node as string;
    const oldest = semver.minVersion(range)!.version;
    expect(semver.major(oldest)).toBeGreaterThanOrEqual(22);
    const refusing = Object.entries(json('package-lock.json').packages as Record<string, { engines?: { node?: string } }>)
      .filter(([, p]) => typeof p.engines?.node === 'string' && !semver.satisfies(oldest, p.engines.node))
      .map(([name, p]) => `${name} (${p.engines!.node})`);
    expect(refusing).toEqual([]);
  });
});
