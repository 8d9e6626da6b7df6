/**
 * The failure policy of the scheduler (which errors are worth retrying, how long to back off, when a
 * task is BROKEN) and the coded errors it raises, worded once so that every path says the same thing.
 */
import { CoordinatorError, type ErrorCode } from '../errors.js';
import type { SchedulerTaskSpec, TaskStats } from './task-spec.js';

/** Consecutive failed attempts that make a task BROKEN, as Greengrass v2 does for components. */
export const BROKEN_AFTER_FAILURES = 3;

// Failures of the invocation itself; a retry may succeed. DENIED, BAD_CALL and LIMIT are the task
// breaking a rule and would break it again; CANCELLED is not a failure of the task at all.
const RETRIABLE: ReadonlySet<ErrorCode> = new Set<ErrorCode>([
  'COORD_ERR_TASK_TIMEOUT',
  'COORD_ERR_TASK_HOST_CRASHED',
  'COORD_ERR_TASK_THREW',
  'COORD_ERR_TASK_MEMORY',
]);

/** True when an attempt that failed with `code` is worth retrying. */
export function isRetriable(code: ErrorCode): boolean {
  return RETRIABLE.has(code);
}

/** Delay before attempt `failedAttempt + 1`: backoffMs, then twice that, four times… */
export function backoffDelay(spec: SchedulerTaskSpec, failedAttempt: number): number {
  return spec.retries.backoffMs * 2 ** (failedAttempt - 1);
}

/** COORD_ERR_TASK_CANCELLED with the given reason. */
export function cancelled(message: string): CoordinatorError {
  return new CoordinatorError('COORD_ERR_TASK_CANCELLED', message);
}

/** COORD_ERR_TASK_UNKNOWN for a submission to a task that is not installed. */
export function unknownTask(task: string): CoordinatorError {
  return new CoordinatorError(
    'COORD_ERR_TASK_UNKNOWN',
    `No task "${task}" is installed; check the name with \`coordinator tasks list\`.`,
    { details: { task } },
  );
}

/** COORD_ERR_TASK_QUEUE_FULL for a submission refused by the task's queueDepth. */
export function queueFull(task: string, queueDepth: number): CoordinatorError {
  return new CoordinatorError(
    'COORD_ERR_TASK_QUEUE_FULL',
    `Task "${task}" already has ${queueDepth} invocations waiting (limits.queueDepth); the event was dropped. ` +
      'Raise its concurrency or queueDepth, make it faster, or send fewer events.',
    { details: { task, queueDepth } },
  );
}

/** COORD_ERR_TASK_BROKEN, naming the last failure; `cause` is the failure that broke the task. */
export function brokenError(task: string, stats: TaskStats, cause?: CoordinatorError): CoordinatorError {
  const last = stats.lastError === null ? '' : ` (last: ${stats.lastError.code}: ${stats.lastError.message})`;
  return new CoordinatorError(
    'COORD_ERR_TASK_BROKEN',
    `Task "${task}" is BROKEN after ${BROKEN_AFTER_FAILURES} consecutive failed invocations${last}; ` +
      `read \`coordinator tasks logs ${task}\`, fix the task and deploy it again.`,
    { cause, details: { task } },
  );
}

/** COORD_ERR_TASK_TIMEOUT raised by the watchdog when the executor did not answer in time. */
export function watchdogTimeout(task: string, invocationId: string, timeoutMs: number): CoordinatorError {
  return new CoordinatorError(
    'COORD_ERR_TASK_TIMEOUT',
    `Invocation ${invocationId} of task "${task}" did not finish within limits.timeoutMs (${timeoutMs} ms) ` +
      'and its runner did not stop it; the scheduler gave up on it. Make the task finish sooner or raise limits.timeoutMs.',
    { details: { task, invocation: invocationId, timeoutMs } },
  );
}

/** The executor's rejection as a coded error: anything uncoded is the task (or its runner) throwing. */
export function asTaskError(err: unknown, task: string, invocationId: string): CoordinatorError {
  if (err instanceof CoordinatorError) return err;
  const message = err instanceof Error ? err.message : String(err);
  return new CoordinatorError(
    'COORD_ERR_TASK_THREW',
    `Invocation ${invocationId} of task "${task}" failed: ${message}. Fix the task; the stack is in the cause.`,
    { cause: err, details: { task, invocation: invocationId } },
  );
}
