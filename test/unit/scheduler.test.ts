/**
 * The invocation scheduler against a hand-driven executor: each invocation stays running until the test
 * settles it, so dispatch order, slot use, queue bounds, watchdog, retries and BROKEN are observed directly.
 */
import { afterEach, describe, expect, it, vi } from 'vitest';
import { CoordinatorError, type ErrorCode } from '../../src/errors.js';
import { promiseExecutor, Scheduler, type Invocation, type SchedulerOptions, type SchedulerTaskSpec } from '../../src/scheduler/scheduler.js';

interface Call {
  readonly invocation: Invocation;
  settled: boolean;
  resolve(value: unknown): void;
  reject(err: Error): void;
}

/** A promise's outcome, readable without awaiting it. */
interface Tracked { status: 'pending' | 'fulfilled' | 'rejected'; value?: unknown; error?: CoordinatorError }

afterEach(() => vi.useRealTimers());

function spec(name: string, overrides: Partial<SchedulerTaskSpec> = {}): SchedulerTaskSpec {
  return { name, priority: 5, concurrency: 1, queueDepth: 10, timeoutMs: 1000, retries: { max: 0, backoffMs: 100 }, ...overrides };
}

/** A scheduler whose executor records each invocation and leaves it running until the test settles it. */
function setup(options: Partial<Omit<SchedulerOptions, 'execute'>> = {}) {
  const calls: Call[] = [];
  const maxLive = new Map<string, number>();
  const live = (task?: string): number =>
    calls.filter((c) => !c.settled && (task === undefined || c.invocation.task === task)).length;
  const transitions: string[] = [];
  const scheduler = new Scheduler({
    slots: 1,
    execute: promiseExecutor((invocation) =>
      new Promise((resolve, reject) => {
        const call: Call = {
          invocation,
          settled: false,
          resolve: (v) => { call.settled = true; resolve(v); },
          reject: (e) => { call.settled = true; reject(e); },
        };
        calls.push(call);
        for (const key of ['*', invocation.task]) {
          maxLive.set(key, Math.max(maxLive.get(key) ?? 0, live(key === '*' ? undefined : key)));
        }
      }),
    ),
    onStateChange: (task, state, err) => transitions.push(`${task}:${state}${err ? `:${err.code}` : ''}`),
    ...options,
  });
  /** Settles the most recently started invocation that is still running, then lets the scheduler react. */
  const step = async (ok: boolean, value: unknown = null, err: Error = taskError('COORD_ERR_TASK_THREW')): Promise<void> => {
    const c = calls.filter((x) => !x.settled).at(-1)!;
    if (ok) c.resolve(value);
    else c.reject(err);
    await flush();
  };
  /** Completes running invocations oldest first, one at a time, each with its start index, until none is left. */
  const drain = async (): Promise<void> => {
    while (live() > 0) {
      const c = calls.find((x) => !x.settled)!;
      c.resolve(calls.indexOf(c));
      await flush();
    }
  };
  return { scheduler, calls, live, maxLive, transitions, step, drain };
}

/** Lets promise callbacks run (the scheduler settles invocations on later ticks). */
async function flush(): Promise<void> {
  for (let i = 0; i < 10; i++) await Promise.resolve();
}

function track(promise: Promise<unknown>): Tracked {
  const t: Tracked = { status: 'pending' };
  void promise.then(
    (value) => { t.status = 'fulfilled'; t.value = value; },
    (err: CoordinatorError) => { t.status = 'rejected'; t.error = err; },
  );
  return t;
}

/** `expect.stringContaining`, typed for use inside toMatchObject. */
function containing(text: string): string {
  return expect.stringContaining(text) as string;
}

function taskError(code: ErrorCode): CoordinatorError {
  return new CoordinatorError(code, `simulated ${code}`);
}

