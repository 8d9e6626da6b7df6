/**
 * The shadow service's in-process face: get / update / delete / watch, with the same rules and errors
 * as the MQTT face (which is a thin adapter over this). Documents live in memory for reads; on disk as a
 * table of documents plus a journal of the changes since (./journal.ts). A change resolves only once its
 * journal record is durable.
 *
 * Updates to one shadow are applied in arrival order and pipelined: each is computed on top of the one
 * before it (committed or not) and the changes of every shadow arriving together share one journal row
 * and one group commit, so a hot shadow is not limited to one fsync per update. If a journal row cannot
 * be written, its changes fail (500) and each shadow they touched goes back to what is committed.
 */
import { EventEmitter } from 'node:events';
import { CoordinatorError } from '../errors.js';
import type { Store } from '../store/database.js';
import {
  acceptedJson,
  applyUpdate,
  deleteResponse,
  getResponse,
  ShadowRequestError,
  type ShadowDocument,
  type UpdateRequest,
  type UpdateResult,
} from './document.js';
import { deleteRecord, recordPrefix, ShadowJournal, updateRecord } from './journal.js';
import { checkNames } from './request.js';

/** Identifies a shadow: the classic shadow of a thing has no name. */
export interface ShadowId {
  readonly thing: string;
  readonly name?: string | undefined;
}

/** Events a watcher receives. */
export interface ShadowEvents {
  /**
   * Payload of /update/accepted, for every accepted update whatever face it came through, and its JSON
   * text (made together with the journal record: a face publishing the payload need not serialize it).
   */
  accepted: [id: ShadowId, payload: Record<string, unknown>, json: string];
  delta: [id: ShadowId, payload: Record<string, unknown>];
  documents: [id: ShadowId, payload: Record<string, unknown>];
  deleted: [id: ShadowId, payload: Record<string, unknown>];
}

/** Options of the shadow service. */
export interface ShadowServiceOptions {
  /** Most updates/deletes of one shadow waiting for their commit; more are refused with 429. */
  readonly maxInFlightPerShadow: number;
  /** Epoch seconds; injectable for tests. */
  readonly now?: () => number;
  /**
   * Told of store problems that do not stop the service: a compaction that could not be written
   * (COORD_ERR_STORE_WRITE; tried again later, nothing is lost) and journal records that could not be
   * replayed at start-up (COORD_ERR_STORE_RESTORE; see ./journal.ts).
   */
  readonly onStoreError?: (err: Error) => void;
  /** When the journal is compacted (defaults: COMPACTION); tests shorten it. */
  readonly compaction?: Partial<CompactionPolicy>;
}

/** When the journal is folded into the documents. */
export interface CompactionPolicy {
  /** A compaction starts once this many changes were journaled since the last one... */
  readonly afterRecords: number;
  /** ...or this long after a change was journaled, whichever comes first. */
  readonly afterMs: number;
  /** Documents written per compaction step (one group-commit write each): bounds the time one step takes. */
  readonly chunk: number;
}

/**
 * Compaction bounds the journal a restart replays (about 3 µs a record) to roughly a second of traffic,
 * and costs a document write per shadow changed in that second, in steps short enough not to stall the
 * broker.
 */
export const COMPACTION: CompactionPolicy = { afterRecords: 20_000, afterMs: 1_000, chunk: 256 };

interface Entry {
  readonly thing: string;
  /** '' for a classic shadow. */
  readonly name: string;
  /** The start of this shadow's journal records. */
  readonly prefix: string;
  /** What the next request sees: the newest accepted state, committed or not (undefined = no shadow). */
  pending: ShadowDocument | undefined;
  pendingVersion: number;
  /** As of the last committed journal row: what pending goes back to if a later row fails. */
  committed: ShadowDocument | undefined;
  committedVersion: number;
  /** What is durable. */
  durable: ShadowDocument | undefined;
  durableVersion: number;
  inFlight: number;
}

/** A change waiting for its journal row. */
interface Change {
  readonly entry: Entry;
  readonly doc: ShadowDocument | undefined;
  readonly version: number;
  readonly settle: Settle;
}

/** The journal row of one group commit: the records of every change that arrived for it. */
interface Batch {
  readonly seq: number;
  readonly records: string[];
  readonly changes: Change[];
}

/** Told once whether a change is durable (no error) or refused by the store (500). */
type Settle = (err: ShadowRequestError | undefined) => void;

