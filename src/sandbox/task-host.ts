/**
 * The core's side of the task host: spawns the host process (with --no-node-snapshot), keeps the set of
 * loaded task versions, forwards invocations and answers the tasks' host-API calls through `onCall`.
 * If the host dies (SIGKILL, V8 fatal error) every invocation in it fails with COORD_ERR_TASK_HOST_CRASHED,
 * and a new host is started with backoff and given every task again (pinned tasks run onStart again);
 * the broker, the devices' connections and the shadows live in the core and are untouched.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { EventEmitter } from 'node:events';
import { fileURLToPath } from 'node:url';
import { CoordinatorError, ERRORS, type ErrorCode } from '../errors.js';
import type { Logger } from '../log/logger.js';
import { Batcher, type Frame } from './batch.js';
import type { CoreToHost, HostTaskStats, HostToCore, LogLevel, TaskLoad, WireError } from './protocol.js';
import { CrashMarks, MARKS_ENV } from './crash-marks.js';
import { packInvoke, WireReader } from './wire.js';

/**
 * The host's entry: next to this module in dist/; when this module runs from its TypeScript source (an
 * embedding test under vitest), the compiled one in dist/, since the child process runs plain Node.
 */
function hostMain(): string {
  const beside = fileURLToPath(new URL('./host-main.js', import.meta.url));
  return existsSync(beside) ? beside : fileURLToPath(new URL('../../dist/sandbox/host-main.js', import.meta.url));
}

/** What the core does with the host's messages. */
export interface TaskHostOptions {
  readonly log: Logger;
  /** Answers a task's host-API call with the value as JSON; rejects with a CoordinatorError to refuse it. */
  readonly onCall: (key: string, invocationId: string, method: string, argsJson: string) => Promise<string | undefined>;
  /** A task's one-way ctx.publish, to be checked and routed. */
  readonly onPublish: (key: string, invocationId: string, topic: string, payload: Buffer, qos: 0 | 1) => void;
  /** A task log line. */
  readonly onLog: (key: string, invocationId: string, level: LogLevel, text: string) => void;
  /** A loaded task failed outside an invocation (a pinned task's timer, its isolate died). */
  readonly onFailed: (key: string, error: CoordinatorError) => void;
  /**
   * A task became quick (its isolates run on the host's thread: depth QUICK_PIPELINE_DEPTH) or stopped
   * being quick (depth 1): how deep the scheduler may pipeline its invocations (Scheduler.pipeline).
   * Told on changes only.
   */
  readonly onPipeline?: (key: string, depth: number) => void;
  /** First restart delay after the host died; doubles up to maxRestartDelayMs, resets after 30 s up. */
  readonly restartDelayMs?: number;
  readonly maxRestartDelayMs?: number;
  /** Time allowed to load one task (compile, warm isolates, onStart). */
  readonly loadTimeoutMs?: number;
  /**
   * Re-runs an invocation of a task that did not cause the host's crash (it was only in the host when
   * another task's code killed it). Without it the invocation waits for this host to come back.
   */
  readonly retry?: (key: string, id: string, eventJson: string, done: InvocationDone) => void;
  /** For the log: which host this is ("shared", "isolation"). */
  readonly name?: string;
}

/** What a crash of the host process left behind (the 'crash' event). */
export interface HostCrash {
  /** The task whose code entered an isolate last before the host died (crash-marks.ts): the crash is its. */
  readonly culprit: string | undefined;
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
}

/** Turns a wire error into a CoordinatorError with a registered code. */
export function fromWire(error: WireError | undefined, fallback: ErrorCode = 'COORD_ERR_TASK_THREW'): CoordinatorError {
  const code = error && error.code in ERRORS ? (error.code as ErrorCode) : fallback;
  const err = new CoordinatorError(code, error?.message ?? 'task failed');
  if (error?.stack) err.stack = error.stack;
  return err;
}

/** How many times its concurrency a quick task may have in flight to the host (Scheduler.pipeline). */
export const QUICK_PIPELINE_DEPTH = 8;

