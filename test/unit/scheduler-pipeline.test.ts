/**
 * Scheduler.pipeline: a quick task may have concurrency × depth invocations handed to the executor at
 * once, without taking more global slots; everything else keeps the scheduler's rules (priority, FIFO,
 * bounded queues), and the watchdog allows for the invocations ahead of a pipelined one.
 */
import { afterEach, describe, expect, it, vi } from 'vitest';
import type { CoordinatorError } from '../../src/errors.js';
import { promiseExecutor, Scheduler, type Invocation, type SchedulerTaskSpec } from '../../src/scheduler/scheduler.js';

afterEach(() => vi.useRealTimers());

function spec(name: string, overrides: Partial<SchedulerTaskSpec> = {}): SchedulerTaskSpec {
  return { name, priority: 5, concurrency: 1, queueDepth: 100, timeoutMs: 1000, retries: { max: 0, backoffMs: 100 }, ...overrides };
}

interface Running {
  readonly invocation: Invocation;
  readonly resolve: (value: unknown) => void;
}

function setup(slots: number, watchdogGraceMs = 1000) {
  const running: Running[] = [];
  const started: string[] = [];
  const scheduler = new Scheduler({
    slots,
    watchdogGraceMs,
    execute: promiseExecutor((invocation) =>
      new Promise((resolve) => {
        started.push(invocation.id);
        running.push({ invocation, resolve });
      }),
    ),
  });
  /** Settles the oldest running invocation (of `task`, if given). */
  const finishOldest = async (task?: string): Promise<void> => {
    const i = running.findIndex((r) => task === undefined || r.invocation.task === task);
    running.splice(i, 1)[0]!.resolve(null);
    for (let k = 0; k < 5; k++) await Promise.resolve();
  };
  return { scheduler, running, started, finishOldest };
}

describe('Scheduler.pipeline', () => {
  it('hands a pipelined task concurrency × depth invocations at once, holding one global slot', async () => {
    const h = setup(1);
    h.scheduler.setTasks([spec('fast', { concurrency: 2 }), spec('other')]);
    h.scheduler.pipeline('fast', 4);
    const all = Array.from({ length: 20 }, () => h.scheduler.submit('fast', null));
    expect(h.running).toHaveLength(8);
    expect(h.scheduler.running).toBe(8);
    expect(h.scheduler.queued).toBe(12);
    // The one global slot is fast's: a task without pipelining waits for it.
    const other = h.scheduler.submit('other', null);
    expect(h.started.filter((id) => id.startsWith('other'))).toHaveLength(0);
    // Finishing a pipelined one lets the next of fast's in, still within concurrency × depth.
    await h.finishOldest('fast');
    expect(h.running.filter((r) => r.invocation.task === 'fast')).toHaveLength(8);
    while (h.running.length > 0) await h.finishOldest();
    await Promise.all([...all, other]);
    // FIFO within the priority: 'other' was submitted after the first 20 of 'fast' and ran after them.
    expect(h.started.at(-1)).toMatch(/^other-/);
    expect(h.scheduler.running).toBe(0);
  });

  it('does not pipeline without depth > 1, nor a task holding no slot; depth 1 turns it off', async () => {
    const h = setup(1);
    h.scheduler.setTasks([spec('a', { concurrency: 3 }), spec('b', { concurrency: 3, priority: 9 })]);
    h.scheduler.pipeline('a', 8);
    const first = h.scheduler.submit('b', null);
    // 'b' holds the only slot; 'a' holds none, so it may not pipeline.
    const queued = Array.from({ length: 5 }, () => h.scheduler.submit('a', null));
    expect(h.running.map((r) => r.invocation.task)).toEqual(['b']);
    await h.finishOldest('b');
    await first;
    expect(h.running.filter((r) => r.invocation.task === 'a')).toHaveLength(5);
    h.scheduler.pipeline('a', 1);
    while (h.running.length > 0) await h.finishOldest();
    await Promise.all(queued);
    const more = Array.from({ length: 5 }, () => h.scheduler.submit('a', null));
    expect(h.running).toHaveLength(1);
    while (h.running.length > 0) await h.finishOldest();
    await Promise.all(more);
  });

  it("gives a pipelined invocation's watchdog the time limits of those ahead of it", async () => {
    vi.useFakeTimers();
    const h = setup(1, 0);
    h.scheduler.setTasks([spec('fast', { concurrency: 1, timeoutMs: 100 })]);
    h.scheduler.pipeline('fast', 3);
    const outcomes: string[] = [];
    const all = Array.from({ length: 3 }, (_, i) =>
      h.scheduler.submit('fast', null).then(
        () => outcomes.push(`${i}:ok`),
        (e: CoordinatorError) => outcomes.push(`${i}:${e.code}`),
      ),
    );
    expect(h.running).toHaveLength(3);
    await vi.advanceTimersByTimeAsync(101);
    expect(outcomes).toEqual(['0:COORD_ERR_TASK_TIMEOUT']);
    await vi.advanceTimersByTimeAsync(100);
    expect(outcomes).toEqual(['0:COORD_ERR_TASK_TIMEOUT', '1:COORD_ERR_TASK_TIMEOUT']);
    h.running.at(-1)!.resolve(null);
    await Promise.all(all);
    expect(outcomes).toEqual(['0:COORD_ERR_TASK_TIMEOUT', '1:COORD_ERR_TASK_TIMEOUT', '2:ok']);
  });
});