/**
 * How an update's outcome reaches its caller: the result once durable and announced, or the error (a
 * ShadowRequestError 500 when the store refused it, or whatever an event listener threw).
 */
export type UpdateCallback = (err: Error | undefined, result?: UpdateResult) => void;

const key = (thing: string, name: string): string => `${thing}\u0000${name}`;
const keyOf = (id: ShadowId): string => key(id.thing, id.name ?? '');

/** Whether `value` survives a JSON round trip unchanged: no non-finite number anywhere in it. */
function jsonSafe(value: unknown): boolean {
  if (typeof value === 'number') return Number.isFinite(value);
  if (typeof value !== 'object' || value === null) return true;
  if (Array.isArray(value)) return value.every(jsonSafe);
  for (const key in value) if (Object.hasOwn(value, key) && !jsonSafe((value as Record<string, unknown>)[key])) return false;
  return true;
}

/** What an event listener threw, as an Error (listeners may throw anything). */
const asError = (thrown: unknown): Error => (thrown instanceof Error ? thrown : new Error('an event listener threw a non-Error', { cause: thrown }));

function notFound(id: ShadowId): ShadowRequestError {
  // AWS shadow: 404 "No shadow exists with name: <name>" (the thing name for a classic shadow).
  return new ShadowRequestError(404, `No shadow exists with name: '${id.name ?? id.thing}'`);
}

/** The in-process shadow service. */
export class ShadowService extends EventEmitter<ShadowEvents> {
  readonly #store: Store;
  readonly #options: ShadowServiceOptions;
  readonly #entries = new Map<string, Entry>();
  readonly #journal: ShadowJournal;
  readonly #now: () => number;
  readonly #compaction: CompactionPolicy;
  /** The journal row changes go to now (its write is queued, not yet run). */
  #batch: Batch | undefined;
  /** Shadows whose durable document is newer than their document row. */
  readonly #dirty = new Set<Entry>();
  /** The last journal row that is durable, and the last one compacted (rows up to it are deleted). */
  #syncedSeq: number;
  #compactedSeq = 0;
  #sinceCompaction = 0;
  #compacting = false;
  #compactTimer: NodeJS.Timeout | undefined;
  #closed = false;

  constructor(store: Store, options: ShadowServiceOptions) {
    super();
    this.#store = store;
    this.#options = options;
    this.#now = options.now ?? (() => Math.floor(Date.now() / 1000));
    this.#compaction = { ...COMPACTION, ...options.compaction };
    this.#journal = new ShadowJournal(store);
    const { shadows, lastSeq, problems } = this.#journal.load();
    for (const problem of problems) options.onStoreError?.(problem);
    for (const [k, stored] of shadows) {
      const entry = this.#newEntry(stored.thing, stored.name, stored.document, stored.version);
      this.#entries.set(k, entry);
      if (stored.journaled) this.#dirty.add(entry);
    }
    this.#syncedSeq = lastSeq;
    this.#maybeCompact();
  }

