/**
 * The isolates of one task version (task host side). On-demand tasks: a warm pool — minWarm isolates
 * made at load, more up to the task's concurrency when invocations overlap, idle extras disposed after
 * idleMs, a dead isolate (timeout, memory) replaced by a fresh one. Pinned tasks: one isolate from load
 * (onStart) to unload (onStop); if it dies it is recreated and onStart runs again.
 */
import { IsolateRuntime, RuntimeError, type RuntimeHost } from './isolate-runtime.js';
import type { HostTaskStats, TaskLoad } from './protocol.js';

/** A task version's isolates. */
export class TaskPool {
  readonly task: TaskLoad;
  readonly #host: RuntimeHost;
  readonly #idle: IsolateRuntime[] = [];
  readonly #busy = new Set<IsolateRuntime>();
  #pinned: IsolateRuntime | undefined;
  #pinnedStarting: Promise<IsolateRuntime> | undefined;
  #closed = false;
  #sweeper: NodeJS.Timeout | undefined;

  constructor(task: TaskLoad, host: RuntimeHost) {
    this.task = task;
    this.#host = host;
  }

  /** Makes the warm isolates (and runs onStart for a pinned task); rejects if the task cannot load. */
  async open(): Promise<void> {
    if (this.task.lifecycle === 'pinned') {
      await this.#startPinned();
      return;
    }
    const made = await Promise.allSettled(Array.from({ length: Math.max(1, this.task.minWarm) }, () => IsolateRuntime.create(this.task, this.#host)));
    const warm = made.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
    const failed = made.find((r) => r.status === 'rejected');
    if (failed || this.#closed) {
      for (const rt of warm) rt.dispose();
      throw failed ? (failed).reason : new RuntimeError('COORD_ERR_TASK_CANCELLED', `task ${this.task.name} was unloaded while loading`);
    }
    this.#idle.push(...warm);
    this.#sweeper = setInterval(() => this.#sweep(), Math.max(1000, Math.min(this.task.idleMs, 30_000)));
    this.#sweeper.unref();
  }

  /** Runs onEvent; the isolate returns to the pool unless it died. */
  async invoke(invocationId: string, eventJson: string): Promise<string> {
    if (this.#closed) throw new RuntimeError('COORD_ERR_TASK_CANCELLED', `task ${this.task.name} was unloaded`);
    if (this.task.lifecycle === 'pinned') {
      const rt = this.#pinned?.alive ? this.#pinned : await this.#startPinned();
      try {
        return await rt.invoke(invocationId, eventJson);
      } finally {
        // A pinned task lives from start to stop: an invocation that killed its isolate does not end it.
        if (!rt.alive && !this.#closed) setTimeout(() => void this.revive().catch(() => undefined), 1000).unref();
      }
    }
    const rt = await this.#acquire();
    try {
      return await rt.invoke(invocationId, eventJson);
    } finally {
      this.#busy.delete(rt);
      rt.clearTimers();
      // An isolate with host calls still unanswered would run that code during the next invocation:
      // a fresh one serves it instead.
      if (rt.alive && !this.#closed && rt.callsInFlight === 0) this.#idle.push(rt);
      else rt.dispose();
    }
  }

  async #acquire(): Promise<IsolateRuntime> {
    for (;;) {
      const rt = this.#idle.pop();
      if (!rt) break;
      if (rt.alive) {
        this.#busy.add(rt);
        return rt;
      }
    }
    const rt = await IsolateRuntime.create(this.task, this.#host);
    this.#busy.add(rt);
    return rt;
  }

  #startPinned(): Promise<IsolateRuntime> {
    this.#pinnedStarting ??= (async () => {
      this.#pinned?.dispose();
      const rt = await IsolateRuntime.create(this.task, this.#host);
      try {
        await rt.start(`${this.task.name}-start`);
      } catch (err) {
        rt.dispose();
        throw err;
      }
      if (this.#closed) {
        rt.dispose();
        throw new RuntimeError('COORD_ERR_TASK_CANCELLED', `task ${this.task.name} was unloaded`);
      }
      this.#pinned = rt;
      return rt;
    })().finally(() => {
      this.#pinnedStarting = undefined;
    });
    return this.#pinnedStarting;
  }

  /** Recreates a pinned task's isolate (and runs onStart) after it died outside an invocation. */
  revive(): Promise<void> {
    if (this.#closed || this.task.lifecycle !== 'pinned' || this.#pinned?.alive) return Promise.resolve();
    return this.#startPinned().then(() => undefined);
  }

  #sweep(): void {
    const now = Date.now();
    const keep = Math.max(1, this.task.minWarm);
    for (let i = this.#idle.length - 1; i >= 0 && this.#idle.length > keep; i--) {
      const rt = this.#idle[i]!;
      if (!rt.alive || now - rt.idleSince > this.task.idleMs) {
        this.#idle.splice(i, 1);
        rt.dispose();
      }
    }
  }

  /** Isolates, busy ones and heap in use. */
  async stats(): Promise<HostTaskStats> {
    const all = [...this.#idle, ...this.#busy, ...(this.#pinned ? [this.#pinned] : [])].filter((r) => r.alive);
    const heaps = await Promise.all(all.map((r) => r.heapBytes()));
    return { key: this.task.key, isolates: all.length, busy: this.#busy.size, heapBytes: heaps.reduce((n, h) => n + h, 0) };
  }

  /** Runs onStop for a pinned task (within its time limit), then disposes every isolate. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#sweeper);
    const pinned = this.#pinned;
    if (pinned?.alive) {
      try {
        await pinned.stop(`${this.task.name}-stop`);
      } catch (err) {
        this.#host.log('stop', 'error', `onStop failed: ${(err as Error).message}`);
      }
    }
    pinned?.dispose();
    for (const rt of this.#idle.splice(0)) rt.dispose();
    // Busy isolates finish (or time out) their invocation first; invoke() disposes them after.
  }
}
