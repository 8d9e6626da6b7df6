/**
 * Coalesces the IPC messages made in one synchronous run of code (flushed at the next microtask
 * checkpoint, so a message never waits for a later phase of the event loop) into one frame. Node's IPC channel costs a write and
 * a JSON frame per send; under load (thousands of invocations a second) one frame per turn instead of one
 * per message is most of what the channel costs.
 *
 * With `turn: true` the frame goes at the end of the event loop's turn instead (setImmediate): the task
 * host runs each invocation of a frame from the core through a few awaits, and a microtask flush would
 * send their results a few at a time (measured: 2 invocations a frame instead of all of them).
 */

/** Queues messages and hands them to `flush` once per turn, in order. */
export class Batcher<T> {
  readonly #flush: (messages: T[]) => void;
  #queue: T[] = [];
  #scheduled = false;

  readonly #turn: boolean;

  constructor(flush: (messages: T[]) => void, options: { readonly turn?: boolean } = {}) {
    this.#flush = flush;
    this.#turn = options.turn === true;
  }

  /** Queues `message` for the current frame. */
  push(message: T): void {
    this.#queue.push(message);
    if (this.#scheduled) return;
    this.#scheduled = true;
    if (this.#turn) setImmediate(() => this.flush());
    else queueMicrotask(() => this.flush());
  }

  /** Sends what is queued now. */
  flush(): void {
    this.#scheduled = false;
    if (this.#queue.length === 0) return;
    const messages = this.#queue;
    this.#queue = [];
    this.#flush(messages);
  }
}
