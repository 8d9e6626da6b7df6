/**
 * How shadows are stored: a table of documents (`shadows`) plus a journal of the changes made since the
 * documents were last written (`shadow_journal`).
 *
 * Every accepted change is one journal record: for an update, the request's state (serialized once, for
 * the record and for the /update/accepted payload that embeds it), its timestamp and the new version; for
 * a delete, the version it keeps. The changes of one group commit are one journal row,
 * whatever the number of shadows they touch. So an update costs a share of one row insert, where writing
 * its shadow's document cost a serialization of the whole document and an UPDATE of its row (with 100
 * shadows updated round-robin, that was the largest cost the store added per update).
 *
 * Compaction writes the documents of the shadows changed since the last one and deletes the journal rows
 * they cover, in chunks (see ShadowService). Loading replays the journal on the documents: an update
 * record is applied with the shadow rules (`applyUpdate` is pure, and a record holds every input it takes:
 * prior document, state, timestamp), so the documents come back exactly as they were acknowledged.
 * Replay goes by version, which makes it idempotent: a compaction may write a document newer than the
 * journal rows it deletes (it writes what is durable when it runs), and the records that document already
 * holds are skipped. A journal damaged outside the coordinator (versions missing, a row that is not JSON)
 * does not stop the gateway: each shadow keeps the state that follows on from its document, the rest of
 * its records are left out, every such problem is reported as COORD_ERR_STORE_RESTORE, and the journal
 * rows from the first damaged one on are copied to `shadow_journal_damaged` before compaction can delete
 * them (what was left out stays readable for the operator).
 */
import type { Statement } from 'better-sqlite3';
import { CoordinatorError } from '../errors.js';
import type { Store } from '../store/database.js';
import { applyUpdate, type JsonObject, type ShadowDocument } from './document.js';

/** A shadow as stored: `document` undefined once deleted (its version carries on). */
export interface StoredShadow {
  readonly thing: string;
  /** '' for a classic shadow. */
  readonly name: string;
  document: ShadowDocument | undefined;
  version: number;
  /** Whether the journal changed it (its document row is behind: a compaction must write it). */
  journaled: boolean;
  /** Set when one of its records could not be applied: its later records are left out too. */
  broken?: true;
}

/** One journal record, as serialized: an update (`s` its state, `ts` its timestamp) or a delete (`d`). */
interface JournalRecord {
  t: string;
  n: string;
  /** The version after the change: the update's new version, or the version a delete keeps. */
  v: number;
  s?: { desired?: JsonObject | null; reported?: JsonObject | null };
  ts?: number;
  d?: 1;
}

/** The start of a record of this shadow: `{"t":<thing>,"n":<name>,` (kept per shadow, built once). */
export function recordPrefix(thing: string, name: string): string {
  return `{"t":${JSON.stringify(thing)},"n":${JSON.stringify(name)},`;
}

/** The journal record of an update: its new version, its timestamp and its request's state (as JSON). */
export function updateRecord(prefix: string, version: number, timestamp: number, stateJson: string): string {
  return `${prefix}"v":${version},"ts":${timestamp},"s":${stateJson}}`;
}

/** The journal record of a delete of the shadow at `version`. */
export function deleteRecord(prefix: string, version: number): string {
  return `${prefix}"v":${version},"d":1}`;
}

