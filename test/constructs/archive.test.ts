import { chmodSync, mkdirSync, readFileSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { packArchive, readDirectory } from '../../constructs/index.js';
import { extract, listArchive, tempDir } from '../helpers.js';

function sourceTree(): string {
  const dir = tempDir('spore-src-');
  mkdirSync(join(dir, 'lib/deep'), { recursive: true });
  writeFileSync(join(dir, 'main.py'), 'def main(r):\n    return "hi"\n');
  writeFileSync(join(dir, 'lib/deep/util.py'), 'X = 1\n');
  writeFileSync(join(dir, 'run.sh'), '#!/bin/sh\necho hi\n');
  chmodSync(join(dir, 'run.sh'), 0o700);
  return dir;
}

describe('deterministic archives', () => {
  it('gives the same bytes for the same files, whatever their mtimes, owners or read bits', () => {
    const dir = sourceTree();
    const a = packArchive(readDirectory(dir));
    utimesSync(join(dir, 'main.py'), new Date('2001-01-01'), new Date('2001-01-01'));
    chmodSync(join(dir, 'main.py'), 0o600);
    const b = packArchive(readDirectory(dir));
    expect(b.bytes.equals(a.bytes)).toBe(true);
    expect(b.sha256).toBe(createHash('sha256').update(a.bytes).digest('hex'));
    expect(b.size).toBe(a.bytes.length);
    writeFileSync(join(dir, 'main.py'), 'def main(r):\n    return "changed"\n');
    expect(packArchive(readDirectory(dir)).sha256).not.toBe(a.sha256);
  });

  it('does not depend on the order entries are given in', () => {
    const e = [
      { path: 'b.txt', data: Buffer.from('b') },
      { path: 'a/z.txt', data: Buffer.from('z') },
    ];
    expect(packArchive(e).sha256).toBe(packArchive([...e].reverse()).sha256);
  });

  it('stores sorted entries with a fixed mtime, root owner and normalized modes', () => {
    const lines = listArchive(packArchive(readDirectory(sourceTree())).bytes);
    expect(lines.map((l) => l.replace(/\s+/g, ' '))).toEqual([
      '-rw-r--r-- 0/0 6 1970-01-01 00:00 lib/deep/util.py',
      '-rw-r--r-- 0/0 29 1970-01-01 00:00 main.py',
      '-rwxr-xr-x 0/0 18 1970-01-01 00:00 run.sh',
    ]);
  });

  it('extracts with GNU tar to the same files, long paths included', () => {
    const long = `${'a-rather-long-folder-name/'.repeat(8)}file.txt`;
    const dir = extract(packArchive([{ path: long, data: Buffer.from('deep') }, { path: 'x.txt', data: Buffer.from('x') }]).bytes);
    expect(readFileSync(join(dir, long), 'utf8')).toBe('deep');
    expect(readFileSync(join(dir, 'x.txt'), 'utf8')).toBe('x');
  });

  it('refuses entries that would escape the folder or collide', () => {
    expect(() => packArchive([{ path: '../evil', data: Buffer.alloc(1) }])).toThrow('archive entry "../evil" must be a relative path without ".." or empty segments');
    expect(() => packArchive([{ path: '/etc/passwd', data: Buffer.alloc(1) }])).toThrow('must be a relative path');
    expect(() => packArchive([{ path: 'a', data: Buffer.alloc(1) }, { path: 'a', data: Buffer.alloc(2) }])).toThrow('archive entry "a" appears twice');
  });

  it('skips excluded names, stores file links as files and refuses folder links', () => {
    const dir = sourceTree();
    mkdirSync(join(dir, '__pycache__'));
    writeFileSync(join(dir, '__pycache__/main.cpython-311.pyc'), 'bytecode');
    writeFileSync(join(dir, 'stale.pyc'), 'bytecode');
    symlinkSync(join(dir, 'main.py'), join(dir, 'alias.py'));
    const paths = readDirectory(dir, { exclude: ['__pycache__', '*.pyc'] }).map((e) => e.path);
    expect(paths).toEqual(['alias.py', 'lib/deep/util.py', 'main.py', 'run.sh']);
    symlinkSync(join(dir, 'lib'), join(dir, 'lib-link'));
    expect(() => readDirectory(dir)).toThrow('lib-link is a symbolic link to a folder; archives hold files only');
  });
});
