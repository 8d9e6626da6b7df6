/**
 * The shadow service's in-process face: get / update / delete / watch, with the same rules and errors
 * as the MQTT face (which is a thin adapter over this). Documents live in memory for reads and in the
 * `shadows` table for durability; an update resolves only after its row is committed.
 *
 * Updates to one shadow are applied in arrival order and pipelined: each is computed on top of the one
 * before it (committed or not) and they share group commits, so a hot shadow is not limited to one fsync
 * per update. A row is written only over the version it was computed from, so if one write fails, the
 * ones stacked on it fail too instead of committing its changes behind its back.
 */
import { EventEmitter } from 'node:events';
import type { Statement } from 'better-sqlite3';
import type { Store } from '../store/database.js';
import {
  applyUpdate,
  deleteResponse,
  getResponse,
  ShadowRequestError,
  type ShadowDocument,
  type UpdateRequest,
  type UpdateResult,
} from './document.js';
import { checkNames } from './request.js';

/** Identifies a shadow: the classic shadow of a thing has no name. */
export interface ShadowId {
  readonly thing: string;
  readonly name?: string | undefined;
}

/** Events a watcher receives. */
export interface ShadowEvents {
  /** Payload of /update/accepted, for every accepted update whatever face it came through. */
  accepted: [id: ShadowId, payload: Record<string, unknown>];
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
}

interface Entry {
  /** What the next request sees: the newest accepted state, committed or not (undefined = no shadow). */
  pending: ShadowDocument | undefined;
  pendingVersion: number;
  /** What is on disk. */
  durable: ShadowDocument | undefined;
  durableVersion: number;
  inFlight: number;
  /** The row write queued for the next commit, not yet run: later changes join it (see #persist). */
  queued: QueuedWrite | undefined;
}

interface QueuedWrite {
  readonly fromVersion: number;
  doc: ShadowDocument | undefined;
  version: number;
  /** The changes this write makes durable, in arrival order: each is told once it is (or is not). */
  readonly waiters: Settle[];
}

/** Told once whether a change is durable (no error) or refused by the store (500). */
type Settle = (err: ShadowRequestError | undefined) => void;

/**
 * How an update's outcome reaches its caller: the result once durable and announced, or the error (a
 * ShadowRequestError 500 when the store refused it, or whatever an event listener threw).
 */
export type UpdateCallback = (err: Error | undefined, result?: UpdateResult) => void;

