/**
 * Group commit: writes arriving together share one transaction; transactions committed while the WAL is
 * being synced share the next sync; a write resolves only after its sync; one bad write fails alone; a
 * failed sync fails everything after it.
 */
import { pbkdf2 } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import BetterSqlite3 from 'better-sqlite3';
import { GroupCommitWriter } from '../../src/store/group-commit.js';
import { Store } from '../../src/store/database.js';

let store: Store | undefined;
const turn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));
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
    expect(s.writer.stats).toMatchObject({ commits: 1, syncs: 1, writes: 200, largestBatch: 200 });
  });

  it('resolves a write only after the WAL sync that follows its commit; commits made meanwhile share the next sync', async () => {
    const s = open();
    const insert = s.db.prepare('INSERT INTO t (k, v) VALUES (?, ?)');
    let resolved = 0;
    const first = s.writer.write(() => insert.run(1, 'a')).then(() => resolved++);
    s.writer.flush(); // committed to the WAL; its fdatasync now runs in the thread pool
    expect(s.db.prepare('SELECT count(*) AS n FROM t').get()).toEqual({ n: 1 });
    await Promise.resolve();
    expect(resolved).toBe(0); // committed, not yet synced: not acknowledged
    const more = [2, 3, 4].map((k) => {
      const p = s.writer.write(() => insert.run(k, 'b'));
      s.writer.flush(); // three more commits while the first sync is in flight
      return p;
    });
    expect(s.writer.stats).toMatchObject({ commits: 4, syncs: 0 });
    await Promise.all([first, ...more]);
    expect(resolved).toBe(1);
    expect(s.writer.stats).toMatchObject({ commits: 4, syncs: 2, writes: 4 });
  });

  it('while a sync runs, commits a few writes when it ends, together; many at once', async () => {
    const s = open();
    const insert = s.db.prepare('INSERT INTO t (k, v) VALUES (?, ?)');
    // Keep libuv's pool busy so that the first sync stays in flight for a while, whatever the disk.
    const poolSize = Number(process.env.UV_THREADPOOL_SIZE ?? 4);
    const busy = Array.from({ length: poolSize }, () => new Promise((resolve) => pbkdf2('x', 'y', 200_000, 32, 'sha256', resolve)));
    const first = s.writer.write(() => insert.run(0, 'first'));
    await turn(); // committed, its sync queued behind the busy pool
    expect(s.writer.stats).toMatchObject({ commits: 1, syncs: 0 });
    const few: Promise<void>[] = [];
    for (let i = 1; i <= 5; i++) {
      few.push(s.writer.write(() => insert.run(i, 'few')));
      await turn();
    }
    expect(s.writer.stats).toMatchObject({ commits: 1, syncs: 0 }); // waiting for the sync to end
    const many = Array.from({ length: 10 }, (_, i) => s.writer.write(() => insert.run(100 + i, 'many')));
    await turn();
    expect(s.writer.stats).toMatchObject({ commits: 2, syncs: 0 }); // 15 waiting: committed at once
    await Promise.all([first, ...few, ...many, ...busy]);
    expect(s.db.prepare('SELECT count(*) AS n FROM t').get()).toEqual({ n: 16 });
    expect(s.writer.stats).toMatchObject({ commits: 2, syncs: 2, writes: 16 });
  });

  it('submit() tells each write once, in order, never synchronously; a throwing callback harms no other', async () => {
    const errors: Error[] = [];
    store = Store.open(mkdtempSync(join(tmpdir(), 'coord-gc-')), (err) => errors.push(err));
    store.db.exec('CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT NOT NULL)');
    const insert = store.db.prepare('INSERT INTO t (k, v) VALUES (?, ?)');
    const told: string[] = [];
    const all = new Promise<void>((resolve) => {
      store!.writer.submit(() => insert.run(1, 'a'), (err) => told.push(`1 ${err ? 'failed' : 'ok'}`));
      store!.writer.submit(
        () => insert.run(2, 'b'),
        () => {
          told.push('2 ok');
          throw new Error('listener bug');
        },
      );
      store!.writer.submit(() => insert.run(3, null), (err) => told.push(`3 ${err ? (err as Error & { code: string }).code : 'ok'}`));
      store!.writer.submit(() => insert.run(4, 'd'), (err) => {
        told.push(`4 ${err ? 'failed' : 'ok'}`);
        resolve();
      });
    });
    expect(told).toEqual([]);
    await all;
    expect(told).toEqual(['3 COORD_ERR_STORE_WRITE', '1 ok', '2 ok', '4 ok']);
    expect(errors.map((e) => e.message)).toEqual(['listener bug']);
  });

  it('after a failed sync rejects what it covered and everything after, and says so once', async () => {
    const db = new BetterSqlite3(join(mkdtempSync(join(tmpdir(), 'coord-gc-')), 'x.db'));
    db.exec('CREATE TABLE t (k INTEGER PRIMARY KEY)');
    const failures: Error[] = [];
    // A WAL path that does not exist stands in for a disk that refuses to sync.
    const writer = new GroupCommitWriter(db, '/nonexistent/x.db-wal', () => undefined, (err) => failures.push(err));
    const insert = db.prepare('INSERT INTO t (k) VALUES (?)');
    await expect(writer.write(() => insert.run(1))).rejects.toMatchObject({ code: 'COORD_ERR_STORE_WRITE' });
    await expect(writer.write(() => insert.run(2))).rejects.toMatchObject({ code: 'COORD_ERR_STORE_WRITE' });
    expect(failures).toHaveLength(1);
    expect(writer.stats.failedWrites).toBe(1);
    db.close();
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
