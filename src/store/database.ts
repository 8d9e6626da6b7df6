/**
 * The embedded database (SQLite through better-sqlite3) in the data directory: one file shared by the
 * broker persistence and, later, shadows, deployments, the device registry, the spool and task state.
 */
import { mkdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import BetterSqlite3, { type Database } from 'better-sqlite3';
import { CoordinatorError } from '../errors.js';
import { GroupCommitWriter, type GroupCommitStats } from './group-commit.js';
import { MIGRATIONS } from './migrations.js';

/** File name of the database inside the data directory. */
export const DATABASE_FILE = 'coordinator.db';

/** Health of the store as `coordinator status` reports it. */
export interface StoreHealth {
  ok: boolean;
  path: string;
  schemaVersion: number;
  sizeBytes: number;
  walBytes: number;
  pendingWrites: number;
  commit: GroupCommitStats;
}

/** Creates the data directory if needed, readable by the coordinator's user only (it holds payloads). */
export function ensureDataDir(dataDir: string): void {
  try {
    mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  } catch (err) {
    throw new CoordinatorError('COORD_ERR_DATA_DIR', `cannot create data directory ${dataDir}: ${(err as Error).message}`, { cause: err });
  }
}

/** The open database and its group-commit writer. */
export class Store {
  readonly db: Database;
  readonly writer: GroupCommitWriter;
  readonly path: string;
  #closed = false;

  private constructor(db: Database, path: string, onWriteError: (err: Error) => void, onSyncFailure: (err: Error) => void) {
    this.db = db;
    this.path = path;
    this.writer = new GroupCommitWriter(db, `${path}-wal`, onWriteError, onSyncFailure);
  }

  /**
   * Opens (creating if needed) the database in `dataDir` and brings its schema up to date.
   * `onWriteError` hears of background writes that failed; `onSyncFailure` of a failed fdatasync, after
   * which the store acknowledges nothing more (see GroupCommitWriter).
   */
  static open(dataDir: string, onWriteError: (err: Error) => void, onSyncFailure: (err: Error) => void = onWriteError): Store {
    ensureDataDir(dataDir);
    const path = join(dataDir, DATABASE_FILE);
    let db: Database | undefined;
    try {
      db = new BetterSqlite3(path);
      // WAL + synchronous=NORMAL: SQLite keeps the file consistent (WAL synced before each checkpoint)
      // and the group-commit writer fdatasyncs the WAL itself, off the event loop, before it
      // acknowledges anything; readers never block the writer.
      db.pragma('journal_mode = WAL');
      db.pragma('synchronous = NORMAL');
      db.pragma('foreign_keys = ON');
      db.pragma('busy_timeout = 2000');
      migrate(db);
      return new Store(db, path, onWriteError, onSyncFailure);
    } catch (err) {
      db?.close();
      if (err instanceof CoordinatorError) throw err;
      throw new CoordinatorError('COORD_ERR_STORE_OPEN', `cannot open database ${path}: ${(err as Error).message}`, { cause: err });
    }
  }

  /** Size, schema version and commit counters. */
  health(): StoreHealth {
    const size = (file: string): number => {
      try {
        return statSync(file).size;
      } catch {
        return 0;
      }
    };
    return {
      ok: !this.#closed && this.writer.stats.failedWrites === 0,
      path: this.path,
      schemaVersion: this.#closed ? 0 : (this.db.pragma('user_version', { simple: true }) as number),
      sizeBytes: size(this.path),
      walBytes: size(`${this.path}-wal`),
      pendingWrites: this.writer.pending,
      commit: { ...this.writer.stats },
    };
  }

  /** Commits pending writes, checkpoints the WAL and closes the file. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.writer.close();
    this.#closed = true;
    this.db.pragma('wal_checkpoint(TRUNCATE)');
    this.db.close();
  }
}

function migrate(db: Database): void {
  // IMMEDIATE takes the write lock before reading the version: two processes cannot both migrate.
  db.transaction(() => {
    const current = db.pragma('user_version', { simple: true }) as number;
    if (current > MIGRATIONS.length) {
      throw new CoordinatorError(
        'COORD_ERR_STORE_OPEN',
        `database schema version ${current} is newer than this coordinator knows (${MIGRATIONS.length}); upgrade the coordinator`,
      );
    }
    for (let version = current; version < MIGRATIONS.length; version++) db.exec(MIGRATIONS[version]!);
    db.pragma(`user_version = ${MIGRATIONS.length}`);
  }).immediate();
}
