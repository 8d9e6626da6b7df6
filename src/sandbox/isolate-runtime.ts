/**
 * One V8 isolate running one task version (task host side): the bootstrap, then the task's ES module,
 * then calls into it — each with the task's time limit. A call that outlives its limit, or an isolate
 * that exceeds its memory limit, disposes the isolate: the runtime is dead and its pool replaces it.
 *
 * Why a wall-clock timer on top of isolated-vm's `timeout`: that option stops synchronous execution
 * only; an invocation that awaits forever (or loops through microtasks between host calls) is stopped
 * by disposing the isolate, which rejects everything pending in it.
 *
 * Two ways to enter the isolate. By default every call is an asynchronous isolated-vm call: the task runs
 * on isolated-vm's thread pool and a task that spins cannot hold the host's own thread. That hop costs
 * about 60–90 µs of CPU per call (a thread wake-up each way), many times a trivial invocation. So a task
 * that has shown itself quick (its pool decides, see task-pool.ts) is run on the host's thread instead:
 * applySync, still with the task's time limit, its results reported through a synchronous callback (about
 * 7 µs a call). Every call into an isolate in that mode is synchronous, so the isolate never runs on
 * another thread while its synchronous callbacks wait for this one. Each such call reports how long it
 * held the thread (onHostThreadCall), and the pool sends a task that turned slow back to the thread pool.
 * There, outcomes are handed to their callbacks (run, runMany) once the call that reported them has
 * returned, without a promise in between, and several queued invocations can share one call (runMany).
 */
import ivm from 'isolated-vm';
import { ERRORS } from '../errors.js';
import { BOOTSTRAP_SOURCE, OP } from './bootstrap.js';
import { HostMarks, MARKS_ENV } from './crash-marks.js';
import type { LogLevel, TaskLoad, WireError } from './protocol.js';

/** The host side of a task's calls: the core answers them (after checking permissions). */
export interface RuntimeHost {
  call(invocationId: string, method: string, argsJson: string): Promise<string>;
  /** A ctx.publish the sandbox allowed; one-way, the core checks it again. */
  publish(invocationId: string, topic: string, text: string | undefined, base64: string | undefined, qos: 0 | 1): void;
  log(invocationId: string, level: LogLevel, text: string): void;
  /** A timer callback of a pinned task failed or the isolate died outside an invocation. */
  failed(error: WireError): void;
}

/**
 * Marks which task's code runs while it runs (crash-marks.ts), so that a host killed by a V8 fatal error
 * is charged to the task that did it. Every entry into a task's isolate goes through mark()/unmark().
 */
const marks = new HostMarks(process.env[MARKS_ENV]);

/** Time allowed for the bootstrap and the task module's top-level code. */
const LOAD_TIMEOUT_MS = 2000;
/**
 * A task version whose module's top-level code once ran in under QUICK_MODULE_NS is evaluated on the
 * host's thread in its later isolates (scale-up, replacements), saving the thread pool's hop (about a
 * tenth of an isolate's start), with the short limit QUICK_MODULE_MS: if it is not quick then, that
 * isolate is dropped and the task version goes back to the thread pool's evaluation for good. The
 * first isolate of a version is always evaluated on the pool (a module that spins there cannot hold
 * the host's thread), so the host's thread waits at most QUICK_MODULE_MS, once, for a module that
 * behaved once and not again.
 */
const quickModules = new WeakSet<TaskLoad>();
const QUICK_MODULE_NS = 1_000_000n;
const QUICK_MODULE_MS = 20;
/** Time allowed to look up the task's default export (synchronous on the host's thread). */
const EXPORT_LOOKUP_TIMEOUT_MS = 50;
/** Host calls one isolate may have waiting for an answer. */
const MAX_CALLS_IN_FLIGHT = 256;
/**
 * Largest host call of a task (JSON of its arguments, characters): its largest state value, shadow
 * update or device action, each escaped once more inside the arguments (at most twice the characters),
 * plus room for the names beside it.
 */
export function maxCallChars(task: TaskLoad): number {
  return 2 * Math.max(task.maxStateValueBytes, task.maxShadowRequestBytes, task.maxPayloadBytes) + 8192;
}

/** How a call into the isolate ends: an error, or the result as JSON. */
export type Done = (err: RuntimeError | undefined, json: string | undefined) => void;

/** One invocation of a batch (IsolateRuntime.runMany). */
export interface ManyItem {
  readonly invocationId: string;
  readonly eventJson: string;
  readonly done: Done;
}

/** An invocation or timer callback started on the host's thread, waiting for hostDone. */
interface OnHost {
  readonly done: Done;
  timer: NodeJS.Timeout | undefined;
  /** Its outcome, once reported, until it is handed to `done` (see #completed). */
  err: RuntimeError | undefined;
  value: string | undefined;
}

