/**
 * The cloud spool (DESIGN.md §3 path 3): cloud-bound messages wait here, durably and in order, until the
 * cloud link has delivered them upstream with QoS 1 and acknowledges them. It is bounded in bytes: an
 * append that would go over the limit evicts the oldest messages first and counts them; a message larger
 * than the whole limit is refused.
 *
 * The database is the only truth. Each append or ack is one group-commit write that changes the rows and
 * the counters row together, so the two can never disagree — not after a crash, not after a failed write
 * (a write op may be rolled back and run again alone; it has no effect outside the database). Memory holds
 * no payloads and no per-message index: eviction reads the oldest sizes inside the write, `peek` reads
 * one batch, `stats` reads the counters row. Acks and evictions delete only a prefix (`seq <= n`), and
 * `reject` only the oldest message, so a message is never removed while an older one stays.
 *
 * A message the link sets aside (`reject`: the upstream keeps refusing it, see reject-rule.ts) moves to
 * a bounded dead-letter table in the same write that removes it, so it is neither lost silently nor
 * blocking the ones behind it.
 */
import { EventEmitter } from 'node:events';
import type { Statement } from 'better-sqlite3';
import { CoordinatorError } from '../errors.js';
import type { Store } from '../store/database.js';

/**
 * Bytes a message costs besides its topic and payload: roughly what SQLite spends on the row (seq,
 * sizes, timestamp, record header, b-tree cell). It keeps the limit honest about disk use when messages
 * are tiny.
 */
export const SPOOL_ENTRY_OVERHEAD_BYTES = 32;

/** Set-aside messages kept for inspection; older ones are dropped (they stay counted). */
export const REJECTED_KEEP = 100;

/** Longest MQTT topic name, bytes. */
const MAX_TOPIC_BYTES = 65_535; // [MQTT-1.5.3] a UTF-8 string has a 16-bit length prefix

/** What one message counts against the spool's byte limit: topic + payload + SPOOL_ENTRY_OVERHEAD_BYTES. */
export function spoolEntryBytes(topic: string, payload: Uint8Array): number {
  return Buffer.byteLength(topic) + payload.byteLength + SPOOL_ENTRY_OVERHEAD_BYTES;
}

/** Options of the spool. */
export interface SpoolOptions {
  /** Most bytes (as spoolEntryBytes counts them) the spool keeps; older messages are evicted beyond. */
  readonly maxBytes: number;
}

/** A message waiting in the spool. */
export interface SpooledMessage {
  /** Position in the spool: strictly increasing, never reused (not even after a restart). */
  readonly seq: number;
  readonly topic: string;
  readonly payload: Buffer;
  readonly qos: 0 | 1;
  /** When it was appended, epoch milliseconds. */
  readonly enqueuedAt: number;
}

/** Counters of the spool; `appended`, `acked` and `evicted` count since the database was created. */
export interface SpoolStats {
  /** Messages waiting. */
  messages: number;
  /** Bytes waiting, as spoolEntryBytes counts them. */
  bytes: number;
  maxBytes: number;
  appended: number;
  acked: number;
  /** Messages dropped, oldest first, to make room for newer ones. */
  evicted: number;
  /** Messages set aside because the upstream kept refusing them (see `reject`). */
  rejected: number;
  /** When the oldest waiting message was appended (epoch ms), or null when the spool is empty. */
  oldestEnqueuedAt: number | null;
}

/** Events of the spool; each is emitted once the change it reports is durable. */
export interface SpoolEvents {
  /** A message was appended: a sender waiting for work can peek again. */
  appended: [seq: number];
  /** `count` of the oldest messages, up to and including `throughSeq`, were evicted to make room. */
  evicted: [count: number, throughSeq: number];
  /** The message `seq` was set aside into the dead-letter table. */
  rejected: [seq: number, topic: string];
}

/** A message set aside, as `coordinator cloud status` lists it (the payload stays in the database). */
export interface RejectedMessage {
  readonly seq: number;
  readonly topic: string;
  readonly bytes: number;
  /** Epoch milliseconds. */
  readonly enqueuedAt: number;
  readonly rejectedAt: number;
  readonly reason: string;
}

interface Row {
  seq: number;
  qos: number;
  enqueued_at: number;
  topic: string;
  payload: Buffer;
}

interface Counters {
  bytes: number;
  appended: number;
  acked: number;
  evicted: number;
}

/**
 * The durable, bounded queue of cloud-bound messages, in the `cloud_spool` table. One instance per
 * store. A sender peeks a batch, publishes it upstream and acks the last seq its broker acknowledged.
 */
