/**
 * The deployment agent through its in-process face (an embedded coordinator with a real broker, store and
 * task host): success, supersede by id, rollback on BROKEN, and refusals that change nothing. Bundles are
 * data: URLs here; HTTPS, signatures, MQTT and crashes are covered by deployments.test.ts.
 */
import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import type { Coordinator } from '../../src/coordinator.js';
import { startInProcess } from '../helpers/in-process.js';

const dataUrl = (code: string): string => `data:text/javascript;base64,${Buffer.from(code).toString('base64')}`;
const sha = (code: string): string => createHash('sha256').update(code).digest('hex');

function task(name: string, code: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { name, version: '1.0.0', bundle: { url: dataUrl(code), sha256: sha(code) }, ...extra };
}

async function reported(c: Coordinator, id: string, status: string, timeoutMs = 10_000): Promise<Record<string, unknown>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const r = c.deployments.status().reported as Record<string, unknown> | null;
    if (r?.id === id && r.status === status) return r;
    if (Date.now() > deadline) throw new Error(`deployment ${id} not ${status}: ${JSON.stringify(r)}`);
    await new Promise((res) => setTimeout(res, 20));
  }
}

describe('deployment agent', () => {
  it('deploys, answers with the new version, replaces the set, and rolls back a task that breaks', async () => {
    const { coordinator: c } = await startInProcess({ 'deployments.healthWindowMs': 1500 });
    const v1 = `export default { onEvent() { return 'v1'; } }`;
    await c.deployments.request({ schema: 1, id: 'd1', tasks: [task('greeter', v1)], routes: [] });
    await reported(c, 'd1', 'SUCCEEDED');
    await expect(c.tasks.invoke('greeter', { type: 'invoke', payload: null })).resolves.toBe('v1');

    const broken = `export default { onEvent() { throw new Error('broken on purpose'); } }`;
    await c.deployments.request({ schema: 1, id: 'd2', tasks: [task('greeter', broken, { version: '2.0.0' })], routes: [] });
    await reported(c, 'd2', 'IN_PROGRESS');
    // Three failures in the health window make the new version BROKEN: the agent puts v1 back.
    for (let i = 0; i < 30 && c.tasks.list()[0]?.version !== '2.0.0'; i++) await new Promise((r) => setTimeout(r, 20));
    for (let i = 0; i < 3; i++) await c.tasks.invoke('greeter', { type: 'invoke', payload: null }).catch(() => undefined);
    const r = await reported(c, 'd2', 'FAILED_ROLLED_BACK');
    expect(r.reason).toMatch(/COORD_ERR_DEPLOY_UNHEALTHY.*BROKEN.*rolled back to d1/);
    expect(r.running).toBe('d1');
    await expect(c.tasks.invoke('greeter', { type: 'invoke', payload: null })).resolves.toBe('v1');

    // The same document again changes nothing; a new id deploys.
    await c.deployments.request({ schema: 1, id: 'd2', tasks: [task('greeter', broken, { version: '2.0.0' })], routes: [] });
    await new Promise((res) => setTimeout(res, 200));
    expect(c.deployments.status().active?.id).toBe('d1');
    await c.deployments.request({ schema: 1, id: 'd3', tasks: [], routes: [] });
    await reported(c, 'd3', 'SUCCEEDED');
    expect(c.tasks.list()).toEqual([]);
  });

  it('lets in-flight invocations of a replaced version finish within deployments.drainMs, and cancels them after it', async () => {
    const { coordinator: c } = await startInProcess({ 'deployments.healthWindowMs': 0, 'deployments.drainMs': 1500 });
    const slow = (tag: string): string => `export default { async onEvent(e) { await new Promise((r) => setTimeout(r, e.payload)); return '${tag}'; } }`;
    const limits = { timeoutMs: 10_000, concurrency: 2 };
    await c.deployments.request({ schema: 1, id: 'v1', tasks: [task('worker', slow('v1'), { limits })], routes: [] });
    await reported(c, 'v1', 'SUCCEEDED');
    const inFlight = c.tasks.invoke('worker', { type: 'invoke', payload: 600 });
    const tooLong = c.tasks.invoke('worker', { type: 'invoke', payload: 8000 });
    await new Promise((r) => setTimeout(r, 100));
    await c.deployments.request({ schema: 1, id: 'v2', tasks: [task('worker', slow('v2'), { version: '2.0.0', limits })], routes: [] });
    await reported(c, 'v2', 'SUCCEEDED');
    await expect(c.tasks.invoke('worker', { type: 'invoke', payload: 0 })).resolves.toBe('v2');
    await expect(inFlight).resolves.toBe('v1');
    await expect(tooLong).rejects.toMatchObject({ code: 'COORD_ERR_TASK_CANCELLED' });
  });

  it('rejects invalid documents with every problem and leaves the running set alone', async () => {
    const { coordinator: c } = await startInProcess({ 'deployments.healthWindowMs': 0 });
    const ok = `export default { onEvent() { return 'ok'; } }`;
    await c.deployments.request({ schema: 1, id: 'good', tasks: [task('t', ok)], routes: [] });
    await reported(c, 'good', 'SUCCEEDED');
    await c.deployments.request({ schema: 1, id: 'bad', tasks: [task('t', ok), task('t', ok, { triggers: [{ cron: 'nope' }] })], routes: [{ source: '*', filter: 'x', target: 'task:ghost' }] });
    const r = await reported(c, 'bad', 'REJECTED');
    expect((r.problems as { path: string }[]).map((p) => p.path)).toEqual(expect.arrayContaining(['tasks.1.name', 'tasks.1.triggers.0', 'routes.0.target']));
    const tampered = { ...task('t', ok), bundle: { url: dataUrl(ok), sha256: sha('something else') } };
    await c.deployments.request({ schema: 1, id: 'tampered', tasks: [tampered], routes: [] });
    const t = await reported(c, 'tampered', 'REJECTED');
    expect(t.reason).toMatch(/COORD_ERR_BUNDLE_DIGEST/);
    expect(c.deployments.status().active?.id).toBe('good');
    await expect(c.tasks.invoke('t', { type: 'invoke', payload: null })).resolves.toBe('ok');
  });
});