/**
 * V8's code cache of the bootstrap, made by the first isolate of this process and used by every later
 * one: compiling the bootstrap from source is about a quarter of an isolate's start.
 */
let bootstrapCache: ivm.ExternalCopy<ArrayBuffer> | undefined;

/** What compileScriptSync returns with the cache options (isolated-vm's types leave it out). */
type CachedScript = ivm.Script & ivm.CachedDataResult & { readonly cachedDataRejected?: boolean };

function compileBootstrap(iso: ivm.Isolate): ivm.Script {
  const filename = 'coordinator:bootstrap';
  if (bootstrapCache) {
    const script = iso.compileScriptSync(BOOTSTRAP_SOURCE, { filename, cachedData: bootstrapCache }) as CachedScript;
    if (!script.cachedDataRejected) return script;
    bootstrapCache = undefined;
    return script;
  }
  const script = iso.compileScriptSync(BOOTSTRAP_SOURCE, { filename, produceCachedData: true }) as CachedScript;
  bootstrapCache = script.cachedData;
  return script;
}

/**
 * The publishes the sandbox packed on the host's thread (bootstrap.ts, pubText): per publish, the
 * invocation id, topic, text and base64 each as `<length>:<chars>` or `-` for none, then the QoS digit.
 */
function unpackPublishes(packed: string, each: (invocationId: string, topic: string, text: string | undefined, base64: string | undefined, qos: 0 | 1) => void): void {
  let i = 0;
  let bad = false;
  const field = (): string | undefined => {
    if (packed.charCodeAt(i) === 45) {
      i++;
      return undefined;
    }
    const colon = packed.indexOf(':', i);
    const n = colon < 0 ? NaN : Number(packed.slice(i, colon));
    if (!(n >= 0) || colon + 1 + n > packed.length) {
      bad = true;
      i = packed.length;
      return undefined;
    }
    i = colon + 1 + n;
    return packed.slice(colon + 1, i);
  };
  while (i < packed.length) {
    const invocationId = field();
    const topic = field();
    const text = field();
    const base64 = field();
    const qos = packed.charCodeAt(i++) === 49 ? 1 : 0;
    if (bad || invocationId === undefined || topic === undefined) return;
    each(invocationId, topic, text, base64, qos);
  }
}

/** An error that crosses to the core with its code. */
export class RuntimeError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/**
 * Codes the sandbox's own errors carry across the boundary (isolated-vm copies an error's message and
 * stack, not its properties, so the bootstrap writes the code at the head of the message). A task can
 * only make its own failure look like one of these, which changes nothing but that failure's code.
 */
const SANDBOX_CODES = new Set(['COORD_ERR_TASK_DENIED', 'COORD_ERR_TASK_LIMIT', 'COORD_ERR_TASK_BAD_CALL', 'COORD_ERR_SHADOW_REJECTED', 'COORD_ERR_TASK_CANCELLED']);
const CODED = /^(COORD_ERR_[A-Z_]+): ([\s\S]*)$/;

function wire(err: unknown): WireError {
  if (err instanceof RuntimeError) return { code: err.code, message: err.message };
  const e = err as { message?: unknown; stack?: unknown };
  const raw = typeof e?.message === 'string' ? e.message : String(err);
  const m = CODED.exec(raw);
  const coded = m !== null && SANDBOX_CODES.has(m[1]!) && m[1]! in ERRORS;
  return { code: coded ? m[1]! : 'COORD_ERR_TASK_THREW', message: coded ? m[2]! : raw, stack: typeof e?.stack === 'string' ? e.stack : undefined };
}

/** A live isolate with the task loaded. */
export class IsolateRuntime {
  readonly #task: TaskLoad;
  readonly #host: RuntimeHost;
  readonly #isolate: ivm.Isolate;
  /** This task version's byte in the crash marks file. */
  readonly #slot: number;
  #context: ivm.Context | undefined;
  /** The sandbox's entry point (bootstrap.ts): every call into the isolate is entry(OP.x, ...). */
  #entry: ivm.Reference | undefined;
  /** Whether calls run on the host's thread (see the header); changed only while the isolate is idle. */
  #onHostThread = false;
  /** Work started on the host's thread, by sequence number, until hostDone reports it. */
  readonly #onHost = new Map<number, OnHost>();
  /**
   * Work reported done during the synchronous call in progress: handed to its callbacks once that call
   * has returned, never from inside it (they may start the next invocation in this very isolate).
   */
  #completed: OnHost[] = [];
  /** How long the last call made by runMany held the thread, ns (see #sync). */
  #lastCallNs = 0;
  #nextSeq = 1;
  /**
   * Told how long each call on the host's thread took inside the isolate, ns (Infinity: it killed the
   * isolate), and how many invocations it ran (several for runMany).
   */
  onHostThreadCall: ((ns: number, invocations: number) => void) | undefined;
  /** Host calls sent and not yet answered. */
  callsInFlight = 0;
  readonly #timers = new Map<number, NodeJS.Timeout>();
  #disposed = false;
  #deathReason: WireError | undefined;
  /** Invocations running in this isolate now. */
  active = 0;
  /** When it last finished an invocation (for idle disposal). */
  idleSince = Date.now();

