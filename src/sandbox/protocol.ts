/**
 * The messages between the coordinator core and its task host process (Node's IPC channel with
 * `serialization: 'advanced'`, one frame per turn, batch.ts). The core owns every decision — what runs,
 * what a task may do — and the host owns the isolates; every host-API call a task makes travels to the
 * core to be authorized there. The messages of every invocation (invoke, its successful result, its
 * publishes) travel packed (wire.ts); the rest are these objects.
 */

/** A coded error as it crosses the process boundary. */
export interface WireError {
  readonly code: string;
  readonly message: string;
  readonly stack?: string | undefined;
}

/** Everything the host needs to run one task version. */
export interface TaskLoad {
  /** Unique per loaded task version (name@version#n): a redeploy of the same version gets a new key. */
  readonly key: string;
  readonly name: string;
  readonly version: string;
  /** The task's bundle: one ES module whose default export has onEvent (and onStart/onStop). */
  readonly code: string;
  readonly lifecycle: 'on-demand' | 'pinned';
  readonly memoryMb: number;
  readonly timeoutMs: number;
  /** Isolates kept warm for an on-demand task (created at load; more up to `concurrency` on demand). */
  readonly minWarm: number;
  readonly concurrency: number;
  /** Idle isolates beyond minWarm are disposed after this long. */
  readonly idleMs: number;
  /** The task's configuration object, as JSON. */
  readonly configJson: string;
  /** Largest result of one invocation, in bytes of JSON. */
  readonly maxResultBytes: number;
  /** Largest ctx.state value, bytes of JSON (tasks.maxStateValueBytes). */
  readonly maxStateValueBytes: number;
  /** Largest ctx.shadow.update request, bytes of JSON (the shadow state limit plus its envelope). */
  readonly maxShadowRequestBytes: number;
  /** Most pending timers (setTimeout/setInterval) in one isolate. */
  readonly maxTimers: number;
  /** Most publishes of one invocation (the core enforces it; the sandbox refuses early too). */
  readonly maxPublishesPerInvocation: number;
  /** permissions.publish: the sandbox refuses outside them at once; the core checks every publish again. */
  readonly publishFilters: readonly string[];
  /** Largest publish payload (broker.maxPayloadBytes). */
  readonly maxPayloadBytes: number;
  /** Most log lines one invocation may write; later ones are counted and dropped. */
  readonly maxLogLines: number;
  /** Its byte in the host's crash marks file (crash-marks.ts); the TaskHost assigns it. */
  readonly slot?: number;
}

/** Core → host (besides packed invocations, wire.ts packInvoke). */
export type CoreToHost =
  | { readonly t: 'load'; readonly task: TaskLoad }
  | { readonly t: 'unload'; readonly key: string }
  | { readonly t: 'reply'; readonly callId: number; readonly ok: boolean; readonly valueJson?: string; readonly error?: WireError }
  | { readonly t: 'stats' };

/** Per-task figures the host reports on request. */
export interface HostTaskStats {
  readonly key: string;
  readonly isolates: number;
  readonly busy: number;
  /** V8 heap in use by the task's isolates, bytes. */
  readonly heapBytes: number;
  /** Whether the task's isolates run on the host's own thread (a quick task) rather than isolated-vm's thread pool. */
  readonly onHostThread: boolean;
}

/**
 * Host → core (besides packed successful results and publishes, wire.ts packResult and packPublish: a
 * task's ctx.publish is one-way, the sandbox already checked it and the core checks it again).
 */
export type HostToCore =
  | { readonly t: 'ready'; readonly pid: number }
  | { readonly t: 'loaded'; readonly key: string; readonly ok: boolean; readonly error?: WireError }
  | { readonly t: 'unloaded'; readonly key: string }
  /** A failed invocation. `quick`: the task's isolates run on the host's thread now, so the core may pipeline its invocations. */
  | { readonly t: 'result'; readonly id: string; readonly ok: false; readonly error: WireError; readonly quick?: true }
  | { readonly t: 'call'; readonly callId: number; readonly key: string; readonly invocationId: string; readonly method: string; readonly argsJson: string }
  | { readonly t: 'log'; readonly key: string; readonly invocationId: string; readonly level: LogLevel; readonly text: string }
  | { readonly t: 'stats'; readonly tasks: readonly HostTaskStats[]; readonly rssBytes: number }
  | { readonly t: 'failed'; readonly key: string; readonly error: WireError };

/** Levels of task log lines. */
export type LogLevel = 'debug' | 'info' | 'warn' | 'error';
