/**
 * The task runtime's rules through its public surface (an embedded coordinator, real broker, real task
 * host): failure states, routes between tasks and from the shadow service, triggers, state, validation
 * that refuses a task set without changing what runs.
 */
import { describe, expect, it } from 'vitest';
import { bundle, startInProcess } from '../helpers/in-process.js';
import { connect, inbox } from '../helpers/mqtt.js';

describe('task runtime', () => {
  it('goes ERRORED on a failure, BROKEN after 3 in a row, refuses while BROKEN, and a new version clears it', async () => {
    const { coordinator } = await startInProcess();
    const flaky = (v: string): ReturnType<typeof bundle> =>
      bundle({ name: 'flaky', version: v }, `export default { onEvent(e) { if (e.payload === 'fail') throw new Error('asked to fail'); return 'ok'; } }`);
    await coordinator.tasks.install([flaky('1.0.0')]);
    const run = (payload: string): Promise<unknown> => coordinator.tasks.invoke('flaky', { type: 'invoke', payload });
    const state = (): unknown => coordinator.tasks.list().find((t) => t.name === 'flaky');

    expect(state()).toMatchObject({ state: 'INSTALLED' });
    await expect(run('ok')).resolves.toBe('ok');
    expect(state()).toMatchObject({ state: 'RUNNING', succeeded: 1 });
    await expect(run('fail')).rejects.toMatchObject({ code: 'COORD_ERR_TASK_THREW', message: expect.stringContaining('asked to fail') as string });
    expect(state()).toMatchObject({ state: 'ERRORED', consecutiveFailures: 1 });
    await expect(run('ok')).resolves.toBe('ok'); // a success resets the count
    for (let i = 0; i < 3; i++) await expect(run('fail')).rejects.toMatchObject({ code: 'COORD_ERR_TASK_THREW' });
    expect(state()).toMatchObject({ state: 'BROKEN', consecutiveFailures: 3 });
    await expect(run('ok')).rejects.toMatchObject({ code: 'COORD_ERR_TASK_BROKEN' });
    expect(coordinator.tasks.logs('flaky').map((l) => l.text).join('\n')).toContain('asked to fail');

    await coordinator.tasks.install([flaky('1.0.1')]);
    expect(state()).toMatchObject({ state: 'INSTALLED', version: '1.0.1' });
    await expect(run('ok')).resolves.toBe('ok');
  });

  it('routes task → task and task → broker; a message matching no route reaches nobody', async () => {
    const { coordinator, url } = await startInProcess();
    const producer = bundle(
      {
        name: 'producer',
        permissions: { publish: ['pipeline/#', 'nowhere/#'] },
        routes: [{ source: 'task:producer', filter: 'pipeline/raw', target: 'task:consumer' }],
      },
      `export default { async onEvent(e, ctx) { await ctx.publish('pipeline/raw', { n: e.payload }); await ctx.publish('nowhere/x', 'lost'); } }`,
    );
    const consumer = bundle(
      {
        name: 'consumer',
        permissions: { publish: ['pipeline/done'], subscribe: ['pipeline/raw'] },
        routes: [{ source: 'task:consumer', filter: 'pipeline/done', target: 'broker' }],
      },
      `export default { async onEvent(e, ctx) { await ctx.publish('pipeline/done', { doubled: e.payload.n * 2, from: e.source }); } }`,
    );
    await coordinator.tasks.install([producer, consumer]);
    const app = await connect(url, { clientId: 'app' });
    const box = inbox(app);
    await app.subscribeAsync(['pipeline/#', 'nowhere/#'], { qos: 0 });
    await coordinator.tasks.invoke('producer', { type: 'invoke', payload: 21 });
    const done = JSON.parse((await box.next((t) => t === 'pipeline/done')).payload.toString()) as unknown;
    expect(done).toEqual({ doubled: 42, from: { kind: 'task', id: 'producer' } });
    // pipeline/raw went to the consumer only (no route to the broker); nowhere/x matched no route.
    await new Promise((r) => setTimeout(r, 100));
    expect(box.messages.map((m) => m.topic)).toEqual(['pipeline/done']);
    expect((await coordinator.tasks.status()).unrouted).toBe(1);
    app.end(true);
  });

  it('invokes a task on a shadow delta, and lets it act on the shadow it was granted', async () => {
    const { coordinator, url } = await startInProcess();
    const plug = bundle(
      { name: 'plug', triggers: [{ shadowDelta: { thing: 'plug-9' } }], permissions: { shadows: ['plug-9'] } },
      `export default { async onEvent(e, ctx) {
        if (e.type !== 'shadowDelta') return;
        await ctx.shadow.update(e.thing, { state: { reported: e.state } });
      } }`,
    );
    await coordinator.tasks.install([plug]);
    const app = await connect(url, { clientId: 'app' });
    const box = inbox(app);
    await app.subscribeAsync('$aws/things/plug-9/shadow/update/accepted', { qos: 1 });
    await app.publishAsync('$aws/things/plug-9/shadow/update', JSON.stringify({ state: { desired: { on: true } } }), { qos: 1 });
    // The task's own update reaches MQTT subscribers as on AWS, and clears the delta.
    await box.next((t, p) => (JSON.parse(p.toString()) as { state: { reported?: unknown } }).state.reported !== undefined);
    expect(coordinator.shadows.get({ thing: 'plug-9' })).toMatchObject({ state: { desired: { on: true }, reported: { on: true } }, version: 2 });
    expect(coordinator.shadows.get({ thing: 'plug-9' }).state).not.toHaveProperty('delta');
    app.end(true);
  });

  it('keeps ctx.state across invocations and isolates, bounded per task', async () => {
    const { coordinator } = await startInProcess({ 'tasks.stateMaxBytes': 2048 });
    const counter = bundle(
      { name: 'counter' },
      `export default { async onEvent(e, ctx) {
        if (e.payload === 'big') { await ctx.state.set('blob', 'x'.repeat(4096)); return; }
        const n = ((await ctx.state.get('n')) ?? 0) + 1;
        await ctx.state.set('n', n);
        return { n, keys: await ctx.state.keys() };
      } }`,
    );
    await coordinator.tasks.install([counter]);
    const run = (payload: unknown): Promise<unknown> => coordinator.tasks.invoke('counter', { type: 'invoke', payload: payload as null });
    await run(null);
    await expect(run(null)).resolves.toEqual({ n: 2, keys: ['n'] });
    await expect(run('big')).rejects.toMatchObject({ code: 'COORD_ERR_TASK_LIMIT' });
    await expect(run(null)).resolves.toEqual({ n: 3, keys: ['n'] });
  });

  it('refuses an invalid task set with a coded error and leaves the running tasks as they were', async () => {
    const { coordinator } = await startInProcess();
    const ok = bundle({ name: 'ok' }, `export default { onEvent() { return 'still here'; } }`);
    await coordinator.tasks.install([ok]);
    const invalid: [string, ReturnType<typeof bundle>[], string][] = [
      ['bad cron', [ok, bundle({ name: 'c', triggers: [{ cron: '61 * * * *' }] }, `export default { onEvent() {} }`)], 'COORD_ERR_ROUTE_INVALID'],
      ['bad time zone', [ok, bundle({ name: 'c', triggers: [{ cron: '* * * * *', timezone: 'Mars/Olympus' }] }, `export default { onEvent() {} }`)], 'COORD_ERR_ROUTE_INVALID'],
      ['route to a missing task', [ok, bundle({ name: 'r', routes: [{ source: '*', filter: 'a/#', target: 'task:ghost' }] }, `export default { onEvent() {} }`)], 'COORD_ERR_ROUTE_INVALID'],
      ['duplicate names', [ok, ok], 'COORD_ERR_TASK_MANIFEST'],
      ['no onEvent', [ok, bundle({ name: 'n' }, `export default { run() {} }`)], 'COORD_ERR_TASK_LOAD'],
      ['syntax error', [ok, bundle({ name: 's' }, `export default { onEvent( }`)], 'COORD_ERR_TASK_LOAD'],
      ['throws at top level', [ok, bundle({ name: 't' }, `throw new Error('boom'); export default {}`)], 'COORD_ERR_TASK_LOAD'],
      ['pinned onStart fails', [ok, bundle({ name: 'p', lifecycle: 'pinned' }, `export default { onStart() { throw new Error('no'); }, onEvent() {} }`)], 'COORD_ERR_TASK_THREW'],
    ];
    for (const [what, set, code] of invalid) {
      await expect(coordinator.tasks.install(set), what).rejects.toMatchObject({ code });
      expect(coordinator.tasks.list().map((t) => t.name), what).toEqual(['ok']);
    }
    await expect(coordinator.tasks.invoke('ok', { type: 'invoke', payload: null })).resolves.toBe('still here');
  });
});
