/**
 * Group commit: every write queued during one turn of the event loop is applied in a single SQLite
 * transaction (a few queued while a sync runs wait for it to end and are committed together), and the
 * transactions are made durable by an fdatasync of the WAL that runs off the event loop (libuv's thread
 * pool). A write's promise resolves only once an fdatasync that began after its transaction has
 * returned, which is what lets callers acknowledge it.
 *
 * Why not synchronous=FULL: it fsyncs inside COMMIT, on the event loop, so every connection stalls for
 * the disk and the next batch cannot even be computed while the previous one syncs. With
 * synchronous=NORMAL in WAL mode SQLite keeps the database consistent (the WAL is synced before every
 * checkpoint) but leaves the WAL's own sync to us; we run one fdatasync at a time and let every
 * transaction committed meanwhile share the next one — the classic pipelined group commit, so the disk
 * stays busy with syncs while the event loop keeps working.
 */
import { closeSync, fdatasync, fdatasyncSync, fsyncSync, openSync } from 'node:fs';
import { dirname } from 'node:path';
import type { Database } from 'better-sqlite3';
import { CoordinatorError } from '../errors.js';

/** A unit of work run inside the batch transaction; it must only touch the database. */
export type WriteOp = () => void;

/** Writes queued while a sync runs that are committed at once rather than when it ends (see submit). */
const EARLY_COMMIT_WRITES = 8;

/** Told once whether a submitted write is durable (no error) or not. */
export type WriteDone = (err?: Error) => void;

/** Told, synchronously, that the transaction holding a write has committed (it is not yet durable). */
export type WriteCommitted = () => void;

interface Pending {
  readonly op: WriteOp;
  readonly done: WriteDone;
  readonly committed: WriteCommitted | undefined;
}

/** Counters exposed through `coordinator status`. */
export interface GroupCommitStats {
  /** Transactions committed (to the WAL). */
  commits: number;
  /** fdatasyncs of the WAL that made commits durable. */
  syncs: number;
  /** Writes made durable. */
  writes: number;
  largestBatch: number;
  lastCommitMs: number;
  lastSyncMs: number;
  failedWrites: number;
  lastError: string | null;
}

/** Batches writes into shared transactions and shared WAL syncs. */
export class GroupCommitWriter {
  readonly #walPath: string;
  readonly #onError: (err: Error) => void;
  readonly #onSyncFailure: (err: Error) => void;
  /** One transaction function for every batch: better-sqlite3 builds four wrappers per db.transaction(). */
  readonly #commitBatch: (batch: readonly Pending[]) => void;
  #walFd: number | undefined;
  #queue: Pending[] = [];
  /** Committed to the WAL, waiting for the next fdatasync. */
  #unsynced: Pending[] = [];
  #syncing = false;
  #scheduled = false;
  #closed = false;
  #failed: Error | undefined;
  readonly stats: GroupCommitStats = {
    commits: 0,
    syncs: 0,
    writes: 0,
    largestBatch: 0,
    lastCommitMs: 0,
    lastSyncMs: 0,
    failedWrites: 0,
    lastError: null,
  };

