/**
 * Quick tasks on the task host's own thread (src/sandbox/task-pool.ts): a task that has shown itself
 * quick runs there, with the same results, errors, host calls, timers, publishes and time limits as on
 * isolated-vm's thread pool; a call that spins sends it back to the thread pool; pipelined invocations
 * still run at most `concurrency` at once.
 */
import { describe, expect, it } from 'vitest';
import { bundle, startInProcess } from '../helpers/in-process.js';
import { connect, inbox } from '../helpers/mqtt.js';

const QUICK = bundle(
  {
    name: 'quick',
    limits: { concurrency: 2, timeoutMs: 300, queueDepth: 1000 },
    permissions: { publish: ['quick/#'] },
    routes: [{ source: 'task:quick', filter: 'quick/#', target: 'broker' }],
  },
  `export default { async onEvent(e, ctx) {
      const mode = e.payload && e.payload.mode;
      if (mode === 'throw') throw new Error('asked to throw');
      if (mode === 'state') { await ctx.state.set('k', { n: e.payload.n }); return await ctx.state.get('k'); }
      if (mode === 'timer') return await new Promise((r) => setTimeout(() => r('late'), 20));
      if (mode === 'publish') { await ctx.publish('quick/out', 'hello'); return 'published'; }
      if (mode === 'hang') return new Promise(() => {});
      if (mode === 'spin') for (;;) {}
      if (mode === 'slow') await new Promise((r) => setTimeout(r, 5));
      return { echo: e.payload };
  } }`,
);

describe('quick tasks on the task host thread', () => {
  it('behave as on the thread pool, keep concurrency, and go back to the pool when one spins', async () => {
    const { coordinator, url } = await startInProcess();
    await coordinator.tasks.install([QUICK]);
    const run = (payload: Record<string, string | number>): Promise<unknown> => coordinator.tasks.invoke('quick', { type: 'invoke', payload });
    const onHostThread = async (): Promise<unknown> => ((await coordinator.tasks.show('quick')).isolates as { onHostThread: boolean }).onHostThread;

    expect(await onHostThread()).toBe(false);
    for (let i = 0; i < 40; i++) await expect(run({ n: i })).resolves.toEqual({ echo: { n: i } });
    expect(await onHostThread()).toBe(true);

    await expect(run({ mode: 'throw' })).rejects.toMatchObject({ code: 'COORD_ERR_TASK_THREW', message: expect.stringContaining('asked to throw') as string });
    await expect(run({ mode: 'state', n: 7 })).resolves.toEqual({ n: 7 });
    await expect(run({ mode: 'timer' })).resolves.toBe('late');
    const app = await connect(url, { clientId: 'quick-app' });
    const box = inbox(app);
    await app.subscribeAsync('quick/#', { qos: 0 });
    await expect(run({ mode: 'publish' })).resolves.toBe('published');
    expect((await box.next((t) => t === 'quick/out')).payload.toString()).toBe('hello');
    app.end(true);

    // Many at once (pipelined to the host): still at most `concurrency` running at a time, each in an
    // isolate of its own, so the pool never grows past it.
    const burst = await Promise.all(Array.from({ length: 60 }, (_, i) => run(i % 3 === 0 ? { mode: 'slow' } : { n: i })));
    expect(burst).toHaveLength(60);
    expect(((await coordinator.tasks.show('quick')).isolates as { isolates: number }).isolates).toBeLessThanOrEqual(2);

    await expect(run({ mode: 'hang' })).rejects.toMatchObject({ code: 'COORD_ERR_TASK_TIMEOUT' });
    await expect(run({ n: 1 })).resolves.toEqual({ echo: { n: 1 } });
    // A quick task gone bad holds the host's thread once, for its own limit, and goes back to the pool.
    const started = performance.now();
    await expect(run({ mode: 'spin' })).rejects.toMatchObject({ code: 'COORD_ERR_TASK_TIMEOUT' });
    expect(performance.now() - started).toBeLessThan(2000);
    await expect(run({ n: 2 })).resolves.toEqual({ echo: { n: 2 } });
    expect(await onHostThread()).toBe(false);
    expect(coordinator.tasks.list().find((t) => t.name === 'quick')).toMatchObject({ state: 'RUNNING' });
  });
});
