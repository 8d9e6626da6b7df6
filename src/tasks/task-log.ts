/**
 * The last lines each task logged (console.*, ctx.log.*, failures), kept in a bounded ring per task for
 * `coordinator tasks logs NAME [--follow]`. Each line has a sequence number so a follower asks for what
 * came after the last one it saw.
 */
import type { LogLevel } from '../sandbox/protocol.js';

/** One task log line. */
export interface TaskLogLine {
  readonly seq: number;
  readonly time: string;
  readonly task: string;
  readonly invocationId: string;
  readonly level: LogLevel;
  readonly text: string;
}

/** Bounded rings of task log lines. */
export class TaskLog {
  readonly #size: number;
  readonly #rings = new Map<string, TaskLogLine[]>();
  #seq = 0;

  constructor(linesPerTask: number) {
    this.#size = linesPerTask;
  }

  /** Adds a line; returns it. */
  append(task: string, invocationId: string, level: LogLevel, text: string): TaskLogLine {
    const line: TaskLogLine = { seq: ++this.#seq, time: new Date().toISOString(), task, invocationId, level, text };
    let ring = this.#rings.get(task);
    if (!ring) this.#rings.set(task, (ring = []));
    ring.push(line);
    if (ring.length > this.#size) ring.splice(0, ring.length - this.#size);
    return line;
  }

  /** Lines of `task` with a sequence number above `after`, oldest first, at most `limit`. */
  since(task: string, after = 0, limit = this.#size): TaskLogLine[] {
    const ring = this.#rings.get(task) ?? [];
    const out = ring.filter((l) => l.seq > after);
    return out.length > limit ? out.slice(out.length - limit) : out;
  }
}
