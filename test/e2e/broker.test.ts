/** The started coordinator as a device sees it: exchange messages, retained state, clean shutdown, status. */
import { describe, expect, it } from 'vitest';
import { connect, inbox } from '../helpers/mqtt.js';
import { runCli, startCoordinator } from '../helpers/process.js';
import { MIGRATIONS } from '../../src/store/migrations.js';

describe('coordinator start', () => {
  it('prints one line per listener with the actual address and port', async () => {
    const c = await startCoordinator();
    const line = c.logs.find((l) => l.listener === 'mqtt')!;
    expect(line.msg).toBe(`mqtt listener on mqtt://127.0.0.1:${c.port}`);
    expect(c.port).toBeGreaterThan(0);
    expect(c.logs.some((l) => String(l.msg).startsWith('development mode: anonymous MQTT clients are accepted on loopback'))).toBe(true);
    await c.stop();
  });

  it('exchanges QoS 0 and QoS 1 messages between two clients', async () => {
    const c = await startCoordinator();
    const sub = await connect(c.url, { clientId: 'sub-1' });
    const box = inbox(sub);
    await sub.subscribeAsync('sensors/+/temp', { qos: 1 });
    const pub = await connect(c.url, { clientId: 'pub-1' });
    await pub.publishAsync('sensors/a/temp', '21.5', { qos: 0 });
    // MQTT.js resolves a QoS 1 publish only when the PUBACK has arrived.
    const sent = await pub.publishAsync('sensors/b/temp', '22.0', { qos: 1 });
    expect(sent).toMatchObject({ cmd: 'publish', qos: 1 });
    const first = await box.next((t) => t === 'sensors/a/temp');
    const second = await box.next((t) => t === 'sensors/b/temp');
    expect(first.payload.toString()).toBe('21.5');
    expect(second.payload.toString()).toBe('22.0');
    await Promise.all([sub.endAsync(), pub.endAsync()]);
    await c.stop();
  });

  it('delivers retained messages to late subscribers and clears them with an empty payload', async () => {
    const c = await startCoordinator();
    const pub = await connect(c.url);
    await pub.publishAsync('building/lobby/light', 'on', { qos: 1, retain: true });
    const late = await connect(c.url);
    const box = inbox(late);
    await late.subscribeAsync('building/#', { qos: 1 });
    const m = await box.next();
    expect(m).toMatchObject({ topic: 'building/lobby/light', retain: true });
    await pub.publishAsync('building/lobby/light', '', { qos: 1, retain: true });
    const later = await connect(c.url);
    const box2 = inbox(later);
    await later.subscribeAsync('building/#', { qos: 1 });
    await new Promise((r) => setTimeout(r, 200));
    expect(box2.messages.filter((x) => x.retain)).toHaveLength(0);
    await c.stop();
  });

  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    it(`${signal} with clients connected disconnects them and exits 0 within 2 s`, async () => {
      const c = await startCoordinator();
      const clients = await Promise.all([1, 2, 3].map((i) => connect(c.url, { clientId: `d${i}`, clean: i !== 2 })));
      const closed = clients.map((cl) => new Promise<void>((r) => cl.once('close', () => r())));
      await clients[1]!.subscribeAsync('x/#', { qos: 1 });
      const { code, ms } = await c.stop(signal);
      expect(code).toBe(0);
      expect(ms).toBeLessThan(2000);
      await Promise.all(closed);
      expect(c.logs.some((l) => l.msg === 'coordinator stopped')).toBe(true);
    });
  }

  it('refuses to start a second coordinator on the same data directory', async () => {
    const c = await startCoordinator();
    const second = await runCli(['start', '--mqtt-port', '0', '--data-dir', c.dataDir]);
    expect(second.code).toBe(69);
    expect(second.stderr).toContain('COORD_ERR_DATA_DIR_IN_USE');
    // The first one is untouched.
    const client = await connect(c.url);
    await client.endAsync();
    await c.stop();
  });

  it('fails with COORD_ERR_BROKER_LISTEN when the port is taken', async () => {
    const c = await startCoordinator();
    const r = await runCli(['start', '--mqtt-port', String(c.port), '--data-dir', `${c.dataDir}-other`]);
    expect(r.code).toBe(69);
    expect(r.stderr).toContain('COORD_ERR_BROKER_LISTEN');
    await c.stop();
  });
});

describe('coordinator status', () => {
  it('prints version, uptime, listeners, clients and store health', async () => {
    const c = await startCoordinator({ args: ['--thing-name', 'gw-status'] });
    const dev = await connect(c.url, { clientId: 'thermostat-7' });
    const human = await runCli(['status', '--data-dir', c.dataDir]);
    expect(human.code).toBe(0);
    expect(human.stdout).toMatch(/coordinator \d+\.\d+\.\d+ {2}thing gw-status/);
    expect(human.stdout).toContain(`mqtt://127.0.0.1:${c.port}`);
    expect(human.stdout).toContain('1 connected: thermostat-7');
    expect(human.stdout).toMatch(/store {7}ok/);

    const json = await runCli(['status', '--json', '--data-dir', c.dataDir]);
    const status = JSON.parse(json.stdout) as Record<string, unknown>;
    expect(status).toMatchObject({
      thingName: 'gw-status',
      listeners: [{ name: 'mqtt', port: c.port, anonymous: true }],
      clients: { connected: 1, ids: ['thermostat-7'] },
      droppedMessages: 0,
      store: { ok: true, schemaVersion: MIGRATIONS.length },
    });
    expect(typeof status.uptimeSeconds).toBe('number');
    expect(status.version).toMatch(/^\d+\.\d+\.\d+/);
    await dev.endAsync();
    await c.stop();
  });

  it('says clearly when no coordinator is running', async () => {
    const r = await runCli(['status', '--data-dir', '/tmp/definitely-not-a-coordinator-dir']);
    expect(r.code).toBe(69);
    expect(r.stderr).toContain('COORD_ERR_ADMIN_UNREACHABLE');
  });
});