interface Waiter<T> {
  resolve: (value: T) => void;
  reject: (err: Error) => void;
}

/** How an invocation ends: `done(undefined, resultJson)` or `done(error)`. */
export type InvocationDone = (err: CoordinatorError | undefined, json?: string) => void;

/** The supervised task host process. */
export class TaskHost extends EventEmitter<{ restarted: []; exit: [code: number | null, signal: NodeJS.Signals | null]; crash: [crash: HostCrash] }> {
  readonly #opts: TaskHostOptions;
  #child: ChildProcess | undefined;
  #ready: Promise<void> | undefined;
  readonly #tasks = new Map<string, TaskLoad>();
  readonly #loads = new Map<string, Waiter<void>[]>();
  readonly #invocations = new Map<string, { readonly done: InvocationDone; readonly key: string; readonly eventJson: string; readonly retried: boolean }>();
  /** Which task's code was running when the process died (crash-marks.ts); made with the first spawn. */
  #marks: CrashMarks | undefined;
  readonly #unloads = new Map<string, () => void>();
  /** Keys of the tasks the host last reported quick. */
  readonly #quick = new Set<string>();
  #statsWaiters: Waiter<{ tasks: readonly HostTaskStats[]; rssBytes: number }>[] = [];
  #closing = false;
  /** The process is ready and has been sent every task to load: invocations may go to it. */
  #serving = false;
  #restartDelay: number;
  #upSince = 0;
  /** Times the host was restarted after dying. */
  restarts = 0;

  constructor(opts: TaskHostOptions) {
    super();
    this.#opts = opts;
    this.#restartDelay = opts.restartDelayMs ?? 100;
  }

  /** Process id of the running host (undefined while it restarts). */
  get pid(): number | undefined {
    return this.#child?.pid;
  }

