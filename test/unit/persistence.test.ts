/**
 * The durable aedes persistence: aedes-persistence's own conformance suite, and a reopen of the
 * database restoring exactly what was acknowledged.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Aedes, Client } from 'aedes';
import type { AedesPacket } from 'aedes-packet';
import { describe, expect, it } from 'vitest';
import { DurablePersistence } from '../../src/broker/persistence.js';
import { Store } from '../../src/store/database.js';

const fakeBroker = { id: 'broker-a', counter: 0 } as unknown as Aedes;
const restoreErrors: string[] = [];
const options = {
  maySubscribe: (_c: Client, topic: string) => !topic.startsWith('$SYS'),
  maxQueuedPerSession: 1000,
  onQueueFull: () => undefined,
  onRestoreError: (what: string) => void restoreErrors.push(what),
};
const persistent = (id: string): Client => ({ id, clean: false }) as Client;

/** The fields of a stored PUBLISH the assertions look at. */
type Stored = { topic: string; payload: Buffer; messageId?: number };

function packet(topic: string, payload: string, counter: number, extra: Partial<AedesPacket> = {}): AedesPacket {
  return { cmd: 'publish', topic, payload: Buffer.from(payload), qos: 1, retain: false, dup: false, brokerId: 'broker-a', brokerCounter: counter, ...extra } as AedesPacket;
}

async function drain<T>(stream: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of stream) out.push(x);
  return out;
}

