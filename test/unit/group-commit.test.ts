/** Group commit: writes arriving together share one transaction; one bad write fails alone. */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { Store } from '../../src/store/database.js';

let store: Store | undefined;
afterEach(() => store?.close());

function open(): Store {
  store = Store.open(mkdtempSync(join(tmpdir(), 'coord-gc-')), () => undefined);
  store.db.exec('CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT NOT NULL)');
  return store;
}

describe('GroupCommitWriter', () => {
  it('commits writes queued in the same turn in one transaction, resolving only after commit', async () => {
    const s = open();
    const insert = s.db.prepare('INSERT INTO t (k, v) VALUES (?, ?)');
    const writes = Array.from({ length: 200 }, (_, i) => s.writer.write(() => insert.run(i, `v${i}`)));
    expect(s.writer.pending).toBe(200);
    // Nothing is visible before the batch commits.
    expect(s.db.prepare('SELECT count(*) AS n FROM t').get()).toEqual({ n: 0 });
    await Promise.all(writes);
    expect(s.db.prepare('SELECT count(*) AS n FROM t').get()).toEqual({ n: 200 });
    expect(s.writer.stats).toMatchObject({ commits: 1, writes: 200, largestBatch: 200 });
  });

  it('isolates a failing write: it rejects with COORD_ERR_STORE_WRITE, its neighbours commit', async () => {
    const s = open();
    const insert = s.db.prepare('INSERT INTO t (k, v) VALUES (?, ?)');
    const ok1 = s.writer.write(() => insert.run(1, 'a'));
    const bad = s.writer.write(() => insert.run(2, null));
    const ok2 = s.writer.write(() => insert.run(3, 'c'));
    await expect(bad).rejects.toMatchObject({ code: 'COORD_ERR_STORE_WRITE' });
    await Promise.all([ok1, ok2]);
    expect(s.db.prepare('SELECT k FROM t ORDER BY k').all()).toEqual([{ k: 1 }, { k: 3 }]);
    expect(s.health().ok).toBe(false);
    expect(s.health().commit.failedWrites).toBe(1);
  });

  it('flushes on close and refuses writes afterwards', async () => {
    const s = open();
    const insert = s.db.prepare('INSERT INTO t (k, v) VALUES (?, ?)');
    const pending = s.writer.write(() => insert.run(1, 'a'));
    s.writer.close();
    await pending;
    await expect(s.writer.write(() => insert.run(2, 'b'))).rejects.toMatchObject({ code: 'COORD_ERR_STORE_CLOSED' });
  });
});

describe('Store', () => {
  it('refuses a database written by a newer schema', () => {
    const dir = mkdtempSync(join(tmpdir(), 'coord-schema-'));
    const s = Store.open(dir, () => undefined);
    s.db.pragma('user_version = 999');
    s.close();
    expect(() => Store.open(dir, () => undefined)).toThrow(expect.objectContaining({ code: 'COORD_ERR_STORE_OPEN' }) as Error);
  });
});
