/**
 * The invocation scheduler: every invocation of a task passes through a bounded priority queue before
 * an injected executor runs it.
 *
 * - Global worker slots bound what runs at once; per-task concurrency bounds one task. A task at its
 *   limit never blocks others: dispatch picks the best *eligible* waiting invocation, not the head of
 *   one global queue.
 * - Pipelining (pipeline(task, depth)): a task the executor says is quick may have up to
 *   concurrency × depth invocations handed to the executor at once, which then runs at most
 *   `concurrency` of them at a time and queues the rest in order (the task host does). Each takes a free
 *   global slot if there is one (competing in priority and FIFO order like any other) and otherwise
 *   rides behind a slot the task already holds: they cost the executor microseconds each, and handing
 *   several over together is what lets a quick task's invocations share the work of crossing to the task
 *   host. Their watchdog allows for the invocations ahead of them.
 * - Higher priority first; FIFO within a priority across tasks, by a global sequence number.
 * - Memory is bounded: a task holds at most queueDepth waiting invocations (retries included); one more
 *   is refused at once with COORD_ERR_TASK_QUEUE_FULL and counted.
 * - Failure as Greengrass v2 components: a failed attempt makes the task ERRORED, 3 consecutive failed
 *   attempts make it BROKEN (its queue fails, new submissions are refused) until it is redeployed.
 *
 * The executor enforces the task's time limit; the scheduler's watchdog only backs it up, so that an
 * executor that never answers cannot hold a slot forever.
 */
import type { CoordinatorError } from '../errors.js';
import {
  asTaskError,
  backoffDelay,
  BROKEN_AFTER_FAILURES,
  brokenError,
  cancelled,
  isRetriable,
  queueFull,
  unknownTask,
  watchdogTimeout,
} from './failures.js';
import {
  assertValidSpec,
  initialStats,
  sameSpec,
  type SchedulerTaskSpec,
  type TaskState,
  type TaskStats,
} from './task-spec.js';

export type { SchedulerTaskSpec, TaskState, TaskStats } from './task-spec.js';

/** One invocation handed to the executor. */
export interface Invocation {
  /** Unique per attempt: `${task}-${n}` for the first, `${task}-${n}#${attempt}` for retries. */
  readonly id: string;
  readonly task: string;
  /** Opaque to the scheduler. */
  readonly event: unknown;
  /** 1 for the first try. */
  readonly attempt: number;
  /** When this attempt entered the queue (ms, from `now`). */
  readonly enqueuedAt: number;
}

/** Runs one invocation; resolves with its result, rejects with a CoordinatorError (code COORD_ERR_TASK_*). */
export type Executor = (invocation: Invocation) => Promise<unknown>;

/**
 * What the scheduler runs invocations with: it tells `done` once, `done(undefined, value)` or
 * `done(error)`, rather than settling a promise — on the runtime's hot path each promise and microtask
 * between the task host's answer and the next dispatch is a good part of what an invocation costs the
 * core. `done` must not be called before this returns.
 */
export type CallbackExecutor = (invocation: Invocation, done: (err: unknown, value?: unknown) => void) => void;

/** A promise-style Executor as a CallbackExecutor (a synchronous throw stays one, as the scheduler expects). */
export function promiseExecutor(run: Executor): CallbackExecutor {
  return (invocation, done) => {
    run(invocation).then(
      (value) => done(undefined, value),
      (err: unknown) => done(err),
    );
  };
}

/** How the scheduler is built. */
export interface SchedulerOptions {
  /** Global worker slots: most invocations running at once across all tasks. */
  readonly slots: number;
  /** Runs invocations (promiseExecutor adapts a promise-style one). */
  readonly execute: CallbackExecutor;
  /** Extra time past a task's timeoutMs before the scheduler itself fails the invocation with COORD_ERR_TASK_TIMEOUT (the executor normally answers first). Default 1000. */
  readonly watchdogGraceMs?: number;
  /** Told of every state change (for logs and deployment health). */
  readonly onStateChange?: (task: string, state: TaskState, error?: CoordinatorError) => void;
  readonly now?: () => number;
}

