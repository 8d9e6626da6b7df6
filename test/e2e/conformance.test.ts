/**
 * MQTT 3.1.1 rules aedes leaves to the embedder, the reserved-topic policy, bad input on the wire,
 * and the TLS listener.
 */
import { createConnection, type Socket } from 'node:net';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import mqttPacket, { type Packet } from 'mqtt-packet';
import { describe, expect, it } from 'vitest';
import { connect, inbox } from '../helpers/mqtt.js';
import { addDevice, certsInit } from '../helpers/devices.js';
import { runCli, startCoordinator, tempDir } from '../helpers/process.js';
import { selfSignedServerCert } from '../helpers/tls.js';

/** Sends raw bytes and collects the packets the broker answers with until it closes or `waitMs` passes. */
async function rawExchange(port: number, bytes: Buffer, waitMs = 1000): Promise<{ packets: Packet[]; closed: boolean }> {
  const socket: Socket = createConnection({ host: '127.0.0.1', port });
  const parser = mqttPacket.parser({ protocolVersion: 4 });
  const packets: Packet[] = [];
  parser.on('packet', (p) => packets.push(p));
  socket.on('data', (d) => parser.parse(d));
  await new Promise((r) => socket.once('connect', r));
  socket.write(bytes);
  const closed = await new Promise<boolean>((resolve) => {
    const timer = setTimeout(() => resolve(false), waitMs);
    socket.once('close', () => {
      clearTimeout(timer);
      resolve(true);
    });
  });
  socket.destroy();
  return { packets, closed };
}

function connectPacket(clientId: string, clean: boolean): Buffer {
  return mqttPacket.generate({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clientId, clean, keepalive: 30 });
}

/** CONNECT with a zero-byte client id and cleanSession=0, built by hand: client libraries refuse to send it. */
const EMPTY_ID_PERSISTENT_CONNECT = Buffer.from([
  0x10, 12, // CONNECT, remaining length
  0x00, 0x04, 0x4d, 0x51, 0x54, 0x54, // "MQTT"
  0x04, // protocol level 4 (3.1.1)
  0x00, // connect flags: cleanSession = 0
  0x00, 0x1e, // keepalive 30 s
  0x00, 0x00, // client id: zero bytes
]);

describe('MQTT 3.1.1 conformance', () => {
  it('[MQTT-3.1.3-8] refuses an empty client id with cleanSession=0: CONNACK 0x02, then close', async () => {
    const c = await startCoordinator();
    const { packets, closed } = await rawExchange(c.port, EMPTY_ID_PERSISTENT_CONNECT);
    expect(packets).toHaveLength(1);
    expect(packets[0]).toMatchObject({ cmd: 'connack', returnCode: 2, sessionPresent: false });
    expect(closed).toBe(true);
    await c.waitForLog((l) => l.code === 'COORD_ERR_MQTT_CLIENT_ID');
    await c.stop();
  });

  it('[MQTT-3.1.3-6] accepts an empty client id with cleanSession=1 and assigns one', async () => {
    const c = await startCoordinator();
    const { packets, closed } = await rawExchange(c.port, connectPacket('', true), 300);
    expect(packets[0]).toMatchObject({ cmd: 'connack', returnCode: 0 });
    expect(closed).toBe(false);
    await c.stop();
  });

  it('accepts client ids up to 128 bytes (AWS IoT limit) and refuses longer ones with 0x02', async () => {
    const c = await startCoordinator();
    const ok = await rawExchange(c.port, connectPacket('a'.repeat(128), true), 300);
    expect(ok.packets[0]).toMatchObject({ cmd: 'connack', returnCode: 0 });
    // 43 three-byte characters = 129 bytes: the limit is in bytes, not characters.
    const long = await rawExchange(c.port, connectPacket('€'.repeat(43), true));
    expect(long.packets[0]).toMatchObject({ cmd: 'connack', returnCode: 2 });
    expect(long.closed).toBe(true);
    await c.stop();
  });

  it('closes a connection that sends garbage, and keeps serving everyone else', async () => {
    const c = await startCoordinator();
    const bystander = await connect(c.url, { clientId: 'bystander' });
    const box = inbox(bystander);
    await bystander.subscribeAsync('still/here', { qos: 1 });
    for (const garbage of [Buffer.from([0xff, 0xff, 0xff, 0xff, 0xff]), Buffer.from('GET / HTTP/1.1\r\n\r\n'), Buffer.alloc(64, 0x30)]) {
      const { closed } = await rawExchange(c.port, garbage);
      expect(closed).toBe(true);
    }
    // A wildcard in a PUBLISH topic is a protocol violation [MQTT-3.3.2-2].
    const bad = await connect(c.url, { clientId: 'wildcard-publisher' });
    const gone = new Promise<void>((r) => bad.once('close', () => r()));
    bad.publish('a/+/b', 'x', { qos: 1 });
    await gone;
    await bystander.publishAsync('still/here', 'yes', { qos: 1 });
    expect((await box.next()).payload.toString()).toBe('yes');
    await c.stop();
  });
});