/** The statements of the shadow store. */
export class ShadowJournal {
  readonly #sql: {
    documents: Statement;
    journal: Statement;
    append: Statement;
    write: Statement;
    trim: Statement;
    lastSeq: Statement;
    keepDamaged: Statement;
  };
  /** Seq of the next journal row. */
  #nextSeq: number;

  constructor(store: Store) {
    const db = store.db;
    this.#sql = {
      documents: db.prepare('SELECT thing, name, document, version FROM shadows'),
      journal: db.prepare('SELECT seq, records FROM shadow_journal ORDER BY seq'),
      append: db.prepare('INSERT INTO shadow_journal (seq, records) VALUES (?, ?)'),
      // Never backwards: a compaction writes what is durable, which only grows.
      write: db.prepare(
        `INSERT INTO shadows (thing, name, document, version) VALUES (?, ?, ?, ?)
         ON CONFLICT (thing, name) DO UPDATE SET document = excluded.document, version = excluded.version WHERE excluded.version >= shadows.version`,
      ),
      trim: db.prepare('DELETE FROM shadow_journal WHERE seq <= ?'),
      lastSeq: db.prepare('SELECT COALESCE(MAX(seq), 0) AS seq FROM shadow_journal'),
      keepDamaged: db.prepare('INSERT OR IGNORE INTO shadow_journal_damaged (seq, records, found_at) SELECT seq, records, ? FROM shadow_journal WHERE seq >= ?'),
    };
    this.#nextSeq = (this.#sql.lastSeq.get() as { seq: number }).seq + 1;
  }

  /** A seq for the next journal row (rows are written in seq order: one group commit after another). */
  takeSeq(): number {
    return this.#nextSeq++;
  }

  /**
   * Every stored shadow, the journal replayed on the documents, and the last journal seq (0 if empty).
   * What could not be replayed exactly is left out and described in `problems` (COORD_ERR_STORE_RESTORE).
   */
  load(): { shadows: Map<string, StoredShadow>; lastSeq: number; problems: CoordinatorError[] } {
    const shadows = new Map<string, StoredShadow>();
    for (const row of this.#sql.documents.all() as { thing: string; name: string; document: string | null; version: number }[]) {
      const document = row.document === null ? undefined : (JSON.parse(row.document) as ShadowDocument);
      shadows.set(`${row.thing}\u0000${row.name}`, { thing: row.thing, name: row.name, document, version: row.version, journaled: false });
    }
    let lastSeq = 0;
    let firstDamaged: number | undefined;
    const problems: CoordinatorError[] = [];
    const report = (seq: number, problem: CoordinatorError): void => {
      firstDamaged ??= seq;
      problems.push(problem);
    };
    for (const row of this.#sql.journal.iterate() as Iterable<{ seq: number; records: string }>) {
      lastSeq = row.seq;
      let records: unknown;
      try {
        records = JSON.parse(row.records);
      } catch (err) {
        report(row.seq, restoreError(`shadow journal row ${row.seq} is not JSON; its changes were left out`, err));
        continue;
      }
      if (!Array.isArray(records)) {
        report(row.seq, restoreError(`shadow journal row ${row.seq} is not a list of records; its changes were left out`));
        continue;
      }
      for (const r of records as JournalRecord[]) {
        const problem = replay(shadows, r, row.seq);
        if (problem) report(row.seq, problem);
      }
    }
    if (firstDamaged !== undefined) {
      // Committed before any compaction can delete them (its sync covers this earlier write too).
      this.#sql.keepDamaged.run(Date.now(), firstDamaged);
      problems.push(restoreError(`shadow journal rows from ${firstDamaged} on were copied to table shadow_journal_damaged`));
    }
    return { shadows, lastSeq, problems };
  }

  /** Appends one journal row (inside a group-commit write op). */
  append(seq: number, records: readonly string[]): void {
    this.#sql.append.run(seq, `[${records.join(',')}]`);
  }

  /** Writes a shadow's document row (inside a group-commit write op). */
  writeDocument(thing: string, name: string, document: ShadowDocument | undefined, version: number): void {
    this.#sql.write.run(thing, name, document ? JSON.stringify(document) : null, version);
  }

  /** Deletes the journal rows up to `seq` (inside a group-commit write op). */
  trim(seq: number): void {
    this.#sql.trim.run(seq);
  }
}

function restoreError(message: string, cause?: unknown): CoordinatorError {
  return new CoordinatorError('COORD_ERR_STORE_RESTORE', message, cause === undefined ? undefined : { cause });
}

/**
 * Applies one record on top of the stored state, by version (see the header: replay is idempotent).
 * Returns what went wrong when it cannot be applied exactly.
 */
function replay(shadows: Map<string, StoredShadow>, r: JournalRecord, seq: number): CoordinatorError | undefined {
  if (typeof r !== 'object' || r === null || typeof r.t !== 'string' || typeof r.n !== 'string' || !Number.isSafeInteger(r.v)) {
    return restoreError(`shadow journal row ${seq} holds a malformed record; it was left out`);
  }
  const key = `${r.t}\u0000${r.n}`;
  let shadow = shadows.get(key);
  if (!shadow) {
    shadow = { thing: r.t, name: r.n, document: undefined, version: 0, journaled: true };
    shadows.set(key, shadow);
  }
  if (shadow.broken) return undefined; // reported at its first record left out
  const fail = (what: string): CoordinatorError => {
    shadow.broken = true;
    shadow.journaled = true; // its document row is written as restored, so the journal can be trimmed
    const name = r.n === '' ? r.t : `${r.t}/${r.n}`;
    return restoreError(`shadow ${name}: journal row ${seq} holds ${what}; kept at version ${shadow.version}, later changes left out`);
  };
  if (r.d === 1) {
    // A delete keeps the version: it applies to that version only; a newer document already holds it.
    if (r.v > shadow.version) return fail(`a delete of version ${r.v}, never stored`);
    if (r.v < shadow.version) return undefined; // the document is newer than this delete
    shadow.document = undefined;
  } else {
    if (r.v <= shadow.version) return undefined; // the document already holds this update
    if (r.v !== shadow.version + 1) return fail(`version ${r.v}: versions missing in between`);
    if (typeof r.ts !== 'number' || typeof r.s !== 'object' || r.s === null) return fail(`a malformed update (version ${r.v})`);
    try {
      shadow.document = applyUpdate(shadow.document, shadow.version, { state: r.s }, r.ts).document;
    } catch (err) {
      return fail(`an update that does not apply (version ${r.v}: ${(err as Error).message})`);
    }
  }
  shadow.version = r.v;
  shadow.journaled = true;
  return undefined;
}
