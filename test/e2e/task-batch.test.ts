/**
 * A quick task's pipelined invocations run several to a call on the task host's thread
 * (IsolateRuntime.runMany, src/sandbox/task-pool.ts): each still gets its own outcome — failures,
 * awaited host calls and timers left behind stay its own, and a timeout fails only the invocation that
 * spins, never those queued behind it. Also: a device message reaches a task with the payload the core
 * used to parse itself, now parsed in the sandbox (messageEventJson, bootstrap.ts eventOf).
 */
import { describe, expect, it } from 'vitest';
import type { CoordinatorError } from '../../src/errors.js';
import { bundle, startInProcess } from '../helpers/in-process.js';
import { connect, inbox } from '../helpers/mqtt.js';

const BATCHY = bundle(
  {
    name: 'batchy',
    limits: { concurrency: 1, timeoutMs: 300, queueDepth: 1000 },
    permissions: { shadows: [] },
  },
  `export default { async onEvent(e, ctx) {
      const p = e.payload;
      if (p.mode === 'spin') for (;;) {}
      if (p.mode === 'state') { await ctx.state.set('k' + p.n, p.n); return await ctx.state.get('k' + p.n); }
      if (p.mode === 'timers') { for (let i = 0; i < 5; i++) setTimeout(() => {}, 60000); return p.n; }
      if (p.mode === 'throw') throw new Error('thrown ' + p.n);
      return p.n;
  } }`,
);

const SHAPES = bundle(
  {
    name: 'shapes',
    triggers: [{ topic: 'shapes/in' }],
    routes: [{ source: 'task:shapes', filter: 'shapes/out', target: 'broker' }],
    permissions: { publish: ['shapes/out'] },
  },
  `export default { async onEvent(e, ctx) {
      await ctx.publish('shapes/out', { keys: Object.keys(e), payload: e.payload, text: e.text, b64: e.payloadBase64 ?? null, qos: e.qos, source: e.source });
  } }`,
);

type Outcome = { ok: true; value: unknown } | { ok: false; code: string; message: string };

describe('quick tasks run in batches', () => {
  it('give every invocation its own outcome: failures, host calls, timers left behind, a timeout', async () => {
    const { coordinator } = await startInProcess();
    await coordinator.tasks.install([BATCHY]);
    const run = (payload: Record<string, string | number>): Promise<Outcome> =>
      coordinator.tasks.invoke('batchy', { type: 'invoke', payload }).then(
        (value) => ({ ok: true, value }),
        (e: CoordinatorError) => ({ ok: false, code: e.code, message: e.message }),
      );
    const onHostThread = async (): Promise<unknown> => ((await coordinator.tasks.show('batchy')).isolates as { onHostThread: boolean }).onHostThread;

    for (let n = 0; n < 40; n++) await expect(run({ n })).resolves.toEqual({ ok: true, value: n });
    expect(await onHostThread()).toBe(true);

    // Pipelined together: throws and awaited host calls among plain ones.
    const mixed = await Promise.all(Array.from({ length: 64 }, (_, n) => run({ n, mode: n % 16 === 5 ? 'throw' : n % 16 === 9 ? 'state' : 'plain' })));
    mixed.forEach((o, n) => {
      if (n % 16 === 5) expect(o).toMatchObject({ ok: false, code: 'COORD_ERR_TASK_THREW', message: expect.stringContaining(`thrown ${n}`) as string });
      else expect(o).toEqual({ ok: true, value: n });
    });

    // Each leaves 5 timers behind: they end with their invocation, so none reaches tasks.maxTimers (64).
    const timers = await Promise.all(Array.from({ length: 40 }, (_, n) => run({ n, mode: 'timers' })));
    expect(timers).toEqual(Array.from({ length: 40 }, (_, n) => ({ ok: true, value: n })));
    expect(await onHostThread()).toBe(true);

    // One spins: it alone times out; those queued behind it run (the task goes back to the thread pool).
    const spun = await Promise.all(Array.from({ length: 24 }, (_, n) => run({ n, mode: n === 10 ? 'spin' : 'plain' })));
    spun.forEach((o, n) => {
      if (n === 10) expect(o).toMatchObject({ ok: false, code: 'COORD_ERR_TASK_TIMEOUT' });
      else expect(o).toEqual({ ok: true, value: n });
    });
    expect(await onHostThread()).toBe(false);
    expect(coordinator.tasks.list().find((t) => t.name === 'batchy')).toMatchObject({ state: 'RUNNING' });
  });

  it('hand a device message to the task with its payload parsed as before', async () => {
    const { coordinator, url } = await startInProcess();
    await coordinator.tasks.install([SHAPES]);
    const device = await connect(url, { clientId: 'shapes-device' });
    const box = inbox(device);
    await device.subscribeAsync('shapes/out', { qos: 0 });
    const cases: [Buffer | string, Record<string, unknown>][] = [
      ['{"a":[1,2]}', { payload: { a: [1, 2] }, text: '{"a":[1,2]}', b64: null }],
      ['7', { payload: 7, text: '7', b64: null }],
      ['"s"', { payload: 's', text: '"s"', b64: null }],
      ['true', { payload: true, text: 'true', b64: null }],
      ['hello', { payload: 'hello', text: 'hello', b64: null }],
      ['  5', { payload: '  5', text: '  5', b64: null }],
      ['{broken', { payload: '{broken', text: '{broken', b64: null }],
      ['', { payload: '', text: '', b64: null }],
      [Buffer.from([0xff, 0xfe]), { payload: '', text: '', b64: '//4=' }],
    ];
    for (const [payload, expected] of cases) {
      await device.publishAsync('shapes/in', payload, { qos: 0 });
      const got = JSON.parse((await box.next((t) => t === 'shapes/out')).payload.toString()) as Record<string, unknown>;
      const binary = typeof payload !== 'string';
      expect(got).toEqual({
        ...expected,
        keys: ['type', 'topic', 'payload', 'text', ...(binary ? ['payloadBase64'] : []), 'qos', 'source'],
        qos: 0,
        source: { kind: 'device', id: 'shapes-device' },
      });
    }
    device.end(true);
  });
});