/** Who hears how an invocation ends (submitTo): once, after its retries. */
export interface InvocationCaller {
  readonly resolve: (value: unknown) => void;
  readonly reject: (err: CoordinatorError) => void;
}

type Caller = InvocationCaller;

interface Waiting {
  /** Global enqueue order: FIFO within a priority holds across tasks. */
  readonly seq: number;
  readonly invocation: Invocation;
  readonly baseId: string;
  readonly caller: Caller;
}

interface Backoff {
  readonly timer: ReturnType<typeof setTimeout>;
  readonly caller: Caller;
}

interface TaskEntry {
  readonly spec: SchedulerTaskSpec;
  /** FIFO of invocations waiting for a slot. */
  readonly waiting: Waiting[];
  /** Retries waiting out their backoff; they hold a place in the queue meanwhile. */
  readonly backoffs: Set<Backoff>;
  running: number;
  /** Of those, the ones holding a global slot. */
  slotted: number;
  /** In flight at most concurrency × depth (1: no pipelining). */
  depth: number;
  /**
   * Costly failures in a row (timeouts, memory, host crashes): while above 0 the task is on probation —
   * one slot at most, from the probation share, and nothing before `notBefore` (its back-off).
   */
  penalty: number;
  notBefore: number;
  /** Counters; `queued` and `running` are filled in when read. */
  readonly stats: TaskStats;
}

// setTimeout fires at once (with a warning) past this: clamp, or a huge limit would time out instantly.
const MAX_TIMER_MS = 2_147_483_647;

/** Bounded priority queue with worker slots, per-task concurrency, watchdog, retries and BROKEN state. */
export class Scheduler {
  readonly #slots: number;
  readonly #execute: CallbackExecutor;
  readonly #graceMs: number;
  readonly #onStateChange: SchedulerOptions['onStateChange'];
  readonly #now: () => number;
  readonly #tasks = new Map<string, TaskEntry>();
  /** Global slots in use. */
  #running = 0;
  /** Of those, held by tasks on probation; at most #probationSlots. */
  #probationRunning = 0;
  readonly #probationSlots: number;
  /** Wakes dispatch when the earliest back-off of a task on probation ends. */
  #wake: ReturnType<typeof setTimeout> | undefined;
  #wakeAt = Infinity;
  /** Invocations handed to the executor and not settled (pipelined ones included). */
  #inFlight = 0;
  #seq = 0;
  #ids = 0;
  #dispatching = false;
  #closing: Promise<void> | undefined;
  #idle: (() => void) | undefined;

  /** Throws a RangeError for slots that are not a positive integer, a negative grace, or no execute. */
  constructor(options: SchedulerOptions) {
    if (typeof options.execute !== 'function') throw new RangeError('scheduler: execute is required');
    if (!Number.isInteger(options.slots) || options.slots < 1) {
      throw new RangeError(`scheduler: slots must be an integer >= 1, got ${options.slots}`);
    }
    const grace = options.watchdogGraceMs ?? 1000;
    if (!(Number.isFinite(grace) && grace >= 0)) {
      throw new RangeError(`scheduler: watchdogGraceMs must be a number >= 0, got ${grace}`);
    }
    this.#slots = options.slots;
    // Tasks whose invocations keep timing out, running out of memory or crashing the host share a quarter
    // of the slots (at least one, and never all of them when there are two or more): whatever they do,
    // the rest stay free for the tasks that behave.
    this.#probationSlots = options.slots === 1 ? 1 : Math.max(1, Math.floor(options.slots / 4));
    this.#execute = options.execute;
    this.#graceMs = grace;
    this.#onStateChange = options.onStateChange;
    this.#now = options.now ?? Date.now;
  }