describe('reserved topic policy', () => {
  it('lets clients publish shadow requests but not other $ topics, and disconnects on a denied publish', async () => {
    const c = await startCoordinator();
    const watcher = await connect(c.url, { clientId: 'watcher' });
    const box = inbox(watcher);
    await watcher.subscribeAsync('$aws/things/+/shadow/#', { qos: 1 });
    const device = await connect(c.url, { clientId: 'lamp' });
    await device.publishAsync('$aws/things/lamp/shadow/update', '{"state":{"reported":{"on":true}}}', { qos: 1 });
    await device.publishAsync('$aws/things/lamp/shadow/name/cfg/get', '{}', { qos: 1 });
    await box.next((t) => t === '$aws/things/lamp/shadow/update');
    await box.next((t) => t === '$aws/things/lamp/shadow/name/cfg/get');
    const dropped = new Promise<void>((r) => device.once('close', () => r()));
    device.publish('$aws/things/lamp/shadow/update/accepted', '{"forged":true}', { qos: 1 });
    await dropped;
    await c.waitForLog((l) => l.code === 'COORD_ERR_MQTT_PUBLISH_DENIED' && l.topic === '$aws/things/lamp/shadow/update/accepted');
    await new Promise((r) => setTimeout(r, 100));
    // Responses come from the shadow service only; the forged one reached nobody.
    expect(box.messages.some((m) => m.payload.toString().includes('forged'))).toBe(false);
    expect(box.messages.map((m) => m.topic)).toContain('$aws/things/lamp/shadow/update/accepted');
    await c.stop();
  });

  it('answers SUBACK 0x80 for reserved filters outside the policy and grants the rest of the same SUBSCRIBE', async () => {
    const c = await startCoordinator();
    const subscribe = mqttPacket.generate({
      cmd: 'subscribe',
      messageId: 7,
      subscriptions: [
        { topic: '$SYS/#', qos: 1 },
        { topic: 'plain/#', qos: 1 },
        { topic: '$aws/events/presence/#', qos: 0 },
      ],
    });
    const { packets } = await rawExchange(c.port, Buffer.concat([connectPacket('curious', true), subscribe]), 500);
    expect(packets.map((p) => p.cmd).slice(0, 2)).toEqual(['connack', 'suback']);
    expect(packets[1]).toMatchObject({ messageId: 7, granted: [128, 1, 0] });
    await c.waitForLog((l) => l.code === 'COORD_ERR_MQTT_SUBSCRIBE_DENIED');
    await c.stop();
  });

  it('refuses anonymous clients with 0x05 when broker.anonymous is "never"', async () => {
    const c = await startCoordinator({ env: { COORDINATOR_BROKER__ANONYMOUS: 'never' } });
    expect(c.logs.find((l) => l.listener === 'mqtt')?.anonymous).toBe(false);
    const { packets, closed } = await rawExchange(c.port, connectPacket('dev-1', true));
    expect(packets[0]).toMatchObject({ cmd: 'connack', returnCode: 5 });
    expect(closed).toBe(true);
    await c.waitForLog((l) => l.code === 'COORD_ERR_MQTT_NOT_AUTHORIZED');
    await c.stop();
  });
});

