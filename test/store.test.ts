// The SQLite store: a real file, reopened to prove what lasts.
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { SqliteStore, type WatchEvent } from '../store/index.js';
import { spore, tempDir } from './helpers.js';

const labelled = (name: string, spec: object, labels: Record<string, string> = { 'spore.dev/app': 'shop' }) => {
  const o = spore('Environment', name, spec);
  return { ...o, metadata: { ...o.metadata, labels } };
};

describe('SqliteStore', () => {
  it('applies a set: created, updated, unchanged; generation moves only with the spec; it lasts across reopening', async () => {
    const file = join(tempDir(), 'spore.db');
    const store = new SqliteStore(file);
    const r1 = await store.apply([labelled('a', { runtime: { name: 'node' } }), labelled('b', { runtime: { name: 'python' } })]);
    expect([r1.created.length, r1.updated.length, r1.unchanged.length]).toEqual([2, 0, 0]);
    const a1 = (await store.get({ apiVersion: 'spore.dev/v1alpha1', kind: 'Environment', name: 'a' }))!;
    expect(a1.metadata).toMatchObject({ name: 'a', namespace: 'default', generation: 1 });
    const r2 = await store.apply([labelled('a', { runtime: { name: 'node' }, poolSize: 5 }), labelled('b', { runtime: { name: 'python' } })]);
    expect(r2.updated.map((r) => r.name)).toEqual(['a']);
    expect(r2.unchanged.map((r) => r.name)).toEqual(['b']);
    await store.close();
    const again = new SqliteStore(file);
    const a2 = (await again.get({ apiVersion: 'spore.dev/v1alpha1', kind: 'Environment', name: 'a' }))!;
    expect(a2.metadata.generation).toBe(2);
    expect(a2.spec).toEqual({ runtime: { name: 'node' }, poolSize: 5 });
    expect(Number(a2.metadata.resourceVersion)).toBeGreaterThan(Number(a1.metadata.resourceVersion));
    await again.close();
  });

  it('prunes only objects carrying the inventory labels', async () => {
    const store = new SqliteStore(join(tempDir(), 'spore.db'));
    await store.apply([labelled('mine', { runtime: { name: 'node' } }), labelled('other-app', { runtime: { name: 'node' } }, { 'spore.dev/app': 'blog' }), labelled('hand-made', { runtime: { name: 'node' } }, {})]);
    const r = await store.apply([labelled('new', { runtime: { name: 'node' } })], { prune: { labels: { 'spore.dev/app': 'shop' } } });
    expect(r.pruned.map((p) => p.name)).toEqual(['mine']);
    expect((await store.list({ kind: 'Environment' })).map((o) => o.metadata.name).sort()).toEqual(['hand-made', 'new', 'other-app']);
    await store.close();
  });

  it('applies all or nothing', async () => {
    const store = new SqliteStore(join(tempDir(), 'spore.db'));
    await store.apply([labelled('keep', { runtime: { name: 'node' } })]);
    const broken = { apiVersion: 'spore.dev/v1alpha1', kind: 'Environment', metadata: {} } as any; // no name: the insert fails
    await expect(store.apply([labelled('half', { runtime: { name: 'node' } }), broken], { prune: { labels: { 'spore.dev/app': 'shop' } } })).rejects.toThrow();
    expect((await store.list()).map((o) => o.metadata.name)).toEqual(['keep']);
    await store.close();
  });

  it('tells watchers about every change after commit, and keeps status apart from spec', async () => {
    const store = new SqliteStore(join(tempDir(), 'spore.db'));
    const events: string[] = [];
    const stop = store.watch((e: WatchEvent) => events.push(`${e.type} ${e.object.metadata.name}`));
    await store.apply([labelled('a', { runtime: { name: 'node' } })]);
    await store.apply([labelled('a', { runtime: { name: 'node' } })]); // unchanged: no event
    await store.setStatus({ apiVersion: 'spore.dev/v1alpha1', kind: 'Environment', name: 'a' }, { conditions: [{ type: 'Ready', status: 'True' }] });
    await store.apply([labelled('a', { runtime: { name: 'node' }, poolSize: 1 })]);
    const a = (await store.get({ apiVersion: 'spore.dev/v1alpha1', kind: 'Environment', name: 'a' }))!;
    expect(a.status).toEqual({ conditions: [{ type: 'Ready', status: 'True' }] }); // a spec change keeps the status
    expect(a.metadata.generation).toBe(2); // status changes do not bump the generation
    await store.delete({ apiVersion: 'spore.dev/v1alpha1', kind: 'Environment', name: 'a' });
    stop();
    await store.apply([labelled('b', { runtime: { name: 'node' } })]);
    expect(events).toEqual(['ADDED a', 'MODIFIED a', 'MODIFIED a', 'DELETED a']);
    await expect(store.setStatus({ apiVersion: 'spore.dev/v1alpha1', kind: 'Environment', name: 'gone' }, {})).rejects.toThrow('cannot set status: Environment/default/gone not found');
    await store.close();
  });

  it("keeps the reconciler's status and the dataplane's conditions apart: each condition by its type", async () => {
    const store = new SqliteStore(join(tempDir(), 'spore.db'));
    const ref = { apiVersion: 'spore.dev/v1alpha1', kind: 'Environment', name: 'a' };
    await store.apply([labelled('a', { runtime: { name: 'node' } })]);
    await store.setStatus(ref, { observedGeneration: 1, conditions: [{ type: 'Ready', status: 'True' }] });
    await store.setCondition(ref, { type: 'Active', status: 'False', reason: 'Failed', message: 'broker down' });
    await store.setCondition(ref, { type: 'Active', status: 'True', reason: 'Consuming', message: 'orders' }); // replaces its own type
    // the reconciler writes its status again: the dataplane's condition stays, its own is replaced
    await store.setStatus(ref, { observedGeneration: 2, conditions: [{ type: 'Ready', status: 'False', reason: 'Failed' }] });
    expect((await store.get(ref))!.status).toEqual({
      observedGeneration: 2,
      conditions: [
        { type: 'Ready', status: 'False', reason: 'Failed' },
        { type: 'Active', status: 'True', reason: 'Consuming', message: 'orders' },
      ],
    });
    await expect(store.setCondition({ ...ref, name: 'gone' }, { type: 'Active', status: 'True' })).rejects.toThrow('cannot set status: Environment/default/gone not found');
    await store.close();
  });

  it('keeps a bounded number of log lines per function, oldest dropped first', async () => {
    const store = new SqliteStore(join(tempDir(), 'spore.db'), { logsPerFunction: 5 });
    const line = (fn: string, i: number) => ({ time: 1000 + i, namespace: 'default', function: fn, instance: 'i1', requestId: `r${i}`, stream: 'stdout' as const, line: `line ${i}` });
    store.appendLogs(Array.from({ length: 8 }, (_, i) => line('a', i)));
    store.appendLogs([line('b', 0)]);
    expect(store.queryLogs({ function: 'a' }).map((e) => e.line)).toEqual(['line 3', 'line 4', 'line 5', 'line 6', 'line 7']);
    expect(store.queryLogs({ function: 'a', since: 1006 }).map((e) => e.requestId)).toEqual(['r6', 'r7']);
    const last = store.queryLogs({ function: 'a' }).at(-2)!.id!;
    expect(store.queryLogs({ function: 'a', afterId: last }).map((e) => e.line)).toEqual(['line 7']);
    expect(store.queryLogs({ function: 'b' })).toHaveLength(1);
    await store.close();
  });

  it("keeps the reconciler's state across reopening, apart from the objects' resource versions", async () => {
    const file = join(tempDir(), 'spore.db');
    let store = new SqliteStore(file);
    store.writeState('pin:main', { revision: 'abc', head: 'def' });
    store.writeState('closed', { 'refs/pull/7/head': 'f00' });
    store.writeState('closed', undefined);
    await store.apply([labelled('a', { runtime: { name: 'node' } })]);
    await store.close();
    store = new SqliteStore(file);
    expect(store.readState('pin:main')).toEqual({ revision: 'abc', head: 'def' });
    expect(store.readState('closed')).toBeUndefined();
    expect(store.readState('resourceVersion')).toBeUndefined(); // the store's own counter is not a state key
    await store.close();
  });

  it('refuses an empty or damaged database file, naming it and what to do, rather than starting an empty store', async () => {
    const empty = join(tempDir(), 'spore.db');
    writeFileSync(empty, '');
    expect(() => new SqliteStore(empty)).toThrow(`${empty} is empty (0 bytes), not a Spore store: restore it from a backup, or delete it`);
    expect(statSync(empty).size).toBe(0); // left as it was

    const damaged = join(tempDir(), 'spore.db');
    const store = new SqliteStore(damaged);
    await store.apply([labelled('a', { runtime: { name: 'node' } })]);
    await store.close();
    const bytes = readFileSync(damaged);
    bytes.fill(0x5a, 0, 100); // the header, as a bad disk or a stray write would leave it
    writeFileSync(damaged, bytes);
    expect(() => new SqliteStore(damaged)).toThrow(new RegExp(`^${damaged.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} is damaged \\(.+\\): restore it from a backup, or delete it`));
  });
});

