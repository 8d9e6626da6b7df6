/**
 * The cloud spool on a real SQLite file: order, acks, eviction of the oldest (counted), refusal of an
 * oversized message, byte accounting, batch reads, and everything — counters included — kept across a
 * close and reopen of the store.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { CloudSpool, spoolEntryBytes, SPOOL_ENTRY_OVERHEAD_BYTES, type SpooledMessage } from '../../src/cloud/spool.js';
import { isCoordinatorError } from '../../src/errors.js';
import { Store } from '../../src/store/database.js';

const dirs: string[] = [];
const stores: Store[] = [];
afterEach(() => {
  for (const s of stores.splice(0)) s.close();
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'coord-spool-'));
  dirs.push(d);
  return d;
}

function openStore(dir: string): Store {
  const s = Store.open(dir, (err) => {
    throw err;
  });
  stores.push(s);
  return s;
}

function closeStore(s: Store): void {
  s.close();
  stores.splice(stores.indexOf(s), 1);
}

const msg = (i: number): { topic: string; payload: Buffer } => ({ topic: `gw/telemetry/${i % 3}`, payload: Buffer.from(`message ${i} `.repeat(1 + (i % 4))) });
const bytesOf = (i: number): number => spoolEntryBytes(msg(i).topic, msg(i).payload);
const indexOf = (m: SpooledMessage): number => Number(/^message (\d+) /.exec(m.payload.toString())![1]);

async function appendAll(spool: CloudSpool, from: number, to: number): Promise<number[]> {
  const seqs: number[] = [];
  for (let i = from; i < to; i++) {
    const { topic, payload } = msg(i);
    seqs.push(await spool.append(topic, payload, (i % 2) as 0 | 1));
  }
  return seqs;
}

/** Every message in the spool, read in batches of `batch`. */
function drainView(spool: CloudSpool, batch: number): SpooledMessage[] {
  const all: SpooledMessage[] = [];
  for (let after = 0; ; ) {
    const got = spool.peek(batch, after);
    expect(got.length).toBeLessThanOrEqual(batch);
    if (got.length === 0) return all;
    all.push(...got);
    after = got[got.length - 1]!.seq;
  }
}

function thrown(fn: () => unknown): unknown {
  try {
    fn();
  } catch (err) {
    return err;
  }
  return expect.fail('expected a throw');
}

async function rejection(p: Promise<unknown>): Promise<unknown> {
  return p.then(
    () => expect.fail('expected a rejection'),
    (err: unknown) => err,
  );
}

