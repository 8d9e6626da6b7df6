/**
 * Durable aedes persistence: aedes-persistence's in-memory implementation (its qlobber trie keeps topic
 * matching fast) with every change mirrored into the embedded database through group commit.
 *
 * What must be durable before aedes acknowledges it is awaited: a QoS 1/2 message queued for a
 * persistent session (the publisher's PUBACK waits for it, see ./puback-gate.ts), retained messages,
 * subscriptions of persistent sessions (SUBACK/UNSUBACK), the discarding of a session (CONNACK), every
 * step of QoS 2 in both directions (PUBREC, PUBREL, PUBCOMP: losing one would duplicate or swallow an
 * exactly-once message) and wills. Bookkeeping that only narrows QoS 1 redelivery (packet ids assigned,
 * PUBACKs received) is queued in order but not awaited: losing it in a crash means a QoS 1 message is
 * delivered again, which QoS 1 allows [MQTT-4.3.2].
 *
 * Memory and database stay in step because each method mutates memory and queues its database write in
 * the same synchronous segment, so both see operations in the same order. The SQL that mirrors
 * MemoryPersistence#outgoingUpdate's matching rules is the one place where the two implement the same
 * decision twice; restore therefore never trusts it and re-creates the queue row by row.
 */
import { Readable } from 'node:stream';
import type { Aedes, Client } from 'aedes';
import type { AedesPacket } from 'aedes-packet';
import MemoryPersistence from 'aedes-persistence/asyncPersistence.js';
import type { Store } from '../store/database.js';

type Packet = AedesPacket & Record<string, unknown>;
type Subscription = { topic: string; qos: number } & Record<string, unknown>;

interface PacketRow {
  topic: string;
  payload: Buffer;
  meta: string;
}

/** Splits a packet into the columns we store: topic, payload bytes, the rest as JSON. */
function encode(packet: Packet): PacketRow {
  const { topic, payload, ...rest } = packet;
  const bytes = Buffer.isBuffer(payload) ? payload : Buffer.from((payload as string | undefined) ?? '');
  return { topic: (topic as string | undefined) ?? '', payload: bytes, meta: JSON.stringify(rest) };
}

function decode(row: PacketRow): Packet {
  return { ...(JSON.parse(row.meta) as Packet), topic: row.topic, payload: row.payload };
}

/** A will left by a client of a previous run that ended without closing its connections. */
export interface OrphanedWill {
  readonly clientId: string;
  readonly packet: Packet;
}

/** Options of the durable persistence. */
export interface DurablePersistenceOptions {
  /** Whether `client` may hold a subscription to `topic` (aedes hands refused filters to persistence too). */
  readonly maySubscribe: (client: Client, topic: string) => boolean;
  /** Most messages queued for one persistent session; more are dropped for that session and counted. */
  readonly maxQueuedPerSession: number;
  /** Told about every message dropped because a session's queue was full. */
  readonly onQueueFull: (clientId: string, topic: string, dropped: number) => void;
  /** Told about a stored row that could not be restored (it is skipped, never fatal). */
  readonly onRestoreError: (what: string, err: unknown) => void;
  /**
   * Told when a message's offline queueing is durable. aedes queues every QoS 1/2 message here (with no
   * sessions to queue for, too) as the last durable step of its publish pipeline, after the retained copy.
   */
  readonly onQueued?: (brokerId: string, brokerCounter: number) => void;
  /**
   * Replay a queued PUBLISH that already has a packet id with DUP set [MQTT-3.3.1-1] (aedes never sets
   * it). Off by default: aedes-persistence's conformance suite expects outgoingStream to return the
   * stored packets unchanged; the stored packet is never changed either way.
   */
  readonly markRedeliveries?: boolean;
  /** Told about every message aedes replays from a session's queue (see outgoingStream), as it is read. */
  readonly onReplay?: (client: Client, packet: AedesPacket) => void;
}