  /** Number of shadows that exist (deleted ones excluded). */
  get size(): number {
    let n = 0;
    for (const e of this.#entries.values()) if (e.durable) n++;
    return n;
  }

  /** Ids of the shadows that exist, optionally of one thing. */
  list(thing?: string): ShadowId[] {
    const ids: ShadowId[] = [];
    for (const e of this.#entries.values()) {
      if (!e.durable) continue;
      if (thing === undefined || e.thing === thing) ids.push(e.name ? { thing: e.thing, name: e.name } : { thing: e.thing });
    }
    return ids;
  }

  /** Whether the shadow exists now or ever did (a deleted shadow keeps its version). */
  exists(id: ShadowId): boolean {
    return this.#entries.has(keyOf(id));
  }

  /** The committed document (what survives a crash), or undefined. */
  document(id: ShadowId): ShadowDocument | undefined {
    return structuredClone(this.#entries.get(keyOf(id))?.durable);
  }

  /** Payload of /get/accepted; throws 404 when the shadow does not exist. */
  get(id: ShadowId, clientToken?: string): Record<string, unknown> {
    checkNames(id.thing, id.name);
    const doc = this.#entries.get(keyOf(id))?.durable;
    if (!doc) throw notFound(id);
    return getResponse(doc, this.#now(), clientToken);
  }

  /**
   * Applies a validated update; resolves once it is durable, with everything to publish. The service
   * takes `request` over (its values become part of the document: do not change it afterwards), and
   * the payloads it returns or emits share structure with the stored document: read them, serialize
   * them, never change them (`document()` returns a private copy).
   */
  update(id: ShadowId, request: UpdateRequest): Promise<UpdateResult> {
    let settle!: UpdateCallback;
    const done = new Promise<UpdateResult>((resolve, reject) => {
      settle = (err, result) => (err ? reject(err) : resolve(result!));
    });
    this.submitUpdate(id, request, settle);
    return done;
  }

  /**
   * update() without a promise, for a face that answers through the events anyway (MQTT): the same
   * checks, thrown synchronously, and `done` is called once — after the events, with the result — when
   * the update is durable, or with the error when it cannot be. Every accepted update of a busy gateway
   * goes through here, so it allocates as little as it can.
   */
  submitUpdate(id: ShadowId, request: UpdateRequest, done: UpdateCallback): void {
    checkNames(id.thing, id.name);
    const entry = this.#entry(id);
    this.#admit(entry);
    let result: UpdateResult;
    let stateJson: string;
    try {
      // The journal holds the state's JSON: a value JSON cannot carry (1e400 parses to Infinity, which
      // serializes as null) would come back different after a restart, so it is refused like bad JSON.
      if (!jsonSafe(request.state)) throw new ShadowRequestError(400, 'Invalid JSON');
      result = applyUpdate(entry.pending, entry.pendingVersion, request, this.#now());
      stateJson = JSON.stringify(request.state);
    } catch (err) {
      entry.inFlight--;
      throw err;
    }
    const version = result.document.version;
    entry.pending = result.document;
    entry.pendingVersion = version;
    this.#record(entry, result.document, version, updateRecord(entry.prefix, version, result.document.timestamp, stateJson), (err) => {
      if (err) return done(err);
      try {
        this.emit('accepted', id, result.accepted, acceptedJson(result, stateJson));
        if (result.delta) this.emit('delta', id, result.delta);
        this.emit('documents', id, result.documents);
      } catch (thrown) {
        return done(asError(thrown));
      }
      done(undefined, result);
    });
  }

  /** Deletes a shadow; its version carries on if it is created again. Throws 404 if it does not exist. */
  delete(id: ShadowId, clientToken?: string): Promise<Record<string, unknown>> {
    checkNames(id.thing, id.name);
    const entry = this.#entries.get(keyOf(id));
    if (!entry?.pending) return Promise.reject(notFound(id));
    this.#admit(entry);
    const version = entry.pendingVersion;
    entry.pending = undefined;
    const payload = deleteResponse(version, this.#now(), clientToken);
    return new Promise((resolve, reject) => {
      this.#record(entry, undefined, version, deleteRecord(entry.prefix, version), (err) => {
        if (err) return reject(err);
        try {
          this.emit('deleted', id, payload);
        } catch (thrown) {
          return reject(asError(thrown));
        }
        resolve(payload);
      });
    });
  }

  #newEntry(thing: string, name: string, doc: ShadowDocument | undefined, version: number): Entry {
    return {
      thing,
      name,
      prefix: recordPrefix(thing, name),
      pending: doc,
      pendingVersion: version,
      committed: doc,
      committedVersion: version,
      durable: doc,
      durableVersion: version,
      inFlight: 0,
    };
  }