describe('CloudSpool', () => {
  it('gives messages back in append order with topic, payload, QoS and time intact', async () => {
    const spool = new CloudSpool(openStore(tempDir()), { maxBytes: 1 << 20 });
    const before = Date.now();
    const seqs = await appendAll(spool, 0, 20);
    expect(seqs).toEqual([...seqs].sort((a, b) => a - b));
    expect(new Set(seqs).size).toBe(20);
    const got = spool.peek(100);
    expect(got.map((m) => m.seq)).toEqual(seqs);
    got.forEach((m, i) => {
      expect(m.topic).toBe(msg(i).topic);
      expect(m.payload.equals(msg(i).payload)).toBe(true);
      expect(m.qos).toBe(i % 2);
      expect(m.enqueuedAt).toBeGreaterThanOrEqual(before);
      expect(m.enqueuedAt).toBeLessThanOrEqual(Date.now());
    });
    expect(spool.peek(5).map((m) => m.seq)).toEqual(seqs.slice(0, 5));
  });

  it('keeps order for appends made in the same turn (they share one commit)', async () => {
    const store = openStore(tempDir());
    const spool = new CloudSpool(store, { maxBytes: 1 << 20 });
    const commits = store.writer.stats.commits;
    const seqs = await Promise.all(Array.from({ length: 500 }, (_, i) => spool.append(msg(i).topic, msg(i).payload, 1)));
    expect(store.writer.stats.commits - commits).toBe(1);
    expect(seqs).toEqual([...seqs].sort((a, b) => a - b));
    expect(drainView(spool, 64).map(indexOf)).toEqual(Array.from({ length: 500 }, (_, i) => i));
  });

  it('stores an empty payload and a multi-byte topic faithfully', async () => {
    const spool = new CloudSpool(openStore(tempDir()), { maxBytes: 4096 });
    await spool.append('gw/øst/温度', Buffer.alloc(0), 0);
    const [m] = spool.peek(1);
    expect(m!.topic).toBe('gw/øst/温度');
    expect(Buffer.isBuffer(m!.payload)).toBe(true);
    expect(m!.payload.length).toBe(0);
    expect(spool.stats.bytes).toBe(Buffer.byteLength('gw/øst/温度') + SPOOL_ENTRY_OVERHEAD_BYTES);
  });

  it('copies the payload: reusing the buffer after append does not change the spooled message', async () => {
    const spool = new CloudSpool(openStore(tempDir()), { maxBytes: 4096 });
    const buf = Buffer.from('original');
    const done = spool.append('t', buf, 1);
    buf.write('CHANGED!');
    await done;
    expect(spool.peek(1)[0]!.payload.toString()).toBe('original');
  });

  it('reads in batches after a given seq, never more than asked', async () => {
    const spool = new CloudSpool(openStore(tempDir()), { maxBytes: 1 << 20 });
    const seqs = await Promise.all(Array.from({ length: 1000 }, (_, i) => spool.append(msg(i).topic, msg(i).payload, 1)));
    for (const batch of [1, 7, 64, 1000, 5000]) expect(drainView(spool, batch).map((m) => m.seq)).toEqual(seqs);
    expect(spool.peek(3, seqs[500]).map((m) => m.seq)).toEqual(seqs.slice(501, 504));
    expect(spool.peek(3, seqs[999])).toEqual([]);
    expect(isCoordinatorError(thrown(() => spool.peek(0)), 'COORD_ERR_CLOUD_SPOOL_INVALID')).toBe(true);
  });

  it('ack removes every message up to and including the seq, and accounts for it', async () => {
    const spool = new CloudSpool(openStore(tempDir()), { maxBytes: 1 << 20 });
    const seqs = await appendAll(spool, 0, 10);
    await spool.ack(seqs[3]!);
    expect(spool.peek(100).map((m) => m.seq)).toEqual(seqs.slice(4));
    const expectedBytes = (from: number): number => Array.from({ length: 10 - from }, (_, k) => bytesOf(from + k)).reduce((a, b) => a + b, 0);
    expect(spool.stats).toMatchObject({ messages: 6, acked: 4, appended: 10, evicted: 0, bytes: expectedBytes(4) });
    // Acking again (or something older) changes nothing.
    await spool.ack(seqs[3]!);
    await spool.ack(seqs[1]!);
    expect(spool.stats).toMatchObject({ messages: 6, acked: 4, bytes: expectedBytes(4) });
    await spool.ack(seqs[9]!);
    expect(spool.peek(100)).toEqual([]);
    expect(spool.stats).toMatchObject({ messages: 0, acked: 10, bytes: 0, oldestEnqueuedAt: null });
  });

  it('refuses to ack past the newest durable message', async () => {
    const spool = new CloudSpool(openStore(tempDir()), { maxBytes: 1 << 20 });
    const [last] = await appendAll(spool, 0, 1);
    const err = await rejection(spool.ack(last! + 1));
    expect(isCoordinatorError(err, 'COORD_ERR_CLOUD_SPOOL_INVALID')).toBe(true);
    expect(spool.stats.messages).toBe(1);
  });

  it('evicts the oldest messages to make room, counts them and says so', async () => {
    const size = spoolEntryBytes('t/x', Buffer.alloc(100));
    const spool = new CloudSpool(openStore(tempDir()), { maxBytes: size * 10 });
    const evictions: [number, number][] = [];
    spool.on('evicted', (count, through) => evictions.push([count, through]));
    const seqs: number[] = [];
    for (let i = 0; i < 10; i++) seqs.push(await spool.append('t/x', Buffer.alloc(100, i), 1));
    expect(spool.stats).toMatchObject({ messages: 10, bytes: size * 10, evicted: 0 });
    seqs.push(await spool.append('t/x', Buffer.alloc(100, 10), 1));
    expect(evictions).toEqual([[1, seqs[0]]]);
    // A message three times the size pushes out the three oldest that are left.
    const big = spoolEntryBytes('t/x', Buffer.alloc(3 * size - SPOOL_ENTRY_OVERHEAD_BYTES - 3));
    expect(big).toBe(3 * size);
    seqs.push(await spool.append('t/x', Buffer.alloc(3 * size - SPOOL_ENTRY_OVERHEAD_BYTES - 3, 11), 1));
    expect(evictions).toEqual([
      [1, seqs[0]],
      [3, seqs[3]],
    ]);
    const left = spool.peek(100);
    expect(left.map((m) => m.seq)).toEqual(seqs.slice(4));
    expect(left.map((m) => m.payload[0])).toEqual([4, 5, 6, 7, 8, 9, 10, 11]);
    expect(spool.stats).toMatchObject({ messages: 8, bytes: size * 10, evicted: 4, appended: 12, acked: 0 });
  });

  it('keeps bytes within the limit and the counters consistent under many appends in one turn', async () => {
    const store = openStore(tempDir());
    const spool = new CloudSpool(store, { maxBytes: 5000 });
    await Promise.all(Array.from({ length: 300 }, (_, i) => spool.append(msg(i).topic, msg(i).payload, 1)));
    const view = drainView(spool, 50);
    const s = spool.stats;
    expect(s.bytes).toBeLessThanOrEqual(5000);
    expect(s.bytes).toBe(view.reduce((a, m) => a + spoolEntryBytes(m.topic, m.payload), 0));
    expect(s.messages).toBe(view.length);
    expect(s.appended - s.acked - s.evicted).toBe(view.length);
    // What is left is the newest suffix, in order.
    expect(view.map(indexOf)).toEqual(Array.from({ length: view.length }, (_, k) => 300 - view.length + k));
    expect(s.evicted).toBe(300 - view.length);
    expect(store.db.prepare('SELECT count(*) AS n FROM cloud_spool').get()).toEqual({ n: view.length });
  });

  it('refuses a message larger than the whole limit, and changes nothing', async () => {
    const spool = new CloudSpool(openStore(tempDir()), { maxBytes: 1000 });
    await appendAll(spool, 0, 3);
    const before = spool.stats;
    const err = await rejection(spool.append('t', Buffer.alloc(1000), 1));
    expect(isCoordinatorError(err, 'COORD_ERR_CLOUD_SPOOL_TOO_LARGE')).toBe(true);
    expect((err as Error).message).toMatch(/1033 bytes.*1000 bytes/);
    expect(spool.stats).toEqual(before);
    // Exactly the limit fits, and evicts everything else.
    await spool.append('t', Buffer.alloc(1000 - 1 - SPOOL_ENTRY_OVERHEAD_BYTES), 1);
    expect(spool.stats).toMatchObject({ messages: 1, bytes: 1000, evicted: 3 });
  });

  it('refuses topics and QoS MQTT cannot carry', async () => {
    const spool = new CloudSpool(openStore(tempDir()), { maxBytes: 1 << 20 });
    for (const topic of ['', 'a/+/b', 'a/#', 'a\u0000b', 'bad\uD800', 'x'.repeat(65_536)]) {
      const err = await rejection(spool.append(topic, Buffer.from('x'), 1));
      expect(isCoordinatorError(err, 'COORD_ERR_CLOUD_SPOOL_INVALID'), JSON.stringify(topic.slice(0, 20))).toBe(true);
    }
    const err = await rejection(spool.append('a', Buffer.from('x'), 2 as 0 | 1));
    expect(isCoordinatorError(err, 'COORD_ERR_CLOUD_SPOOL_INVALID')).toBe(true);
    expect(spool.stats.appended).toBe(0);
    expect(isCoordinatorError(thrown(() => new CloudSpool(openStore(tempDir()), { maxBytes: 0 })), 'COORD_ERR_CONFIG_INVALID')).toBe(true);
  });

  it("emits 'appended' once the message is durable and peekable", async () => {
    const store = openStore(tempDir());
    const spool = new CloudSpool(store, { maxBytes: 1 << 20 });
    const seen: { seq: number; peeked: number[]; pending: number }[] = [];
    spool.on('appended', (seq) => seen.push({ seq, peeked: spool.peek(10).map((m) => m.seq), pending: store.writer.pending }));
    const seq = await spool.append('t', Buffer.from('x'), 1);
    expect(seen).toEqual([{ seq, peeked: [seq], pending: 0 }]);
  });

  it('hands out only durable messages: one committed but not yet synced is not peeked', async () => {
    const store = openStore(tempDir());
    const spool = new CloudSpool(store, { maxBytes: 1 << 20 });
    const first = await spool.append('t', Buffer.from('1'), 1);
    const second = spool.append('t', Buffer.from('2'), 1);
    store.writer.flush(); // committed to the WAL; its fdatasync runs in the thread pool
    expect(store.db.prepare('SELECT count(*) AS n FROM cloud_spool').get()).toEqual({ n: 2 });
    expect(spool.peek(10).map((m) => m.seq)).toEqual([first]);
    const seq2 = await second;
    expect(spool.peek(10).map((m) => m.seq)).toEqual([first, seq2]);
  });

  it('keeps messages, order and counters across a close and reopen, and never reuses a seq', async () => {
    const dir = tempDir();
    let store = openStore(dir);
    let spool = new CloudSpool(store, { maxBytes: 3000 });
    await Promise.all(Array.from({ length: 100 }, (_, i) => spool.append(msg(i).topic, msg(i).payload, (i % 2) as 0 | 1)));
    const firstSeqs = spool.peek(1000).map((m) => m.seq);
    await spool.ack(firstSeqs[4]!);
    const before = spool.stats;
    const view = spool.peek(1000);
    expect(before.evicted).toBeGreaterThan(0);
    expect(before.acked).toBe(5);
    closeStore(store);

    store = openStore(dir);
    spool = new CloudSpool(store, { maxBytes: 3000 });
    expect(spool.stats).toEqual(before);
    expect(spool.peek(1000)).toEqual(view);
    // Ack everything, reopen: the next seq still continues after the last one handed out.
    const last = view[view.length - 1]!.seq;
    await spool.ack(last);
    closeStore(store);
    store = openStore(dir);
    spool = new CloudSpool(store, { maxBytes: 3000 });
    expect(spool.stats).toMatchObject({ messages: 0, bytes: 0, appended: 100, acked: before.acked + view.length, evicted: before.evicted });
    const next = await spool.append('t', Buffer.from('after'), 1);
    expect(next).toBeGreaterThan(last);
    expect(spool.peek(10).map((m) => m.payload.toString())).toEqual(['after']);
  });

  it('applies a lowered limit at the next append', async () => {
    const dir = tempDir();
    let store = openStore(dir);
    let spool = new CloudSpool(store, { maxBytes: 10_000 });
    await appendAll(spool, 0, 50);
    closeStore(store);
    store = openStore(dir);
    spool = new CloudSpool(store, { maxBytes: 1000 });
    await spool.append('t', Buffer.from('new'), 1);
    const s = spool.stats;
    expect(s.bytes).toBeLessThanOrEqual(1000);
    expect(s.messages + s.evicted).toBe(51);
    expect(spool.peek(1000).at(-1)!.payload.toString()).toBe('new');
  });
});