  /** Replaces the task set. New names start INSTALLED; a name whose spec changed keeps nothing: its queued invocations fail with COORD_ERR_TASK_CANCELLED, counters and BROKEN state reset (a redeploy); removed names likewise cancel their queue; running invocations of removed/replaced tasks are left to finish (their result still goes to their caller) but do not count toward the new spec. Unchanged specs (deep-equal) keep their queue, counters and state. */
  setTasks(specs: readonly SchedulerTaskSpec[]): void {
    const next = new Map<string, SchedulerTaskSpec>();
    for (const spec of specs) {
      assertValidSpec(spec);
      if (next.has(spec.name)) throw new RangeError(`scheduler: task "${spec.name}" is listed twice`);
      next.set(spec.name, spec);
    }
    for (const [name, entry] of [...this.#tasks]) {
      const spec = next.get(name);
      if (spec !== undefined && sameSpec(entry.spec, spec)) continue;
      this.#tasks.delete(name);
      this.#cancelWaiting(
        entry,
        () => spec === undefined
          ? cancelled(`Task "${name}" was removed by a new deployment; the invocation did not run.`)
          : cancelled(`Task "${name}" was redeployed; the queued invocation did not run. Events sent from now on reach the new version.`),
      );
    }
    const installed: string[] = [];
    for (const [name, spec] of next) {
      if (this.#tasks.has(name)) continue;
      this.#tasks.set(name, { spec, waiting: [], backoffs: new Set(), running: 0, slotted: 0, depth: 1, penalty: 0, notBefore: 0, stats: initialStats() });
      installed.push(name);
    }
    for (const name of installed) this.#notify(name, 'INSTALLED');
    this.#dispatch();
  }

  /** Queues an invocation; resolves/rejects when it finally succeeds or fails (after retries). Rejects at once (without queueing) with COORD_ERR_TASK_UNKNOWN, COORD_ERR_TASK_BROKEN or COORD_ERR_TASK_QUEUE_FULL (that one also counts in `rejected`). */
  submit(task: string, event: unknown): Promise<unknown> {
    return new Promise<unknown>((resolve, reject) => this.submitTo(task, event, { resolve, reject }));
  }

  /**
   * As submit(), telling `caller` instead of settling a promise; a refusal is told before this returns.
   * For callers that do not wait for the outcome (routed messages): no promise per invocation.
   */
  submitTo(task: string, event: unknown, caller: InvocationCaller): void {
    if (this.#closing !== undefined) {
      caller.reject(cancelled(`The coordinator is stopping; the invocation of task "${task}" was not queued.`));
      return;
    }
    const entry = this.#tasks.get(task);
    if (entry === undefined) return caller.reject(unknownTask(task));
    if (entry.stats.state === 'BROKEN') return caller.reject(brokenError(task, entry.stats));
    if (waitingCount(entry) >= entry.spec.queueDepth) {
      entry.stats.rejected++;
      return caller.reject(queueFull(task, entry.spec.queueDepth));
    }
    const baseId = `${task}-${++this.#ids}`;
    this.#enqueue(entry, { id: baseId, task, event, attempt: 1, enqueuedAt: this.#now() }, baseId, caller);
    this.#dispatch();
  }

  /**
   * Lets up to concurrency × depth invocations of `task` be handed to the executor at once (depth 1, the
   * default, turns pipelining off); the executor must then run at most `concurrency` of them at a time.
   * For tasks the executor knows to be quick. Unknown tasks are ignored; a redeploy resets it.
   */
  pipeline(task: string, depth: number): void {
    const entry = this.#tasks.get(task);
    if (entry === undefined) return;
    const d = Math.max(1, Math.min(64, Math.floor(depth) || 1));
    if (d === entry.depth) return;
    entry.depth = d;
    this.#dispatch();
  }

  /**
   * Makes `task` BROKEN now with `cause` (a task quarantined for crashing its host): its queue fails,
   * new submissions are refused until a redeploy. Unknown or already BROKEN tasks are left alone.
   */
  quarantine(task: string, cause: CoordinatorError): void {
    const entry = this.#tasks.get(task);
    if (entry === undefined || entry.stats.state === 'BROKEN') return;
    entry.stats.lastError = { code: cause.code, message: cause.message, at: this.#now() };
    this.#break(task, entry, cause);
  }

  /** Counters and state of one task, or undefined. */
  stats(task: string): TaskStats | undefined {
    const entry = this.#tasks.get(task);
    if (entry === undefined) return undefined;
    const { lastError } = entry.stats;
    return {
      ...entry.stats,
      queued: waitingCount(entry),
      running: entry.running,
      lastError: lastError === null ? null : { ...lastError },
    };
  }

  /** All tasks' stats by name. */
  allStats(): Record<string, TaskStats> {
    const all: Record<string, TaskStats> = {};
    for (const name of this.#tasks.keys()) all[name] = this.stats(name)!;
    return all;
  }

  /** Invocations waiting across all tasks (for status), retries in backoff included. */
  get queued(): number {
    let n = 0;
    for (const entry of this.#tasks.values()) n += waitingCount(entry);
    return n;
  }

  /** Invocations running across all tasks (those of removed or replaced tasks included: they hold slots). */
  get running(): number {
    return this.#inFlight;
  }

  /** Refuses new submissions with COORD_ERR_TASK_CANCELLED, fails every queued invocation with it, cancels retry timers; resolves when running invocations have settled. */
  close(): Promise<void> {
    if (this.#closing !== undefined) return this.#closing;
    this.#closing = new Promise<void>((resolve) => {
      this.#idle = resolve;
    });
    clearTimeout(this.#wake);
    for (const [name, entry] of this.#tasks) {
      this.#cancelWaiting(entry, () => cancelled(`The coordinator is stopping; the queued invocation of task "${name}" did not run.`));
    }
    this.#settleIdle();
    return this.#closing;
  }

  #enqueue(entry: TaskEntry, invocation: Invocation, baseId: string, caller: Caller): void {
    entry.waiting.push({ seq: ++this.#seq, invocation, baseId, caller });
  }

  /**
   * Starts waiting invocations while slots are free: best priority first; within a priority the task
   * holding the fewest slots (one task's backlog cannot take every slot while another waits), then the
   * oldest. A task on probation (see TaskEntry.penalty) waits out its back-off and takes at most one slot,
   * from the probation share.
   */
  #dispatch(): void {
    // The executor is called synchronously and may submit again; the outer loop picks that up.
    if (this.#dispatching) return;
    this.#dispatching = true;
    try {
      let now = -1;
      let wakeAt = Infinity;
      for (;;) {
        const free = this.#running < this.#slots;
        let best: TaskEntry | undefined;
        let bestSlot = false;
        for (const entry of this.#tasks.values()) {
          const head = entry.waiting[0];
          if (head === undefined) continue;
          let room = entry.running < entry.spec.concurrency * entry.depth;
          let slot = free && room;
          if (entry.penalty > 0) {
            if (now < 0) now = this.#now();
            if (entry.notBefore > now) {
              wakeAt = Math.min(wakeAt, entry.notBefore);
              continue;
            }
            room = entry.running === 0;
            slot = slot && room && this.#probationRunning < this.#probationSlots;
            if (!slot) continue;
          }
          // A slot (competing in priority and FIFO order like any task), or, pipelining, a place behind
          // the invocations it already has in flight while it holds a slot.
          if (!slot && !(room && entry.depth > 1 && entry.slotted > 0)) continue;
          if (best === undefined || better(entry, best)) {
            best = entry;
            bestSlot = slot;
          }
        }
        if (best === undefined) break;
        this.#start(best, best.waiting.shift()!, bestSlot);
      }
      if (wakeAt !== Infinity) this.#wakeUpAt(wakeAt, now);
    } finally {
      this.#dispatching = false;
    }
  }

  /** Dispatches again when the earliest back-off ends (one timer, the earliest). */
  #wakeUpAt(at: number, now: number): void {
    if (at >= this.#wakeAt || this.#closing !== undefined) return;
    clearTimeout(this.#wake);
    this.#wakeAt = at;
    this.#wake = setTimeout(() => {
      this.#wake = undefined;
      this.#wakeAt = Infinity;
      this.#dispatch();
    }, Math.max(0, at - now));
    this.#wake.unref?.();
  }

  #start(entry: TaskEntry, job: Waiting, slot: boolean): void {
    // A pipelined invocation may wait for every `concurrency` ahead of it to use its whole time limit.
    const rounds = Math.floor(entry.running / entry.spec.concurrency) + 1;
    entry.running++;
    this.#inFlight++;
    const probation = slot && entry.penalty > 0;
    if (slot) {
      entry.slotted++;
      this.#running++;
    }
    if (probation) this.#probationRunning++;
    let settled = false;
    const finish = (error: CoordinatorError | undefined, value: unknown): void => {
      // The watchdog and the executor race; whichever comes second is ignored.
      if (settled) return;
      settled = true;
      clearTimeout(watchdog);
      entry.running--;
      this.#inFlight--;
      if (slot) {
        entry.slotted--;
        this.#running--;
      }
      if (probation) this.#probationRunning--;
      if (error === undefined) this.#succeeded(entry, job, value);
      else this.#failed(entry, job, error);
      this.#dispatch();
      this.#settleIdle();
    };
    const { invocation } = job;
    const watchdog = setTimeout(
      () => finish(watchdogTimeout(invocation.task, invocation.id, entry.spec.timeoutMs), undefined),
      Math.min(entry.spec.timeoutMs * rounds + this.#graceMs, MAX_TIMER_MS),
    );
    try {
      this.#execute(invocation, (err, value) => finish(err === undefined ? undefined : asTaskError(err, invocation.task, invocation.id), value));
    } catch (err) {
      const error = asTaskError(err, invocation.task, invocation.id);
      // Settled on a later tick like any other failure, so dispatch never re-enters itself.
      queueMicrotask(() => finish(error, undefined));
    }
  }

  #succeeded(entry: TaskEntry, job: Waiting, value: unknown): void {
    // A task replaced or removed while this ran: the caller gets its answer, the new spec's counters stay clean.
    if (this.#tasks.get(job.invocation.task) === entry) {
      entry.stats.succeeded++;
      entry.stats.consecutiveFailures = 0;
      entry.penalty = 0;
      // BROKEN sticks until a redeploy, even if an invocation already running when it broke succeeds.
      if (entry.stats.state !== 'BROKEN') this.#setState(job.invocation.task, entry, 'RUNNING');
    }
    job.caller.resolve(value);
  }

  #failed(entry: TaskEntry, job: Waiting, error: CoordinatorError): void {
    const { task, attempt } = job.invocation;
    // Cancellation is the runner stopping the task (redeploy, shutdown), not the task failing; a host
    // crash caused by another task's code is not this task's failure either.
    if (error.code === 'COORD_ERR_TASK_CANCELLED' || isBystander(error) || this.#tasks.get(task) !== entry) {
      job.caller.reject(error);
      return;
    }
    const { stats, spec } = entry;
    stats.failed++;
    stats.consecutiveFailures++;
    if (COSTLY.has(error.code)) {
      // Its time, memory or host were what it used up: probation, and a back-off that doubles.
      entry.penalty++;
      entry.notBefore = this.#now() + Math.min(entry.spec.timeoutMs * 2 ** (entry.penalty - 1), MAX_PROBATION_BACKOFF_MS);
    }
    stats.lastError = { code: error.code, message: error.message, at: this.#now() };
    if (stats.state === 'BROKEN') {
      job.caller.reject(error);
      return;
    }
    if (stats.consecutiveFailures >= BROKEN_AFTER_FAILURES) {
      job.caller.reject(error);
      this.#break(task, entry, error);
      return;
    }
    this.#setState(task, entry, 'ERRORED', error);
    const canRetry =
      this.#closing === undefined &&
      isRetriable(error.code) &&
      attempt <= spec.retries.max &&
      // Retries count toward the queue: a full queue fails the invocation with its own error.
      waitingCount(entry) < spec.queueDepth;
    if (!canRetry) {
      job.caller.reject(error);
      return;
    }
    stats.retried++;
    const backoff: Backoff = {
      caller: job.caller,
      timer: setTimeout(() => {
        entry.backoffs.delete(backoff);
        const invocation: Invocation = {
          id: `${job.baseId}#${attempt + 1}`,
          task,
          event: job.invocation.event,
          attempt: attempt + 1,
          enqueuedAt: this.#now(),
        };
        this.#enqueue(entry, invocation, job.baseId, job.caller);
        this.#dispatch();
      }, Math.min(backoffDelay(spec, attempt), MAX_TIMER_MS)),
    };
    entry.backoffs.add(backoff);
  }

  #break(task: string, entry: TaskEntry, cause: CoordinatorError): void {
    this.#setState(task, entry, 'BROKEN', cause);
    this.#cancelWaiting(entry, () => brokenError(task, entry.stats, cause));
  }

  /** Fails every waiting invocation and pending retry of `entry` with a fresh error each. */
  #cancelWaiting(entry: TaskEntry, error: () => CoordinatorError): void {
    const waiting = entry.waiting.splice(0);
    const backoffs = [...entry.backoffs];
    entry.backoffs.clear();
    for (const backoff of backoffs) clearTimeout(backoff.timer);
    for (const job of waiting) job.caller.reject(error());
    for (const backoff of backoffs) backoff.caller.reject(error());
  }

  #setState(task: string, entry: TaskEntry, state: TaskState, error?: CoordinatorError): void {
    if (entry.stats.state === state) return;
    entry.stats.state = state;
    this.#notify(task, state, error);
  }