describe('Scheduler dispatch', () => {
  it('runs a higher-priority invocation submitted later before lower-priority ones already waiting', async () => {
    const h = setup();
    h.scheduler.setTasks([spec('low', { priority: 1, concurrency: 5 }), spec('high', { priority: 8, concurrency: 5 })]);
    const all = [h.scheduler.submit('low', 'l1'), h.scheduler.submit('low', 'l2'), h.scheduler.submit('low', 'l3'), h.scheduler.submit('high', 'h1')];
    expect(h.calls.map((c) => c.invocation.id)).toEqual(['low-1']);
    await h.drain();
    expect(h.calls.map((c) => c.invocation.event)).toEqual(['l1', 'h1', 'l2', 'l3']);
    expect(await Promise.all(all)).toEqual([0, 2, 3, 1]);
  });

  it('keeps FIFO within one priority across tasks', async () => {
    const h = setup();
    h.scheduler.setTasks([spec('a', { concurrency: 5 }), spec('b', { concurrency: 5 })]);
    const order = [['a', 1], ['b', 1], ['a', 2], ['a', 3], ['b', 2], ['b', 3]] as const;
    const all = order.map(([task, n]) => h.scheduler.submit(task, `${task}${n}`));
    await h.drain();
    await Promise.all(all);
    expect(h.calls.map((c) => c.invocation.event)).toEqual(['a1', 'b1', 'a2', 'a3', 'b2', 'b3']);
  });

  it('never runs more than a task\'s concurrency, and a task at its limit does not block others', async () => {
    const h = setup({ slots: 4 });
    // `busy` has the higher priority and the oldest entries: a single head-of-line queue would stall `other`.
    h.scheduler.setTasks([spec('busy', { priority: 9, concurrency: 2 }), spec('other', { priority: 1, concurrency: 4 })]);
    const all = [...Array.from({ length: 5 }, () => h.scheduler.submit('busy', null)), h.scheduler.submit('other', null), h.scheduler.submit('other', null)];
    expect(h.live('busy')).toBe(2);
    expect(h.live('other')).toBe(2);
    expect(h.scheduler.stats('busy')).toMatchObject({ running: 2, queued: 3 });
    expect(h.scheduler.running).toBe(4);
    expect(h.scheduler.queued).toBe(3);
    await h.drain();
    await Promise.all(all);
    expect(h.maxLive.get('busy')).toBe(2);
    expect(h.calls).toHaveLength(7);
  });

  it('never runs more than the global slots at once', async () => {
    const h = setup({ slots: 3 });
    h.scheduler.setTasks(['a', 'b', 'c'].map((n) => spec(n, { concurrency: 10 })));
    const all = ['a', 'b', 'c'].flatMap((n) => Array.from({ length: 10 }, () => h.scheduler.submit(n, null)));
    expect(h.calls).toHaveLength(3);
    expect(h.scheduler).toMatchObject({ running: 3, queued: 27 });
    h.calls[0]!.resolve(null);
    await flush();
    expect(h.calls).toHaveLength(4);
    expect(h.scheduler.running).toBe(3);
    await h.drain();
    await Promise.all(all);
    expect(h.calls).toHaveLength(30);
    expect(h.maxLive.get('*')).toBe(3);
    expect(h.scheduler).toMatchObject({ running: 0, queued: 0 });
  });

  it('hands the executor the event, the attempt and the injected enqueue time; rejects unknown tasks', async () => {
    let clock = 5000;
    const h = setup({ now: () => clock });
    h.scheduler.setTasks([spec('t')]);
    const p = h.scheduler.submit('t', { temp: 21 });
    clock = 9000;
    expect(h.calls[0]!.invocation).toEqual({ id: 't-1', task: 't', event: { temp: 21 }, attempt: 1, enqueuedAt: 5000 });
    h.calls[0]!.resolve('done');
    await expect(p).resolves.toBe('done');
    await expect(h.scheduler.submit('nope', null)).rejects.toMatchObject({ code: 'COORD_ERR_TASK_UNKNOWN' });
    expect(h.scheduler.stats('nope')).toBeUndefined();
  });
});

