/**
 * Who was running when the task host died. A V8 fatal error ("Fatal JavaScript invalid size error", a
 * segmentation fault in an isolate) kills the task host process at once: no JavaScript runs after it, not
 * even isolated-vm's onCatastrophicError in every case, so the host cannot say which task did it. Instead
 * the host keeps, in a small file shared with the core, one byte per loaded task version: non-zero while
 * code of that task runs in an isolate (an invocation, a timer callback, a host call's continuation, its
 * module's top-level code). The byte is written with pwrite before the isolate is entered and cleared
 * after it returns, so it is in the page cache — which outlives the process — when the crash comes; the
 * core reads the file after the exit and charges the crash to the tasks marked there (task-hosts.ts).
 *
 * What a slot holds: 0, or the sequence number of the entry that set it (a 32-bit counter of the host).
 * An invocation on isolated-vm's thread pool stays marked while it awaits a timer or a host call (the
 * host cannot see when its isolate goes idle), so a crash can find several tasks marked; it is charged to
 * the one that entered last — the others were already inside before it started — and the rest are
 * bystanders. Two tasks entering at the same instant on different threads can still be confused; the
 * charge then moves an innocent task to the isolation host (task-hosts.ts), and quarantine takes three.
 *
 * A file rather than messages: messages still queued in the dying process are lost with it, and a pipe
 * could block the host's thread while the core is busy. One byte a slot at a fixed offset: a pwrite of
 * one byte costs about a microsecond and the file never grows. In /dev/shm when it exists (memory, not the
 * SD card), else the temp directory; removed when the host is closed.
 */
import { closeSync, existsSync, mkdtempSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** Task versions one host can mark at once (slots are reused after an unload). */
export const MARK_SLOTS = 4096;
/** Bytes per slot: a uint32, little-endian. */
const SLOT_BYTES = 4;

/** The environment variable that names the marks file to the host process. */
export const MARKS_ENV = 'COORD_TASK_HOST_MARKS';

/** The core's side: the file, slot assignment, and reading who was marked after a crash. */
export class CrashMarks {
  readonly #dir: string;
  readonly path: string;
  readonly #slots = new Map<string, number>();
  readonly #free: number[] = [];
  #next = 0;

  constructor() {
    const base = existsSync('/dev/shm') ? '/dev/shm' : tmpdir();
    let dir: string;
    try {
      dir = mkdtempSync(join(base, 'coord-marks-'));
    } catch {
      dir = mkdtempSync(join(tmpdir(), 'coord-marks-'));
    }
    this.#dir = dir;
    this.path = join(dir, 'marks');
    this.clear();
  }

  /** The slot of `key`, assigned on first use. */
  slot(key: string): number {
    let slot = this.#slots.get(key);
    if (slot === undefined) {
      slot = this.#free.pop() ?? this.#next++;
      if (slot >= MARK_SLOTS) throw new RangeError(`more than ${MARK_SLOTS} task versions loaded in one task host`);
      this.#slots.set(key, slot);
    }
    return slot;
  }

  /** Frees the slot of an unloaded key. */
  release(key: string): void {
    const slot = this.#slots.get(key);
    if (slot === undefined) return;
    this.#slots.delete(key);
    this.#free.push(slot);
  }

  /** Keys whose code was inside an isolate when the host died, the last to enter first (read after it died; the first is charged). */
  marked(): string[] {
    let bytes: Buffer;
    try {
      bytes = readFileSync(this.path);
    } catch {
      return [];
    }
    const found: { key: string; seq: number }[] = [];
    for (const [key, slot] of this.#slots) {
      const at = slot * SLOT_BYTES;
      const seq = at + SLOT_BYTES <= bytes.length ? bytes.readUInt32LE(at) : 0;
      if (seq !== 0) found.push({ key, seq });
    }
    return found.sort((a, b) => b.seq - a.seq).map((f) => f.key);
  }

  /** Zeroes every slot (before a new host process starts). */
  clear(): void {
    const fd = openSync(this.path, 'w', 0o600);
    try {
      writeSync(fd, Buffer.alloc(MARK_SLOTS * SLOT_BYTES));
    } finally {
      closeSync(fd);
    }
  }

  /** Removes the file. */
  dispose(): void {
    rmSync(this.#dir, { recursive: true, force: true });
  }
}

/** The host's side: enter/leave with a count per slot (an isolate can be entered while another of the same task runs). */
export class HostMarks {
  readonly #fd: number | undefined;
  readonly #depth = new Map<number, number>();
  readonly #buf = Buffer.alloc(SLOT_BYTES);
  #seq = 0;

  constructor(path: string | undefined) {
    let fd: number | undefined;
    try {
      if (path) fd = openSync(path, 'r+');
    } catch {
      fd = undefined; // no attribution, but the tasks still run
    }
    this.#fd = fd;
  }

  /** Code of the task in `slot` is about to run. */
  enter(slot: number): void {
    const d = this.#depth.get(slot) ?? 0;
    this.#depth.set(slot, d + 1);
    if (d === 0 && this.#fd !== undefined) {
      this.#seq = this.#seq >= 0xfffffffe ? 1 : this.#seq + 1;
      this.#buf.writeUInt32LE(this.#seq, 0);
      writeSync(this.#fd, this.#buf, 0, SLOT_BYTES, slot * SLOT_BYTES);
    }
  }

  /** The process is about to die because of the task in `slot` (isolated-vm's catastrophic error): it enters last. */
  blame(slot: number): void {
    this.#depth.set(slot, (this.#depth.get(slot) ?? 0) + 1);
    if (this.#fd === undefined) return;
    this.#buf.writeUInt32LE(0xffffffff, 0);
    writeSync(this.#fd, this.#buf, 0, SLOT_BYTES, slot * SLOT_BYTES);
  }

  /** That code returned (or its isolate is gone). */
  leave(slot: number): void {
    const d = this.#depth.get(slot) ?? 0;
    if (d <= 1) {
      this.#depth.delete(slot);
      if (d === 1 && this.#fd !== undefined) {
        this.#buf.writeUInt32LE(0, 0);
        writeSync(this.#fd, this.#buf, 0, SLOT_BYTES, slot * SLOT_BYTES);
      }
    } else this.#depth.set(slot, d - 1);
  }
}
