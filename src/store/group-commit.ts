/**
 * Group commit: every write queued during one turn of the event loop is applied in a single SQLite
 * transaction, so N writes arriving together cost one fsync, not N. A write's promise resolves only
 * once its transaction is on disk (synchronous=FULL), which is what lets callers acknowledge it.
 */
import type { Database } from 'better-sqlite3';
import { CoordinatorError } from '../errors.js';

/** A unit of work run inside the batch transaction; it must only touch the database. */
export type WriteOp = () => void;

interface Pending {
  readonly op: WriteOp;
  readonly resolve: () => void;
  readonly reject: (err: Error) => void;
}

/** Counters exposed through `coordinator status`. */
export interface GroupCommitStats {
  commits: number;
  writes: number;
  largestBatch: number;
  lastCommitMs: number;
  failedWrites: number;
  lastError: string | null;
}

/** Batches writes into shared durable transactions. */
export class GroupCommitWriter {
  readonly #db: Database;
  readonly #onError: (err: Error) => void;
  #queue: Pending[] = [];
  #scheduled = false;
  #closed = false;
  readonly stats: GroupCommitStats = { commits: 0, writes: 0, largestBatch: 0, lastCommitMs: 0, failedWrites: 0, lastError: null };

  constructor(db: Database, onError: (err: Error) => void) {
    this.#db = db;
    this.#onError = onError;
  }

  /** Writes waiting for the next commit. */
  get pending(): number {
    return this.#queue.length;
  }

  /** Queues `op`; resolves once it is durable, rejects with COORD_ERR_STORE_* if it could not be. */
  write(op: WriteOp): Promise<void> {
    if (this.#closed) {
      return Promise.reject(new CoordinatorError('COORD_ERR_STORE_CLOSED', 'store is closed; the write was not applied'));
    }
    return new Promise<void>((resolve, reject) => {
      this.#queue.push({ op, resolve, reject });
      if (!this.#scheduled) {
        this.#scheduled = true;
        // setImmediate runs after the current I/O phase: everything the sockets delivered in this turn
        // joins the same transaction.
        setImmediate(() => this.flush());
      }
    });
  }

  /** Queues `op` without waiting for durability; a failure is reported to the error handler. */
  writeLater(op: WriteOp): void {
    this.write(op).catch((err: unknown) => this.#onError(err as Error));
  }

  /** Commits everything queued now. Safe to call at any time (used by shutdown). */
  flush(): void {
    this.#scheduled = false;
    const batch = this.#queue;
    if (batch.length === 0) return;
    this.#queue = [];
    const started = performance.now();
    try {
      this.#db.transaction(() => {
        for (const p of batch) p.op();
      })();
      this.#settle(batch, started);
    } catch {
      // One bad write must not sink its neighbours: retry each alone so only the culprit fails.
      for (const p of batch) {
        try {
          this.#db.transaction(p.op)();
          this.#settle([p], started);
        } catch (err) {
          this.stats.failedWrites++;
          this.stats.lastError = (err as Error).message;
          p.reject(new CoordinatorError('COORD_ERR_STORE_WRITE', `durable write failed: ${(err as Error).message}`, { cause: err }));
        }
      }
    }
  }

  #settle(batch: readonly Pending[], started: number): void {
    this.stats.commits++;
    this.stats.writes += batch.length;
    this.stats.largestBatch = Math.max(this.stats.largestBatch, batch.length);
    this.stats.lastCommitMs = performance.now() - started;
    for (const p of batch) p.resolve();
  }

  /** Flushes what is queued and refuses further writes. */
  close(): void {
    this.flush();
    this.#closed = true;
  }
}
