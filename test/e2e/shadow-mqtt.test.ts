/** The AWS IoT Device Shadow MQTT API on the local broker, spoken by a plain MQTT.js client. */
import { writeFileSync } from 'node:fs';
import { createConnection } from 'node:net';
import { join } from 'node:path';
import mqttPacket from 'mqtt-packet';
import { describe, expect, it } from 'vitest';
import { connect, inbox } from '../helpers/mqtt.js';
import { startCoordinator, tempDir } from '../helpers/process.js';

type Doc = Record<string, unknown>;
const json = (p: Buffer): Doc => JSON.parse(p.toString()) as Doc;

describe('shadow MQTT API', () => {
  it('update → accepted, delta, documents; get; delete — classic and named', async () => {
    const c = await startCoordinator();
    const app = await connect(c.url, { clientId: 'app' });
    const box = inbox(app);
    await app.subscribeAsync('$aws/things/bulb/shadow/#', { qos: 1 });

    await app.publishAsync('$aws/things/bulb/shadow/update', JSON.stringify({ state: { reported: { color: 'red' } }, clientToken: 'c1' }), { qos: 1 });
    const accepted = json((await box.next((t) => t === '$aws/things/bulb/shadow/update/accepted')).payload);
    expect(accepted).toMatchObject({ state: { reported: { color: 'red' } }, version: 1, clientToken: 'c1' });
    expect(accepted).toMatchObject({ metadata: { reported: { color: { timestamp: expect.any(Number) as number } } } });
    const docs = json((await box.next((t) => t === '$aws/things/bulb/shadow/update/documents')).payload);
    expect(docs).toMatchObject({ current: { state: { reported: { color: 'red' } }, version: 1 }, clientToken: 'c1' });

    await app.publishAsync('$aws/things/bulb/shadow/update', JSON.stringify({ state: { desired: { color: 'green' } } }), { qos: 1 });
    const delta = json((await box.next((t) => t === '$aws/things/bulb/shadow/update/delta')).payload);
    expect(delta).toMatchObject({ state: { color: 'green' }, version: 2 });

    await app.publishAsync('$aws/things/bulb/shadow/get', JSON.stringify({ clientToken: 'g1' }), { qos: 1 });
    const got = json((await box.next((t) => t === '$aws/things/bulb/shadow/get/accepted')).payload);
    expect(got).toMatchObject({ state: { desired: { color: 'green' }, reported: { color: 'red' }, delta: { color: 'green' } }, version: 2, clientToken: 'g1' });

    await app.subscribeAsync('$aws/things/bulb/shadow/name/schedule/#', { qos: 1 });
    await app.publishAsync('$aws/things/bulb/shadow/name/schedule/update', JSON.stringify({ state: { desired: { on: '07:00' } } }), { qos: 1 });
    expect(json((await box.next((t) => t === '$aws/things/bulb/shadow/name/schedule/update/accepted')).payload)).toMatchObject({ version: 1 });

    await app.publishAsync('$aws/things/bulb/shadow/delete', '', { qos: 1 });
    expect(json((await box.next((t) => t === '$aws/things/bulb/shadow/delete/accepted')).payload)).toMatchObject({ version: 2 });
    await app.publishAsync('$aws/things/bulb/shadow/get', '', { qos: 1 });
    expect(json((await box.next((t) => t === '$aws/things/bulb/shadow/get/rejected')).payload)).toMatchObject({ code: 404, message: "No shadow exists with name: 'bulb'" });
    await c.stop();
  });

  it('rejects bad requests with AWS codes, echoing the clientToken, and stores nothing', async () => {
    const c = await startCoordinator();
    const app = await connect(c.url, { clientId: 'app' });
    const box = inbox(app);
    await app.subscribeAsync('$aws/things/valve/shadow/update/+', { qos: 1 });
    const cases: [string, number, string][] = [
      ['not json', 400, 'Invalid JSON'],
      ['{"clientToken":"k2"}', 400, 'Missing required node: state'],
      ['{"state":{"desired":[1]},"clientToken":"k3"}', 400, 'Desired node must be an object'],
    ];
    for (const [payload, code, message] of cases) {
      await app.publishAsync('$aws/things/valve/shadow/update', payload, { qos: 1 });
      const r = json((await box.next((t) => t.endsWith('/update/rejected'))).payload);
      expect(r).toMatchObject({ code, message });
      expect(r.timestamp).toBeTypeOf('number');
      if (payload.includes('clientToken')) expect(r.clientToken).toMatch(/^k\d$/);
    }
    await app.publishAsync('$aws/things/valve/shadow/get', '', { qos: 1 });
    await app.subscribeAsync('$aws/things/valve/shadow/get/+', { qos: 1 });
    await app.publishAsync('$aws/things/valve/shadow/get', '', { qos: 1 });
    expect(json((await box.next((t) => t.endsWith('/get/rejected'))).payload)).toMatchObject({ code: 404 });
    await c.stop();
  });

  it('optimistic locking between two clients: the stale one gets 409 Version conflict', async () => {
    const c = await startCoordinator();
    const a = await connect(c.url, { clientId: 'writer-a' });
    const b = await connect(c.url, { clientId: 'writer-b' });
    const boxA = inbox(a);
    const boxB = inbox(b);
    await a.subscribeAsync('$aws/things/door/shadow/update/+', { qos: 1 });
    await b.subscribeAsync('$aws/things/door/shadow/update/+', { qos: 1 });
    await a.publishAsync('$aws/things/door/shadow/update', JSON.stringify({ state: { desired: { locked: true } }, clientToken: 'a1' }), { qos: 1 });
    await boxA.next((t, p) => t.endsWith('/accepted') && json(p).clientToken === 'a1');
    // Both read version 1 and write with it; only the first one wins.
    await a.publishAsync('$aws/things/door/shadow/update', JSON.stringify({ state: { desired: { locked: false } }, version: 1, clientToken: 'a2' }), { qos: 1 });
    await boxA.next((t, p) => t.endsWith('/accepted') && json(p).clientToken === 'a2');
    await b.publishAsync('$aws/things/door/shadow/update', JSON.stringify({ state: { desired: { locked: true } }, version: 1, clientToken: 'b1' }), { qos: 1 });
    const rejected = json((await boxB.next((t, p) => t.endsWith('/rejected') && json(p).clientToken === 'b1')).payload);
    expect(rejected).toMatchObject({ code: 409, message: 'Version conflict', clientToken: 'b1' });
    await c.stop();
  });

  it("answers 403 Forbidden to a device changing the coordinator's own shadows, which stay untouched", async () => {
    const c = await startCoordinator({ args: ['--thing-name', 'gw-test'] });
    const dev = await connect(c.url, { clientId: 'curious-device' });
    const box = inbox(dev);
    await dev.subscribeAsync('$aws/things/gw-test/shadow/name/deployment/+/+', { qos: 1 });
    await dev.publishAsync('$aws/things/gw-test/shadow/name/deployment/update', JSON.stringify({ state: { desired: { tasks: {} } }, clientToken: 'x1' }), { qos: 1 });
    expect(json((await box.next((t) => t.endsWith('/update/rejected'))).payload)).toMatchObject({ code: 403, message: 'Forbidden', clientToken: 'x1' });
    await dev.publishAsync('$aws/things/gw-test/shadow/name/deployment/get', '', { qos: 1 });
    expect(json((await box.next((t) => t.endsWith('/get/rejected'))).payload)).toMatchObject({ code: 404 });
    await c.stop();
  });

  it('lets the clients named in shadows.controlClients write the deployment shadow, and nobody else', async () => {
    const dir = tempDir();
    const config = join(dir, 'config.json');
    writeFileSync(config, JSON.stringify({ thingName: 'gw-ctl', shadows: { controlClients: ['operator'] } }));
    const c = await startCoordinator({ args: ['--config', config] });
    const operator = await connect(c.url, { clientId: 'operator' });
    const dev = await connect(c.url, { clientId: 'device-7' });
    const opBox = inbox(operator);
    const devBox = inbox(dev);
    await operator.subscribeAsync('$aws/things/gw-ctl/shadow/name/deployment/update/+', { qos: 1 });
    await dev.subscribeAsync('$aws/things/gw-ctl/shadow/name/deployment/update/+', { qos: 1 });
    await dev.publishAsync('$aws/things/gw-ctl/shadow/name/deployment/update', JSON.stringify({ state: { desired: { schema: 1, id: 'evil', tasks: [], routes: [] } }, clientToken: 'd' }), { qos: 1 });
    expect(json((await devBox.next((t) => t.endsWith('/update/rejected'))).payload)).toMatchObject({ code: 403, clientToken: 'd' });
    await operator.publishAsync('$aws/things/gw-ctl/shadow/name/deployment/update', JSON.stringify({ state: { desired: { schema: 1, id: 'empty', tasks: [], routes: [] } }, clientToken: 'o' }), { qos: 1 });
    expect(json((await opBox.next((t, p) => t.endsWith('/update/accepted') && json(p).clientToken === 'o')).payload)).toMatchObject({ state: { desired: { id: 'empty' } } });
    await c.stop();
  });

  it('answers 429 Too many requests beyond shadows.maxInFlightPerShadow, and applies the rest in order', async () => {
    const c = await startCoordinator({ env: { COORDINATOR_SHADOWS__MAX_IN_FLIGHT_PER_SHADOW: '3' } });
    const app = await connect(c.url, { clientId: 'burst' });
    const box = inbox(app);
    await app.subscribeAsync('$aws/things/meter/shadow/update/+', { qos: 1 });
    // One write: every update reaches the coordinator in the same read, before any of them can commit.
    const N = 40;
    for (let i = 0; i < N; i++) app.publish('$aws/things/meter/shadow/update', JSON.stringify({ state: { reported: { n: i } }, clientToken: `b${i}` }), { qos: 0 });
    await box.count(N, (t) => t.endsWith('/accepted') || t.endsWith('/rejected'), 10_000);
    const answers = box.messages.filter((m) => m.topic.startsWith('$aws/things/meter/shadow/update/')).map((m) => ({ topic: m.topic, body: json(m.payload) }));
    const rejected = answers.filter((a) => a.topic.endsWith('/rejected'));
    const accepted = answers.filter((a) => a.topic.endsWith('/accepted'));
    expect(rejected.length).toBeGreaterThan(0);
    for (const r of rejected) expect(r.body).toMatchObject({ code: 429, message: 'Too many requests', clientToken: expect.stringMatching(/^b\d+$/) as string });
    // Versions follow arrival order among the accepted ones, with no gaps.
    const ns = accepted.map((a) => (a.body.state as { reported: { n: number } }).reported.n);
    expect(ns).toEqual([...ns].sort((x, y) => x - y));
    expect(accepted.map((a) => a.body.version)).toEqual(accepted.map((_, i) => i + 1));
    await c.stop();
  });

  it('gives updates of one shadow their versions in arrival order even when the broker queues deliveries', async () => {
    // aedes' mqemitter runs at most 100 deliveries at once; a subscriber that stops reading holds slots,
    // and further messages (our requests) wait in its queue. Releasing them re-enters the shadow handler
    // recursively; the handler must still take each request in order (a found-and-fixed bug).
    const c = await startCoordinator();
    const slow = createConnection({ host: '127.0.0.1', port: c.port });
    await new Promise((r) => slow.once('connect', r));
    slow.write(mqttPacket.generate({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, clientId: 'slow', keepalive: 0 }));
    slow.write(mqttPacket.generate({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'slow/#', qos: 1 }] }));
    await new Promise((r) => setTimeout(r, 300));
    slow.pause();
    const filler = await connect(c.url, { clientId: 'filler' });
    const big = Buffer.alloc(120_000, 'x');
    for (let i = 0; i < 150; i++) filler.publish('slow/fill', big, { qos: 0 });
    await new Promise((r) => setTimeout(r, 1500));

    const streamer = await connect(c.url, { clientId: 'streamer' });
    const box = inbox(streamer);
    await streamer.subscribeAsync('$aws/things/boiler/shadow/update/accepted', { qos: 1 });
    const N = 30;
    await Promise.all(Array.from({ length: N }, (_, seq) => streamer.publishAsync('$aws/things/boiler/shadow/update', JSON.stringify({ state: { reported: { seq } } }), { qos: 1 })));
    slow.resume();
    slow.on('data', () => undefined);
    await box.count(N, (t) => t.endsWith('/accepted'), 15_000);
    const byVersion = box.messages
      .map((m) => json(m.payload) as { version: number; state: { reported: { seq: number } } })
      .sort((a, b) => a.version - b.version)
      .map((b) => b.state.reported.seq);
    expect(byVersion).toEqual(Array.from({ length: N }, (_, i) => i));
    slow.destroy();
    await c.stop();
  }, 30_000);
});
