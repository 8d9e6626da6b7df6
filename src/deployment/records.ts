/**
 * The deployment history in the store: one row per deployment the agent took up, with its status, the
 * step it reached and how many coordinator starts it has been through, plus the `active` pointer (the
 * deployment whose tasks run). A status and the pointer change in one durable transaction, so after a
 * crash the row says what the gateway runs and why.
 */
import { createHash } from 'node:crypto';
import type { Statement } from 'better-sqlite3';
import type { Store } from '../store/database.js';
import type { DeploymentStatus, Problem } from './document.js';

/** Status of a row: what `reported.status` shows, or SUPERSEDED (a newer deployment took over mid-way). */
export type RecordStatus = DeploymentStatus | 'SUPERSEDED';

/** How far a deployment got: what a restart resumes from. */
export type Step = 'validate' | 'fetch' | 'load' | 'health' | 'rollback' | 'done';

/** One deployment in the history. */
export interface DeploymentRecord {
  readonly seq: number;
  readonly id: string;
  readonly hash: string;
  /** The desired document as it was read from the shadow. */
  readonly document: unknown;
  readonly status: RecordStatus;
  readonly reason: string;
  readonly problems: readonly Problem[] | null;
  readonly step: Step;
  readonly attempts: number;
  readonly createdAt: string;
  readonly updatedAt: string;
}

interface Row {
  seq: number;
  id: string;
  hash: string;
  document: string;
  status: RecordStatus;
  reason: string;
  problems: string | null;
  step: Step;
  attempts: number;
  created_at: string;
  updated_at: string;
}

/** A change to a row. */
export interface RecordPatch {
  readonly status?: RecordStatus;
  readonly reason?: string;
  readonly problems?: readonly Problem[] | null;
  readonly step?: Step;
  readonly attempts?: number;
}

/** JSON with object keys sorted: the same document hashes the same whatever order a writer used. */
function canonical(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonical).join(',')}]`;
  if (value !== null && typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonical(v)}`).join(',')}}`;
  }
  return JSON.stringify(value);
}

/** sha256 of a document's canonical JSON, hex. */
export function documentHash(document: unknown): string {
  return createHash('sha256').update(canonical(document)).digest('hex');
}

const toRecord = (r: Row): DeploymentRecord => ({
  seq: r.seq,
  id: r.id,
  hash: r.hash,
  document: JSON.parse(r.document) as unknown,
  status: r.status,
  reason: r.reason,
  problems: r.problems === null ? null : (JSON.parse(r.problems) as Problem[]),
  step: r.step,
  attempts: r.attempts,
  createdAt: r.created_at,
  updatedAt: r.updated_at,
});

/** The deployment history. */
export class DeploymentRecords {
  readonly #store: Store;
  readonly #sql: Record<'insert' | 'update' | 'get' | 'find' | 'history' | 'pointer' | 'setPointer' | 'prune', Statement>;

  constructor(store: Store) {
    this.#store = store;
    const db = store.db;
    this.#sql = {
      insert: db.prepare(
        'INSERT INTO deployments (id, hash, document, status, reason, problems, step, attempts, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)',
      ),
      update: db.prepare('UPDATE deployments SET status = ?, reason = ?, problems = ?, step = ?, attempts = ?, updated_at = ? WHERE seq = ?'),
      get: db.prepare('SELECT * FROM deployments WHERE seq = ?'),
      find: db.prepare('SELECT * FROM deployments WHERE id = ? AND hash = ? ORDER BY seq DESC LIMIT 1'),
      history: db.prepare('SELECT * FROM deployments ORDER BY seq DESC LIMIT ?'),
      pointer: db.prepare('SELECT seq FROM deployment_pointers WHERE name = ?'),
      setPointer: db.prepare('INSERT INTO deployment_pointers (name, seq) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET seq = excluded.seq'),
      prune: db.prepare('DELETE FROM deployments WHERE seq < ? AND seq NOT IN (SELECT seq FROM deployment_pointers)'),
    };
  }

  get(seq: number): DeploymentRecord | undefined {
    const row = this.#sql.get.get(seq) as Row | undefined;
    return row && toRecord(row);
  }

  /** The newest row of this id and document. */
  find(id: string, hash: string): DeploymentRecord | undefined {
    const row = this.#sql.find.get(id, hash) as Row | undefined;
    return row && toRecord(row);
  }

  /** The newest `limit` rows, newest first. */
  history(limit: number): DeploymentRecord[] {
    return (this.#sql.history.all(limit) as Row[]).map(toRecord);
  }

  /** The deployment whose tasks run (undefined: none yet). */
  active(): DeploymentRecord | undefined {
    const p = this.#sql.pointer.get('active') as { seq: number } | undefined;
    return p && this.get(p.seq);
  }

  /** The deployment that ran before the active one was switched in: what a rollback restores. */
  previous(): DeploymentRecord | undefined {
    const p = this.#sql.pointer.get('previous') as { seq: number } | undefined;
    return p && this.get(p.seq);
  }

  /** Adds a row; resolves with its seq once durable. */
  async create(fields: { id: string; hash: string; document: unknown; status: RecordStatus; reason: string; problems?: readonly Problem[] | null; step: Step }): Promise<number> {
    let seq = 0;
    const now = new Date().toISOString();
    await this.#store.writer.write(() => {
      const r = this.#sql.insert.run(fields.id, fields.hash, JSON.stringify(fields.document), fields.status, fields.reason, fields.problems ? JSON.stringify(fields.problems) : null, fields.step, 1, now, now);
      seq = Number(r.lastInsertRowid);
    });
    return seq;
  }

  /**
   * Changes a row and, when given, the `active` pointer (and `previous`: what ran before it), in one
   * durable transaction. Pointed-to rows are never pruned.
   */
  async update(seq: number, patch: RecordPatch, active?: number, previous?: number): Promise<void> {
    const cur = this.get(seq);
    if (!cur) return;
    const problems = patch.problems === undefined ? cur.problems : patch.problems;
    await this.#store.writer.write(() => {
      this.#sql.update.run(
        patch.status ?? cur.status,
        patch.reason ?? cur.reason,
        problems ? JSON.stringify(problems) : null,
        patch.step ?? cur.step,
        patch.attempts ?? cur.attempts,
        new Date().toISOString(),
        seq,
      );
      if (active !== undefined) this.#sql.setPointer.run('active', active);
      if (previous !== undefined) this.#sql.setPointer.run('previous', previous);
    });
  }

  /** Drops history rows beyond the newest `keep` (the active one always stays). */
  async prune(keep: number): Promise<void> {
    const rows = this.history(keep);
    if (rows.length < keep) return;
    const oldest = rows[rows.length - 1]!.seq;
    await this.#store.writer.write(() => void this.#sql.prune.run(oldest));
  }
}