describe('Scheduler bounds', () => {
  it('refuses one more than queueDepth with COORD_ERR_TASK_QUEUE_FULL, counts it, and accepts again once drained', async () => {
    const h = setup();
    h.scheduler.setTasks([spec('t', { queueDepth: 2 })]);
    const accepted = [h.scheduler.submit('t', 1), h.scheduler.submit('t', 2), h.scheduler.submit('t', 3)];
    await expect(h.scheduler.submit('t', 4)).rejects.toMatchObject({ code: 'COORD_ERR_TASK_QUEUE_FULL', message: containing('"t"') });
    await expect(h.scheduler.submit('t', 5)).rejects.toMatchObject({ code: 'COORD_ERR_TASK_QUEUE_FULL' });
    expect(h.scheduler.stats('t')).toMatchObject({ queued: 2, running: 1, rejected: 2 });
    h.calls[0]!.resolve(null);
    await flush();
    accepted.push(h.scheduler.submit('t', 6));
    expect(h.scheduler.stats('t')).toMatchObject({ queued: 2, running: 1 });
    await h.drain();
    await Promise.all(accepted);
    expect(h.calls.map((c) => c.invocation.event)).toEqual([1, 2, 3, 6]);
    expect(h.scheduler.stats('t')).toMatchObject({ queued: 0, running: 0, succeeded: 4, rejected: 2 });
  });

  it('fails an invocation whose executor never answers at timeoutMs + grace, frees its slot and ignores a late answer', async () => {
    vi.useFakeTimers();
    const h = setup({ watchdogGraceMs: 50 });
    h.scheduler.setTasks([spec('t', { timeoutMs: 100 })]);
    const first = track(h.scheduler.submit('t', 1));
    const second = track(h.scheduler.submit('t', 2));
    await vi.advanceTimersByTimeAsync(149);
    expect(first.status).toBe('pending');
    expect(h.calls).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(1);
    expect(first.status).toBe('rejected');
    expect(first.error).toMatchObject({ code: 'COORD_ERR_TASK_TIMEOUT', message: containing('"t"') });
    // The task is on probation: its next invocation waits out a back-off of one time limit.
    expect(h.calls).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(100);
    expect(h.calls.map((c) => c.invocation.event)).toEqual([1, 2]); // the slot went to the next one
    h.calls[0]!.resolve('too late');
    h.calls[1]!.resolve('ok');
    await flush();
    expect(first.status).toBe('rejected');
    expect(second).toMatchObject({ status: 'fulfilled', value: 'ok' });
    expect(h.scheduler.stats('t')).toMatchObject({ succeeded: 1, failed: 1, running: 0 });
    expect(h.scheduler.running).toBe(0);
  });
});

