/**
 * Development credentials (issue 6): a device logs in with user name = thing name and the password
 * `devices add --password` printed once; accepted on loopback listeners by default, elsewhere only when
 * devices.passwordAuth says so. A listener bound to 0.0.0.0 is not a loopback listener, even when the
 * test reaches it through 127.0.0.1.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { addDevice, attempt, startTlsCoordinator, type Bundle, type TlsCoordinator } from '../helpers/devices.js';
import { connect, inbox } from '../helpers/mqtt.js';

describe('development passwords on a loopback listener', () => {
  let c: TlsCoordinator;
  let dev: Bundle;

  beforeAll(async () => {
    c = await startTlsCoordinator();
    dev = await addDevice(c, 'bench-1', ['--password']);
  });
  afterAll(async () => {
    await c?.stop();
  });

  it('the right password connects, and the device gets its policy (not the anonymous open one)', async () => {
    expect(dev.password).toMatch(/^[A-Za-z0-9_-]{24}$/);
    const client = await connect(c.url, { clientId: 'bench-1', username: 'bench-1', password: dev.password! });
    const box = inbox(client);
    await client.subscribeAsync('devices/bench-1/#', { qos: 1 });
    await client.publishAsync('devices/bench-1/echo', 'hi', { qos: 1 });
    expect((await box.next()).payload.toString()).toBe('hi');
    const closed = new Promise<void>((resolve) => client.once('close', () => resolve()));
    client.publish('anything/else', 'x', { qos: 1 });
    await closed;
    await c.waitForLog((l) => l.code === 'COORD_ERR_MQTT_PUBLISH_DENIED' && l.clientId === 'bench-1');
  });

  it('a wrong password: CONNACK 4', async () => {
    expect(await attempt(c.url, { clientId: 'bench-1', username: 'bench-1', password: 'not-the-password' })).toEqual({ kind: 'refused', returnCode: 4 });
    await c.waitForLog((l) => l.code === 'COORD_ERR_DEVICE_BAD_CREDENTIALS' && l.username === 'bench-1');
  });

  it('an unknown user name, or a device without a password: CONNACK 4', async () => {
    const certOnly = await addDevice(c, 'cert-only');
    expect(await attempt(c.url, { clientId: 'ghost', username: 'ghost', password: dev.password! })).toEqual({ kind: 'refused', returnCode: 4 });
    expect(await attempt(c.url, { clientId: 'cert-only', username: certOnly.thing, password: 'x' })).toEqual({ kind: 'refused', returnCode: 4 });
  });

  it('the right password with a client id that is not the thing name: CONNACK 5', async () => {
    expect(await attempt(c.url, { clientId: 'someone-else', username: 'bench-1', password: dev.password! })).toEqual({ kind: 'refused', returnCode: 5 });
    await c.waitForLog((l) => l.code === 'COORD_ERR_DEVICE_NOT_AUTHORIZED' && l.clientId === 'someone-else');
  });
});

describe('development passwords on a non-loopback listener', () => {
  it('refused by default (CONNACK 5), accepted with devices.passwordAuth=always', async () => {
    const closed = await startTlsCoordinator({ config: { listeners: { mqtt: { host: '0.0.0.0' } } } });
    const d = await addDevice(closed, 'field-1', ['--password']);
    expect(closed.logs.find((l) => l.listener === 'mqtt')).toMatchObject({ host: '0.0.0.0', anonymous: false });
    expect(await attempt(closed.url, { clientId: 'field-1', username: 'field-1', password: d.password! })).toEqual({ kind: 'refused', returnCode: 5 });
    const line = await closed.waitForLog((l) => l.code === 'COORD_ERR_DEVICE_NOT_AUTHORIZED' && l.clientId === 'field-1');
    expect(line.reason).toMatch(/passwordAuth=loopback/);
    await closed.stop();

    const open = await startTlsCoordinator({ dataDir: closed.dataDir, init: false, config: { listeners: { mqtt: { host: '0.0.0.0' } }, devices: { passwordAuth: 'always' } } });
    const r = await attempt(open.url, { clientId: 'field-1', username: 'field-1', password: d.password! });
    expect(r.kind).toBe('connected');
    // Anonymous clients are still refused there (broker.anonymous=loopback).
    expect(await attempt(open.url, { clientId: 'anon' })).toEqual({ kind: 'refused', returnCode: 5 });
    if (r.kind === 'connected') await r.client.endAsync();
    await open.stop();
  });

  it('devices.passwordAuth=never refuses passwords even on loopback', async () => {
    const c = await startTlsCoordinator({ config: { devices: { passwordAuth: 'never' } } });
    const d = await addDevice(c, 'lab-1', ['--password']);
    expect(await attempt(c.url, { clientId: 'lab-1', username: 'lab-1', password: d.password! })).toEqual({ kind: 'refused', returnCode: 5 });
    await c.stop();
  });
});
