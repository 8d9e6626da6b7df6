/**
 * The isolates of one task version (task host side). On-demand tasks: a warm pool — minWarm isolates
 * made at load, more up to the task's concurrency when invocations overlap, idle extras disposed after
 * idleMs, a dead isolate (timeout, memory) replaced by a fresh one. Pinned tasks: one isolate from load
 * (onStart) to unload (onStop); if it dies it is recreated and onStart runs again.
 *
 * Where an on-demand task's isolates run (isolate-runtime.ts): on isolated-vm's thread pool until the
 * task has shown itself quick — QUICK_STREAK invocations in a row, each under QUICK_NS inside its
 * isolate — then on the host's own thread, which is several times cheaper per call. There, one call over
 * SLOW_CALL_NS, one that kills its isolate (a timeout), or a running average over AVERAGE_NS sends the
 * task back to the thread pool; it must then show twice as long a streak to come back, and after
 * MAX_DEMOTIONS it never does: a task that turns hostile after behaving stalls the host's thread at
 * most that many times, each for at most its own time limit. (The times are isolated-vm's, which count
 * a thread the OS preempted, so single calls of a few ms happen to quick tasks on a busy machine: hence
 * the average.) Pinned tasks always run on the thread pool.
 */
import { IsolateRuntime, RuntimeError, type RuntimeHost } from './isolate-runtime.js';
import type { HostTaskStats, TaskLoad } from './protocol.js';

/** Quick invocations in a row (on the thread pool) before a task first runs on the host's thread. */
const QUICK_STREAK = 32;
/** Time inside the isolate under which an invocation counts as quick, ns. */
const QUICK_NS = 1_000_000n;
/** One call on the host's thread longer than this sends the task back to the thread pool, ns. */
const SLOW_CALL_NS = 50_000_000;
/** A running average (over about 32 calls) of calls on the host's thread above this does too, ns. */
const AVERAGE_NS = 1_000_000;
/** Sent back this many times, a task stays on the thread pool. */
const MAX_DEMOTIONS = 3;

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
  /** Whether this task's isolates run on the host's thread (see the header). */
  #onHostThread = false;
  /** Quick invocations in a row, and how many are needed to move to the host's thread. */
  #quick = 0;
  #streakNeeded = QUICK_STREAK;
  #demotions = 0;
  /** Running average of calls on the host's thread, ns. */
  #averageNs = 0;
  /** On-demand invocations running, and those waiting for one of them to finish. */
  #running = 0;
  readonly #waiting: (() => void)[] = [];

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
    const made = await Promise.allSettled(Array.from({ length: Math.max(1, this.task.minWarm) }, () => this.#create()));
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
    // At most `concurrency` at once here too: the core may send a quick task's invocations ahead (see
    // Scheduler.pipeline); they wait here, in order.
    await this.#enter();
    try {
      return await this.#invokeOnDemand(invocationId, eventJson);
    } finally {
      this.#leave();
    }
  }

  #enter(): Promise<void> | undefined {
    if (this.#running < this.task.concurrency) {
      this.#running++;
      return undefined;
    }
    return new Promise<void>((resolve) => this.#waiting.push(resolve));
  }

  /** Hands the place to the next waiting invocation (so none can slip in between), or frees it. */
  #leave(): void {
    const next = this.#waiting.shift();
    if (next) next();
    else this.#running--;
  }

  async #invokeOnDemand(invocationId: string, eventJson: string): Promise<string> {
    if (this.#closed) throw new RuntimeError('COORD_ERR_TASK_CANCELLED', `task ${this.task.name} was unloaded`);
    const rt = await this.#acquire();
    rt.setOnHostThread(this.#onHostThread);
    const learning = !rt.onHostThread;
    const cpu0 = learning ? rt.cpuTimeNs : 0n;
    let ok = false;
    try {
      const json = await rt.invoke(invocationId, eventJson);
      ok = true;
      return json;
    } finally {
      if (learning) this.#learn(ok && rt.alive && rt.cpuTimeNs - cpu0 < QUICK_NS);
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
    const rt = await this.#create();
    this.#busy.add(rt);
    return rt;
  }

  /** An on-demand isolate, told to report calls that hold the host's thread too long. */
  async #create(): Promise<IsolateRuntime> {
    const rt = await IsolateRuntime.create(this.task, this.#host);
    rt.onHostThreadCall = (ns) => this.#charge(ns);
    return rt;
  }

  /** Counts quick invocations on the thread pool; enough in a row move the task to the host's thread. */
  #learn(quick: boolean): void {
    if (this.#onHostThread) return;
    this.#quick = quick ? this.#quick + 1 : 0;
    if (this.#quick < this.#streakNeeded) return;
    this.#onHostThread = true;
    this.#averageNs = 0;
  }

  /** One call on the host's thread: too slow, or slow on average, and the task goes back to the pool. */
  #charge(ns: number): void {
    this.#averageNs += (Math.min(ns, SLOW_CALL_NS) - this.#averageNs) / 32;
    if (!this.#onHostThread || (ns <= SLOW_CALL_NS && this.#averageNs <= AVERAGE_NS)) return;
    this.#onHostThread = false;
    this.#quick = 0;
    // Three strikes and it stays on the thread pool (this task version).
    this.#streakNeeded = ++this.#demotions >= MAX_DEMOTIONS ? Infinity : this.#streakNeeded * 2;
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

  /** Whether this task's isolates run on the host's thread now (it is quick). */
  get onHostThread(): boolean {
    return this.#onHostThread;
  }

  /** Isolates, busy ones and heap in use. */
  async stats(): Promise<HostTaskStats> {
    const all = [...this.#idle, ...this.#busy, ...(this.#pinned ? [this.#pinned] : [])].filter((r) => r.alive);
    const heaps = await Promise.all(all.map((r) => r.heapBytes()));
    return { key: this.task.key, isolates: all.length, busy: this.#busy.size, heapBytes: heaps.reduce((n, h) => n + h, 0), onHostThread: this.#onHostThread };
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
    // Busy isolates are disposed too: the core unloads a replaced version only after its drain period
    // (deployments.drainMs), so what still runs is cancelled (COORD_ERR_TASK_CANCELLED), not waited for.
    for (const rt of this.#busy) rt.cancel(`task ${this.task.name}@${this.task.version} was replaced or stopped while this invocation ran`);
  }
}
