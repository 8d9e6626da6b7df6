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
 *
 * On the host's thread, the invocations waiting here run several to a call (IsolateRuntime.runMany, sized
 * by #batchSize): a call's time limit is a timer of isolated-vm's, and one per invocation was most of what
 * a quick invocation cost. The invocations of one frame from the core are all queued before any starts
 * (the pump waits for a microtask), so they can share a call.
 */
import { IsolateRuntime, RuntimeError, type Done, type ManyItem, type RuntimeHost } from './isolate-runtime.js';
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
/**
 * Most invocations run in one call on the host's thread (IsolateRuntime.runMany). A batch is also kept
 * to a sixteenth of the task's time limit and a quarter of SLOW_CALL_NS at its running average (at least
 * BATCH_FLOOR_NS an invocation), so that a batch of a task behaving as before neither reaches the limit
 * it has as a whole nor holds the thread long enough to count as slow.
 */
const MAX_BATCH = 32;
const BATCH_FLOOR_NS = 20_000;

/** An on-demand invocation waiting for, or holding, one of the task's places (its concurrency). */
interface Job {
  readonly invocationId: string;
  readonly eventJson: string;
  readonly done: Done;
}

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
  /** On-demand invocations running, and those waiting for one of them to finish, in order. */
  #running = 0;
  readonly #waiting: Job[] = [];
  /** Set while #pump starts invocations: one that ends at once does not start the next itself. */
  #pumping = false;
  /** A pump is queued: the invocations of one frame from the core are queued before any starts, so they can share a call. */
  #pumpQueued = false;

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
  invoke(invocationId: string, eventJson: string): Promise<string> {
    return new Promise<string>((resolve, reject) => this.run(invocationId, eventJson, (err, json) => (err ? reject(err) : resolve(json!))));
  }

  /**
   * Runs onEvent and calls `done` with the outcome (possibly before this returns): for a quick task the
   * whole invocation happens on this thread without a promise in between.
   */
  run(invocationId: string, eventJson: string, done: Done): void {
    if (this.#closed) {
      done(this.#cancelled(), undefined);
      return;
    }
    if (this.task.lifecycle === 'pinned') {
      this.#invokePinned(invocationId, eventJson).then(
        (json) => done(undefined, json),
        (err: unknown) => done(err as RuntimeError, undefined),
      );
      return;
    }
    // At most `concurrency` at once here too: the core may send a quick task's invocations ahead (see
    // Scheduler.pipeline); they wait here, in order.
    this.#waiting.push({ invocationId, eventJson, done });
    if (this.#pumpQueued) return;
    this.#pumpQueued = true;
    queueMicrotask(() => {
      this.#pumpQueued = false;
      this.#pump();
    });
  }

  async #invokePinned(invocationId: string, eventJson: string): Promise<string> {
    const rt = this.#pinned?.alive ? this.#pinned : await this.#startPinned();
    try {
      return await rt.invoke(invocationId, eventJson);
    } finally {
      // A pinned task lives from start to stop: an invocation that killed its isolate does not end it.
      if (!rt.alive && !this.#closed) setTimeout(() => void this.revive().catch(() => undefined), 1000).unref();
    }
  }

  #cancelled(): RuntimeError {
    return new RuntimeError('COORD_ERR_TASK_CANCELLED', `task ${this.task.name} was unloaded`);
  }

  /** Starts waiting invocations while the task has places free (a loop, not recursion: many may end at once). */
  #pump(): void {
    if (this.#pumping) return;
    this.#pumping = true;
    try {
      while (this.#waiting.length > 0) {
        if (this.#closed) {
          for (const job of this.#waiting.splice(0)) job.done(this.#cancelled(), undefined);
          break;
        }
        if (this.#running >= this.task.concurrency) break;
        this.#running++;
        this.#start();
      }
    } finally {
      this.#pumping = false;
    }
  }

  /**
   * Runs the next waiting invocation in an idle isolate, or in a new one; on the host's thread, as many
   * of those waiting as make a batch (#batchSize) share one call. The place is freed when they end.
   */
  #start(): void {
    for (;;) {
      const rt = this.#idle.pop();
      if (!rt) break;
      if (!rt.alive) continue;
      this.#busy.add(rt);
      rt.setOnHostThread(this.#onHostThread);
      if (rt.onHostThread && this.#waiting.length > 1) this.#runMany(rt, this.#waiting.splice(0, this.#batchSize()));
      else this.#runOne(rt, this.#waiting.shift()!);
      return;
    }
    const job = this.#waiting.shift()!;
    this.#create().then(
      (rt) => {
        if (this.#closed) {
          rt.dispose();
          this.#running--;
          job.done(this.#cancelled(), undefined);
          this.#pump();
          return;
        }
        this.#busy.add(rt);
        rt.setOnHostThread(this.#onHostThread);
        this.#runOne(rt, job);
      },
      (err: unknown) => {
        this.#running--;
        job.done(err as RuntimeError, undefined);
        this.#pump();
      },
    );
  }

  #runOne(rt: IsolateRuntime, job: Job): void {
    const learning = !rt.onHostThread;
    const cpu0 = learning ? rt.cpuTimeNs : 0n;
    rt.run(job.invocationId, job.eventJson, (err, json) => {
      if (learning) this.#learn(!err && rt.alive && rt.cpuTimeNs - cpu0 < QUICK_NS);
      this.#release(rt);
      job.done(err, json);
      this.#pump();
    });
  }

  #runMany(rt: IsolateRuntime, jobs: Job[]): void {
    let left = jobs.length;
    const ended = (): void => {
      this.#release(rt);
      this.#pump();
    };
    const items: ManyItem[] = jobs.map((job) => ({
      invocationId: job.invocationId,
      eventJson: job.eventJson,
      done: (err, json) => {
        job.done(err, json);
        if (--left === 0) ended();
      },
    }));
    const back = rt.runMany(items);
    if (back.length === 0) return;
    // Not started: first in line again, in order.
    this.#waiting.unshift(...jobs.slice(jobs.length - back.length));
    left -= back.length;
    if (left === 0) ended();
  }

  /** An isolate's invocations ended: it goes back to the idle ones (or is disposed), and its place is free. */
  #release(rt: IsolateRuntime): void {
    this.#busy.delete(rt);
    rt.clearTimers();
    // An isolate with host calls still unanswered would run that code during the next invocation:
    // a fresh one serves it instead.
    if (rt.alive && !this.#closed && rt.callsInFlight === 0) this.#idle.push(rt);
    else rt.dispose();
    this.#running--;
  }

  /** How many waiting invocations share one call on the host's thread (see MAX_BATCH). */
  #batchSize(): number {
    const per = Math.max(this.#averageNs, BATCH_FLOOR_NS);
    const budget = Math.min((this.task.timeoutMs * 1e6) / 16, SLOW_CALL_NS / 4);
    return Math.max(1, Math.min(MAX_BATCH, Math.floor(budget / per)));
  }

  /** An on-demand isolate, told to report calls that hold the host's thread too long. */
  async #create(): Promise<IsolateRuntime> {
    const rt = await IsolateRuntime.create(this.task, this.#host);
    rt.onHostThreadCall = (ns, invocations) => this.#charge(ns, invocations);
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

  /**
   * One call on the host's thread, of `invocations` invocations: too slow, or slow on average, and the
   * task goes back to the pool.
   */
  #charge(ns: number, invocations: number): void {
    // The running average over about 32 invocations, each charged its share of the call.
    const each = Math.min(ns / invocations, SLOW_CALL_NS);
    this.#averageNs = each + (this.#averageNs - each) * (invocations === 1 ? 31 / 32 : Math.pow(31 / 32, invocations));
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
    for (const rt of [...this.#busy]) rt.cancel(`task ${this.task.name}@${this.task.version} was replaced or stopped while this invocation ran`);
    this.#pump();
  }
}
