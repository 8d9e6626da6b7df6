/**
 * The scheduler's view of one task: its spec (validated once, when installed), when a redeploy counts
 * as a change, and its counters.
 */
import { isDeepStrictEqual } from 'node:util';

/** Lifecycle state of a task as `coordinator tasks list` shows it. */
export type TaskState = 'INSTALLED' | 'RUNNING' | 'ERRORED' | 'BROKEN';

/** What the scheduler needs to know about one task. */
export interface SchedulerTaskSpec {
  readonly name: string;
  /** 0 (lowest) … 9 (highest); higher-priority invocations are dispatched first; FIFO within one priority. */
  readonly priority: number;
  /** Most invocations of this task running at once. */
  readonly concurrency: number;
  /** Most invocations waiting (not running) for this task; one more is refused with COORD_ERR_TASK_QUEUE_FULL. */
  readonly queueDepth: number;
  /** The task's time limit; the executor enforces it, the scheduler adds a watchdog at timeoutMs + watchdogGraceMs. */
  readonly timeoutMs: number;
  /** Retries of a failed invocation (0 = none) with exponential backoff: backoffMs, 2×, 4×… */
  readonly retries: { readonly max: number; readonly backoffMs: number };
}

/** Per-task counters and state. */
export interface TaskStats {
  state: TaskState;
  /** Invocations waiting for a slot, plus retries waiting out their backoff (both count toward queueDepth). */
  queued: number;
  running: number;
  succeeded: number;
  /** Failed attempts (a retried invocation that fails twice counts twice). */
  failed: number;
  /** Submissions refused because the queue was full. */
  rejected: number;
  /** Retries scheduled. */
  retried: number;
  consecutiveFailures: number;
  lastError: { code: string; message: string; at: number } | null;
}

/**
 * True when a redeploy changes nothing for the scheduler. The whole object is compared, so a caller
 * that puts a bundle version or hash into the spec makes a code-only redeploy count as a change.
 */
export function sameSpec(a: SchedulerTaskSpec, b: SchedulerTaskSpec): boolean {
  return isDeepStrictEqual(a, b);
}

function integer(value: number, min: number, max: number): boolean {
  return Number.isInteger(value) && value >= min && value <= max;
}

/**
 * Throws a RangeError for a spec the scheduler cannot honour. Config validation owns the coded errors
 * operators see; reaching this is a bug in the caller, so it is not a registered code.
 */
export function assertValidSpec(spec: SchedulerTaskSpec): void {
  const problems: string[] = [];
  if (typeof spec.name !== 'string' || spec.name === '') problems.push('name must be a non-empty string');
  if (!integer(spec.priority, 0, 9)) problems.push('priority must be an integer 0..9');
  if (!integer(spec.concurrency, 1, Number.MAX_SAFE_INTEGER)) problems.push('concurrency must be an integer >= 1');
  // Zero would refuse every invocation: each one passes through the queue, if only for an instant.
  if (!integer(spec.queueDepth, 1, Number.MAX_SAFE_INTEGER)) problems.push('queueDepth must be an integer >= 1');
  if (!(Number.isFinite(spec.timeoutMs) && spec.timeoutMs > 0)) problems.push('timeoutMs must be a positive number');
  if (!integer(spec.retries?.max, 0, Number.MAX_SAFE_INTEGER)) problems.push('retries.max must be an integer >= 0');
  if (!(Number.isFinite(spec.retries?.backoffMs) && spec.retries.backoffMs >= 0)) {
    problems.push('retries.backoffMs must be a number >= 0');
  }
  if (problems.length > 0) throw new RangeError(`scheduler: task "${String(spec.name)}": ${problems.join('; ')}`);
}

/** Fresh counters for a task just installed (or redeployed). */
export function initialStats(): TaskStats {
  return {
    state: 'INSTALLED',
    queued: 0,
    running: 0,
    succeeded: 0,
    failed: 0,
    rejected: 0,
    retried: 0,
    consecutiveFailures: 0,
    lastError: null,
  };
}