describe('Scheduler failures', () => {
  it('makes a task BROKEN after 3 consecutive failures: its queue fails and new submissions are refused', async () => {
    const h = setup();
    h.scheduler.setTasks([spec('t')]);
    const results = Array.from({ length: 5 }, (_, i) => track(h.scheduler.submit('t', i)));
    for (let i = 0; i < 3; i++) await h.step(false);
    expect(h.calls).toHaveLength(3);
    expect(results.map((r) => r.error?.code)).toEqual([
      'COORD_ERR_TASK_THREW', 'COORD_ERR_TASK_THREW', 'COORD_ERR_TASK_THREW', 'COORD_ERR_TASK_BROKEN', 'COORD_ERR_TASK_BROKEN',
    ]);
    await expect(h.scheduler.submit('t', 9)).rejects.toMatchObject({ code: 'COORD_ERR_TASK_BROKEN' });
    expect(h.calls).toHaveLength(3);
    expect(h.scheduler.stats('t')).toMatchObject({
      state: 'BROKEN', failed: 3, consecutiveFailures: 3, queued: 0, lastError: { code: 'COORD_ERR_TASK_THREW' },
    });
  });

  it('resets the consecutive count on a success in between', async () => {
    const h = setup();
    h.scheduler.setTasks([spec('t')]);
    const results = Array.from({ length: 5 }, () => track(h.scheduler.submit('t', null)));
    // Uncoded rejections are wrapped as THREW.
    for (const ok of [false, false, true, false, false]) await h.step(ok, 'fine', new Error('boom'));
    expect(results.map((r) => r.status)).toEqual(['rejected', 'rejected', 'fulfilled', 'rejected', 'rejected']);
    expect(results[0]!.error).toMatchObject({ code: 'COORD_ERR_TASK_THREW', message: containing('boom') });
    expect(h.scheduler.stats('t')).toMatchObject({ state: 'ERRORED', failed: 4, succeeded: 1, consecutiveFailures: 2 });
  });

  it('keeps BROKEN when invocations already running at the time succeed or fail afterwards', async () => {
    const h = setup({ slots: 5 });
    h.scheduler.setTasks([spec('t', { concurrency: 5 })]);
    const all = Array.from({ length: 5 }, () => track(h.scheduler.submit('t', null)));
    for (let i = 0; i < 3; i++) h.calls[i]!.reject(taskError('COORD_ERR_TASK_THREW'));
    await flush();
    h.calls[3]!.resolve('late success');
    await flush();
    h.calls[4]!.reject(taskError('COORD_ERR_TASK_THREW'));
    await flush();
    expect(all.map((r) => r.status)).toEqual(['rejected', 'rejected', 'rejected', 'fulfilled', 'rejected']);
    expect(h.scheduler.stats('t')).toMatchObject({ state: 'BROKEN', succeeded: 1, failed: 4 });
    expect(h.transitions.filter((t) => t.startsWith('t:BROKEN'))).toHaveLength(1);
    await expect(h.scheduler.submit('t', null)).rejects.toMatchObject({ code: 'COORD_ERR_TASK_BROKEN' });
  });

  it('wraps an executor that throws synchronously as COORD_ERR_TASK_THREW', async () => {
    const scheduler = new Scheduler({ slots: 1, execute: promiseExecutor(() => { throw new TypeError('not a function'); }) });
    scheduler.setTasks([spec('t')]);
    const err = await scheduler.submit('t', null).catch((e: unknown) => e as CoordinatorError);
    expect(err).toMatchObject({ code: 'COORD_ERR_TASK_THREW', message: containing('not a function') });
    expect((err as CoordinatorError).cause).toBeInstanceOf(TypeError);
    expect(scheduler.stats('t')).toMatchObject({ state: 'ERRORED', failed: 1, running: 0 });
  });

  it('does not count a cancellation from the executor as a failure of the task', async () => {
    const h = setup();
    h.scheduler.setTasks([spec('t')]);
    const p = h.scheduler.submit('t', null);
    h.calls[0]!.reject(taskError('COORD_ERR_TASK_CANCELLED'));
    await expect(p).rejects.toMatchObject({ code: 'COORD_ERR_TASK_CANCELLED' });
    expect(h.scheduler.stats('t')).toMatchObject({ state: 'INSTALLED', failed: 0, consecutiveFailures: 0 });
  });

  it('retries retriable failures with exponential backoff and a new attempt number', async () => {
    vi.useFakeTimers();
    const h = setup();
    h.scheduler.setTasks([spec('t', { retries: { max: 3, backoffMs: 100 } })]);
    const result = track(h.scheduler.submit('t', 'e'));
    // THREW: a failure that costs no probation back-off (see the fairness tests for those).
    h.calls[0]!.reject(taskError('COORD_ERR_TASK_THREW'));
    await vi.advanceTimersByTimeAsync(99);
    expect(h.calls).toHaveLength(1);
    expect(h.scheduler.stats('t')).toMatchObject({ state: 'ERRORED', queued: 1, running: 0, retried: 1 });
    await vi.advanceTimersByTimeAsync(1);
    expect(h.calls).toHaveLength(2);
    h.calls[1]!.reject(taskError('COORD_ERR_TASK_THREW'));
    await vi.advanceTimersByTimeAsync(199);
    expect(h.calls).toHaveLength(2);
    await vi.advanceTimersByTimeAsync(1);
    expect(h.calls.map((c) => [c.invocation.id, c.invocation.attempt, c.invocation.event])).toEqual([
      ['t-1', 1, 'e'], ['t-1#2', 2, 'e'], ['t-1#3', 3, 'e'],
    ]);
    expect(result.status).toBe('pending');
    h.calls[2]!.resolve('third time lucky');
    await flush();
    expect(result).toMatchObject({ status: 'fulfilled', value: 'third time lucky' });
    expect(h.scheduler.stats('t')).toMatchObject({ state: 'RUNNING', failed: 2, retried: 2, succeeded: 1, consecutiveFailures: 0 });
  });

  it('keeps doubling the backoff while other invocations\' successes keep the task out of BROKEN', async () => {
    vi.useFakeTimers();
    const h = setup({ slots: 2 });
    h.scheduler.setTasks([spec('t', { concurrency: 2, retries: { max: 3, backoffMs: 100 } })]);
    const flaky = track(h.scheduler.submit('t', 'flaky'));
    const fine = h.scheduler.submit('t', 'fine');
    const startTimes: number[] = [];
    const failNext = async (): Promise<void> => {
      startTimes.push(Date.now());
      h.calls.filter((c) => c.invocation.event === 'flaky').at(-1)!.reject(taskError('COORD_ERR_TASK_THREW'));
      while (h.calls.filter((c) => c.invocation.event === 'flaky').every((c) => c.settled)) await vi.advanceTimersByTimeAsync(1);
    };
    await failNext();
    await failNext();
    h.calls[1]!.resolve('ok'); // resets the consecutive count before the third failure
    await expect(fine).resolves.toBe('ok');
    await failNext();
    startTimes.push(Date.now());
    expect(startTimes.slice(1).map((t, i) => t - startTimes[i]!)).toEqual([100, 200, 400]);
    h.calls.at(-1)!.reject(taskError('COORD_ERR_TASK_THREW'));
    await flush();
    expect(flaky.error?.code).toBe('COORD_ERR_TASK_THREW');
    expect(h.scheduler.stats('t')).toMatchObject({ state: 'ERRORED', retried: 3, failed: 4 });
  });

  it('puts a retry at the back of the queue once its backoff is over, with a fresh enqueue time', async () => {
    vi.useFakeTimers({ now: 1000 });
    const h = setup();
    h.scheduler.setTasks([spec('t', { retries: { max: 1, backoffMs: 10 } })]);
    const all = ['a', 'b', 'c'].map((e) => track(h.scheduler.submit('t', e)));
    await h.step(false); // a fails; b takes the slot while a backs off
    await vi.advanceTimersByTimeAsync(10);
    await h.drain();
    expect(h.calls.map((c) => c.invocation.event)).toEqual(['a', 'b', 'c', 'a']);
    expect(h.calls[3]!.invocation).toMatchObject({ id: 't-1#2', attempt: 2, enqueuedAt: 1010 });
    expect(all.map((r) => r.status)).toEqual(['fulfilled', 'fulfilled', 'fulfilled']);
  });

  it('fails with the last error once retries are exhausted, and never retries non-retriable codes', async () => {
    vi.useFakeTimers();
    const h = setup();
    h.scheduler.setTasks([spec('t', { retries: { max: 1, backoffMs: 10 } }), spec('d', { retries: { max: 5, backoffMs: 10 } })]);
    const t = track(h.scheduler.submit('t', null));
    h.calls[0]!.reject(taskError('COORD_ERR_TASK_TIMEOUT'));
    // The retry waits for its back-off and for the probation of a timed-out task (one time limit).
    await vi.advanceTimersByTimeAsync(1000);
    h.calls[1]!.reject(taskError('COORD_ERR_TASK_THREW'));
    await vi.advanceTimersByTimeAsync(1000);
    expect(t.error?.code).toBe('COORD_ERR_TASK_THREW');
    expect(h.calls).toHaveLength(2);
    for (const code of ['COORD_ERR_TASK_DENIED', 'COORD_ERR_TASK_BAD_CALL'] as const) {
      const d = track(h.scheduler.submit('d', code));
      h.calls.at(-1)!.reject(taskError(code));
      await vi.advanceTimersByTimeAsync(1000);
      expect(d.error?.code).toBe(code);
    }
    expect(h.calls.filter((c) => c.invocation.task === 'd')).toHaveLength(2);
    expect(h.scheduler.stats('d')).toMatchObject({ retried: 0, failed: 2 });
  });

  it('fails an invocation with its own error when its retry would overflow the queue', async () => {
    vi.useFakeTimers();
    const h = setup();
    h.scheduler.setTasks([spec('t', { queueDepth: 1, retries: { max: 3, backoffMs: 10 } })]);
    const first = track(h.scheduler.submit('t', 1));
    const second = track(h.scheduler.submit('t', 2)); // fills the queue
    h.calls[0]!.reject(taskError('COORD_ERR_TASK_THREW'));
    await vi.advanceTimersByTimeAsync(0);
    expect(first.error?.code).toBe('COORD_ERR_TASK_THREW');
    expect(h.scheduler.stats('t')).toMatchObject({ retried: 0 });
    // A pending retry holds its place: while it backs off, the queue is full.
    h.calls[1]!.reject(taskError('COORD_ERR_TASK_THREW'));
    await vi.advanceTimersByTimeAsync(0);
    expect(h.scheduler.stats('t')).toMatchObject({ retried: 1, queued: 1 });
    await expect(h.scheduler.submit('t', 3)).rejects.toMatchObject({ code: 'COORD_ERR_TASK_QUEUE_FULL' });
    await vi.advanceTimersByTimeAsync(10);
    h.calls[2]!.resolve('ok');
    await flush();
    expect(second).toMatchObject({ status: 'fulfilled', value: 'ok' });
  });

  it('reports INSTALLED → RUNNING → ERRORED → BROKEN once each, with the error that caused it', async () => {
    const h = setup();
    h.scheduler.setTasks([spec('t', { queueDepth: 5 })]);
    const outcomes = [true, true, false, false, false];
    const all = outcomes.map(() => track(h.scheduler.submit('t', null)));
    for (const ok of outcomes) await h.step(ok);
    expect(all.map((r) => r.status)).toEqual(['fulfilled', 'fulfilled', 'rejected', 'rejected', 'rejected']);
    expect(h.transitions).toEqual(['t:INSTALLED', 't:RUNNING', 't:ERRORED:COORD_ERR_TASK_THREW', 't:BROKEN:COORD_ERR_TASK_THREW']);
  });
});