describe('TLS listener', () => {
  it('serves MQTT over mutual TLS with the configured server certificate; devices present their issued certificate', async () => {
    const dir = tempDir();
    const { certPem, keyPem } = await selfSignedServerCert();
    writeFileSync(join(dir, 'server.crt'), certPem);
    writeFileSync(join(dir, 'server.key'), keyPem);
    // The device CA comes from the gateway PKI (caFile not set).
    await certsInit(dir);
    const config = join(dir, 'config.json');
    writeFileSync(
      config,
      JSON.stringify({ listeners: { mqtts: { enabled: true, port: 0, certFile: join(dir, 'server.crt'), keyFile: join(dir, 'server.key') } } }),
    );
    const c = await startCoordinator({ dataDir: dir, args: ['--config', config] });
    const tls = c.logs.find((l) => l.listener === 'mqtts')!;
    expect(tls.msg).toBe(`mqtts listener on mqtts://127.0.0.1:${tls.port as number}`);
    expect(tls.anonymous).toBe(false);
    const device = await addDevice(c, 'tls-dev');
    const secure = await connect(`mqtts://127.0.0.1:${tls.port as number}`, { ca: certPem, cert: device.cert, key: device.key, servername: 'localhost', clientId: 'tls-dev' });
    const plain = await connect(c.url, { clientId: 'plain-dev' });
    const box = inbox(plain);
    await plain.subscribeAsync('devices/tls-dev/hello', { qos: 1 });
    await secure.publishAsync('devices/tls-dev/hello', 'over tls', { qos: 1 });
    expect((await box.next()).payload.toString()).toBe('over tls');
    // A client that does not trust the certificate cannot connect.
    await expect(connect(`mqtts://127.0.0.1:${tls.port as number}`, { rejectUnauthorized: true, servername: 'localhost', cert: device.cert, key: device.key })).rejects.toThrow();
    await c.stop();
  });

  it('refuses to start when the certificate file is missing', async () => {
    const dir = tempDir();
    await certsInit(dir);
    const config = join(dir, 'config.json');
    writeFileSync(config, JSON.stringify({ listeners: { mqtts: { enabled: true, port: 0, certFile: join(dir, 'nope.crt'), keyFile: join(dir, 'nope.key') } } }));
    await expect(startCoordinator({ dataDir: dir, args: ['--config', config] })).rejects.toThrow(/COORD_ERR_BROKER_TLS/);
  });

  it('refuses to start without certificate files or a gateway PKI, naming `coordinator certs init` (exit 78)', async () => {
    const dir = tempDir();
    const config = join(dir, 'config.json');
    writeFileSync(config, JSON.stringify({ listeners: { mqtts: { enabled: true, port: 0 } } }));
    const r = await runCli(['start', '--data-dir', dir, '--mqtt-port', '0', '--config', config]);
    expect(r.code).toBe(78);
    expect(r.stderr).toMatch(/COORD_ERR_CONFIG_INVALID: .*coordinator certs init/);
  });
});

describe('limits and wills', () => {
  it('accepts keepalive 0 (no keepalive), which MQTT 3.1.1 allows', async () => {
    const c = await startCoordinator();
    const client = await connect(c.url, { keepalive: 0 });
    expect(client.connack.returnCode).toBe(0);
    await c.stop();
  });

  it('refuses a CONNECT whose will is on a reserved topic or not a valid topic name (0x05)', async () => {
    const c = await startCoordinator();
    for (const topic of ['$aws/events/presence/connected/thermostat-1', '$aws/things/x/shadow/update/accepted', 'a/+/c']) {
      const connectWithWill = mqttPacket.generate({
        cmd: 'connect',
        protocolId: 'MQTT',
        protocolVersion: 4,
        clientId: 'forger',
        clean: true,
        keepalive: 30,
        will: { topic, payload: Buffer.from('{}'), qos: 1, retain: false },
      });
      const { packets, closed } = await rawExchange(c.port, connectWithWill);
      expect(packets[0], topic).toMatchObject({ cmd: 'connack', returnCode: 5 });
      expect(closed).toBe(true);
    }
    await c.stop();
  });

  it('disconnects a client publishing over broker.maxPayloadBytes and stores nothing of it', async () => {
    const c = await startCoordinator({ env: { COORDINATOR_BROKER__MAX_PAYLOAD_BYTES: '1024' } });
    const big = await connect(c.url, { clientId: 'big-sender' });
    const closed = new Promise<void>((r) => big.once('close', () => r()));
    big.publish('blobs/one', Buffer.alloc(1025, 1), { qos: 1, retain: true });
    await closed;
    await c.waitForLog((l) => l.code === 'COORD_ERR_MQTT_PAYLOAD_TOO_LARGE');
    const ok = await connect(c.url);
    const box = inbox(ok);
    await ok.publishAsync('blobs/two', Buffer.alloc(1024, 2), { qos: 1, retain: true });
    await ok.subscribeAsync('blobs/#', { qos: 1 });
    await box.next((t) => t === 'blobs/two');
    await new Promise((r) => setTimeout(r, 200));
    expect(box.messages.map((m) => m.topic)).toEqual(['blobs/two']);
    await c.stop();
  });

});
