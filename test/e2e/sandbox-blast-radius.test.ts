/**
 * Blast radius of one task = that task (issue 14). A real coordinator in this process, a real task host
 * with real isolates: a task that kills its host process with a V8 fatal error on purpose is charged
 * with the crash (crash-marks.ts), moved to the isolation host, and quarantined after three; a benign
 * task next to it never fails, never goes BROKEN, and its invocation that was in the dying host is run
 * again. Eight tasks that time out, and a timer flood, do not take the benign task's slots.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Coordinator } from '../../src/coordinator.js';
import { bundle, startInProcess } from '../helpers/in-process.js';

// 'x'.repeat(2 ** 28) is a cheap rope; split('') asks V8 for an array of 2^28 elements, which is a
// "Fatal JavaScript invalid size error": V8 aborts the whole process (the task host), not the isolate.
const CRASHER = bundle({ name: 'crasher', limits: { timeoutMs: 500, memoryMb: 32 } }, `export default { onEvent() { 'x'.repeat(2 ** 28).split(''); return 'survived'; } }`);
const ECHO = bundle({ name: 'echo', limits: { concurrency: 2, timeoutMs: 2000 } }, `export default { onEvent(e) { return e.payload; } }`);
// A benign invocation that is inside the host (waiting on a timer, not running) when the crasher kills it.
const SLOW = bundle({ name: 'slow', limits: { timeoutMs: 5000 } }, `export default { async onEvent(e) { await new Promise((r) => setTimeout(r, 400)); return 'slow ' + e.payload; } }`);

describe('sandbox: one task crashing the task host hurts only itself', () => {
  let coordinator: Coordinator;

  beforeAll(async () => {
    ({ coordinator } = await startInProcess({ thingName: 'gw-blast' }));
    await coordinator.tasks.install([ECHO, SLOW, CRASHER]);
  });
  afterAll(() => coordinator?.stop());

  const status = async (): Promise<{ host: { restarts: number; processes: { name: string; tasks: string[] }[] } }> =>
    (await coordinator.tasks.status()) as never;

  it('charges the crash to the crasher, moves it to the isolation host, retries the bystander, and quarantines after three crashes', async () => {
    expect(await coordinator.tasks.invoke('echo', { type: 'invoke', payload: 'before' })).toBe('before');
    const sharedPid = coordinator.tasks.hostPid;
    // The slow task's invocation is in the host (awaiting its timer) when the crasher kills the host.
    const slow = coordinator.tasks.invoke('slow', { type: 'invoke', payload: 'bystander' });
    await new Promise((r) => setTimeout(r, 100));
    await expect(coordinator.tasks.invoke('crasher', { type: 'invoke', payload: null })).rejects.toMatchObject({ code: 'COORD_ERR_TASK_HOST_CRASHED' });
    // Re-run on the restarted host: it succeeds and is not counted as a failure.
    await expect(slow).resolves.toBe('slow bystander');
    expect(await coordinator.tasks.invoke('echo', { type: 'invoke', payload: 'after' })).toBe('after');
    expect(coordinator.tasks.hostPid).not.toBe(sharedPid);
    const s1 = await status();
    const isolation = s1.host.processes.find((p) => p.name === 'isolation');
    expect(isolation?.tasks.some((k) => k.startsWith('crasher@'))).toBe(true);
    expect(s1.host.processes.find((p) => p.name === 'shared')?.tasks.some((k) => k.startsWith('crasher@'))).toBe(false);

    // Crashes 2 and 3 happen in the isolation host: the shared host (echo, slow) does not restart.
    const sharedNow = coordinator.tasks.hostPid;
    for (let i = 0; i < 2; i++) {
      const err = (await coordinator.tasks.invoke('crasher', { type: 'invoke', payload: null }).then(() => undefined, (e: unknown) => e)) as { code?: string } | undefined;
      expect(err?.code).toMatch(/COORD_ERR_TASK_(HOST_CRASHED|BROKEN|QUARANTINED)/);
      expect(await coordinator.tasks.invoke('echo', { type: 'invoke', payload: i })).toBe(i);
    }
    expect(coordinator.tasks.hostPid).toBe(sharedNow);
    const crasher = coordinator.tasks.list().find((t) => t.name === 'crasher')!;
    expect(crasher.state).toBe('BROKEN');
    await expect(coordinator.tasks.invoke('crasher', { type: 'invoke', payload: null })).rejects.toMatchObject({ code: 'COORD_ERR_TASK_BROKEN' });
    for (const name of ['echo', 'slow']) expect(coordinator.tasks.list().find((t) => t.name === name)).toMatchObject({ state: 'RUNNING', failed: 0 });
  });

  it('keeps the benign task answering next to eight tasks that time out and a timer flood', async () => {
    const spinners = Array.from({ length: 8 }, (_, i) =>
      bundle({ name: `spin-${i}`, limits: { timeoutMs: 300, queueDepth: 50 } }, i % 2 ? `export default { onEvent() { for (;;) {} } }` : `export default { onEvent() { return new Promise(() => {}); } }`),
    );
    const flood = bundle({ name: 'flood', limits: { timeoutMs: 300 } }, `export default { onEvent() { for (let i = 0; i < 1e6; i++) setTimeout(() => {}, 1); } }`);
    await coordinator.tasks.install([ECHO, SLOW, ...spinners, flood]);
    const load = setInterval(() => {
      for (const s of spinners) coordinator.tasks.invoke(s.spec.name, { type: 'invoke', payload: null }).catch(() => undefined);
      coordinator.tasks.invoke('flood', { type: 'invoke', payload: null }).catch(() => undefined);
    }, 50);
    const latencies: number[] = [];
    try {
      await new Promise((r) => setTimeout(r, 400));
      const until = performance.now() + 3000;
      while (performance.now() < until) {
        const t0 = performance.now();
        expect(await coordinator.tasks.invoke('echo', { type: 'invoke', payload: 1 })).toBe(1);
        latencies.push(performance.now() - t0);
        await new Promise((r) => setTimeout(r, 5));
      }
    } finally {
      clearInterval(load);
    }
    latencies.sort((a, b) => a - b);
    const p99 = latencies[Math.floor(latencies.length * 0.99)]!;
    process.stdout.write(`echo next to 8 timing-out tasks and a timer flood: ${latencies.length} calls, p50 ${latencies[latencies.length >> 1]!.toFixed(1)} ms, p99 ${p99.toFixed(1)} ms\n`);
    // Before issue 14 every slot was held by a timed-out invocation for its whole limit (p99 ~2.9 s).
    // Generous bound for a loaded CI machine; the ratio against a solo run is in `npm run bench`.
    expect(p99).toBeLessThan(250);
    expect(coordinator.tasks.list().find((t) => t.name === 'echo')).toMatchObject({ state: 'RUNNING', failed: 0 });
  });
});
