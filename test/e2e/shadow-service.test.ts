/**
 * `coordinator shadow-service` on a real Mosquitto, spoken to by plain MQTT.js clients: the AWS shadow
 * MQTT API served from another broker, durable and reachable across restarts of either side.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { startMosquitto, startShadowService } from '../helpers/mosquitto.js';
import { connect, inbox } from '../helpers/mqtt.js';
import { runCli, tempDir } from '../helpers/process.js';
import { createTestCa } from '../helpers/tls.js';

type Doc = Record<string, unknown>;
const json = (p: Buffer): Doc => JSON.parse(p.toString()) as Doc;
const token = (p: Buffer): unknown => json(p).clientToken;

describe('coordinator shadow-service', () => {
  it('update → accepted, delta, documents; get; delete — classic and named', async () => {
    const broker = await startMosquitto();
    const service = await startShadowService(broker.url);
    const app = await connect(broker.url, { clientId: 'app' });
    const box = inbox(app);
    await app.subscribeAsync('$aws/things/lamp/shadow/#', { qos: 1 });

    await app.publishAsync('$aws/things/lamp/shadow/update', JSON.stringify({ state: { reported: { color: 'red' } }, clientToken: 'u1' }), { qos: 1 });
    const accepted = json((await box.next((t) => t === '$aws/things/lamp/shadow/update/accepted')).payload);
    expect(accepted).toMatchObject({ state: { reported: { color: 'red' } }, version: 1, clientToken: 'u1' });
    expect(accepted).toMatchObject({ metadata: { reported: { color: { timestamp: expect.any(Number) as number } } } });
    const docs = json((await box.next((t) => t === '$aws/things/lamp/shadow/update/documents')).payload);
    expect(docs).toMatchObject({ current: { state: { reported: { color: 'red' } }, version: 1 }, clientToken: 'u1' });

    await app.publishAsync('$aws/things/lamp/shadow/update', JSON.stringify({ state: { desired: { color: 'green' } }, clientToken: 'u2' }), { qos: 1 });
    expect(json((await box.next((t, p) => t.endsWith('/update/accepted') && token(p) === 'u2')).payload)).toMatchObject({ version: 2 });
    expect(json((await box.next((t) => t === '$aws/things/lamp/shadow/update/delta')).payload)).toMatchObject({ state: { color: 'green' }, version: 2, clientToken: 'u2' });
    expect(json((await box.next((t, p) => t.endsWith('/update/documents') && token(p) === 'u2')).payload)).toMatchObject({
      previous: { state: { reported: { color: 'red' } }, version: 1 },
      current: { state: { desired: { color: 'green' }, reported: { color: 'red' } }, version: 2 },
    });

    await app.publishAsync('$aws/things/lamp/shadow/get', JSON.stringify({ clientToken: 'g1' }), { qos: 1 });
    expect(json((await box.next((t) => t === '$aws/things/lamp/shadow/get/accepted')).payload)).toMatchObject({
      state: { desired: { color: 'green' }, reported: { color: 'red' }, delta: { color: 'green' } },
      version: 2,
      clientToken: 'g1',
    });

    // A named shadow of the same thing is a shadow of its own, with its own version.
    await app.publishAsync('$aws/things/lamp/shadow/name/schedule/update', JSON.stringify({ state: { desired: { on: '07:00' } }, clientToken: 'n1' }), { qos: 1 });
    expect(json((await box.next((t) => t === '$aws/things/lamp/shadow/name/schedule/update/accepted')).payload)).toMatchObject({ version: 1, clientToken: 'n1' });
    expect(json((await box.next((t) => t === '$aws/things/lamp/shadow/name/schedule/update/delta')).payload)).toMatchObject({ state: { on: '07:00' } });
    await app.publishAsync('$aws/things/lamp/shadow/name/schedule/get', '', { qos: 1 });
    expect(json((await box.next((t) => t === '$aws/things/lamp/shadow/name/schedule/get/accepted')).payload)).toMatchObject({ state: { desired: { on: '07:00' } }, version: 1 });

    // The same data directory answers the CLI over its admin socket, as a coordinator's does.
    const cli = await runCli(['shadow', 'get', 'lamp', '--name', 'schedule', '--data-dir', service.dataDir]);
    expect(cli.code, cli.stderr).toBe(0);
    expect(JSON.parse(cli.stdout)).toMatchObject({ state: { desired: { on: '07:00' } }, version: 1 });

    await app.publishAsync('$aws/things/lamp/shadow/delete', JSON.stringify({ clientToken: 'd1' }), { qos: 1 });
    expect(json((await box.next((t) => t === '$aws/things/lamp/shadow/delete/accepted')).payload)).toMatchObject({ version: 2, clientToken: 'd1' });
    await app.publishAsync('$aws/things/lamp/shadow/get', '', { qos: 1 });
    expect(json((await box.next((t) => t === '$aws/things/lamp/shadow/get/rejected')).payload)).toMatchObject({ code: 404, message: "No shadow exists with name: 'lamp'" });
    // The named shadow is untouched by the classic one's delete.
    await app.publishAsync('$aws/things/lamp/shadow/name/schedule/get', JSON.stringify({ clientToken: 'g2' }), { qos: 1 });
    expect(json((await box.next((t, p) => t.endsWith('/name/schedule/get/accepted') && token(p) === 'g2')).payload)).toMatchObject({ version: 1 });

    expect(await service.stop()).toEqual({ code: 0, signal: null });
    expect(service.logs.some((l) => l.msg === 'shadow service stopped')).toBe(true);
    await broker.stop();
  });

  it('rejects bad requests with AWS codes and messages, and stale versions with 409', async () => {
    const broker = await startMosquitto();
    const service = await startShadowService(broker.url);
    const a = await connect(broker.url, { clientId: 'writer-a' });
    const b = await connect(broker.url, { clientId: 'writer-b' });
    const boxA = inbox(a);
    const boxB = inbox(b);
    await a.subscribeAsync('$aws/things/door/shadow/+/+', { qos: 1 });
    await b.subscribeAsync('$aws/things/door/shadow/update/+', { qos: 1 });

    await a.publishAsync('$aws/things/door/shadow/update', 'not json', { qos: 1 });
    const bad = json((await boxA.next((t) => t.endsWith('/update/rejected'))).payload);
    expect(bad).toEqual({ code: 400, message: 'Invalid JSON', timestamp: expect.any(Number) as number });
    await a.publishAsync('$aws/things/door/shadow/update', JSON.stringify({ clientToken: 'k2' }), { qos: 1 });
    expect(json((await boxA.next((t, p) => t.endsWith('/update/rejected') && token(p) === 'k2')).payload)).toMatchObject({ code: 400, message: 'Missing required node: state' });
    // Nothing was stored by the rejected requests.
    await a.publishAsync('$aws/things/door/shadow/get', '', { qos: 1 });
    expect(json((await boxA.next((t) => t.endsWith('/get/rejected'))).payload)).toMatchObject({ code: 404 });

    // Optimistic locking: both read version 1 and write with it; only the first one wins.
    await a.publishAsync('$aws/things/door/shadow/update', JSON.stringify({ state: { desired: { locked: true } }, clientToken: 'a1' }), { qos: 1 });
    expect(json((await boxA.next((t, p) => t.endsWith('/update/accepted') && token(p) === 'a1')).payload)).toMatchObject({ version: 1 });
    await a.publishAsync('$aws/things/door/shadow/update', JSON.stringify({ state: { desired: { locked: false } }, version: 1, clientToken: 'a2' }), { qos: 1 });
    await boxA.next((t, p) => t.endsWith('/update/accepted') && token(p) === 'a2');
    await b.publishAsync('$aws/things/door/shadow/update', JSON.stringify({ state: { desired: { locked: true } }, version: 1, clientToken: 'b1' }), { qos: 1 });
    expect(json((await boxB.next((t, p) => t.endsWith('/update/rejected') && token(p) === 'b1')).payload)).toMatchObject({
      code: 409,
      message: 'Version conflict',
      clientToken: 'b1',
    });
    expect(service.logs.filter((l) => l.code === 'COORD_ERR_SHADOW_REJECTED').map((l) => l.status)).toEqual([400, 400, 404, 409]);
    await service.stop();
    await broker.stop();
  });

  it('keeps an acknowledged update across SIGKILL, and answers requests sent while it was down', async () => {
    const broker = await startMosquitto();
    const first = await startShadowService(broker.url);
    const app = await connect(broker.url, { clientId: 'app' });
    const box = inbox(app);
    await app.subscribeAsync('$aws/things/meter/shadow/+/+', { qos: 1 });
    for (let i = 1; i <= 5; i++) {
      await app.publishAsync('$aws/things/meter/shadow/update', JSON.stringify({ state: { reported: { kwh: i } }, clientToken: `w${i}` }), { qos: 1 });
    }
    await box.next((t, p) => t.endsWith('/update/accepted') && token(p) === 'w5');
    await first.kill();

    // While it is down: QoS 1 requests wait in its persistent session on the broker.
    await app.publishAsync('$aws/things/meter/shadow/get', JSON.stringify({ clientToken: 'g-down' }), { qos: 1 });
    await app.publishAsync('$aws/things/meter/shadow/update', JSON.stringify({ state: { reported: { kwh: 6 } }, version: 5, clientToken: 'w6' }), { qos: 1 });
    await app.publishAsync('$aws/things/meter/shadow/update', JSON.stringify({ state: { reported: { kwh: 7 } }, version: 6, clientToken: 'w7' }), { qos: 1 });
    await new Promise((r) => setTimeout(r, 300));
    expect(box.messages.some((m) => token(m.payload) === 'g-down')).toBe(false);

    const second = await startShadowService(broker.url, { dataDir: first.dataDir });
    expect(await second.waitForLog((l) => l.msg === 'connected to broker')).toMatchObject({ sessionPresent: true });
    // The get sees what was acknowledged before the kill; the queued updates apply in the order sent.
    expect(json((await box.next((t, p) => t.endsWith('/get/accepted') && token(p) === 'g-down')).payload)).toMatchObject({ state: { reported: { kwh: 5 } }, version: 5 });
    expect(json((await box.next((t, p) => t.endsWith('/update/accepted') && token(p) === 'w6')).payload)).toMatchObject({ version: 6 });
    expect(json((await box.next((t, p) => t.endsWith('/update/accepted') && token(p) === 'w7')).payload)).toMatchObject({ version: 7 });

    // A clean stop (SIGTERM) keeps the session too.
    expect(await second.stop('SIGTERM')).toEqual({ code: 0, signal: null });
    await app.publishAsync('$aws/things/meter/shadow/get', JSON.stringify({ clientToken: 'g-term' }), { qos: 1 });
    const third = await startShadowService(broker.url, { dataDir: first.dataDir });
    expect(json((await box.next((t, p) => t.endsWith('/get/accepted') && token(p) === 'g-term')).payload)).toMatchObject({ state: { reported: { kwh: 7 } }, version: 7 });
    await third.stop();
    await broker.stop();
  });

  it('connects over mutual TLS with --ca, --cert and --key', async () => {
    const dir = tempDir('shadow-service-tls-');
    const ca = await createTestCa();
    const server = await ca.issueServerCert();
    const client = await ca.issueClientCert('shadow-service');
    const app = await ca.issueClientCert('app');
    const file = (name: string, pem: string): string => {
      const path = join(dir, name);
      writeFileSync(path, pem, { mode: 0o600 });
      return path;
    };
    const caFile = file('ca.pem', ca.certPem);
    const broker = await startMosquitto({ tls: { caFile, certFile: file('server.pem', server.certPem), keyFile: file('server.key', server.keyPem), requireCertificate: true } });
    expect(broker.url).toMatch(/^mqtts:/);
    const service = await startShadowService(broker.url, { args: ['--ca', caFile, '--cert', file('client.pem', client.certPem), '--key', file('client.key', client.keyPem)] });
    const device = await connect(broker.url, { clientId: 'app', ca: ca.certPem, cert: app.certPem, key: app.keyPem });
    const box = inbox(device);
    await device.subscribeAsync('$aws/things/vault/shadow/update/+', { qos: 1 });
    await device.publishAsync('$aws/things/vault/shadow/update', JSON.stringify({ state: { reported: { open: false } }, clientToken: 't1' }), { qos: 1 });
    expect(json((await box.next((t, p) => t.endsWith('/accepted') && token(p) === 't1')).payload)).toMatchObject({ version: 1 });
    await service.stop();
    await broker.stop();
  });

  it('reconnects when the broker restarts under it, and serves again', async () => {
    const broker = await startMosquitto();
    const service = await startShadowService(broker.url);
    const app = await connect(broker.url, { clientId: 'app' });
    const box = inbox(app);
    await app.subscribeAsync('$aws/things/pump/shadow/update/+', { qos: 1 });
    await app.publishAsync('$aws/things/pump/shadow/update', JSON.stringify({ state: { reported: { rpm: 1200 } }, clientToken: 'before' }), { qos: 1 });
    await box.next((t, p) => t.endsWith('/accepted') && token(p) === 'before');

    // Without persistence, the restarted Mosquitto has forgotten every session: the service must notice
    // (sessionPresent false) and subscribe again.
    await broker.restart();
    await service.waitForLog((l) => l.msg === 'broker connection lost; reconnecting');
    expect(await service.waitForLog((l) => l.msg === 'serving shadow requests', { nth: 2, timeoutMs: 15_000 })).toMatchObject({ sessionPresent: false });

    const again = await connect(broker.url, { clientId: 'app-2' });
    const box2 = inbox(again);
    await again.subscribeAsync('$aws/things/pump/shadow/+/+', { qos: 1 });
    await again.publishAsync('$aws/things/pump/shadow/update', JSON.stringify({ state: { reported: { rpm: 900 } }, clientToken: 'after' }), { qos: 1 });
    expect(json((await box2.next((t, p) => t.endsWith('/update/accepted') && token(p) === 'after')).payload)).toMatchObject({ version: 2 });
    await again.publishAsync('$aws/things/pump/shadow/get', '', { qos: 1 });
    expect(json((await box2.next((t) => t.endsWith('/get/accepted'))).payload)).toMatchObject({ state: { reported: { rpm: 900 } }, version: 2 });
    await service.stop();
    await broker.stop();
  });
});