const key = (id: ShadowId): string => `${id.thing}\u0000${id.name ?? ''}`;

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
  readonly #sql: { all: Statement; write: Statement; insert: Statement };
  readonly #now: () => number;

  constructor(store: Store, options: ShadowServiceOptions) {
    super();
    this.#store = store;
    this.#options = options;
    this.#now = options.now ?? (() => Math.floor(Date.now() / 1000));
    const db = store.db;
    this.#sql = {
      all: db.prepare('SELECT thing, name, document, version FROM shadows'),
      // Only over the version this write was computed from: see the header comment.
      write: db.prepare('UPDATE shadows SET document = ?, version = ? WHERE thing = ? AND name = ? AND version = ?'),
      insert: db.prepare('INSERT INTO shadows (thing, name, document, version) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING'),
    };
    for (const row of this.#sql.all.all() as { thing: string; name: string; document: string | null; version: number }[]) {
      const doc = row.document === null ? undefined : (JSON.parse(row.document) as ShadowDocument);
      this.#entries.set(key({ thing: row.thing, name: row.name || undefined }), {
        pending: doc,
        pendingVersion: row.version,
        durable: doc,
        durableVersion: row.version,
        inFlight: 0,
        queued: undefined,
      });
    }
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
    for (const [k, e] of this.#entries) {
      if (!e.durable) continue;
      const [t, n] = k.split('\u0000') as [string, string];
      if (thing === undefined || t === thing) ids.push(n ? { thing: t, name: n } : { thing: t });
    }
    return ids;
  }

  /** Whether the shadow exists now or ever did (a deleted shadow keeps its version). */
  exists(id: ShadowId): boolean {
    return this.#entries.has(key(id));
  }

  /** The committed document (what survives a crash), or undefined. */
  document(id: ShadowId): ShadowDocument | undefined {
    return structuredClone(this.#entries.get(key(id))?.durable);
  }

  /** Payload of /get/accepted; throws 404 when the shadow does not exist. */
  get(id: ShadowId, clientToken?: string): Record<string, unknown> {
    checkNames(id.thing, id.name);
    const doc = this.#entries.get(key(id))?.durable;
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
    try {
      result = applyUpdate(entry.pending, entry.pendingVersion, request, this.#now());
    } catch (err) {
      entry.inFlight--;
      throw err;
    }
    const from = entry.pendingVersion;
    entry.pending = result.document;
    entry.pendingVersion = result.document.version;
    this.#persist(id, entry, from, result.document, (err) => {
      if (err) return done(err);
      try {
        this.emit('accepted', id, result.accepted);
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
    const entry = this.#entries.get(key(id));
    if (!entry?.pending) return Promise.reject(notFound(id));
    this.#admit(entry);
    const from = entry.pendingVersion;
    entry.pending = undefined;
    const payload = deleteResponse(from, this.#now(), clientToken);
    return new Promise((resolve, reject) => {
      this.#persist(id, entry, from, undefined, (err) => {
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

  #entry(id: ShadowId): Entry {
    const k = key(id);
    let entry = this.#entries.get(k);
    if (!entry) {
      entry = { pending: undefined, pendingVersion: 0, durable: undefined, durableVersion: 0, inFlight: 0, queued: undefined };
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
   * Makes `doc` (undefined = deleted) the shadow's row. Changes of one shadow that arrive before the
   * next commit share one row write: only the newest document is serialized and written, over the
   * version the first of them was computed from, and all of them are acknowledged by that commit.
   */
  #persist(id: ShadowId, entry: Entry, fromVersion: number, doc: ShadowDocument | undefined, settle: Settle): void {
    const version = doc?.version ?? fromVersion;
    const queued = entry.queued;
    if (queued) {
      queued.doc = doc;
      queued.version = version;
      queued.waiters.push(settle);
      return;
    }
    const name = id.name ?? '';
    const w: QueuedWrite = { fromVersion, doc, version, waiters: [settle] };
    entry.queued = w;
    this.#store.writer.submit(
      () => {
        // From here on later changes need a write of their own (this op may run twice: group commit
        // retries a failed batch op by op).
        if (entry.queued === w) entry.queued = undefined;
        const json = w.doc ? JSON.stringify(w.doc) : null;
        const changed = this.#sql.write.run(json, w.version, id.thing, name, w.fromVersion).changes;
        if (changed === 1) return;
        if (w.fromVersion === 0 && this.#sql.insert.run(id.thing, name, json, w.version).changes === 1) return;
        throw new Error(`shadow ${id.thing}/${name} is not at version ${w.fromVersion} on disk: an earlier write failed`);
      },
      (err) => this.#written(entry, w, err),
    );
  }

  /** `w` is durable (or failed): the shadow's state follows, then every change it carried is told. */
  #written(entry: Entry, w: QueuedWrite, err: Error | undefined): void {
    // A write refused before its op ran (store closed or failed) must not take later changes along.
    if (entry.queued === w) entry.queued = undefined;
    entry.inFlight -= w.waiters.length;
    let failure: ShadowRequestError | undefined;
    if (err) {
      // Back to what is on disk: requests computed on the failed one fail with it (see above).
      entry.pending = entry.durable;
      entry.pendingVersion = entry.durableVersion;
      failure = new ShadowRequestError(500, 'Internal service failure', { cause: err });
    } else if (w.version >= entry.durableVersion) {
      entry.durable = w.doc;
      entry.durableVersion = w.version;
    }
    // Each is told even if one of them throws (the first error still reaches the store's error handler).
    let thrown: unknown;
    for (const settle of w.waiters) {
      try {
        settle(failure);
      } catch (e) {
        thrown ??= e;
      }
    }
    if (thrown !== undefined) throw asError(thrown);
  }
}