  #notify(task: string, state: TaskState, error?: CoordinatorError): void {
    if (this.#onStateChange === undefined) return;
    try {
      this.#onStateChange(task, state, error);
    } catch (err) {
      // A throwing listener is a bug to surface, but not mid-bookkeeping where it would strand callers.
      queueMicrotask(() => {
        throw err;
      });
    }
  }

  #settleIdle(): void {
    if (this.#idle !== undefined && this.#inFlight === 0) {
      this.#idle();
      this.#idle = undefined;
    }
  }
}

/** Failures that held a slot for long or cost the gateway a process: they put a task on probation. */
const COSTLY: ReadonlySet<string> = new Set(['COORD_ERR_TASK_TIMEOUT', 'COORD_ERR_TASK_MEMORY', 'COORD_ERR_TASK_HOST_CRASHED']);
/** Longest back-off of a task on probation. */
const MAX_PROBATION_BACKOFF_MS = 60_000;

/** Whether `a` goes before `b`: higher priority, then fewer slots held, then the older head. */
function better(a: TaskEntry, b: TaskEntry): boolean {
  if (a.spec.priority !== b.spec.priority) return a.spec.priority > b.spec.priority;
  if (a.slotted !== b.slotted) return a.slotted < b.slotted;
  return a.waiting[0]!.seq < b.waiting[0]!.seq;
}

/** A failure the task did not cause: the task host died of another task's code (sandbox/task-hosts.ts). */
function isBystander(error: CoordinatorError): boolean {
  return error.code === 'COORD_ERR_TASK_HOST_CRASHED' && (error.details as { bystander?: unknown } | undefined)?.bystander === true;
}

/** Waiting invocations of a task: queued for a slot plus retries in backoff. */
function waitingCount(entry: TaskEntry): number {
  return entry.waiting.length + entry.backoffs.size;
}
