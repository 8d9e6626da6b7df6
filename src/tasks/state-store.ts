/**
 * ctx.state: persistent key-value state per task, in the `task_state` table. Reads come from memory
 * (loaded once per task); a set or delete resolves only once it is durable, through group commit. Size is
 * bounded per task (keys + JSON values, in bytes), so a task cannot fill the gateway's disk.
 */
import type { Statement } from 'better-sqlite3';
import { CoordinatorError } from '../errors.js';
import type { Store } from '../store/database.js';

/** Limits of task state. */
export interface StateLimits {
  /** Most bytes (keys + JSON values) one task may keep. */
  readonly maxBytesPerTask: number;
  /** Longest key, bytes. */
  readonly maxKeyBytes: number;
  /** Largest single value (its JSON), bytes (tasks.maxStateValueBytes; the sandbox refuses it first). */
  readonly maxValueBytes?: number;
}

/** Every task's persistent state. */
export class TaskStateStore {
  readonly #store: Store;
  readonly #limits: StateLimits;
  readonly #cache = new Map<string, { values: Map<string, string>; bytes: number }>();
  readonly #sql: { load: Statement; set: Statement; del: Statement };

  constructor(store: Store, limits: StateLimits) {
    this.#store = store;
    this.#limits = limits;
    const db = store.db;
    this.#sql = {
      load: db.prepare('SELECT key, value FROM task_state WHERE task = ?'),
      set: db.prepare('INSERT INTO task_state (task, key, value) VALUES (?, ?, ?) ON CONFLICT (task, key) DO UPDATE SET value = excluded.value'),
      del: db.prepare('DELETE FROM task_state WHERE task = ? AND key = ?'),
    };
  }

  #of(task: string): { values: Map<string, string>; bytes: number } {
    let entry = this.#cache.get(task);
    if (!entry) {
      const values = new Map<string, string>();
      let bytes = 0;
      for (const row of this.#sql.load.all(task) as { key: string; value: string }[]) {
        values.set(row.key, row.value);
        bytes += Buffer.byteLength(row.key) + Buffer.byteLength(row.value);
      }
      entry = { values, bytes };
      this.#cache.set(task, entry);
    }
    return entry;
  }

  /** The value's JSON, or undefined. */
  get(task: string, key: string): string | undefined {
    return this.#of(task).values.get(key);
  }

  /** Every key of the task. */
  keys(task: string): string[] {
    return [...this.#of(task).values.keys()];
  }

  /** Stores `valueJson` under `key`; resolves once durable; COORD_ERR_TASK_LIMIT beyond the bounds. */
  set(task: string, key: string, valueJson: string): Promise<void> {
    const keyBytes = Buffer.byteLength(key);
    if (keyBytes > this.#limits.maxKeyBytes) {
      return Promise.reject(new CoordinatorError('COORD_ERR_TASK_LIMIT', `state key of ${keyBytes} bytes; the limit is ${this.#limits.maxKeyBytes}`));
    }
    const valueBytes = Buffer.byteLength(valueJson);
    const maxValue = this.#limits.maxValueBytes;
    if (maxValue !== undefined && valueBytes > maxValue) {
      return Promise.reject(new CoordinatorError('COORD_ERR_TASK_LIMIT', `state value of ${valueBytes} bytes exceeds tasks.maxStateValueBytes (${maxValue} bytes)`));
    }
    const entry = this.#of(task);
    const old = entry.values.get(key);
    const bytes = entry.bytes - (old === undefined ? 0 : keyBytes + Buffer.byteLength(old)) + keyBytes + valueBytes;
    if (bytes > this.#limits.maxBytesPerTask) {
      return Promise.reject(
        new CoordinatorError('COORD_ERR_TASK_LIMIT', `task ${task} would keep ${bytes} bytes of state; the limit is ${this.#limits.maxBytesPerTask} (tasks.stateMaxBytes)`),
      );
    }
    entry.values.set(key, valueJson);
    entry.bytes = bytes;
    return this.#store.writer.write(() => this.#sql.set.run(task, key, valueJson));
  }

  /** Removes `key`; resolves once durable. */
  delete(task: string, key: string): Promise<void> {
    const entry = this.#of(task);
    const old = entry.values.get(key);
    if (old === undefined) return Promise.resolve();
    entry.values.delete(key);
    entry.bytes -= Buffer.byteLength(key) + Buffer.byteLength(old);
    return this.#store.writer.write(() => this.#sql.del.run(task, key));
  }
}