describe('Scheduler redeploy and close', () => {
  async function broken() {
    const h = setup();
    h.scheduler.setTasks([spec('t')]);
    const results = Array.from({ length: 3 }, () => track(h.scheduler.submit('t', null)));
    for (let i = 0; i < 3; i++) await h.step(false);
    expect(results.every((r) => r.status === 'rejected')).toBe(true);
    expect(h.scheduler.stats('t')?.state).toBe('BROKEN');
    return h;
  }

  it('keeps the state, counters and queue of a task whose spec is unchanged (deep-equal)', async () => {
    const h = await broken();
    h.scheduler.setTasks([spec('t')]);
    expect(h.scheduler.stats('t')).toMatchObject({ state: 'BROKEN', failed: 3 });
    h.scheduler.setTasks([spec('t', { timeoutMs: 2000 }), spec('u')]);
    const running = track(h.scheduler.submit('u', 'running'));
    const queued = track(h.scheduler.submit('u', 'queued'));
    h.scheduler.setTasks([spec('t', { timeoutMs: 2000 }), spec('u')]);
    expect(h.scheduler.stats('u')).toMatchObject({ queued: 1, running: 1 });
    await h.drain();
    expect([running.value, queued.value]).toEqual([h.calls.length - 2, h.calls.length - 1]);
  });

  it('clears BROKEN and the counters when the spec changes; cancels queued, lets running finish uncounted', async () => {
    const h = await broken();
    h.scheduler.setTasks([spec('t', { timeoutMs: 2000, retries: { max: 2, backoffMs: 10 } })]);
    expect(h.scheduler.stats('t')).toMatchObject({ state: 'INSTALLED', failed: 0, consecutiveFailures: 0, lastError: null });
    const old = track(h.scheduler.submit('t', 'old'));
    const queued = track(h.scheduler.submit('t', 'queued'));
    h.scheduler.setTasks([spec('t', { timeoutMs: 3000 })]);
    await flush();
    expect(queued.error).toMatchObject({ code: 'COORD_ERR_TASK_CANCELLED', message: containing('"t"') });
    expect(old.status).toBe('pending');
    // The old invocation still holds its global slot but not the new spec's concurrency.
    expect(h.scheduler.running).toBe(1);
    expect(h.scheduler.stats('t')).toMatchObject({ running: 0 });
    await h.step(false);
    // Not retried under the old spec's retries either: its caller hears at once.
    expect(old.error?.code).toBe('COORD_ERR_TASK_THREW');
    expect(h.scheduler.stats('t')).toMatchObject({ state: 'INSTALLED', failed: 0 });
    expect(h.transitions.at(-1)).toBe('t:INSTALLED');
    h.scheduler.setTasks([]);
    await expect(h.scheduler.submit('t', null)).rejects.toMatchObject({ code: 'COORD_ERR_TASK_UNKNOWN' });
    expect(h.transitions.filter((t) => t === 't:INSTALLED')).toHaveLength(3);
  });

  it('gives a replaced task\'s running invocation\'s result to its caller, not to the new version', async () => {
    const h = setup();
    h.scheduler.setTasks([spec('t')]);
    const old = h.scheduler.submit('t', null);
    h.scheduler.setTasks([spec('t', { priority: 7 })]);
    h.calls[0]!.resolve('from v1');
    await expect(old).resolves.toBe('from v1');
    expect(h.scheduler.stats('t')).toMatchObject({ state: 'INSTALLED', succeeded: 0 });
    expect(h.transitions).toEqual(['t:INSTALLED', 't:INSTALLED']);
  });

  it('close() cancels queued invocations and pending retries, refuses new ones, and waits for running ones', async () => {
    vi.useFakeTimers();
    const h = setup({ slots: 3 });
    h.scheduler.setTasks([spec('r'), spec('f', { concurrency: 2, retries: { max: 2, backoffMs: 100 } })]);
    const running = track(h.scheduler.submit('r', 'running'));
    const queued = track(h.scheduler.submit('r', 'queued'));
    const retrying = track(h.scheduler.submit('f', 'retrying'));
    const failsLate = track(h.scheduler.submit('f', 'fails late'));
    h.calls[1]!.reject(taskError('COORD_ERR_TASK_THREW'));
    await vi.advanceTimersByTimeAsync(0);
    expect(h.scheduler.queued).toBe(2);
    const closed = track(h.scheduler.close());
    await vi.advanceTimersByTimeAsync(0);
    expect(queued.error?.code).toBe('COORD_ERR_TASK_CANCELLED');
    expect(retrying.error?.code).toBe('COORD_ERR_TASK_CANCELLED');
    await expect(h.scheduler.submit('r', null)).rejects.toMatchObject({ code: 'COORD_ERR_TASK_CANCELLED' });
    // A running invocation failing after close() is not retried.
    h.calls[2]!.reject(taskError('COORD_ERR_TASK_THREW'));
    await vi.advanceTimersByTimeAsync(1000);
    expect(failsLate.error?.code).toBe('COORD_ERR_TASK_THREW');
    expect(h.calls).toHaveLength(3);
    expect(closed.status).toBe('pending');
    h.calls[0]!.resolve('finished');
    await flush();
    expect(running).toMatchObject({ status: 'fulfilled', value: 'finished' });
    expect(closed.status).toBe('fulfilled');
    expect(vi.getTimerCount()).toBe(0);
  });

  it('refuses invalid specs and options with a RangeError before changing anything', () => {
    const h = setup();
    h.scheduler.setTasks([spec('t')]);
    expect(() => h.scheduler.setTasks([spec('u', { priority: 10 })])).toThrow(RangeError);
    expect(() => h.scheduler.setTasks([spec('u'), spec('u')])).toThrow(/listed twice/);
    expect(h.scheduler.stats('t')).toBeDefined();
    expect(() => new Scheduler({ slots: 0, execute: promiseExecutor(() => Promise.resolve()) })).toThrow(RangeError);
    expect(() => new Scheduler({ slots: 1 } as SchedulerOptions)).toThrow(/execute is required/);
  });

  it('runs a callback executor directly: results, failures, a synchronous throw, submitTo', async () => {
    const pending: { invocation: Invocation; done: (err: unknown, value?: unknown) => void }[] = [];
    const scheduler = new Scheduler({
      slots: 1,
      execute: (invocation, done) => {
        if (invocation.event === 'throw') throw new TypeError('not a function');
        pending.push({ invocation, done });
      },
    });
    scheduler.setTasks([spec('t', { concurrency: 1 })]);
    const first = track(scheduler.submit('t', 1));
    const second = track(scheduler.submit('t', 2));
    const heard: string[] = [];
    scheduler.submitTo('t', 3, { resolve: (v) => heard.push(`ok:${String(v)}`), reject: (e) => heard.push(`err:${e.code}`) });
    expect(pending.map((p) => p.invocation.event)).toEqual([1]);
    pending.shift()!.done(undefined, 'one');
    await flush();
    expect(first).toMatchObject({ status: 'fulfilled', value: 'one' });
    pending.shift()!.done(taskError('COORD_ERR_TASK_THREW'));
    await flush();
    expect(second).toMatchObject({ status: 'rejected', error: { code: 'COORD_ERR_TASK_THREW' } });
    pending.shift()!.done(undefined, 'three');
    expect(heard).toEqual(['ok:three']);
    const thrown = await scheduler.submit('t', 'throw').catch((e: unknown) => e as CoordinatorError);
    expect(thrown).toMatchObject({ code: 'COORD_ERR_TASK_THREW', message: containing('not a function') });
    expect(scheduler.stats('t')).toMatchObject({ succeeded: 2, failed: 2, running: 0 });
    // Refusals reach submitTo's caller before it returns.
    scheduler.submitTo('nope', null, { resolve: () => heard.push('ok'), reject: (e) => heard.push(`err:${e.code}`) });
    expect(heard).toEqual(['ok:three', 'err:COORD_ERR_TASK_UNKNOWN']);
  });
});