  private constructor(task: TaskLoad, host: RuntimeHost) {
    this.#task = task;
    this.#host = host;
    this.#slot = task.slot ?? 0;
    this.#isolate = new ivm.Isolate({
      memoryLimit: task.memoryMb,
      onCatastrophicError: (message) => {
        // isolated-vm: V8 lost control of this isolate; nothing in this process can be trusted.
        process.stderr.write(`task host: catastrophic isolate error in ${task.name}: ${message}\n`);
        // Whatever thread this comes from, the crash is this task's (crash-marks.ts).
        marks.blame(this.#slot);
        process.abort();
      },
    });
  }

  /** Creates an isolate, evaluates the bootstrap and the task module; rejects with COORD_ERR_TASK_LOAD. */
  static async create(task: TaskLoad, host: RuntimeHost): Promise<IsolateRuntime> {
    if (quickModules.has(task)) {
      const rt = new IsolateRuntime(task, host);
      try {
        await rt.#load(true);
        return rt;
      } catch {
        // Not quick this time (or not at all): never again for this version, and the usual way now.
        rt.dispose();
        quickModules.delete(task);
      }
    }
    const rt = new IsolateRuntime(task, host);
    try {
      await rt.#load(false);
      return rt;
    } catch (err) {
      rt.dispose();
      const w = wire(err);
      const memory = /memory limit/i.test(w.message);
      throw new RuntimeError(memory ? 'COORD_ERR_TASK_MEMORY' : 'COORD_ERR_TASK_LOAD', `task ${task.name}@${task.version} did not load: ${w.message}`);
    }
  }

  async #load(quickModule: boolean): Promise<void> {
    marks.enter(this.#slot);
    try {
      await this.#loadMarked(quickModule);
    } finally {
      marks.leave(this.#slot);
    }
  }

  async #loadMarked(quickModule: boolean): Promise<void> {
    // Everything up to the task's own code is ours and bounded: done with isolated-vm's synchronous
    // calls (each async call is a hop to its thread pool and back, most of a cold start). The task's
    // top-level code and the look-up of its export run asynchronously, with the load time limit, so a
    // hostile module cannot hold the host's thread.
    const iso = this.#isolate;
    const context = iso.createContextSync();
    this.#context = context;
    const refuse = (specifier: string): never => {
      throw new Error(`imports are not available in the sandbox (import of "${specifier}")`);
    };
    const script = compileBootstrap(iso);
    const boot: ivm.Reference = script.runSync(context, { timeout: LOAD_TIMEOUT_MS, reference: true });
    script.release();
    const hostSend = new ivm.Callback(
      (id: number, method: string, argsJson: string, invocationId: string) => this.#onCall(Number(id), String(method), String(argsJson), String(invocationId)),
      { ignored: true },
    );
    const hostLog = new ivm.Callback((invocationId: string, level: LogLevel, text: string) => this.#host.log(String(invocationId), level, String(text)), { ignored: true });
    const hostPublish = new ivm.Callback(
      (invocationId: string, topic: string, text: string | null, base64: string | null, qos: number) =>
        this.#host.publish(String(invocationId), String(topic), text ?? undefined, base64 ?? undefined, qos === 1 ? 1 : 0),
      { ignored: true },
    );
    const hostTimer = new ivm.Callback((op: string, id: number, ms: number, repeat: boolean) => this.#timer(op, id, ms, repeat), { ignored: true });
    // The same handles, called at once, for when the isolate runs on the host's thread. They never call
    // back into the isolate synchronously and never throw into it.
    const quiet =
      <A extends unknown[]>(fn: (...args: A) => void) =>
      (...args: A): void => {
        try {
          fn(...args);
        } catch {
          // the host's own failure is not the task's business
        }
      };
    const syncSend = new ivm.Callback(
      quiet((id: number, method: string, argsJson: string, invocationId: string) => this.#onCall(Number(id), String(method), String(argsJson), String(invocationId))),
      { sync: true },
    );
    const syncLog = new ivm.Callback(quiet((invocationId: string, level: LogLevel, text: string) => this.#host.log(String(invocationId), level, String(text))), { sync: true });
    const syncPublish = new ivm.Callback(quiet((packed: string) => this.#publishPacked(packed)), { sync: true });
    const syncTimer = new ivm.Callback(quiet((op: string, id: number, ms: number, repeat: boolean) => this.#timer(op, id, ms, repeat)), { sync: true });
    const done = new ivm.Callback(
      quiet((seq: number, ok: boolean, value: unknown, stack: unknown, publishes: unknown) => {
        // The invocation's publishes go first: the core must see them while the invocation is its caller.
        this.#publishPacked(publishes);
        this.#done(Number(seq), ok === true, value, stack);
      }),
      { sync: true },
    );
    const limits = {
      maxTimers: this.#task.maxTimers,
      maxPublishes: this.#task.maxPublishesPerInvocation,
      publishFilters: this.#task.publishFilters,
      maxPayloadBytes: this.#task.maxPayloadBytes,
      maxLogLines: this.#task.maxLogLines,
      maxCallsInFlight: MAX_CALLS_IN_FLIGHT,
      maxResultBytes: this.#task.maxResultBytes,
      maxStateValueBytes: this.#task.maxStateValueBytes,
      maxShadowRequestBytes: this.#task.maxShadowRequestBytes,
      maxCallChars: maxCallChars(this.#task),
    };
    const entry = boot.applySync(
      undefined,
      [hostSend, hostLog, hostTimer, hostPublish, this.#task.configJson, JSON.stringify(limits), syncSend, syncLog, syncTimer, syncPublish, done],
      { timeout: LOAD_TIMEOUT_MS, result: { reference: true } },
    ) as ivm.Reference;
    boot.release();

    const mod = iso.compileModuleSync(this.#task.code, { filename: `task:///${this.#task.name}@${this.#task.version}.js` });
    mod.instantiateSync(context, refuse);
    if (quickModule) {
      mod.evaluateSync({ timeout: QUICK_MODULE_MS });
    } else {
      const started = iso.cpuTime;
      await mod.evaluate({ timeout: LOAD_TIMEOUT_MS });
      if (iso.cpuTime - started < QUICK_MODULE_NS) quickModules.add(this.#task);
    }
    // Only reads the default export (a getter there is the task's code): synchronous, with a short limit.
    const shape = entry.applySync(undefined, [OP.setTask, mod.namespace.derefInto({ release: true })], { timeout: EXPORT_LOOKUP_TIMEOUT_MS }) as string;
    if (shape !== 'ok') throw new Error('the default export has no onEvent(event, ctx) function');
    // Only now: host calls made by the module's top-level code are not answered.
    this.#entry = entry;
  }

  /** False once the isolate was disposed (limit exceeded, timeout, unload). */
  get alive(): boolean {
    return !this.#disposed && !this.#isolate.isDisposed;
  }

  /** Whether this isolate runs on the host's thread (see the header). */
  get onHostThread(): boolean {
    return this.#onHostThread;
  }

  /**
   * Moves the isolate onto the host's thread or back to the thread pool. Only while it is idle (nothing
   * running, no host call or timer pending): what runs in it never sees the mode change under it.
   */
  setOnHostThread(on: boolean): void {
    if (on === this.#onHostThread || !this.alive || !this.#entry) return;
    if (this.active > 0 || this.callsInFlight > 0 || this.#timers.size > 0) return;
    try {
      this.#entry.applySync(undefined, [OP.setMode, on], { timeout: EXPORT_LOOKUP_TIMEOUT_MS });
      this.#onHostThread = on;
    } catch (err) {
      this.#classify(err);
    }
  }

  /** CPU time the isolate has used so far, ns (0 once disposed). */
  get cpuTimeNs(): bigint {
    return this.alive ? this.#isolate.cpuTime : 0n;
  }

  /** Heap in use, bytes (0 once disposed, or if the isolate is too busy to say within 200 ms). */
  async heapBytes(): Promise<number> {
    if (!this.alive) return 0;
    const h = await Promise.race([this.#isolate.getHeapStatistics(), new Promise<undefined>((r) => setTimeout(() => r(undefined), 200).unref())]).catch(() => undefined);
    return h ? h.used_heap_size + h.externally_allocated_size : 0;
  }

  /**
   * A host call from the sandbox: bounded here (calls in flight, argument size) before it leaves the
   * isolate's process, then answered through deliver() under the task's time limit.
   */
  #onCall(id: number, method: string, argsJson: string, invocationId: string): void {
    if (!this.alive) return;
    // Answered on a later tick: this runs inside the isolate's call when it is on the host's thread.
    const refuse = (message: string): void => queueMicrotask(() => this.#deliver(id, JSON.stringify({ ok: false, error: { code: 'COORD_ERR_TASK_LIMIT', message } })));
    if (this.callsInFlight >= MAX_CALLS_IN_FLIGHT) return refuse(`more than ${MAX_CALLS_IN_FLIGHT} host calls in flight`);
    const limit = maxCallChars(this.#task);
    if (argsJson.length > limit) return refuse(`host call arguments of ${argsJson.length} characters; the limit is ${limit}`);
    this.callsInFlight++;
    this.#host.call(invocationId, method, argsJson).then(
      (answer) => {
        this.callsInFlight--;
        this.#deliver(id, answer);
      },
      () => {
        this.callsInFlight--;
      },
    );
  }

  #deliver(id: number, answerJson: string): void {
    if (!this.alive || !this.#entry) return;
    const limit = this.#task.timeoutMs;
    if (this.#onHostThread) {
      // The code that awaited the answer runs now, on this thread, within the task's limit.
      try {
        this.#sync([OP.deliver, id, answerJson], limit);
      } catch (err) {
        // Inside an invocation its own call fails too (the isolate is gone); outside one, say so.
        const within = this.active > 0;
        const e = this.#classify(err);
        this.#handOver();
        if (!within && !this.alive) this.#host.failed({ code: e.code, message: `after a host call: ${e.message}` });
        return;
      }
      this.#flushPublishes();
      this.#handOver();
      return;
    }
    const watchdog = setTimeout(() => this.#kill({ code: 'COORD_ERR_TASK_TIMEOUT', message: `code of task ${this.#task.name} awaiting a host call ran longer than ${limit} ms` }), limit);
    marks.enter(this.#slot);
    this.#entry.apply(undefined, [OP.deliver, id, answerJson], { timeout: limit }).then(
      () => {
        marks.leave(this.#slot);
        clearTimeout(watchdog);
      },
      (err: unknown) => {
        marks.leave(this.#slot);
        clearTimeout(watchdog);
        const e = this.#classify(err);
        // Inside an invocation its own call rejects too (the isolate is gone); outside one, say so.
        if (this.active === 0 && (this.#task.lifecycle === 'pinned' || !this.alive)) this.#host.failed({ code: e.code, message: `after a host call: ${e.message}` });
      },
    );
  }

  /** onEvent(event, ctx): resolves with the result as JSON. */
  invoke(invocationId: string, eventJson: string): Promise<string> {
    return new Promise<string>((resolve, reject) => this.run(invocationId, eventJson, (err, json) => (err ? reject(err) : resolve(json!))));
  }

  /**
   * onEvent(event, ctx), ending in `done`: on the host's thread without a promise in between (a quick
   * task's invocation costs a few microseconds, and each promise and await on its way is a good part of
   * them). `done` may be called before this returns.
   */
  run(invocationId: string, eventJson: string, done: Done): void {
    if (this.#onHostThread) {
      this.#invokeOnHost(invocationId, eventJson, done);
      return;
    }
    this.#call('run', [invocationId, eventJson]).then(
      (json) => done(undefined, json),
      (err: unknown) => done(err as RuntimeError, undefined),
    );
  }

  /**
   * A synchronous call into the isolate on the host's thread, with the task's time limit; how long it
   * held the thread is reported (onHostThreadCall), so that a task gone slow goes back to the thread pool.
   */
  #sync(args: unknown[], limit: number, invocations = 1): void {
    const started = this.#isolate.cpuTime;
    marks.enter(this.#slot);
    try {
      this.#entry!.applySync(undefined, args, { timeout: limit });
    } finally {
      marks.leave(this.#slot);
      const ns = this.#isolate.isDisposed ? Infinity : Number(this.#isolate.cpuTime - started);
      // 0: the caller reports it, once it knows how many invocations the call ran (runMany).
      if (invocations > 0) this.onHostThreadCall?.(ns, invocations);
      else this.#lastCallNs = ns;
    }
  }

  /**
   * Hands the work reported done during a call that has returned to its callbacks, in order; called once
   * the call's outcome is known (a timeout disposes the isolate first, so nothing reuses it).
   */
  #handOver(): void {
    if (this.#completed.length === 0) return;
    const completed = this.#completed;
    this.#completed = [];
    for (const entry of completed) entry.done(entry.err, entry.value);
  }

  /**
   * Starts work on the host's thread (entry(op, seq, a, b)) and calls `done` when the sandbox reports it done
   * (after the call that reported it has returned). What did not settle within the call (it awaits a
   * host call or a timer) gets the wall-clock limit.
   */
  #startOnHost(op: number, a: unknown, b: unknown, what: string, done: Done): void {
    if (!this.alive || !this.#entry) {
      done(new RuntimeError(this.#deathReason?.code ?? 'COORD_ERR_TASK_HOST_CRASHED', 'the task isolate is gone'), undefined);
      return;
    }
    const limit = this.#task.timeoutMs;
    const seq = this.#nextSeq++;
    const entry: OnHost = { done, timer: undefined, err: undefined, value: undefined };
    this.#onHost.set(seq, entry);
    try {
      this.#sync(b === undefined ? [op, seq, a] : [op, seq, a, b], limit);
    } catch (err) {
      // Not pending any more if it reported before the call threw (a timeout in code after its report).
      const pending = this.#onHost.delete(seq);
      const e = this.#classify(err);
      this.#handOver();
      if (pending) done(e, undefined);
      return;
    }
    if (this.#onHost.has(seq)) {
      // It waits for something (a host call, a timer): what it published so far goes now.
      this.#flushPublishes();
      if (this.#onHost.has(seq)) {
        entry.timer = setTimeout(() => {
          const reason = { code: 'COORD_ERR_TASK_TIMEOUT', message: `${what} of task ${this.#task.name} ran longer than its ${limit} ms limit` };
          this.#kill(reason);
        }, limit);
      }
    }
    this.#handOver();
  }

  #invokeOnHost(invocationId: string, eventJson: string, done: Done): void {
    this.active++;
    this.#startOnHost(OP.runOnHost, invocationId, eventJson, 'an invocation', (err, json) => this.#ended(err, json, done));
  }

  /** An invocation on the host's thread ended: its result is checked against the limit. */
  #ended(err: RuntimeError | undefined, json: string | undefined, done: Done): void {
    this.active--;
    this.idleSince = Date.now();
    if (!err && json!.length > this.#task.maxResultBytes) {
      err = new RuntimeError('COORD_ERR_TASK_LIMIT', `task ${this.#task.name} returned ${json!.length} bytes of JSON; the limit is ${this.#task.maxResultBytes}`);
    }
    done(err, err ? undefined : json);
  }

  /**
   * Runs several invocations one after another in one call into the isolate, which must be on the host's
   * thread. A call's time limit is one timer of isolated-vm's, and under load (thousands of calls a
   * second) that timer was the largest single cost of a quick invocation: here the whole batch has the
   * task's time limit once (the pool keeps a batch well inside it, see TaskPool), and crosses into the
   * isolate once. Each invocation still reports on its own, as it settles, so a timeout or a memory
   * failure fails only the one running. Returns the invocations not started (the batch stops at one
   * that awaits something, or that left timers behind): they are the caller's again, in order.
   */
  runMany(items: readonly ManyItem[]): ManyItem[] {
    if (!this.alive || !this.#entry || !this.#onHostThread) {
      // One at a time off the host's thread (or failed at once, if the isolate is gone).
      const [item] = items;
      if (item) this.run(item.invocationId, item.eventJson, item.done);
      return items.slice(1);
    }
    const n = items.length;
    const seq0 = this.#nextSeq;
    this.#nextSeq += n;
    const args: unknown[] = [OP.runMany, seq0];
    for (let i = 0; i < n; i++) {
      const item = items[i]!;
      this.#onHost.set(seq0 + i, { done: (err, json) => this.#ended(err, json, item.done), timer: undefined, err: undefined, value: undefined });
      args.push(item.invocationId, item.eventJson);
    }
    this.active += n;
    let threw: unknown;
    let failed = false;
    try {
      this.#sync(args, this.#task.timeoutMs, 0);
    } catch (err) {
      failed = true;
      threw = err;
    }
    // Reports come in order: the first item not reported is the one that ran last, the rest never started.
    let first = 0;
    while (first < n && !this.#onHost.has(seq0 + first)) first++;
    let back: ManyItem[] = [];
    if (first < n) {
      let cut = failed ? n - first - 1 : this.#cutMany();
      cut = Math.max(0, Math.min(cut, n - first));
      for (let i = n - cut; i < n; i++) this.#onHost.delete(seq0 + i);
      back = items.slice(n - cut);
      this.active -= cut;
    }
    this.onHostThreadCall?.(this.#lastCallNs, Math.max(1, n - back.length));
    const running = first < n ? this.#onHost.get(seq0 + first) : undefined;
    if (failed) {
      if (running) this.#onHost.delete(seq0 + first);
      const e = this.#classify(threw);
      this.#handOver();
      running?.done(e, undefined);
      return back;
    }
    if (running) {
      // It waits for something (a host call, a timer): what it published so far goes now.
      this.#flushPublishes();
      if (this.#onHost.get(seq0 + first) === running) {
        const limit = this.#task.timeoutMs;
        running.timer = setTimeout(() => this.#kill({ code: 'COORD_ERR_TASK_TIMEOUT', message: `an invocation of task ${this.#task.name} ran longer than its ${limit} ms limit` }), limit);
      }
    }
    this.#handOver();
    return back;
  }

  /** Ends the batch in the isolate; how many of its invocations it did not start. */
  #cutMany(): number {
    try {
      const left: unknown = this.#entry!.applySync(undefined, [OP.cutMany], { timeout: EXPORT_LOOKUP_TIMEOUT_MS });
      return typeof left === 'number' && Number.isInteger(left) ? left : 0;
    } catch (err) {
      this.#classify(err);
      return 0;
    }
  }

  #publishPacked(packed: unknown): void {
    if (typeof packed !== 'string' || packed === '') return;
    unpackPublishes(packed, (invocationId, topic, text, base64, qos) => this.#host.publish(invocationId, topic, text, base64, qos));
  }

  /** Sends what the sandbox holds back on the host's thread, when what made it goes on waiting. */
  #flushPublishes(): void {
    if (!this.alive || !this.#entry) return;
    try {
      this.#sync([OP.flushPublishes], this.#task.timeoutMs);
    } catch (err) {
      this.#classify(err);
    }
  }

  /** The sandbox's report for work started on the host's thread (called synchronously from the isolate). */
  #done(seq: number, ok: boolean, value: unknown, stack: unknown): void {
    const entry = this.#onHost.get(seq);
    if (!entry) return;
    this.#onHost.delete(seq);
    clearTimeout(entry.timer);
    this.#completed.push(entry);
    if (ok) {
      if (typeof value === 'string') entry.value = value;
      else entry.err = new RuntimeError('COORD_ERR_TASK_THREW', 'the task returned no result');
      return;
    }
    const w = wire({ message: typeof value === 'string' ? value : String(value), stack: typeof stack === 'string' ? stack : undefined });
    const e = new RuntimeError(w.code, w.message);
    if (w.stack) e.stack = w.stack;
    entry.err = e;
  }

  /** onStart(ctx) of a pinned task (no-op when the task has none). */
  start(invocationId: string): Promise<string> {
    return this.#call('start', [invocationId]);
  }

  /** onStop(ctx) of a pinned task (no-op when the task has none). */
  stop(invocationId: string): Promise<string> {
    return this.#call('stop', [invocationId]);
  }

  /** Drops the timers an on-demand invocation left behind: they die with the invocation. */
  clearTimers(): void {
    // Nothing pending (the usual case): no crossing into the isolate.
    if (this.#timers.size === 0) return;
    for (const t of this.#timers.values()) clearTimeout(t);
    this.#timers.clear();
    if (!this.alive || !this.#entry) return;
    if (!this.#onHostThread) {
      this.#entry.applyIgnored(undefined, [OP.clearTimers], { timeout: this.#task.timeoutMs });
      return;
    }
    try {
      this.#sync([OP.clearTimers], this.#task.timeoutMs);
    } catch (err) {
      this.#classify(err);
    }
  }

  async #call(fn: 'run' | 'start' | 'stop', args: string[]): Promise<string> {
    if (!this.alive || !this.#entry) throw new RuntimeError(this.#deathReason?.code ?? 'COORD_ERR_TASK_HOST_CRASHED', 'the task isolate is gone');
    const limit = this.#task.timeoutMs;
    let timer: NodeJS.Timeout | undefined;
    const expired = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        const reason = { code: 'COORD_ERR_TASK_TIMEOUT', message: `task ${this.#task.name} ran longer than its ${limit} ms limit` };
        this.#kill(reason);
        reject(new RuntimeError(reason.code, reason.message));
      }, limit);
    });
    this.active++;
    marks.enter(this.#slot);
    try {
      const call = this.#entry.apply(undefined, [OP[fn], ...args], { timeout: limit, result: { promise: true, copy: true } }) as Promise<string>;
      const json = await Promise.race([call, expired]);
      if (typeof json !== 'string') throw new RuntimeError('COORD_ERR_TASK_THREW', 'the task returned no result');
      if (json.length > this.#task.maxResultBytes) {
        throw new RuntimeError('COORD_ERR_TASK_LIMIT', `task ${this.#task.name} returned ${json.length} bytes of JSON; the limit is ${this.#task.maxResultBytes}`);
      }
      return json;
    } catch (err) {
      throw this.#classify(err);
    } finally {
      marks.leave(this.#slot);
      clearTimeout(timer);
      this.active--;
      this.idleSince = Date.now();
    }
  }

  /** Maps what isolated-vm and the task threw onto our codes; a dead isolate is reported as why it died. */
  #classify(err: unknown): RuntimeError {
    if (err instanceof RuntimeError) return err;
    const w = wire(err);
    if (this.#isolate.isDisposed || /isolate (was|is) disposed/i.test(w.message)) {
      if (!this.#deathReason && /memory limit/i.test(w.message)) {
        this.#deathReason = { code: 'COORD_ERR_TASK_MEMORY', message: `task ${this.#task.name} exceeded its ${this.#task.memoryMb} MB memory limit` };
      }
      this.#disposed = true;
      const reason = this.#deathReason ?? { code: 'COORD_ERR_TASK_MEMORY', message: `task ${this.#task.name} isolate died: ${w.message}` };
      this.#failOnHost(reason);
      return new RuntimeError(reason.code, reason.message);
    }
    if (/Script execution timed out/i.test(w.message)) {
      this.#kill({ code: 'COORD_ERR_TASK_TIMEOUT', message: `task ${this.#task.name} ran longer than its ${this.#task.timeoutMs} ms limit` });
      return new RuntimeError('COORD_ERR_TASK_TIMEOUT', this.#deathReason!.message);
    }
    const e = new RuntimeError(w.code, w.message);
    if (w.stack) e.stack = w.stack;
    return e;
  }

  #timer(op: string, id: number, ms: number, repeat: boolean): void {
    if (op === 'clear') {
      clearTimeout(this.#timers.get(id));
      this.#timers.delete(id);
      return;
    }
    if (!this.alive) return;
    const tick = (): void => {
      if (!this.alive || !this.#entry) return;
      if (this.#onHostThread) {
        this.#startOnHost(OP.fireOnHost, id, undefined, 'a timer callback', (e, again) => {
          if (!e) {
            if (repeat && again === 'true' && this.alive) this.#timers.set(id, setTimeout(tick, ms));
            else this.#timers.delete(id);
            return;
          }
          this.#timers.delete(id);
          if (!this.alive) this.#host.failed({ code: e.code, message: `timer callback: ${e.message}` });
          else this.#host.log('timer', 'error', `timer callback failed: ${e.code}: ${e.message}`);
        });
        return;
      }
      const limit = this.#task.timeoutMs;
      const watchdog = setTimeout(() => this.#kill({ code: 'COORD_ERR_TASK_TIMEOUT', message: `a timer callback of task ${this.#task.name} ran longer than ${limit} ms` }), limit);
      marks.enter(this.#slot);
      (this.#entry.apply(undefined, [OP.fire, id], { timeout: limit, result: { promise: true, copy: true } }) as Promise<boolean>).then(
        (again) => {
          marks.leave(this.#slot);
          clearTimeout(watchdog);
          if (repeat && again && this.alive) this.#timers.set(id, setTimeout(tick, ms));
          else this.#timers.delete(id);
        },
        (err: unknown) => {
          marks.leave(this.#slot);
          clearTimeout(watchdog);
          this.#timers.delete(id);
          const e = this.#classify(err);
          if (this.#task.lifecycle === 'pinned' || !this.alive) this.#host.failed({ code: e.code, message: `timer callback: ${e.message}` });
          else this.#host.log('timer', 'error', `timer callback failed: ${e.code}: ${e.message}`);
        },
      );
    };
    this.#timers.set(id, setTimeout(tick, ms));
  }

  #kill(reason: WireError): void {
    this.#deathReason ??= reason;
    this.dispose();
  }

  /** Ends the isolate now, failing what runs in it with COORD_ERR_TASK_CANCELLED and `message`. */
  cancel(message: string): void {
    this.#kill({ code: 'COORD_ERR_TASK_CANCELLED', message });
  }

  /** Disposes the isolate and its timers. Idempotent. */
  dispose(): void {
    for (const t of this.#timers.values()) clearTimeout(t);
    this.#timers.clear();
    if (!this.#disposed) {
      this.#disposed = true;
      this.#context?.release();
      if (!this.#isolate.isDisposed) this.#isolate.dispose();
    }
    // After the isolate is gone: what is failed here hears of it at once and must not find it alive.
    this.#failOnHost(this.#deathReason ?? { code: 'COORD_ERR_TASK_CANCELLED', message: `task ${this.#task.name} was unloaded` });
  }

  /** Work on the host's thread has no isolated-vm promise to reject: it fails here, with why the isolate died. */
  #failOnHost(reason: WireError): void {
    if (this.#onHost.size === 0) return;
    const pending = [...this.#onHost.values()];
    this.#onHost.clear();
    for (const entry of pending) {
      clearTimeout(entry.timer);
      entry.done(new RuntimeError(reason.code, reason.message), undefined);
    }
  }
}