  /** Starts the host process; resolves once it is ready. */
  start(): Promise<void> {
    this.#ready ??= this.#spawn().then(() => {
      this.#serving = true;
    });
    return this.#ready;
  }

  #spawn(): Promise<void> {
    this.#marks ??= new CrashMarks();
    this.#marks.clear();
    const marksPath = this.#marks.path;
    return new Promise<void>((resolve, reject) => {
      const child = fork(hostMain(), [], {
        env: { ...process.env, [MARKS_ENV]: marksPath },
        // COORD_TASK_HOST_NODE_ARGS adds node flags to the host (e.g. "--cpu-prof --cpu-prof-dir=/tmp/p" to profile it).
        execArgv: ['--no-node-snapshot', ...(process.env.COORD_TASK_HOST_NODE_ARGS ?? '').split(' ').filter(Boolean)],
        stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
        // Packed records (wire.ts) cross as they are; JSON would escape every event inside its message.
        serialization: 'advanced',
      });
      this.#child = child;
      let ready = false;
      child.on('message', (frame: Frame<HostToCore>) => {
        if (!Array.isArray(frame)) return;
        if (!ready && frame.some((m) => typeof m !== 'string' && m.t === 'ready')) {
          ready = true;
          this.#upSince = Date.now();
          resolve();
        }
        this.#onFrame(frame);
      });
      child.once('error', reject);
      child.once('exit', (code, signal) => {
        reject(new CoordinatorError('COORD_ERR_TASK_HOST_CRASHED', `task host exited (${signal ?? code}) before it was ready`));
        this.#onExit(child, code, signal);
      });
    });
  }

  readonly #outbox = new Batcher<CoreToHost>((frame) => {
    const child = this.#child;
    if (child?.connected) child.send(frame);
  });

  #send(message: CoreToHost): void {
    this.#outbox.push(message);
  }

  #onFrame(frame: Frame<HostToCore>): void {
    for (const m of frame) {
      if (typeof m !== 'string') {
        this.#onMessage(m);
        continue;
      }
      try {
        this.#onPacked(m);
      } catch (err) {
        // Only a broken host sends this; what it lost is failed by the scheduler's watchdog.
        this.#opts.log.error({ code: 'COORD_ERR_INTERNAL', err }, 'malformed message from the task host; the rest of its frame is dropped');
      }
    }
  }

  /** Packed results and publishes (wire.ts), in the order the host made them. */
  #onPacked(packed: string): void {
    const r = new WireReader(packed);
    while (!r.done) {
      const type = r.letter();
      if (type === 114) {
        // 'r': a result
        const quick = r.letter() === 113;
        const id = r.field();
        this.#settle(id, quick, true, r.field(), undefined);
      } else if (type === 112) {
        // 'p': a publish
        const qos = r.letter() === 49 ? 1 : 0;
        const text = r.letter() === 116;
        const key = r.field();
        const invocationId = r.field();
        const topic = r.field();
        const data = r.field();
        this.#opts.onPublish(key, invocationId, topic, text ? Buffer.from(data) : Buffer.from(data, 'base64'), qos);
      } else {
        throw new Error(`unknown packed record type ${type}`);
      }
    }
  }

  #settle(id: string, quick: boolean, ok: boolean, valueJson: string | undefined, error: WireError | undefined): void {
    const w = this.#invocations.get(id);
    if (!w) return;
    this.#invocations.delete(id);
    const { key } = w;
    if (this.#quick.has(key) !== quick) {
      if (quick) this.#quick.add(key);
      else this.#quick.delete(key);
      this.#opts.onPipeline?.(key, quick ? QUICK_PIPELINE_DEPTH : 1);
    }
    if (ok) w.done(undefined, valueJson ?? 'null');
    else w.done(fromWire(error));
  }

  #onMessage(m: HostToCore): void {
    switch (m.t) {
      case 'loaded': {
        const waiters = this.#loads.get(m.key) ?? [];
        this.#loads.delete(m.key);
        // A reload after a restart has nobody waiting: the task stays registered (the next restart tries
        // again) and the failure is reported, so it is not silently gone.
        if (!m.ok && waiters.length === 0 && this.#tasks.has(m.key)) this.#opts.onFailed(m.key, fromWire(m.error, 'COORD_ERR_TASK_LOAD'));
        if (!m.ok && waiters.length > 0) this.#tasks.delete(m.key);
        for (const w of waiters) {
          if (m.ok) w.resolve();
          else w.reject(fromWire(m.error, 'COORD_ERR_TASK_LOAD'));
        }
        break;
      }
      case 'unloaded':
        this.#unloads.get(m.key)?.();
        this.#unloads.delete(m.key);
        break;
      case 'result':
        this.#settle(m.id, m.quick === true, false, undefined, m.error);
        break;
      case 'call': {
        // Answered only to the host process that asked: a reply to a host that died since must not
        // reach a call with the same id in its successor (another task's call).
        const asker = this.#child;
        this.#opts.onCall(m.key, m.invocationId, m.method, m.argsJson).then(
          (valueJson) => {
            if (this.#child === asker) this.#send({ t: 'reply', callId: m.callId, ok: true, valueJson });
          },
          (err: unknown) => {
            const e = err instanceof CoordinatorError ? err : new CoordinatorError('COORD_ERR_INTERNAL', (err as Error)?.message ?? String(err));
            if (this.#child === asker) this.#send({ t: 'reply', callId: m.callId, ok: false, error: { code: e.code, message: e.message } });
          },
        );
        break;
      }
      case 'log':
        this.#opts.onLog(m.key, m.invocationId, m.level, m.text);
        break;
      case 'failed':
        this.#opts.onFailed(m.key, fromWire(m.error));
        break;
      case 'stats':
        for (const w of this.#statsWaiters.splice(0)) w.resolve({ tasks: m.tasks, rssBytes: m.rssBytes });
        break;
      case 'ready':
        break;
    }
  }

  #onExit(child: ChildProcess, code: number | null, signal: NodeJS.Signals | null): void {
    if (this.#child !== child) return;
    this.#child = undefined;
    this.#serving = false;
    this.emit('exit', code, signal);
    const how = signal ?? `code ${code}`;
    // Read before anything else runs: whose code was in an isolate when the process died. Listeners of
    // 'crash' may move those tasks elsewhere (forget) before this host is started again.
    const culprit = this.#closing ? undefined : this.#marks?.marked()[0];
    if (!this.#closing) this.emit('crash', { culprit, code, signal });
    const failed = [...this.#invocations.entries()];
    this.#invocations.clear();
    for (const [id, w] of failed) {
      if (this.#closing || w.key === culprit) {
        w.done(new CoordinatorError('COORD_ERR_TASK_HOST_CRASHED', `the task host process exited (${how}) while this task's code was running in it`));
      } else if (!w.retried) {
        // A bystander: another task's code killed the host. Run it again, once, on a host that lives.
        if (this.#opts.retry) this.#opts.retry(w.key, id, w.eventJson, w.done);
        else this.#runLater(w.key, id, w.eventJson, w.done, true);
      } else {
        w.done(new CoordinatorError('COORD_ERR_TASK_HOST_CRASHED', `the task host process exited (${how}) twice while the invocation was in it, each time because of another task; it is not counted against this task`, { details: { bystander: true } }));
      }
    }
    // A new host learns again which tasks are quick.
    for (const key of this.#quick) this.#opts.onPipeline?.(key, 1);
    this.#quick.clear();
    for (const done of this.#unloads.values()) done();
    this.#unloads.clear();
    for (const w of this.#statsWaiters.splice(0)) w.reject(new CoordinatorError('COORD_ERR_TASK_HOST_CRASHED', `the task host process exited (${how})`));
    if (this.#closing) return;
    // A host that came up and stayed up 30 s earns a fresh backoff; one dying before it is ready does not.
    if (this.#upSince > 0 && Date.now() - this.#upSince > 30_000) this.#restartDelay = this.#opts.restartDelayMs ?? 100;
    this.#upSince = 0;
    // A crash charged to a task that is not reloaded here (moved or quarantined) cannot repeat: the
    // tasks left did nothing wrong and are back at once. Otherwise the backoff guards against a loop.
    const attributed = culprit !== undefined && !this.#tasks.has(culprit);
    const delay = attributed ? 0 : this.#restartDelay;
    if (!attributed) this.#restartDelay = Math.min(delay * 2, this.#opts.maxRestartDelayMs ?? 5000);
    this.#opts.log.error({ code: 'COORD_ERR_TASK_HOST_CRASHED', host: this.#opts.name ?? 'shared', exitCode: code, signal, culprit, restartInMs: delay }, 'task host exited; restarting it');
    setTimeout(() => void this.#restart(), delay).unref();
  }

  async #restart(): Promise<void> {
    if (this.#closing) return;
    try {
      this.#ready = this.#spawn();
      await this.#ready;
    } catch {
      return; // its exit handler schedules the next try
    }
    this.restarts++;
    // Every task again, pinned ones through onStart; loads waiting from before the crash settle now.
    for (const task of this.#tasks.values()) this.#send({ t: 'load', task });
    // Invocations sent from now on follow the loads in the same channel, in order.
    this.#serving = true;
    this.emit('restarted');
  }

  /** Loads a task version (warm isolates, onStart); rejects with COORD_ERR_TASK_LOAD or another task code. */
  async load(task: TaskLoad): Promise<void> {
    await this.start();
    task = { ...task, slot: this.#marks!.slot(task.key) };
    this.#tasks.set(task.key, task);
    // Loading includes a pinned task's onStart, which may take up to the task's own time limit.
    const limit = Math.max(this.#opts.loadTimeoutMs ?? 10_000, task.lifecycle === 'pinned' ? task.timeoutMs + 5000 : 0);
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#tasks.delete(task.key);
        this.#send({ t: 'unload', key: task.key });
        reject(new CoordinatorError('COORD_ERR_TASK_LOAD', `task ${task.name}@${task.version} did not load within ${limit} ms`));
      }, limit);
      const waiters = this.#loads.get(task.key) ?? [];
      waiters.push({ resolve: (v) => (clearTimeout(timer), resolve(v)), reject: (e) => (clearTimeout(timer), reject(e)) });
      this.#loads.set(task.key, waiters);
      this.#send({ t: 'load', task });
    });
  }

  /** Unloads a task version (onStop for pinned ones) and forgets it. */
  unload(key: string): Promise<void> {
    this.#quick.delete(key);
    if (!this.#tasks.delete(key)) return Promise.resolve();
    this.#marks?.release(key);
    if (!this.#child?.connected) return Promise.resolve();
    return new Promise<void>((resolve) => {
      this.#unloads.set(key, resolve);
      this.#send({ t: 'unload', key });
    });
  }

  /**
   * Drops a task this host is not to load again (its crash moved it to another host, or quarantined it),
   * without asking the host process: call it while the process is down (from a 'crash' listener).
   */
  forget(key: string): void {
    this.#quick.delete(key);
    this.#tasks.delete(key);
    this.#marks?.release(key);
  }

  /** Keys of the task versions this host loads. */
  get keys(): readonly string[] {
    return [...this.#tasks.keys()];
  }

  /** The load message of a task version this host loads. */
  task(key: string): TaskLoad | undefined {
    return this.#tasks.get(key);
  }

  /** Runs onEvent in the task's isolate; resolves with the result as JSON. */
  invoke(key: string, id: string, eventJson: string): Promise<string> {
    return new Promise<string>((resolve, reject) => this.run(key, id, eventJson, (err, json) => (err ? reject(err) : resolve(json!))));
  }

  /** As invoke(), telling `done` (never before this returns): no promise per invocation. */
  run(key: string, id: string, eventJson: string, done: InvocationDone, retried = false): void {
    if (!this.#serving || !this.#child?.connected) {
      this.#runLater(key, id, eventJson, done, retried);
      return;
    }
    this.#invocations.set(id, { done, key, eventJson, retried });
    this.#outbox.pack(packInvoke(id, key, eventJson));
  }

  /**
   * While the host restarts, waits for it (the scheduler's watchdog bounds the wait) rather than failing
   * tasks that had nothing to do with the crash.
   */
  #runLater(key: string, id: string, eventJson: string, done: InvocationDone, retried: boolean): void {
    const retry = (): void => {
      if (this.#serving && this.#child?.connected) this.run(key, id, eventJson, done, retried);
      else if (this.#closing) done(new CoordinatorError('COORD_ERR_TASK_CANCELLED', 'the coordinator is stopping'));
      else setTimeout(retry, 20);
    };
    setTimeout(retry, this.#closing ? 0 : 20);
  }

  /** Isolates and heap per task, and the host's RSS. */
  stats(): Promise<{ tasks: readonly HostTaskStats[]; rssBytes: number }> {
    if (!this.#child?.connected) return Promise.resolve({ tasks: [], rssBytes: 0 });
    return new Promise((resolve, reject) => {
      const waiter: Waiter<{ tasks: readonly HostTaskStats[]; rssBytes: number }> = {
        resolve: (v) => (clearTimeout(timer), resolve(v)),
        reject: (e) => (clearTimeout(timer), reject(e)),
      };
      // A host too busy to answer must not hang `coordinator status`.
      const timer = setTimeout(() => {
        this.#statsWaiters = this.#statsWaiters.filter((w) => w !== waiter);
        resolve({ tasks: [], rssBytes: 0 });
      }, 2000);
      this.#statsWaiters.push(waiter);
      this.#send({ t: 'stats' });
    });
  }

  /** Stops the host: unloads every task (onStop within its limit), then ends the process. */
  async close(): Promise<void> {
    if (this.#closing) return;
    this.#closing = true;
    const child = this.#child;
    if (!child || child.exitCode !== null || child.signalCode !== null) {
      this.#marks?.dispose();
      return;
    }
    // Listened for first: the host may die while its tasks stop.
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    await Promise.race([
      Promise.all([...this.#tasks.keys()].map((k) => this.unload(k))),
      new Promise((r) => setTimeout(r, 3000).unref()),
      exited,
    ]);
    if (child.connected) child.disconnect();
    const kill = setTimeout(() => child.kill('SIGKILL'), 2000);
    await exited;
    clearTimeout(kill);
    this.#marks?.dispose();
  }
}