/** aedes persistence backed by memory for speed and the embedded database for durability. */
export class DurablePersistence extends MemoryPersistence {
  readonly #store: Store;
  readonly #sql: ReturnType<typeof prepare>;
  readonly #options: DurablePersistenceOptions;
  /** Client ids that own rows (subscriptions, queue, inbound QoS 2): only they cost database writes. */
  readonly #durableClients = new Set<string>();
  /**
   * Whether any session may hold a stored QoS 1/2 subscription. aedes asks subscriptionsByTopic for every
   * QoS 1/2 message it publishes (offline queues, lib/aedes.js enqueueOffline), which splits the topic and
   * walks the trie even when no session ever subscribed durably; while none has, the answer is known.
   * Set before any subscription is stored; cleared only when a recount after a removal finds none and no
   * subscription was added meanwhile.
   */
  #subscriptionsStored = false;
  #subscriptionAdds = 0;
  readonly #clientsWithWill = new Set<string>();
  /** Messages queued per persistent session (mirrors the memory queue's length). */
  readonly #queued = new Map<string, number>();
  #dropped = 0;
  #orphanedWills: OrphanedWill[] = [];

  constructor(store: Store, options: DurablePersistenceOptions) {
    super();
    this.#store = store;
    this.#sql = prepare(store);
    this.#options = options;
  }

  /** Messages dropped so far because a persistent session's queue was full. */
  get droppedMessages(): number {
    return this.#dropped;
  }

  override async setup(broker: Aedes): Promise<void> {
    await super.setup(broker);
    await this.#restore();
  }

  /** Wills of clients connected when the previous process died; the broker publishes each once. */
  takeOrphanedWills(): OrphanedWill[] {
    const wills = this.#orphanedWills;
    this.#orphanedWills = [];
    return wills;
  }

  /** Forgets an orphaned will once it has been published (not before: a crash must not lose it). */
  forgetOrphanedWill(clientId: string): Promise<void> {
    return this.#store.writer.write(() => this.#sql.deleteWill.run(clientId));
  }

  async #restore(): Promise<void> {
    const s = this.#sql;
    // One bad row must never keep the broker from starting: it is reported and skipped.
    const attempt = async (what: string, fn: () => Promise<unknown>): Promise<void> => {
      try {
        await fn();
      } catch (err) {
        this.#options.onRestoreError(what, err);
      }
    };
    for (const row of s.allRetained.all() as PacketRow[]) await attempt(`retained ${row.topic}`, () => super.storeRetained(decode(row)));

    const subsByClient = new Map<string, Subscription[]>();
    for (const row of s.allSubscriptions.all() as { client_id: string; topic: string; meta: string }[]) {
      const list = subsByClient.get(row.client_id) ?? [];
      list.push({ topic: row.topic, ...(JSON.parse(row.meta) as { qos: number }) });
      subsByClient.set(row.client_id, list);
    }
    if (subsByClient.size > 0) this.#subscriptionsStored = true;
    for (const [clientId, subs] of subsByClient) {
      this.#durableClients.add(clientId);
      await attempt(`subscriptions of ${clientId}`, () => super.addSubscriptions(asClient(clientId), subs as never));
    }

    for (const row of s.allOutgoing.all() as (PacketRow & { seq: number; client_id: string; message_id: number | null })[]) {
      this.#durableClients.add(row.client_id);
      await attempt(`queued message ${row.seq} of ${row.client_id}`, async () => {
        // A restored row gets an identity of its own (a PUBREL has none, and two would match each other
        // in MemoryPersistence), so putting back its packet id [MQTT-4.4.0-1] hits exactly this row.
        const packet = { ...decode(row), brokerId: `restored-${row.seq}`, brokerCounter: row.seq };
        await super.outgoingEnqueue({ clientId: row.client_id }, packet);
        if (row.message_id !== null) await super.outgoingUpdate(asClient(row.client_id), { ...packet, messageId: row.message_id });
        this.#queued.set(row.client_id, (this.#queued.get(row.client_id) ?? 0) + 1);
      });
    }