export class CloudSpool extends EventEmitter<SpoolEvents> {
  readonly #store: Store;
  readonly #maxBytes: number;
  /** Highest seq whose append is durable: peek never hands out a message that a crash could undo. */
  #durableSeq: number;
  readonly #sql: Record<
    | 'insert'
    | 'grow'
    | 'oldest'
    | 'deleteThrough'
    | 'evicted'
    | 'prefix'
    | 'acked'
    | 'peek'
    | 'counters'
    | 'head'
    | 'row'
    | 'older'
    | 'deleteOne'
    | 'shrink'
    | 'deadInsert'
    | 'deadCount'
    | 'deadNewest'
    | 'deadDeleteThrough'
    | 'deadRecent'
    | 'rejectedCount',
    Statement
  >;

  constructor(store: Store, options: SpoolOptions) {
    super();
    if (!Number.isSafeInteger(options.maxBytes) || options.maxBytes <= SPOOL_ENTRY_OVERHEAD_BYTES) {
      throw new CoordinatorError('COORD_ERR_CONFIG_INVALID', `spool maxBytes must be an integer above ${SPOOL_ENTRY_OVERHEAD_BYTES}; got ${options.maxBytes}`);
    }
    this.#store = store;
    this.#maxBytes = options.maxBytes;
    const db = store.db;
    this.#sql = {
      insert: db.prepare('INSERT INTO cloud_spool (bytes, qos, enqueued_at, topic, payload) VALUES (?, ?, ?, ?, ?)'),
      grow: db.prepare('UPDATE cloud_spool_counters SET appended = appended + 1, bytes = bytes + ? WHERE id = 1 RETURNING bytes'),
      // Only the small leading columns are read: the payloads of evicted rows stay on their pages.
      oldest: db.prepare('SELECT seq, bytes FROM cloud_spool ORDER BY seq'),
      deleteThrough: db.prepare('DELETE FROM cloud_spool WHERE seq <= ?'),
      evicted: db.prepare('UPDATE cloud_spool_counters SET evicted = evicted + ?, bytes = bytes - ? WHERE id = 1'),
      prefix: db.prepare('SELECT count(*) AS n, coalesce(sum(bytes), 0) AS b FROM cloud_spool WHERE seq <= ?'),
      acked: db.prepare('UPDATE cloud_spool_counters SET acked = acked + ?, bytes = bytes - ? WHERE id = 1'),
      peek: db.prepare('SELECT seq, qos, enqueued_at, topic, payload FROM cloud_spool WHERE seq > ? AND seq <= ? ORDER BY seq LIMIT ?'),
      counters: db.prepare('SELECT bytes, appended, acked, evicted FROM cloud_spool_counters WHERE id = 1'),
      head: db.prepare('SELECT enqueued_at FROM cloud_spool ORDER BY seq LIMIT 1'),
      row: db.prepare('SELECT seq, bytes, qos, enqueued_at, topic, payload FROM cloud_spool WHERE seq = ?'),
      older: db.prepare('SELECT count(*) AS n FROM cloud_spool WHERE seq < ?'),
      deleteOne: db.prepare('DELETE FROM cloud_spool WHERE seq = ?'),
      shrink: db.prepare('UPDATE cloud_spool_counters SET bytes = bytes - ? WHERE id = 1'),
      deadInsert: db.prepare('INSERT INTO cloud_spool_rejected (seq, bytes, qos, enqueued_at, rejected_at, reason, topic, payload) VALUES (?, ?, ?, ?, ?, ?, ?, ?)'),
      deadCount: db.prepare('UPDATE cloud_spool_rejected_counters SET rejected = rejected + 1 WHERE id = 1'),
      deadNewest: db.prepare('SELECT seq, bytes FROM cloud_spool_rejected ORDER BY seq DESC'),
      deadDeleteThrough: db.prepare('DELETE FROM cloud_spool_rejected WHERE seq <= ?'),
      deadRecent: db.prepare('SELECT seq, bytes, enqueued_at, rejected_at, reason, topic FROM cloud_spool_rejected ORDER BY seq DESC LIMIT ?'),
      rejectedCount: db.prepare('SELECT rejected FROM cloud_spool_rejected_counters WHERE id = 1'),
    };
    // What a restart finds on disk is all there is: it counts as durable.
    this.#durableSeq = (db.prepare('SELECT coalesce(max(seq), 0) AS s FROM cloud_spool').get() as { s: number }).s;
  }

  /**
   * Appends a message; resolves with its seq once it is durable. Makes room first by evicting the oldest
   * messages (counted in `evicted`). Rejects with COORD_ERR_CLOUD_SPOOL_TOO_LARGE when the message alone
   * is larger than maxBytes, COORD_ERR_CLOUD_SPOOL_INVALID for a topic or QoS MQTT cannot carry, and
   * COORD_ERR_STORE_* when it could not be made durable; nothing is spooled then.
   */
  async append(topic: string, payload: Uint8Array, qos: 0 | 1): Promise<number> {
    const problem = topicProblem(topic) ?? (qos === 0 || qos === 1 ? undefined : `QoS ${String(qos)} (the cloud link publishes with QoS 0 or 1)`);
    if (problem !== undefined) throw new CoordinatorError('COORD_ERR_CLOUD_SPOOL_INVALID', `cannot spool a message with ${problem}`);
    const bytes = spoolEntryBytes(topic, payload);
    if (bytes > this.#maxBytes) {
      throw new CoordinatorError('COORD_ERR_CLOUD_SPOOL_TOO_LARGE', `a cloud-bound message of ${bytes} bytes (topic ${topic}) exceeds the spool's limit of ${this.#maxBytes} bytes; it was not spooled`, {
        details: { topic, bytes, maxBytes: this.#maxBytes },
      });
    }
    // A copy: the write runs later in this turn and the caller may reuse its buffer meanwhile.
    const data = Buffer.from(payload);
    const enqueuedAt = Date.now();
    // Set by the op; if its batch fails, the op runs again alone and sets them anew.
    let seq = 0;
    let evicted = { count: 0, through: 0 };
    await this.#store.writer.write(() => {
      seq = Number(this.#sql.insert.run(bytes, qos, enqueuedAt, topic, data).lastInsertRowid);
      const { bytes: total } = this.#sql.grow.get(bytes) as { bytes: number };
      evicted = total > this.#maxBytes ? this.#evict(total - this.#maxBytes) : { count: 0, through: 0 };
    });
    // Writes resolve in commit order, so this only moves forward.
    this.#durableSeq = Math.max(this.#durableSeq, seq);
    if (evicted.count > 0) this.emit('evicted', evicted.count, evicted.through);
    this.emit('appended', seq);
    return seq;
  }

  /** Inside a write: deletes the oldest rows until at least `over` bytes are freed. */
  #evict(over: number): { count: number; through: number } {
    let freed = 0;
    let count = 0;
    let through = 0;
    // The new row is never reached: it is no larger than maxBytes, so the older rows hold `over` bytes.
    for (const row of this.#sql.oldest.iterate() as IterableIterator<{ seq: number; bytes: number }>) {
      freed += row.bytes;
      count++;
      through = row.seq;
      if (freed >= over) break;
    }
    this.#sql.deleteThrough.run(through);
    this.#sql.evicted.run(count, freed);
    return { count, through };
  }

  /**
   * Up to `limit` durable messages with seq above `after`, oldest first, read from the database (only
   * this batch is held in memory). A sender with messages in flight passes the last seq it sent.
   */
  peek(limit: number, after = 0): SpooledMessage[] {
    if (!Number.isSafeInteger(limit) || limit < 1) throw new CoordinatorError('COORD_ERR_CLOUD_SPOOL_INVALID', `peek limit must be a positive integer; got ${limit}`);
    return (this.#sql.peek.all(after, this.#durableSeq, limit) as Row[]).map((r) => ({
      seq: r.seq,
      topic: r.topic,
      payload: r.payload,
      qos: r.qos === 1 ? 1 : 0,
      enqueuedAt: r.enqueued_at,
    }));
  }

  /**
   * Removes every message up to and including `seq` (delivered upstream); resolves once durable.
   * Acking a seq already gone (acked or evicted) is harmless; acking past the newest durable message
   * rejects with COORD_ERR_CLOUD_SPOOL_INVALID, since no sender can have seen it.
   */
  async ack(seq: number): Promise<void> {
    if (!Number.isSafeInteger(seq) || seq < 0 || seq > this.#durableSeq) {
      throw new CoordinatorError('COORD_ERR_CLOUD_SPOOL_INVALID', `cannot ack seq ${seq}: the newest durable message in the spool is ${this.#durableSeq}`);
    }
    await this.#store.writer.write(() => {
      const { n, b } = this.#sql.prefix.get(seq) as { n: number; b: number };
      if (n === 0) return;
      this.#sql.deleteThrough.run(seq);
      this.#sql.acked.run(n, b);
    });
  }

  /**
   * Moves the oldest message, `seq`, out of the spool into the dead-letter table (which keeps the newest
   * REJECTED_KEEP set-aside messages, and no more than maxBytes of them) and counts it in `rejected`;
   * resolves once durable, with false when `seq` had already left the spool (acked or evicted). Rejects
   * with COORD_ERR_CLOUD_SPOOL_INVALID when an older message is still waiting: the spool only ever
   * removes from its head.
   */
  async reject(seq: number, reason: string): Promise<boolean> {
    // Checked before the write: an op that throws would count as a failed durable write of the store.
    if ((this.#sql.older.get(seq) as { n: number }).n > 0) {
      throw new CoordinatorError('COORD_ERR_CLOUD_SPOOL_INVALID', `cannot set aside seq ${seq}: older messages are still waiting`);
    }
    let moved: { topic: string } | undefined;
    await this.#store.writer.write(() => {
      moved = undefined;
      const row = this.#sql.row.get(seq) as (Row & { bytes: number }) | undefined;
      // Gone meanwhile (acked, evicted), or no longer the head (impossible: appends only add newer rows).
      if (!row || (this.#sql.older.get(seq) as { n: number }).n > 0) return;
      this.#sql.deadInsert.run(row.seq, row.bytes, row.qos, row.enqueued_at, Date.now(), reason, row.topic, row.payload);
      this.#sql.deleteOne.run(seq);
      this.#sql.shrink.run(row.bytes);
      this.#sql.deadCount.run();
      this.#trimRejected();
      moved = { topic: row.topic };
    });
    if (moved === undefined) return false;
    this.emit('rejected', seq, moved.topic);
    return true;
  }

  /** Inside a write: drops the oldest set-aside messages beyond REJECTED_KEEP or maxBytes. */
  #trimRejected(): void {
    let count = 0;
    let bytes = 0;
    let cut: number | undefined;
    for (const row of this.#sql.deadNewest.iterate() as IterableIterator<{ seq: number; bytes: number }>) {
      count++;
      bytes += row.bytes;
      if (count > REJECTED_KEEP || bytes > this.#maxBytes) {
        cut = row.seq;
        break; // the iterator must be closed before the connection can write
      }
    }
    if (cut !== undefined) this.#sql.deadDeleteThrough.run(cut);
  }

  /** The newest set-aside messages (without payloads), newest first. */
  rejectedMessages(limit = 10): RejectedMessage[] {
    return (this.#sql.deadRecent.all(limit) as { seq: number; bytes: number; enqueued_at: number; rejected_at: number; reason: string; topic: string }[]).map((r) => ({
      seq: r.seq,
      topic: r.topic,
      bytes: r.bytes,
      enqueuedAt: r.enqueued_at,
      rejectedAt: r.rejected_at,
      reason: r.reason,
    }));
  }

  /** Counters and size, as committed (a write queued in this very turn shows once it commits). */
  get stats(): SpoolStats {
    const c = this.#sql.counters.get() as Counters;
    const { rejected } = this.#sql.rejectedCount.get() as { rejected: number };
    const head = this.#sql.head.get() as { enqueued_at: number } | undefined;
    return {
      messages: c.appended - c.acked - c.evicted - rejected,
      bytes: c.bytes,
      maxBytes: this.#maxBytes,
      appended: c.appended,
      acked: c.acked,
      evicted: c.evicted,
      rejected,
      oldestEnqueuedAt: head?.enqueued_at ?? null,
    };
  }
}

/** Why `topic` cannot be published, or undefined when it can. */
function topicProblem(topic: unknown): string | undefined {
  if (typeof topic !== 'string' || topic.length === 0) return 'an empty topic'; // [MQTT-4.7.3-1]
  if (/[+#]/.test(topic)) return `wildcards in the topic ${topic}`; // [MQTT-3.3.2-2]
  if (topic.includes('\u0000')) return 'a NUL character in the topic'; // [MQTT-1.5.3-2]
  // A lone surrogate would be stored as U+FFFD: the message would reach the cloud on another topic.
  if (Buffer.from(topic, 'utf8').toString('utf8') !== topic) return 'a topic that is not well-formed UTF-8'; // [MQTT-1.5.3-1]
  if (Buffer.byteLength(topic) > MAX_TOPIC_BYTES) return `a topic longer than ${MAX_TOPIC_BYTES} bytes`;
  return undefined;
}
