/**
 * Device identity over mutual TLS (issue 6): certificates issued by the coordinator itself
 * (`certs init`, `devices add`), real MQTT.js clients over real TLS on 127.0.0.1, and every way a
 * client must be refused — each its own test, none accepted — plus policies on publish, subscribe,
 * receive and shadows.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadDeviceCa } from '../../src/devices/pki.js';
import { pkiFiles } from '../../src/devices/pki-files.js';
import { addDevice, attempt, connectDevice, startTlsCoordinator, suback, type Bundle, type TlsCoordinator } from '../helpers/devices.js';
import { connect, inbox } from '../helpers/mqtt.js';
import { runCli } from '../helpers/process.js';
import { createTestCa } from '../helpers/tls.js';

type Doc = Record<string, unknown>;
const json = (p: Buffer): Doc => JSON.parse(p.toString()) as Doc;

const POLICIES = [
  // Lobby devices share a topic tree: they may subscribe to all of shared/#, but receive only the lobby's.
  { name: 'lobby', match: { attributes: { room: 'lobby' } }, allow: { publish: ['shared/lobby/#'], subscribe: ['shared/#'], receive: ['shared/lobby/#'] } },
  // Controllers may drive plug-1's shadow, and no other.
  {
    name: 'controllers',
    match: { thing: 'ctl-*' },
    allow: { publish: ['$aws/things/plug-1/shadow/update', '$aws/things/plug-1/shadow/get'], subscribe: ['$aws/things/plug-1/shadow/+/+'], receive: ['$aws/things/plug-1/shadow/+/+'] },
  },
  { name: 'quarantine', match: { thing: 'bad-*' }, allow: { connect: false } },
];

describe('devices over mutual TLS', () => {
  let c: TlsCoordinator;
  let lamp: Bundle;

  beforeAll(async () => {
    c = await startTlsCoordinator({ config: { devices: { policies: POLICIES } } });
    lamp = await addDevice(c, 'lamp-1', ['--attr', 'room=hall']);
  });
  afterAll(async () => {
    await c?.stop();
  });

  const lastLog = (code: string, pred: (l: Doc) => boolean = () => true): Promise<Doc> => c.waitForLog((l) => l.code === code && pred(l), 5000);

  it('an issued certificate connects: publish/subscribe within its policy, its own shadow, presence with the certificate id', async () => {
    expect(lamp.deviceJson).toMatchObject({ thingName: 'lamp-1', endpoint: { host: '127.0.0.1', port: c.tlsPort } });
    const watcher = await connect(c.url, { clientId: 'watcher' });
    const events = inbox(watcher);
    await watcher.subscribeAsync('$aws/events/presence/connected/lamp-1', { qos: 1 });

    const dev = await connectDevice(c, lamp);
    expect(dev.connack.returnCode).toBe(0);
    const connected = json((await events.next()).payload);
    expect(connected).toMatchObject({ clientId: 'lamp-1', principalIdentifier: lamp.fingerprint });

    const box = inbox(dev);
    const granted = await dev.subscribeAsync(['devices/lamp-1/#', '$aws/things/lamp-1/shadow/update/+'], { qos: 1 });
    expect(granted.map((g) => g.qos)).toEqual([1, 1]);
    await watcher.publishAsync('devices/lamp-1/set', 'on', { qos: 1 });
    expect((await box.next((t) => t === 'devices/lamp-1/set')).payload.toString()).toBe('on');
    await dev.publishAsync('devices/lamp-1/state', 'on', { qos: 1 });

    await dev.publishAsync('$aws/things/lamp-1/shadow/update', JSON.stringify({ state: { reported: { on: true } }, clientToken: 'lamp' }), { qos: 1 });
    const accepted = json((await box.next((t) => t.endsWith('/update/accepted'))).payload);
    expect(accepted).toMatchObject({ state: { reported: { on: true } }, version: 1, clientToken: 'lamp' });
    await dev.endAsync();
  });

  it('no client certificate: refused in the TLS handshake', async () => {
    const r = await attempt(c.tlsUrl, { ca: lamp.ca, clientId: 'lamp-1' });
    expect(r.kind).not.toBe('connected');
    const line = await lastLog('COORD_ERR_DEVICE_CERT_REFUSED', (l) => String(l.reason).includes('did not return a certificate'));
    expect(line.reason).toMatch(/certificate/);
  });

  it('a certificate from another CA: refused in the TLS handshake', async () => {
    const other = await createTestCa('CN=someone else');
    const { certPem, keyPem } = await other.issueClientCert('lamp-1');
    const r = await attempt(c.tlsUrl, { ca: lamp.ca, cert: certPem, key: keyPem, clientId: 'lamp-1' });
    expect(r.kind).not.toBe('connected');
    await lastLog('COORD_ERR_DEVICE_CERT_REFUSED', (l) => /UNABLE_TO_(VERIFY_LEAF_SIGNATURE|GET_ISSUER_CERT)/.test(String(l.reason)));
  });

  it('an expired certificate of the gateway CA for a registered thing: refused in the TLS handshake', async () => {
    const ca = await loadDeviceCa(pkiFiles(c.dataDir));
    const day = 86_400_000;
    const expired = await ca.issueDevice('lamp-1', { notBefore: new Date(Date.now() - 3 * day), notAfter: new Date(Date.now() - day) });
    const r = await attempt(c.tlsUrl, { ca: lamp.ca, cert: expired.certPem, key: expired.keyPem, clientId: 'lamp-1' });
    expect(r.kind).not.toBe('connected');
    await lastLog('COORD_ERR_DEVICE_CERT_REFUSED', (l) => String(l.reason).includes('CERT_HAS_EXPIRED'));
  });

  it('a valid certificate of the gateway CA that is not registered: CONNACK 5', async () => {
    const ca = await loadDeviceCa(pkiFiles(c.dataDir));
    const unregistered = await ca.issueDevice('lamp-1', { days: 1 });
    const r = await attempt(c.tlsUrl, { ca: lamp.ca, cert: unregistered.certPem, key: unregistered.keyPem, clientId: 'lamp-1' });
    expect(r).toEqual({ kind: 'refused', returnCode: 5 });
    await lastLog('COORD_ERR_DEVICE_NOT_AUTHORIZED', (l) => l.fingerprint === unregistered.fingerprint);
  });

  it('client id different from the thing name in the certificate: CONNACK 5', async () => {
    const r = await attempt(c.tlsUrl, { ca: lamp.ca, cert: lamp.cert, key: lamp.key, clientId: 'lamp-2' });
    expect(r).toEqual({ kind: 'refused', returnCode: 5 });
    const line = await lastLog('COORD_ERR_DEVICE_NOT_AUTHORIZED', (l) => l.clientId === 'lamp-2');
    expect(line.reason).toBe('client id must be the thing name lamp-1');
  });

  it('a policy group with connect: false refuses its devices: CONNACK 5', async () => {
    const bad = await addDevice(c, 'bad-1');
    expect(await attempt(c.tlsUrl, { ca: bad.ca, cert: bad.cert, key: bad.key, clientId: 'bad-1' })).toEqual({ kind: 'refused', returnCode: 5 });
    await lastLog('COORD_ERR_DEVICE_NOT_AUTHORIZED', (l) => l.clientId === 'bad-1' && String(l.reason).includes('quarantine'));
  });

  it('revoked: the live connection is closed at once, and the certificate is refused afterwards (CONNACK 5)', async () => {
    const door = await addDevice(c, 'door-1');
    const watcher = await connect(c.url, { clientId: 'revocation-watcher' });
    const events = inbox(watcher);
    await watcher.subscribeAsync('$aws/events/presence/disconnected/door-1', { qos: 1 });
    const dev = await connectDevice(c, door);
    const closed = new Promise<number>((resolve) => dev.once('close', () => resolve(Date.now())));
    const started = Date.now();
    const r = await runCli(['devices', 'revoke', 'door-1', '--data-dir', c.dataDir]);
    expect(r.code, r.stderr).toBe(0);
    const closedAt = await closed;
    expect(closedAt - started).toBeLessThan(2000); // includes spawning the CLI
    expect(json((await events.next()).payload)).toMatchObject({ clientId: 'door-1', disconnectReason: 'AUTH_ERROR', clientInitiatedDisconnect: false });
    await lastLog('COORD_ERR_DEVICE_NOT_AUTHORIZED', (l) => l.thing === 'door-1' && l.reason === 'device revoked');

    const again = await attempt(c.tlsUrl, { ca: door.ca, cert: door.cert, key: door.key, clientId: 'door-1' });
    expect(again).toEqual({ kind: 'refused', returnCode: 5 });
    await lastLog('COORD_ERR_DEVICE_NOT_AUTHORIZED', (l) => l.clientId === 'door-1' && String(l.reason).includes('revoked'));
  });

  it("an anonymous client cannot use a registered device's client id (it would take over the session): CONNACK 5", async () => {
    const dev = await connectDevice(c, lamp);
    expect(await attempt(c.url, { clientId: 'lamp-1' })).toEqual({ kind: 'refused', returnCode: 5 });
    await lastLog('COORD_ERR_DEVICE_NOT_AUTHORIZED', (l) => l.clientId === 'lamp-1' && l.listener === 'mqtt');
    expect(dev.connected).toBe(true);
    await dev.endAsync();
  });

  it('publish outside the policy: the client is disconnected and nothing is delivered', async () => {
    const spy = await connect(c.url, { clientId: 'spy-publish' });
    const seen = inbox(spy);
    await spy.subscribeAsync('sensors/#', { qos: 1 });
    const dev = await connectDevice(c, lamp);
    const closed = new Promise<void>((resolve) => dev.once('close', () => resolve()));
    dev.publish('sensors/lobby/temp', '99', { qos: 1 });
    await closed;
    await lastLog('COORD_ERR_MQTT_PUBLISH_DENIED', (l) => l.clientId === 'lamp-1' && l.topic === 'sensors/lobby/temp');
    await spy.publishAsync('sensors/marker', 'm', { qos: 1 });
    await seen.next((t) => t === 'sensors/marker');
    expect(seen.messages.map((m) => m.topic)).toEqual(['sensors/marker']);
  });

  it('subscribe outside the policy: SUBACK 0x80 for that filter, the rest granted', async () => {
    const dev = await connectDevice(c, lamp);
    expect(await suback(dev, ['#', 'devices/lamp-1/#', '$aws/things/plug-1/shadow/#', 'devices/+/state'])).toEqual([128, 1, 128, 128]);
    await lastLog('COORD_ERR_MQTT_SUBSCRIBE_DENIED', (l) => l.clientId === 'lamp-1' && l.topic === '#');
    await dev.endAsync();
  });

  it('receive outside the policy: a wide subscription delivers only what the policy lets the device receive', async () => {
    const sensor = await addDevice(c, 'sensor-r', ['--attr', 'room=lobby']);
    const dev = await connectDevice(c, sensor);
    const box = inbox(dev);
    // Both allowed to subscribe (shared/#, the own shadow tree); receive is narrower.
    const granted = await dev.subscribeAsync(['shared/#', '$aws/things/sensor-r/shadow/#'], { qos: 1 });
    expect(granted.map((g) => g.qos)).toEqual([1, 1]);
    const other = await connect(c.url, { clientId: 'publisher-r' });
    await other.publishAsync('shared/secret/plan', 'no', { qos: 1 });
    await other.publishAsync('shared/lobby/temp', '21', { qos: 1 });
    // A request on its own shadow's request topic is not a response: not delivered; the response is.
    await other.publishAsync('$aws/things/sensor-r/shadow/update', JSON.stringify({ state: { desired: { x: 1 } } }), { qos: 1 });
    await box.next((t) => t === '$aws/things/sensor-r/shadow/update/accepted');
    await box.next((t) => t === 'shared/lobby/temp');
    await other.publishAsync('shared/lobby/marker', 'm', { qos: 1 });
    await box.next((t) => t === 'shared/lobby/marker');
    const topics = box.messages.map((m) => m.topic);
    expect(topics).not.toContain('shared/secret/plan');
    expect(topics).not.toContain('$aws/things/sensor-r/shadow/update');
    await dev.endAsync();
  });

  it("another device's shadow: 403 on /rejected, the shadow untouched, the device stays connected", async () => {
    const observer = await connect(c.url, { clientId: 'observer-403' });
    const seen = inbox(observer);
    await observer.subscribeAsync('$aws/things/plug-9/shadow/+/rejected', { qos: 1 });
    const dev = await connectDevice(c, lamp);
    const box = inbox(dev);
    await dev.subscribeAsync('$aws/things/lamp-1/shadow/get/+', { qos: 1 });
    await dev.publishAsync('$aws/things/plug-9/shadow/update', JSON.stringify({ state: { desired: { on: true } }, clientToken: 'intruder' }), { qos: 1 });
    expect(json((await seen.next((t) => t.endsWith('/update/rejected'))).payload)).toMatchObject({ code: 403, message: 'Forbidden', clientToken: 'intruder' });
    await dev.publishAsync('$aws/things/plug-9/shadow/get', '{}', { qos: 1 });
    expect(json((await seen.next((t) => t.endsWith('/get/rejected'))).payload)).toMatchObject({ code: 403 });
    await lastLog('COORD_ERR_SHADOW_REJECTED', (l) => l.clientId === 'lamp-1' && l.thing === 'plug-9');
    // Still connected: its own shadow answers.
    await dev.publishAsync('$aws/things/lamp-1/shadow/get', '{}', { qos: 1 });
    await box.next((t) => t === '$aws/things/lamp-1/shadow/get/accepted');
    const r = await runCli(['shadow', 'get', 'plug-9', '--data-dir', c.dataDir]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/404|No shadow/);
    await dev.endAsync();
  });

  it('a policy group grants a shared topic to its members and one device\'s shadow to controllers', async () => {
    const [a, b, ctl] = await Promise.all([addDevice(c, 'sensor-a', ['--attr', 'room=lobby']), addDevice(c, 'sensor-b', ['--attr', 'room=lobby']), addDevice(c, 'ctl-1')]);
    const devA = await connectDevice(c, a);
    const devB = await connectDevice(c, b);
    const boxB = inbox(devB);
    await devB.subscribeAsync('shared/lobby/#', { qos: 1 });
    await devA.publishAsync('shared/lobby/temp', '21.5', { qos: 1 });
    expect((await boxB.next((t) => t === 'shared/lobby/temp')).payload.toString()).toBe('21.5');

    const control = await connectDevice(c, ctl);
    const boxC = inbox(control);
    expect((await control.subscribeAsync('$aws/things/plug-1/shadow/update/+', { qos: 1 })).map((g) => g.qos)).toEqual([1]);
    await control.publishAsync('$aws/things/plug-1/shadow/update', JSON.stringify({ state: { desired: { on: true } }, clientToken: 'ctl' }), { qos: 1 });
    expect(json((await boxC.next((t) => t.endsWith('/update/accepted'))).payload)).toMatchObject({ state: { desired: { on: true } }, clientToken: 'ctl' });
    // plug-2 is not granted: 403.
    const observer = await connect(c.url, { clientId: 'observer-ctl' });
    const seen = inbox(observer);
    await observer.subscribeAsync('$aws/things/plug-2/shadow/update/rejected', { qos: 1 });
    await control.publishAsync('$aws/things/plug-2/shadow/update', JSON.stringify({ state: { desired: { on: true } } }), { qos: 1 });
    expect(json((await seen.next()).payload)).toMatchObject({ code: 403 });
    // Devices outside the groups get neither.
    const dev = await connectDevice(c, lamp);
    expect(await suback(dev, ['shared/lobby/#'])).toEqual([128]);
    await Promise.all([devA.endAsync(), devB.endAsync(), control.endAsync(), dev.endAsync()]);
  });
});
