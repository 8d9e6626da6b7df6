/**
 * The core's side of the host API is the authority: whatever the sandbox let through, the core checks
 * every call again against the task's permissions and limits (real database, real shadow service).
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { createLogger } from '../../src/log/logger.js';
import { AWS_SHADOW_LIMITS } from '../../src/shadow/request.js';
import { ShadowService } from '../../src/shadow/service.js';
import { Store } from '../../src/store/database.js';
import { HostApi, type Caller } from '../../src/tasks/host-api.js';
import { taskSpecSchema } from '../../src/tasks/spec.js';
import { TaskStateStore } from '../../src/tasks/state-store.js';

const stores: Store[] = [];
afterEach(() => {
  for (const s of stores.splice(0)) s.close();
});

function setup(): { api: HostApi; sent: [string, string, string][]; caller: (background?: boolean) => Caller; shadows: ShadowService } {
  const store = Store.open(mkdtempSync(join(tmpdir(), 'coord-hostapi-')), () => undefined);
  stores.push(store);
  const shadows = new ShadowService(store, { maxInFlightPerShadow: 10 });
  const sent: [string, string, string][] = [];
  const api = new HostApi({
    log: createLogger({ level: 'silent', pretty: false }),
    shadows,
    shadowLimits: AWS_SHADOW_LIMITS,
    state: new TaskStateStore(store, { maxBytesPerTask: 1024, maxKeyBytes: 64 }),
    coordinatorThing: 'gw-1',
    limits: { maxPayloadBytes: 100, maxPublishesPerInvocation: 3, maxPublishesPerSecond: 2 },
    publish: (task, topic, payload) => sent.push([task, topic, payload.toString()]),
  });
  const spec = taskSpecSchema.parse({ name: 't', version: '1.0.0', permissions: { publish: ['out/+'], shadows: ['lamp', '#'] } });
  return { api, sent, shadows, caller: (background = false) => ({ spec, invocationId: 'i1', publishes: 0, background }) };
}

describe('HostApi (core side)', () => {
  it('re-checks one-way publishes and drops what the task may not send', () => {
    const { api, sent, caller } = setup();
    const c = caller();
    api.publishOneWay(c, 'out/1', Buffer.from('ok'), 0);
    api.publishOneWay(c, 'secret/1', Buffer.from('no'), 0); // outside permissions.publish
    api.publishOneWay(c, '$aws/things/x/shadow/update', Buffer.from('no'), 0); // a reserved topic, not granted either
    api.publishOneWay(c, 'out/2', Buffer.alloc(101), 0); // over maxPayloadBytes
    api.publishOneWay(c, 'out/+', Buffer.from('no'), 0); // not a topic name
    api.publishOneWay(c, 'out/3', Buffer.from('ok'), 0);
    api.publishOneWay(c, 'out/4', Buffer.from('ok'), 0);
    api.publishOneWay(c, 'out/5', Buffer.from('no'), 0); // the 4th publish of one invocation
    expect(sent).toEqual([
      ['t', 'out/1', 'ok'],
      ['t', 'out/3', 'ok'],
      ['t', 'out/4', 'ok'],
    ]);
  });

  it('rate-limits publishes outside invocations per second', () => {
    const { api, sent, caller } = setup();
    for (let i = 0; i < 5; i++) api.publishOneWay(caller(true), `out/${i}`, Buffer.from('x'), 0);
    expect(sent.length).toBe(2);
  });

  it('refuses shadows outside the grant and the coordinator’s own shadows, with coded errors', async () => {
    const { api, caller, shadows } = setup();
    const c = caller();
    await expect(api.call(c, 'shadow.update', JSON.stringify({ thing: 'lamp', requestJson: '{"state":{"desired":{"on":true}}}' }))).resolves.toContain('"version":1');
    await expect(api.call(c, 'shadow.update', JSON.stringify({ thing: 'gw-1', name: 'deployment', requestJson: '{"state":{"desired":{"x":1}}}' }))).rejects.toMatchObject({
      code: 'COORD_ERR_TASK_DENIED',
    });
    expect(shadows.exists({ thing: 'gw-1', name: 'deployment' })).toBe(false);
    await expect(api.call(c, 'shadow.get', JSON.stringify({ thing: 'nobody' }))).rejects.toMatchObject({ code: 'COORD_ERR_SHADOW_REJECTED', message: expect.stringMatching(/^404/) as string });
    await expect(api.call(c, 'shadow.update', JSON.stringify({ thing: 'lamp', requestJson: '{"state":[]}' }))).rejects.toMatchObject({ code: 'COORD_ERR_SHADOW_REJECTED', message: expect.stringMatching(/^400/) as string });
    await expect(api.call(c, 'nope', '{}')).rejects.toMatchObject({ code: 'COORD_ERR_TASK_BAD_CALL' });
    await expect(api.call(c, 'state.set', 'not json')).rejects.toMatchObject({ code: 'COORD_ERR_TASK_BAD_CALL' });
  });

  it('bounds state per task and keeps it on disk', async () => {
    const { api, caller } = setup();
    const c = caller();
    await api.call(c, 'state.set', JSON.stringify({ key: 'a', valueJson: '"' + 'x'.repeat(500) + '"' }));
    await expect(api.call(c, 'state.set', JSON.stringify({ key: 'b', valueJson: '"' + 'x'.repeat(600) + '"' }))).rejects.toMatchObject({ code: 'COORD_ERR_TASK_LIMIT' });
    await expect(api.call(c, 'state.keys', '{}')).resolves.toBe('["a"]');
    await api.call(c, 'state.delete', JSON.stringify({ key: 'a' }));
    await expect(api.call(c, 'state.get', JSON.stringify({ key: 'a' }))).resolves.toBeUndefined();
  });
});
