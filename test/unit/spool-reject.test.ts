/**
 * Setting a message aside (docs/cloud.md, "A message the upstream refuses"): the spool side — only the
 * head moves, into a bounded dead-letter table, counted as `rejected`, durably — and the rule that
 * decides when (reject-rule.ts): only drops of a message alone in flight, proven by an immediate
 * reconnect, `limit` times in a row; an outage, a keepalive timeout or an acknowledgement starts over.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { RejectRule } from '../../src/cloud/reject-rule.js';
import { CloudSpool, REJECTED_KEEP, spoolEntryBytes } from '../../src/cloud/spool.js';
import { isCoordinatorError } from '../../src/errors.js';
import { Store } from '../../src/store/database.js';

const dirs: string[] = [];
const stores: Store[] = [];
afterEach(() => {
  for (const s of stores.splice(0)) s.close();
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function openStore(dir?: string): Store {
  const d = dir ?? mkdtempSync(join(tmpdir(), 'coord-reject-'));
  if (!dir) dirs.push(d);
  const s = Store.open(d, (err) => {
    throw err;
  });
  stores.push(s);
  return s;
}

describe('CloudSpool.reject', () => {
  it('moves the head to the dead-letter table, counts it, keeps the rest in order, and survives a reopen', async () => {
    const store = openStore();
    const spool = new CloudSpool(store, { maxBytes: 100_000 });
    const events: [number, string][] = [];
    spool.on('rejected', (seq, topic) => events.push([seq, topic]));
    const a = await spool.append('ok/1', Buffer.from('1'), 1);
    const b = await spool.append('refused/x', Buffer.from('nope'), 1);
    const c = await spool.append('ok/2', Buffer.from('2'), 1);

    // Only the oldest message may go: anything else would break the spool's order.
    await expect(spool.reject(b, 'test')).rejects.toSatisfy((err: unknown) => isCoordinatorError(err, 'COORD_ERR_CLOUD_SPOOL_INVALID'));
    await spool.ack(a);
    expect(await spool.reject(b, 'refused upstream')).toBe(true);
    expect(events).toEqual([[b, 'refused/x']]);
    // Already gone: nothing to do.
    expect(await spool.reject(b, 'again')).toBe(false);

    const expected = { messages: 1, appended: 3, acked: 1, evicted: 0, rejected: 1, bytes: spoolEntryBytes('ok/2', Buffer.from('2')) };
    expect(spool.stats).toMatchObject(expected);
    expect(spool.peek(10).map((m) => m.seq)).toEqual([c]);
    expect(spool.rejectedMessages()).toMatchObject([{ seq: b, topic: 'refused/x', bytes: spoolEntryBytes('refused/x', Buffer.from('nope')), reason: 'refused upstream' }]);

    const dir = store.path.slice(0, store.path.lastIndexOf('/'));
    store.close();
    stores.splice(stores.indexOf(store), 1);
    const again = new CloudSpool(openStore(dir), { maxBytes: 100_000 });
    expect(again.stats).toMatchObject(expected);
    expect(again.rejectedMessages()[0]).toMatchObject({ seq: b, topic: 'refused/x' });
  });

  it(`keeps at most ${REJECTED_KEEP} set-aside messages and no more than maxBytes of them, and still counts every one`, async () => {
    const spool = new CloudSpool(openStore(), { maxBytes: 50_000 });
    for (let i = 0; i < REJECTED_KEEP + 20; i++) {
      const seq = await spool.append(`refused/${i}`, Buffer.alloc(10), 1);
      await spool.reject(seq, 'test');
    }
    expect(spool.stats).toMatchObject({ rejected: REJECTED_KEEP + 20, messages: 0, bytes: 0 });
    expect(spool.rejectedMessages(1000).length).toBe(REJECTED_KEEP);
    expect(spool.rejectedMessages(1)[0]!.topic).toBe(`refused/${REJECTED_KEEP + 19}`);

    // Big ones: the byte bound keeps fewer.
    for (let i = 0; i < 5; i++) await spool.reject(await spool.append(`big/${i}`, Buffer.alloc(20_000), 1), 'test');
    const kept = spool.rejectedMessages(1000);
    expect(kept.reduce((n, m) => n + m.bytes, 0)).toBeLessThanOrEqual(50_000);
    expect(kept[0]!.topic).toBe('big/4');
  });
});

describe('RejectRule', () => {
  const drop = (rule: RejectRule, seq: number, options: { alone?: boolean; lastSent?: number; keepaliveTimeout?: boolean } = {}): string =>
    rule.dropped(seq, options.lastSent ?? seq, options.alone ?? true, options.keepaliveTimeout ?? false);

  it('sets a message aside after `limit` drops in a row while it was alone in flight, each proven by an immediate reconnect', () => {
    const rule = new RejectRule(3);
    for (let i = 1; i <= 3; i++) {
      expect(rule.due(7)).toBe(false);
      expect(drop(rule, 7)).toBe('counted');
      // Not yet: the drop counts once the upstream has taken the gateway back.
      expect(rule.due(7)).toBe(false);
      expect(rule.connected()).toEqual({ seq: 7, drops: i });
    }
    expect(rule.due(7)).toBe(true);
    expect(rule.due(8)).toBe(false);
    rule.forget(7);
    expect(rule.due(7)).toBe(false);
    expect(rule.status().suspect).toBeNull();
  });

  it('blames nobody for a drop with a window in flight, and sends that window again one message at a time', () => {
    const rule = new RejectRule(1);
    expect(drop(rule, 10, { alone: false, lastSent: 20 })).toBe('isolating');
    expect(rule.connected()).toBeUndefined();
    expect(rule.due(10)).toBe(false);
    expect([9, 10, 20, 21].map((s) => rule.isolating(s))).toEqual([true, true, true, false]);
    // One of them alone, dropped on: now it counts.
    drop(rule, 12);
    rule.connected();
    expect(rule.due(12)).toBe(true);
  });

  it('starts over after an outage (a failed attempt), a keepalive timeout, an acknowledgement, or another message', () => {
    const rule = new RejectRule(2);
    drop(rule, 5);
    rule.connected();
    drop(rule, 5);
    rule.attemptFailed(); // the upstream was away: an outage, not a refusal
    expect(rule.connected()).toBeUndefined();
    expect(rule.status().suspect).toBeNull();

    drop(rule, 5);
    rule.connected();
    expect(drop(rule, 5, { keepaliveTimeout: true })).toBe('ignored');
    expect(rule.status().suspect).toBeNull();

    drop(rule, 5);
    rule.connected();
    rule.acked(5);
    expect(rule.status().suspect).toBeNull();

    drop(rule, 5);
    rule.connected();
    drop(rule, 6);
    rule.connected();
    expect(rule.status().suspect).toEqual({ seq: 6, drops: 1 });
    expect(rule.due(6)).toBe(false);
  });

  it('with limit 0 never sets anything aside', () => {
    const rule = new RejectRule(0);
    for (let i = 0; i < 10; i++) {
      drop(rule, 1);
      rule.connected();
    }
    expect(rule.due(1)).toBe(false);
  });
});