  #entry(id: ShadowId): Entry {
    const k = keyOf(id);
    let entry = this.#entries.get(k);
    if (!entry) {
      entry = this.#newEntry(id.thing, id.name ?? '', undefined, 0);
      this.#entries.set(k, entry);
    }
    return entry;
  }

  #admit(entry: Entry): void {
    // AWS shadow: 429 when too many requests are in flight.
    if (entry.inFlight >= this.#options.maxInFlightPerShadow) throw new ShadowRequestError(429, 'Too many requests');
    entry.inFlight++;
  }

  /**
   * Adds a change (its document: undefined = deleted) to the journal row of the next group commit;
   * `settle` is told once that row is durable or failed.
   */
  #record(entry: Entry, doc: ShadowDocument | undefined, version: number, record: string, settle: Settle): void {
    let batch = this.#batch;
    if (!batch) {
      const b: Batch = { seq: this.#journal.takeSeq(), records: [], changes: [] };
      batch = this.#batch = b;
      this.#store.writer.submit(
        () => {
          // From here on changes go to the next row (this op may run twice: group commit retries a
          // failed batch op by op, and then writes the same row again).
          if (this.#batch === b) this.#batch = undefined;
          this.#journal.append(b.seq, b.records);
        },
        (err) => this.#written(b, err),
        () => {
          for (const c of b.changes) {
            c.entry.committed = c.doc;
            c.entry.committedVersion = c.version;
          }
        },
      );
    }
    batch.records.push(record);
    batch.changes.push({ entry, doc, version, settle });
  }

  /** A journal row is durable (or failed): the shadows' state follows, then every change it carried is told. */
  #written(batch: Batch, err: Error | undefined): void {
    // A row refused before its op ran (store closed or failed) must not take later changes along.
    if (this.#batch === batch) this.#batch = undefined;
    let failure: ShadowRequestError | undefined;
    if (err) {
      failure = new ShadowRequestError(500, 'Internal service failure', { cause: err });
      // Back to what is committed (a row committed before this one may still be syncing): a failed row
      // is reported before any other change can be computed, so none was built on it.
      for (const { entry } of batch.changes) {
        entry.inFlight--;
        entry.pending = entry.committed;
        entry.pendingVersion = entry.committedVersion;
      }
    } else {
      for (const c of batch.changes) {
        c.entry.inFlight--;
        // Never backwards: closing the store syncs the last rows itself and may answer them before an
        // fdatasync still running answers earlier ones.
        if (c.version >= c.entry.durableVersion) {
          c.entry.durable = c.doc;
          c.entry.durableVersion = c.version;
        }
        this.#dirty.add(c.entry);
      }
      this.#syncedSeq = Math.max(this.#syncedSeq, batch.seq);
      this.#sinceCompaction += batch.changes.length;
      this.#maybeCompact();
    }
    // Each is told even if one of them throws (the first error still reaches the store's error handler).
    let thrown: unknown;
    for (const c of batch.changes) {
      try {
        c.settle(failure);
      } catch (e) {
        thrown ??= e;
      }
    }
    if (thrown !== undefined) throw asError(thrown);
  }

  /**
   * Stops compacting (call before closing the store). The journal rows left are replayed by the next
   * start; nothing is lost either way.
   */
  close(): void {
    this.#closed = true;
    clearTimeout(this.#compactTimer);
    this.#compactTimer = undefined;
  }

  #maybeCompact(): void {
    if (this.#closed || this.#compacting || this.#syncedSeq <= this.#compactedSeq) return;
    if (this.#sinceCompaction >= this.#compaction.afterRecords) {
      this.#compact();
    } else if (!this.#compactTimer) {
      this.#compactTimer = setTimeout(() => {
        this.#compactTimer = undefined;
        this.#compact();
      }, this.#compaction.afterMs);
      this.#compactTimer.unref();
    }
  }

  /**
   * Writes the durable document of every shadow changed since the last compaction, `chunk` per
   * group-commit write, then deletes the journal rows that were durable when it began: each of those
   * rows' changes is in a document written since. Documents written may be newer than those rows (they
   * are what is durable when each step runs); replay skips what a document already holds.
   */
  #compact(): void {
    if (this.#compactTimer) {
      clearTimeout(this.#compactTimer);
      this.#compactTimer = undefined;
    }
    if (this.#closed || this.#compacting || this.#syncedSeq <= this.#compactedSeq) return;
    this.#compacting = true;
    this.#sinceCompaction = 0;
    const upTo = this.#syncedSeq;
    const todo = [...this.#dirty];
    this.#dirty.clear();
    const step = (from: number): void => {
      const to = Math.min(from + this.#compaction.chunk, todo.length);
      const last = to === todo.length;
      this.#store.writer.submit(
        () => {
          for (let i = from; i < to; i++) {
            const e = todo[i]!;
            this.#journal.writeDocument(e.thing, e.name, e.durable, e.durableVersion);
          }
          if (last) this.#journal.trim(upTo);
        },
        (err) => {
          if (err || (this.#closed && !last)) {
            // Tried again later (or by the next start): these shadows are still behind their rows, and
            // the rows are all there.
            for (let i = from; i < todo.length; i++) this.#dirty.add(todo[i]!);
            this.#compacting = false;
            if (this.#closed) return;
            this.#options.onStoreError?.(new CoordinatorError('COORD_ERR_STORE_WRITE', `shadow compaction failed; it is tried again later: ${err!.message}`, { cause: err }));
            this.#maybeCompact();
            return;
          }
          if (!last) return step(to);
          this.#compactedSeq = upTo;
          this.#compacting = false;
          this.#maybeCompact();
        },
      );
    };
    step(0);
  }
}