describe('Scheduler fairness (issue 14): one task\'s timeouts consume its own budget', () => {
  it('puts tasks that time out on probation: together they hold at most a quarter of the slots, each backs off, and a benign task always finds a slot', async () => {
    vi.useFakeTimers();
    const h = setup({ slots: 8 });
    const hostile = Array.from({ length: 8 }, (_, i) => spec(`slow-${i}`, { timeoutMs: 1000, queueDepth: 100 }));
    h.scheduler.setTasks([...hostile, spec('echo', { timeoutMs: 1000, queueDepth: 100 })]);
    // Round 1: every hostile task takes a slot (nothing is known of them yet) and times out.
    for (const t of hostile) for (let i = 0; i < 5; i++) void h.scheduler.submit(t.name, i).catch(() => undefined);
    expect(h.live()).toBe(8);
    for (const c of h.calls.filter((x) => !x.settled)) c.reject(taskError('COORD_ERR_TASK_TIMEOUT'));
    await flush();
    // Now on probation: nothing of theirs runs before its back-off (one time limit) ends...
    expect(h.live()).toBe(0);
    const echo = track(h.scheduler.submit('echo', 'ping'));
    expect(h.calls.at(-1)!.invocation.task).toBe('echo');
    h.calls.at(-1)!.resolve('pong');
    await flush();
    expect(echo).toMatchObject({ status: 'fulfilled', value: 'pong' });
    // ...and then together they hold at most 2 of the 8 slots (a quarter), one each at most.
    await vi.advanceTimersByTimeAsync(1000);
    expect(h.live()).toBe(2);
    const running = h.calls.filter((x) => !x.settled).map((c) => c.invocation.task);
    expect(new Set(running).size).toBe(2);
    // The other six slots stay free for the benign task.
    const pings = Array.from({ length: 6 }, (_, i) => track(h.scheduler.submit('echo', i)));
    expect(h.calls.filter((x) => !x.settled && x.invocation.task === 'echo')).toHaveLength(1); // its concurrency is 1
    for (let i = 0; i < 6; i++) {
      h.calls.find((x) => !x.settled && x.invocation.task === 'echo')!.resolve(i);
      await flush();
    }
    expect(pings.every((p) => p.status === 'fulfilled')).toBe(true);
    // A second timeout doubles the back-off; a success ends the probation.
    const [a, b] = h.calls.filter((x) => !x.settled);
    a!.reject(taskError('COORD_ERR_TASK_TIMEOUT'));
    b!.resolve('fine');
    await flush();
    expect(h.scheduler.stats(b!.invocation.task)).toMatchObject({ consecutiveFailures: 0 });
    const aTask = a!.invocation.task;
    const before = h.calls.filter((c) => c.invocation.task === aTask).length;
    await vi.advanceTimersByTimeAsync(1999);
    expect(h.calls.filter((c) => c.invocation.task === aTask)).toHaveLength(before);
    await vi.advanceTimersByTimeAsync(1);
    expect(h.calls.filter((c) => c.invocation.task === aTask)).toHaveLength(before + 1);
  });

  it('gives a free slot to the task holding the fewest, not to the oldest backlog', () => {
    const h = setup({ slots: 2 });
    h.scheduler.setTasks([spec('busy', { concurrency: 2, queueDepth: 100 }), spec('quiet')]);
    for (let i = 0; i < 10; i++) void h.scheduler.submit('busy', i);
    void h.scheduler.submit('quiet', 'q');
    expect(h.calls.map((c) => c.invocation.task)).toEqual(['busy', 'busy']);
    h.calls[0]!.resolve('done');
    return flush().then(() => {
      // busy holds one slot, quiet none: quiet goes first although busy's invocations are older.
      expect(h.calls[2]!.invocation.task).toBe('quiet');
    });
  });

  it('does not count a host crash caused by another task, and quarantines on request', async () => {
    const h = setup();
    h.scheduler.setTasks([spec('t')]);
    for (let i = 0; i < 5; i++) {
      const r = track(h.scheduler.submit('t', i));
      h.calls.at(-1)!.reject(new CoordinatorError('COORD_ERR_TASK_HOST_CRASHED', 'another task crashed the host', { details: { bystander: true } }));
      await flush();
      expect(r.status).toBe('rejected');
    }
    expect(h.scheduler.stats('t')).toMatchObject({ state: 'INSTALLED', failed: 0, consecutiveFailures: 0 });
    h.scheduler.quarantine('t', new CoordinatorError('COORD_ERR_TASK_QUARANTINED', 'crashed its host 3 times'));
    expect(h.scheduler.stats('t')).toMatchObject({ state: 'BROKEN', lastError: { code: 'COORD_ERR_TASK_QUARANTINED' } });
    await expect(h.scheduler.submit('t', 'x')).rejects.toMatchObject({ code: 'COORD_ERR_TASK_BROKEN' });
  });
});
