/**
 * Coalesces the IPC messages made in one synchronous run of code (flushed at the next microtask
 * checkpoint, so a message never waits for a later phase of the event loop) into one frame. Node's IPC channel costs a write and
 * a frame per send; under load (thousands of invocations a second) one frame per turn instead of one
 * per message is most of what the channel costs.
 *
 * A frame is an array, in order: control messages as they are, and each run of packed records (wire.ts)
 * between them as one string.
 *
 * With `turn: true` the frame goes at the end of the event loop's turn instead (setImmediate): the task
 * host runs each invocation of a frame from the core through a few awaits, and a microtask flush would
 * send their results a few at a time (measured: 2 invocations a frame instead of all of them).
 */

/** One frame on the channel: control messages and strings of packed records, in order. */
export type Frame<T> = (T | string)[];

/** Queues messages and hands them to `flush` once per turn, in order. */
export class Batcher<T extends object> {
  readonly #flush: (frame: Frame<T>) => void;
  #queue: Frame<T> = [];
  /** Packed records since the last control message. */
  #packed = '';
  #scheduled = false;

  readonly #turn: boolean;

  constructor(flush: (frame: Frame<T>) => void, options: { readonly turn?: boolean } = {}) {
    this.#flush = flush;
    this.#turn = options.turn === true;
  }

  /** Queues a control message for the current frame. */
  push(message: T): void {
    if (this.#packed !== '') {
      this.#queue.push(this.#packed);
      this.#packed = '';
    }
    this.#queue.push(message);
    this.#schedule();
  }

  /** Queues a packed record (wire.ts) for the current frame. */
  pack(record: string): void {
    this.#packed += record;
    this.#schedule();
  }

  #schedule(): void {
    if (this.#scheduled) return;
    this.#scheduled = true;
    if (this.#turn) setImmediate(() => this.flush());
    else queueMicrotask(() => this.flush());
  }

  /** Sends what is queued now. */
  flush(): void {
    this.#scheduled = false;
    if (this.#packed !== '') {
      this.#queue.push(this.#packed);
      this.#packed = '';
    }
    if (this.#queue.length === 0) return;
    const frame = this.#queue;
    this.#queue = [];
    this.#flush(frame);
  }
}