describe('DurablePersistence', () => {
  it("passes aedes-persistence's conformance suite (abstract.js)", () => {
    const run = spawnSync(process.execPath, ['--test', '--test-reporter=tap', 'test/conformance/aedes-persistence.mjs'], { encoding: 'utf8', timeout: 60_000 });
    expect(run.stdout).toMatch(/# pass \d+/);
    expect(run.stdout).toContain('# fail 0');
    expect(run.status).toBe(0);
  });

  it('answers which sessions a topic reaches without a lookup while none subscribed durably, and exactly once one has', async () => {
    const store = Store.open(mkdtempSync(join(tmpdir(), 'coord-subs-')), () => undefined);
    try {
      const p = new DurablePersistence(store, options);
      await p.setup(fakeBroker);
      expect(await p.subscriptionsByTopic('a/b')).toEqual([]);
      const a = persistent('a');
      const b = persistent('b');
      await p.addSubscriptions(a, [{ topic: 'a/+', qos: 1 }] as never);
      await p.addSubscriptions(b, [{ topic: 'a/#', qos: 1 }] as never);
      expect((await p.subscriptionsByTopic('a/b')).map((s) => s.clientId).sort()).toEqual(['a', 'b']);
      await p.removeSubscriptions(a, ['a/+']);
      await new Promise((resolve) => setImmediate(resolve)); // the recount after a removal
      expect((await p.subscriptionsByTopic('a/b')).map((s) => s.clientId)).toEqual(['b']);
      // A removal racing an addition must not hide the addition.
      const cleaning = p.cleanSubscriptions(b);
      await p.addSubscriptions(a, [{ topic: 'a/b', qos: 1 }] as never);
      await cleaning;
      await new Promise((resolve) => setImmediate(resolve));
      expect((await p.subscriptionsByTopic('a/b')).map((s) => s.clientId)).toEqual(['a']);
      await p.cleanSubscriptions(a);
      await new Promise((resolve) => setImmediate(resolve));
      expect(await p.subscriptionsByTopic('a/b')).toEqual([]);
    } finally {
      store.close();
    }
  });

  it('restores retained messages, subscriptions, queues with packet ids, inbound QoS 2 and orphaned wills', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'coord-restore-'));
    const store = Store.open(dir, () => undefined);
    const p = new DurablePersistence(store, options);
    await p.setup(fakeBroker);

    await p.storeRetained(packet('cfg/a', 'A', 1, { retain: true, qos: 0 }));
    await p.storeRetained(packet('cfg/b', 'B', 2, { retain: true, qos: 0 }));
    await p.storeRetained(packet('cfg/b', '', 3, { retain: true, qos: 0 })); // empty payload clears it
    const relay = persistent('relay');
    // aedes hands over every filter of the SUBSCRIBE, refused ones included ($SYS/# here).
    await p.addSubscriptions(relay, [{ topic: 'cmd/#', qos: 1 }, { topic: 'x/y', qos: 0 }, { topic: '$SYS/#', qos: 1 }] as never);
    await p.removeSubscriptions(relay, ['x/y']);
    await p.outgoingEnqueueCombi([{ clientId: 'relay' }], packet('cmd/1', 'one', 10));
    await p.outgoingEnqueueCombi([{ clientId: 'relay' }], packet('cmd/2', 'two', 11));
    await p.outgoingEnqueueCombi([{ clientId: 'relay' }], packet('cmd/3', 'three', 12));
    // cmd/1 was sent as packet id 41 and acknowledged; cmd/2 was sent as 42 and not yet.
    await p.outgoingUpdate(relay, { ...packet('cmd/1', 'one', 10), messageId: 41 });
    await p.outgoingUpdate(relay, { ...packet('cmd/2', 'two', 11), messageId: 42 });
    await p.outgoingClearMessageId(relay, { cmd: 'puback', messageId: 41 } as never);
    // A QoS 2 delivery half done: PUBREC received, PUBREL sent, PUBCOMP outstanding.
    await p.outgoingEnqueueCombi([{ clientId: 'relay' }], { ...packet('cmd/q2', 'two-phase', 13), qos: 2 } as AedesPacket);
    await p.outgoingUpdate(relay, { ...packet('cmd/q2', 'two-phase', 13), qos: 2, messageId: 43 } as AedesPacket);
    await p.outgoingUpdate(relay, { cmd: 'pubrel', messageId: 43 } as unknown as AedesPacket);
    await p.incomingStorePacket(relay, { ...packet('up/q2', 'q2', 20), qos: 2, messageId: 7 } as AedesPacket);
    await p.incomingStorePacket(relay, { ...packet('up/q2', 'done', 21), qos: 2, messageId: 8 } as AedesPacket);
    await p.incomingDelPacket(relay, { messageId: 8 } as AedesPacket);
    await p.putWill(relay, { ...packet('status/relay', 'offline', 30), qos: 1 } as AedesPacket);
    store.writer.flush();
    store.close();

    const store2 = Store.open(dir, () => undefined);
    const q = new DurablePersistence(store2, options);
    await q.setup({ id: 'broker-b', counter: 0 } as unknown as Aedes);

    const retained = await drain(q.createRetainedStreamCombi(['cfg/#']) as AsyncIterable<Stored>);
    expect(retained.map((r) => [r.topic, r.payload.toString()])).toEqual([['cfg/a', 'A']]);
    expect(await q.subscriptionsByClient(relay)).toEqual([{ topic: 'cmd/#', qos: 1 }]);
    expect((await q.subscriptionsByTopic('cmd/9')).map((s) => s.clientId)).toEqual(['relay']);
    const queued = await drain(q.outgoingStream(relay) as AsyncIterable<Stored & { cmd: string }>);
    expect(queued.map((m) => [m.cmd, m.topic, m.messageId])).toEqual([
      ['publish', 'cmd/2', 42], // keeps its packet id: the client may have seen it [MQTT-4.4.0-1]
      ['publish', 'cmd/3', undefined],
      ['pubrel', '', 43], // the QoS 2 flow resumes where it was
    ]);
    expect(restoreErrors).toEqual([]);
    expect(((await q.incomingGetPacket(relay, { messageId: 7 } as AedesPacket)) as Stored).topic).toBe('up/q2');
    await expect(q.incomingGetPacket(relay, { messageId: 8 } as AedesPacket)).rejects.toThrow();
    const wills = q.takeOrphanedWills();
    expect(wills.map((w) => [w.clientId, w.packet.topic, (w.packet as unknown as Stored).payload.toString()])).toEqual([['relay', 'status/relay', 'offline']]);
    expect(q.takeOrphanedWills()).toEqual([]);
    store2.close();
  });

  it('reports every message of a replay and, for the broker, marks the ones already sent as DUP without changing them', async () => {
    const store = Store.open(mkdtempSync(join(tmpdir(), 'coord-replay-')), () => undefined);
    const replayed: [string, number][] = [];
    const p = new DurablePersistence(store, { ...options, markRedeliveries: true, onReplay: (c, pk) => void replayed.push([c.id, pk.brokerCounter]) });
    await p.setup(fakeBroker);
    const relay = persistent('relay');
    await p.outgoingEnqueueCombi([{ clientId: 'relay' }], packet('cmd/1', 'one', 1));
    await p.outgoingEnqueueCombi([{ clientId: 'relay' }], packet('cmd/2', 'two', 2));
    await p.outgoingUpdate(relay, { ...packet('cmd/1', 'one', 1), messageId: 7 }); // sent, not acknowledged

    const first = await drain(p.outgoingStream(relay) as AsyncIterable<Stored & { dup: boolean }>);
    expect(first.map((m) => [m.topic, m.messageId, m.dup])).toEqual([
      ['cmd/1', 7, true], // [MQTT-3.3.1-1] a re-delivery
      ['cmd/2', undefined, false],
    ]);
    expect(replayed).toEqual([
      ['relay', 1],
      ['relay', 2],
    ]);
    store.close();
    // Off by default: aedes-persistence's conformance suite expects the stored packets back unchanged.
    const plainStore = Store.open(mkdtempSync(join(tmpdir(), 'coord-replay-')), () => undefined);
    const plain = new DurablePersistence(plainStore, options);
    await plain.setup(fakeBroker);
    await plain.outgoingEnqueueCombi([{ clientId: 'relay' }], packet('cmd/1', 'one', 1));
    await plain.outgoingUpdate(relay, { ...packet('cmd/1', 'one', 1), messageId: 7 });
    expect((await drain(plain.outgoingStream(relay) as AsyncIterable<Stored & { dup: boolean }>)).map((m) => m.dup)).toEqual([false]);
    plainStore.close();
  });

  it('does not take a clear without a packet id (aedes not forwarding a live copy) for some other queued message', async () => {
    const store = Store.open(mkdtempSync(join(tmpdir(), 'coord-noid-')), () => undefined);
    const p = new DurablePersistence(store, options);
    await p.setup(fakeBroker);
    const relay = persistent('relay');
    await p.outgoingEnqueueCombi([{ clientId: 'relay' }], packet('cmd/1', 'one', 1));
    await p.outgoingEnqueueCombi([{ clientId: 'relay' }], packet('cmd/2', 'two', 2));
    // What Client#deliverQoS passes when authorizeForward refuses cmd/2: the live packet, no packet id.
    expect(await p.outgoingClearMessageId(relay, packet('cmd/2', 'two', 2))).toBeUndefined();
    expect((await drain(p.outgoingStream(relay) as AsyncIterable<Stored>)).map((m) => m.topic)).toEqual(['cmd/1', 'cmd/2']);
    store.close();
  });

  it('bounds the queue of a persistent session: the overflow is dropped for that session and counted', async () => {
    const store = Store.open(mkdtempSync(join(tmpdir(), 'coord-queue-')), () => undefined);
    const full: string[] = [];
    const p = new DurablePersistence(store, { ...options, maxQueuedPerSession: 2, onQueueFull: (id, topic) => void full.push(`${id} ${topic}`) });
    await p.setup(fakeBroker);
    const sleepy = persistent('sleepy');
    await p.addSubscriptions(sleepy, [{ topic: 'news/#', qos: 1 }] as never);
    const awake = persistent('awake');
    await p.addSubscriptions(awake, [{ topic: 'news/#', qos: 1 }] as never);
    for (let i = 1; i <= 3; i++) await p.outgoingEnqueueCombi([{ clientId: 'sleepy' }, { clientId: 'awake' }], packet(`news/${i}`, `n${i}`, i));
    // awake drains one message in between; sleepy does not.
    const first = await drain(p.outgoingStream(awake) as AsyncIterable<Stored>);
    expect(first.map((m) => m.topic)).toEqual(['news/1', 'news/2']);
    expect(full).toEqual(['sleepy news/3', 'awake news/3']);
    expect(p.droppedMessages).toBe(2);
    await p.outgoingUpdate(awake, { ...packet('news/1', 'n1', 1), messageId: 1 });
    await p.outgoingClearMessageId(awake, { cmd: 'puback', messageId: 1 } as never);
    await p.outgoingEnqueueCombi([{ clientId: 'awake' }], packet('news/4', 'n4', 4));
    expect((await drain(p.outgoingStream(awake) as AsyncIterable<Stored>)).map((m) => m.topic)).toEqual(['news/2', 'news/4']);
    store.close();
  });
});