  /**
   * `walPath` is the database's `-wal` file (it must exist: open the database in WAL mode and write
   * once first). `onSyncFailure` is told when an fdatasync fails: after that nothing is acknowledged
   * again, since the kernel may have dropped the dirty pages it could not write (PostgreSQL's
   * "fsyncgate" lesson); the owner should stop the process so that a restart recovers from the file.
   */
  constructor(db: Database, walPath: string, onError: (err: Error) => void, onSyncFailure: (err: Error) => void) {
    this.#walPath = walPath;
    this.#onError = onError;
    this.#onSyncFailure = onSyncFailure;
    this.#commitBatch = db.transaction((batch: readonly Pending[]) => {
      for (const p of batch) p.op();
    });
  }

  /** Writes waiting for their commit or their sync. */
  get pending(): number {
    return this.#queue.length + this.#unsynced.length;
  }

  /** Queues `op`; resolves once it is durable, rejects with COORD_ERR_STORE_* if it could not be. */
  write(op: WriteOp): Promise<void> {
    return new Promise<void>((resolve, reject) => this.submit(op, (err) => (err ? reject(err) : resolve())));
  }

  /**
   * write() for callers that keep their own bookkeeping (the shadow service): `done` is called once, never
   * synchronously, with no error once `op` is durable or with COORD_ERR_STORE_* if it cannot be. Callbacks
   * of one sync run in submission order, after the next sync has been started. A callback must not throw
   * (if one does, it is reported to the error handler and the others still run). `committed`, if given,
   * is called right after the transaction that applied `op` commits, before its sync: what a later
   * transaction can build on (the shadow journal keeps its in-memory state in step with it).
   */
  submit(op: WriteOp, done: WriteDone, committed?: WriteCommitted): void {
    if (this.#closed || this.#failed) {
      const err = this.#closed ? new CoordinatorError('COORD_ERR_STORE_CLOSED', 'store is closed; the write was not applied') : this.#syncError(this.#failed!);
      queueMicrotask(() => this.#call(done, err));
      return;
    }
    this.#queue.push({ op, done, committed });
    if (!this.#scheduled) {
      this.#scheduled = true;
      // setImmediate runs after the current I/O phase: everything the sockets delivered in this turn
      // joins the same transaction.
      setImmediate(() => {
        this.#scheduled = false;
        // While a sync runs, a few writes wait for it to end and are committed then, together with what
        // follows (see the fdatasync callback): every commit avoided saves its BEGIN/COMMIT, its WAL
        // pages and its row writes (a hot shadow changed again shares one). More than a few are
        // committed now, while the disk is busy anyway: committing them when the sync ends would hold
        // up the next sync and this one's acknowledgements.
        if (!this.#syncing || this.#queue.length >= EARLY_COMMIT_WRITES) this.flush();
      });
    }
  }

  /** Queues `op` without waiting for durability; a failure is reported to the error handler. */
  writeLater(op: WriteOp): void {
    this.write(op).catch((err: unknown) => this.#onError(err as Error));
  }

  /** Commits everything queued now to the WAL and starts its sync. Safe to call at any time. */
  flush(): void {
    this.#scheduled = false;
    const batch = this.#queue;
    if (batch.length === 0) return;
    this.#queue = [];
    if (this.#failed) {
      this.#finish(batch, this.#syncError(this.#failed));
      return;
    }
    const started = performance.now();
    try {
      this.#commitBatch(batch);
      this.#committed(batch, started);
    } catch {
      // One bad write must not sink its neighbours: retry each alone so only the culprit fails.
      for (const p of batch) {
        try {
          this.#commitBatch([p]);
          this.#committed([p], started);
        } catch (err) {
          this.stats.failedWrites++;
          this.stats.lastError = (err as Error).message;
          this.#finish([p], new CoordinatorError('COORD_ERR_STORE_WRITE', `durable write failed: ${(err as Error).message}`, { cause: err }));
        }
      }
    }
    this.#startSync();
  }

  /** Tells `group` its outcome in a microtask: never inside a transaction or one of our own calls. */
  #finish(group: readonly Pending[], err?: Error): void {
    queueMicrotask(() => {
      for (const p of group) this.#call(p.done, err);
    });
  }

  #call(done: WriteDone, err: Error | undefined): void {
    try {
      done(err);
    } catch (thrown) {
      this.#onError(thrown as Error);
    }
  }

  #committed(batch: readonly Pending[], started: number): void {
    this.stats.commits++;
    this.stats.lastCommitMs = performance.now() - started;
    for (const p of batch) {
      this.#unsynced.push(p);
      if (p.committed) this.#call(p.committed, undefined);
    }
  }

  #fd(): number {
    if (this.#walFd === undefined) {
      this.#walFd = openSync(this.#walPath, 'r');
      // The WAL is created anew after every clean shutdown; with synchronous=NORMAL SQLite syncs its
      // directory entry only at the first checkpoint, so make the entry durable once here (file systems
      // without ext4's ordered journal could otherwise lose the whole file, acknowledged writes included).
      const dir = openSync(dirname(this.#walPath), 'r');
      try {
        fsyncSync(dir);
      } finally {
        closeSync(dir);
      }
    }
    return this.#walFd;
  }

  #startSync(): void {
    if (this.#syncing || this.#closed || this.#unsynced.length === 0 || this.#failed) return;
    const group = this.#unsynced;
    this.#unsynced = [];
    this.#syncing = true;
    const started = performance.now();
    let fd: number;
    try {
      fd = this.#fd();
    } catch (err) {
      this.#syncing = false;
      this.#fail(err as Error, group);
      return;
    }
    fdatasync(fd, (err) => {
      this.#syncing = false;
      if (err) {
        this.#fail(err, group);
        return;
      }
      this.stats.lastSyncMs = performance.now() - started;
      // The next sync first: answering this group is event-loop work the disk need not wait for.
      if (this.#closed) this.#closeFd();
      else if (this.#queue.length > 0) this.flush();
      else this.#startSync();
      this.#settle(group);
    });
  }

  #settle(group: readonly Pending[]): void {
    this.stats.syncs++;
    this.stats.writes += group.length;
    this.stats.largestBatch = Math.max(this.stats.largestBatch, group.length);
    this.#finish(group);
  }

  #syncError(err: Error): CoordinatorError {
    return new CoordinatorError('COORD_ERR_STORE_WRITE', `durable write failed: syncing the database log failed (${err.message}); restart the coordinator`, { cause: err });
  }

  #fail(err: Error, group: readonly Pending[]): void {
    const first = !this.#failed;
    this.#failed ??= err;
    // Writes not yet committed (waiting for this sync to end) fail with it too.
    const rest = [...group, ...this.#unsynced, ...this.#queue];
    this.#unsynced = [];
    this.#queue = [];
    this.stats.failedWrites += rest.length;
    this.stats.lastError = err.message;
    this.#finish(rest, this.#syncError(err));
    if (first) this.#onSyncFailure(err);
  }

  #closeFd(): void {
    if (this.#walFd === undefined || this.#syncing) return;
    closeSync(this.#walFd);
    this.#walFd = undefined;
  }

  /** Commits and syncs what is queued (synchronously) and refuses further writes. */
  close(): void {
    if (this.#closed) return;
    // Closed first, so flush() commits without starting an asynchronous sync: the synchronous one below
    // covers everything committed, and nothing is acknowledged after the database is closed.
    this.#closed = true;
    this.flush();
    if (this.#unsynced.length > 0 && !this.#failed) {
      const group = this.#unsynced;
      this.#unsynced = [];
      try {
        fdatasyncSync(this.#fd());
        this.#settle(group);
      } catch (err) {
        this.#fail(err as Error, group);
      }
    }
    // An fdatasync still running in the pool closes the file when it returns.
    this.#closeFd();
  }
}