    for (const row of s.allIncoming.all() as (PacketRow & { client_id: string; message_id: number })[]) {
      this.#durableClients.add(row.client_id);
      await attempt(`QoS 2 state ${row.message_id} of ${row.client_id}`, () =>
        super.incomingStorePacket(asClient(row.client_id), { ...decode(row), messageId: row.message_id }),
      );
    }

    this.#orphanedWills = (s.allWills.all() as (PacketRow & { client_id: string })[]).map((row) => ({
      clientId: row.client_id,
      packet: decode(row),
    }));
  }

  override storeRetained(packet: AedesPacket): Promise<void> {
    const memory = super.storeRetained(packet);
    const row = encode(packet as Packet);
    const durable = this.#store.writer.write(() => {
      if (row.payload.length === 0) this.#sql.deleteRetained.run(row.topic);
      else this.#sql.upsertRetained.run(row.topic, row.payload, row.meta);
    });
    return both(memory, durable);
  }

  override addSubscriptions(client: Client, all: Parameters<MemoryPersistence['addSubscriptions']>[1]): Promise<void> {
    // aedes passes every filter of the SUBSCRIBE, including those it answered 0x80: keep only granted ones.
    const subs = all.filter((sub) => this.#options.maySubscribe(client, sub.topic));
    if (subs.length > 0) {
      this.#subscriptionsStored = true;
      this.#subscriptionAdds++;
    }
    const memory = super.addSubscriptions(client, subs);
    const id = client.id;
    this.#durableClients.add(id);
    const rows = subs.map((sub) => {
      const { topic, ...meta } = sub as unknown as Subscription;
      return [id, topic, JSON.stringify(meta)] as const;
    });
    const durable = this.#store.writer.write(() => {
      for (const r of rows) this.#sql.upsertSubscription.run(...r);
    });
    return both(memory, durable);
  }

  override subscriptionsByTopic(topic: string): ReturnType<MemoryPersistence['subscriptionsByTopic']> {
    return this.#subscriptionsStored ? super.subscriptionsByTopic(topic) : Promise.resolve([]);
  }

  /** After a removal: if no stored subscription is left (and none was added meanwhile), say so. */
  #recount(): void {
    const adds = this.#subscriptionAdds;
    super.countOffline().then(
      ({ subsCount }) => {
        if (subsCount === 0 && adds === this.#subscriptionAdds) this.#subscriptionsStored = false;
      },
      () => undefined, // left set: the trie is then asked, as always
    );
  }

  override removeSubscriptions(client: Client, topics: string[]): Promise<void> {
    const memory = super.removeSubscriptions(client, topics);
    if (this.#subscriptionsStored) memory.then(() => this.#recount(), () => undefined); // a failure is the caller's to see
    if (!this.#durableClients.has(client.id)) return memory;
    const id = client.id;
    const durable = this.#store.writer.write(() => {
      for (const topic of topics) this.#sql.deleteSubscription.run(id, topic);
    });
    return both(memory, durable);
  }

  override cleanSubscriptions(client: Client): Promise<void> {
    const memory = super.cleanSubscriptions(client);
    if (this.#subscriptionsStored) memory.then(() => this.#recount(), () => undefined); // a failure is the caller's to see
    const id = client.id;
    if (!this.#durableClients.has(id)) return memory;
    // [MQTT-3.1.2-6] the whole session goes, durably, before CONNACK says so. The memory queue is drained
    // by aedes' emptyQueue, whose clears then find nothing left in the database.
    const durable = this.#store.writer.write(() => {
      this.#sql.deleteSubscriptions.run(id);
      this.#sql.deleteAllOutgoing.run(id);
      this.#sql.deleteAllIncoming.run(id);
    });
    this.#queued.delete(id);
    return both(memory, durable);
  }

  override outgoingEnqueue(sub: { clientId: string }, packet: AedesPacket): Promise<void> {
    return this.outgoingEnqueueCombi([sub], packet);
  }

  override outgoingEnqueueCombi(all: { clientId: string }[], packet: AedesPacket): Promise<void> {
    const queued = this.#enqueue(all, packet);
    const onQueued = this.#options.onQueued;
    if (!onQueued) return queued;
    const { brokerId, brokerCounter } = packet as Packet;
    return queued.then(() => onQueued(brokerId, brokerCounter));
  }

  #enqueue(all: { clientId: string }[], packet: AedesPacket): Promise<void> {
    const subs = all.length === 0 ? all : all.filter((sub) => this.#admit(sub.clientId, (packet as Packet).topic as string));
    const memory = super.outgoingEnqueueCombi(subs, packet);
    if (subs.length === 0) return memory;
    const p = packet as Packet;
    const row = encode({ ...p, messageId: undefined });
    const brokerId = p.brokerId ?? '';
    const counter = p.brokerCounter ?? 0;
    const ids = subs.map((s) => s.clientId);
    for (const id of ids) this.#durableClients.add(id);
    const durable = this.#store.writer.write(() => {
      for (const id of ids) this.#sql.insertOutgoing.run(id, brokerId, counter, row.topic, row.payload, row.meta);
    });
    return both(memory, durable);
  }

  /**
   * The queue of a session as it is now. aedes reads it once per connection, in emptyQueue
   * (lib/handlers/connect.js) right after CONNACK, and sends every entry. Live deliveries to the session's
   * restored subscriptions started before that, so a message can be in this snapshot *and* be delivered
   * live: every replayed message is reported (onReplay) for the broker to drop its live copy (./broker.ts).
   */
  override outgoingStream(client: Client): Readable {
    const source = super.outgoingStream(client) as AsyncIterable<Packet>;
    const { markRedeliveries, onReplay } = this.#options;
    return Readable.from(
      (async function* replay() {
        for await (const packet of source) {
          onReplay?.(client, packet);
          // Sent before (it has a packet id) and not acknowledged: this is a re-delivery.
          const resent = markRedeliveries === true && packet.cmd === 'publish' && typeof packet.messageId === 'number';
          yield resent ? { ...packet, dup: true } : packet;
        }
      })(),
    );
  }

  override outgoingUpdate(client: Client, packet: AedesPacket): Promise<void> {
    const memory = super.outgoingUpdate(client, packet);
    const id = client.id;
    if (this.#durableClients.has(id)) {
      const p = packet as Packet;
      const brokerId = p.brokerId ?? '';
      const counter = p.brokerCounter ?? 0;
      const messageId = p.messageId ?? null;
      const row = encode({ ...p, messageId: undefined });
      // Mirrors MemoryPersistence#outgoingUpdate: the first queued packet from the same broker with the
      // same counter gets the packet id; otherwise the first with this packet id is replaced (PUBREL).
      const durable = this.#store.writer.write(() => {
        // Two indexed lookups rather than one OR query, which SQLite can only answer by scanning the queue.
        const sameBroker = this.#sql.findOutgoingByPacket.get(id, brokerId, counter) as { seq: number } | undefined;
        const sameId = this.#sql.findOutgoingByMessageId.get(id, messageId, brokerId) as { seq: number } | undefined;
        if (sameBroker && (!sameId || sameBroker.seq < sameId.seq)) this.#sql.setOutgoingMessageId.run(messageId, sameBroker.seq);
        else if (sameId) this.#sql.replaceOutgoing.run(brokerId, counter, messageId, row.topic, row.payload, row.meta, sameId.seq);
      });
      // A PUBREL replacing the PUBLISH is QoS 2 state the subscriber relies on; packet ids are not.
      if (p.cmd === 'pubrel') return both(memory, durable);
      durable.catch(() => undefined); // reported by the writer's error handler
    }
    return memory;
  }

  override outgoingClearMessageId(client: Client, packet: AedesPacket): Promise<AedesPacket> {
    // Without a packet id this comes from aedes' Client#deliverQoS (lib/client.js) deciding not to forward
    // a live message (its dedupe, or authorizeForward refusing it). MemoryPersistence would remove the
    // first queued message not sent yet: another message, lost. It stays queued instead; the session's
    // next replay forwards it or clears it (emptyQueueFilter asks authorizeForward, with a packet id).
    if (typeof (packet as Packet | undefined)?.messageId !== 'number') return Promise.resolve(undefined as unknown as AedesPacket);
    const memory = super.outgoingClearMessageId(client, packet);
    const id = client.id;
    if (!this.#durableClients.has(id)) return memory;
    const messageId = (packet as Packet).messageId;
    const durable = this.#store.writer.write(() => this.#sql.deleteFirstOutgoing.run(id, messageId));
    return memory.then(async (cleared) => {
      if (cleared) this.#queued.set(id, Math.max(0, (this.#queued.get(id) ?? 1) - 1));
      // PUBCOMP ends a QoS 2 delivery: if that end were lost, the message would be sent again.
      if ((cleared as Packet | undefined)?.cmd === 'pubrel') await durable;
      else durable.catch(() => undefined); // reported by the writer's error handler
      return cleared;
    });
  }

  /** Counts a message into a session's queue, or drops it for that session when the queue is full. */
  #admit(clientId: string, topic: string): boolean {
    const queued = this.#queued.get(clientId) ?? 0;
    if (queued >= this.#options.maxQueuedPerSession) {
      this.#dropped++;
      this.#options.onQueueFull(clientId, topic, this.#dropped);
      return false;
    }
    this.#queued.set(clientId, queued + 1);
    return true;
  }

  override incomingStorePacket(client: Client, packet: AedesPacket): Promise<void> {
    const memory = super.incomingStorePacket(client, packet);
    if (client.clean) return memory;
    const id = client.id;
    this.#durableClients.add(id);
    const p = packet as Packet;
    const row = encode(p);
    const durable = this.#store.writer.write(() => this.#sql.upsertIncoming.run(id, p.messageId, row.topic, row.payload, row.meta));
    return both(memory, durable);
  }

  override incomingDelPacket(client: Client, packet: AedesPacket): Promise<void> {
    const memory = super.incomingDelPacket(client, packet);
    const id = client.id;
    if (!this.#durableClients.has(id)) return memory;
    // Before PUBCOMP: a stale entry surviving a crash would swallow the client's next message with this id.
    const messageId = (packet as Packet).messageId;
    return both(memory, this.#store.writer.write(() => this.#sql.deleteIncoming.run(id, messageId)));
  }

  override cleanIncoming(client: Client): Promise<void> {
    const memory = super.cleanIncoming(client);
    const id = client.id;
    if (!this.#durableClients.has(id)) return memory;
    const durable = this.#store.writer.write(() => this.#sql.deleteAllIncoming.run(id));
    return both(memory, durable);
  }

  override putWill(client: Client, packet: AedesPacket): Promise<void> {
    const memory = super.putWill(client, packet);
    const id = client.id;
    this.#clientsWithWill.add(id);
    const row = encode(packet as Packet);
    const durable = this.#store.writer.write(() => this.#sql.upsertWill.run(id, row.topic, row.payload, row.meta));
    return both(memory, durable);
  }

  override delWill(client: Client): Promise<Packet | undefined> {
    const memory = super.delWill(client) as Promise<Packet | undefined>;
    const id = client.id;
    if (this.#clientsWithWill.delete(id)) this.#store.writer.writeLater(() => this.#sql.deleteWill.run(id));
    return memory;
  }
}

function asClient(id: string): Client {
  return { id } as Client;
}

/** Resolves when both the memory change and its durable write are done; fails if either fails. */
async function both<T>(memory: Promise<T>, durable: Promise<void>): Promise<T> {
  const [value] = await Promise.all([memory, durable]);
  return value;
}

function prepare(store: Store) {
  const db = store.db;
  return {
    allRetained: db.prepare('SELECT topic, payload, meta FROM broker_retained'),
    upsertRetained: db.prepare(
      'INSERT INTO broker_retained (topic, payload, meta) VALUES (?, ?, ?) ON CONFLICT (topic) DO UPDATE SET payload = excluded.payload, meta = excluded.meta',
    ),
    deleteRetained: db.prepare('DELETE FROM broker_retained WHERE topic = ?'),
    allSubscriptions: db.prepare('SELECT client_id, topic, meta FROM broker_subscriptions'),
    upsertSubscription: db.prepare(
      'INSERT INTO broker_subscriptions (client_id, topic, meta) VALUES (?, ?, ?) ON CONFLICT (client_id, topic) DO UPDATE SET meta = excluded.meta',
    ),
    deleteSubscription: db.prepare('DELETE FROM broker_subscriptions WHERE client_id = ? AND topic = ?'),
    deleteSubscriptions: db.prepare('DELETE FROM broker_subscriptions WHERE client_id = ?'),
    allOutgoing: db.prepare('SELECT seq, client_id, message_id, topic, payload, meta FROM broker_outgoing ORDER BY seq'),
    deleteAllOutgoing: db.prepare('DELETE FROM broker_outgoing WHERE client_id = ?'),
    insertOutgoing: db.prepare(
      'INSERT INTO broker_outgoing (client_id, broker_id, broker_counter, message_id, topic, payload, meta) VALUES (?, ?, ?, NULL, ?, ?, ?)',
    ),
    findOutgoingByPacket: db.prepare(
      'SELECT seq FROM broker_outgoing WHERE client_id = ? AND broker_id = ? AND broker_counter = ? ORDER BY seq LIMIT 1',
    ),
    findOutgoingByMessageId: db.prepare(
      'SELECT seq FROM broker_outgoing WHERE client_id = ? AND message_id = ? AND broker_id <> ? ORDER BY seq LIMIT 1',
    ),
    setOutgoingMessageId: db.prepare('UPDATE broker_outgoing SET message_id = ? WHERE seq = ?'),
    replaceOutgoing: db.prepare(
      'UPDATE broker_outgoing SET broker_id = ?, broker_counter = ?, message_id = ?, topic = ?, payload = ?, meta = ? WHERE seq = ?',
    ),
    deleteFirstOutgoing: db.prepare(
      'DELETE FROM broker_outgoing WHERE seq = (SELECT seq FROM broker_outgoing WHERE client_id = ? AND message_id = ? ORDER BY seq LIMIT 1)',
    ),
    allIncoming: db.prepare('SELECT client_id, message_id, topic, payload, meta FROM broker_incoming'),
    upsertIncoming: db.prepare(
      'INSERT INTO broker_incoming (client_id, message_id, topic, payload, meta) VALUES (?, ?, ?, ?, ?) ON CONFLICT (client_id, message_id) DO UPDATE SET topic = excluded.topic, payload = excluded.payload, meta = excluded.meta',
    ),
    deleteIncoming: db.prepare('DELETE FROM broker_incoming WHERE client_id = ? AND message_id = ?'),
    deleteAllIncoming: db.prepare('DELETE FROM broker_incoming WHERE client_id = ?'),
    allWills: db.prepare('SELECT client_id, topic, payload, meta FROM broker_wills'),
    upsertWill: db.prepare(
      'INSERT INTO broker_wills (client_id, topic, payload, meta) VALUES (?, ?, ?, ?) ON CONFLICT (client_id) DO UPDATE SET topic = excluded.topic, payload = excluded.payload, meta = excluded.meta',
    ),
    deleteWill: db.prepare('DELETE FROM broker_wills WHERE client_id = ?'),
  };
}
