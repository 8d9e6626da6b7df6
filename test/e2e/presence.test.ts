/** AWS IoT lifecycle events on $aws/events/presence/{connected,disconnected}/<clientId>. */
import { createConnection } from 'node:net';
import { describe, expect, it } from 'vitest';
import { connect, inbox } from '../helpers/mqtt.js';
import { startCoordinator } from '../helpers/process.js';

type Event = Record<string, unknown>;
const parse = (p: Buffer): Event => JSON.parse(p.toString()) as Event;

describe('presence events', () => {
  it('announces connect and client-initiated disconnect with AWS payload fields', async () => {
    const c = await startCoordinator();
    const watcher = await connect(c.url, { clientId: 'watcher' });
    const box = inbox(watcher);
    await watcher.subscribeAsync('$aws/events/presence/+/+', { qos: 1 });

    const before = Date.now();
    const dev = await connect(c.url, { clientId: 'thermo-1' });
    const connected = await box.next((t) => t === '$aws/events/presence/connected/thermo-1');
    const ev = parse(connected.payload);
    expect(ev).toMatchObject({ clientId: 'thermo-1', eventType: 'connected', principalIdentifier: 'anonymous', ipAddress: '127.0.0.1' });
    expect(Number.isInteger(ev.versionNumber)).toBe(true);
    expect(ev.timestamp).toBeGreaterThanOrEqual(before);
    expect(ev.sessionIdentifier).toMatch(/^[0-9a-f-]{36}$/);

    await dev.endAsync();
    const gone = parse((await box.next((t) => t === '$aws/events/presence/disconnected/thermo-1')).payload);
    expect(gone).toMatchObject({
      clientId: 'thermo-1',
      eventType: 'disconnected',
      clientInitiatedDisconnect: true,
      disconnectReason: 'CLIENT_INITIATED_DISCONNECT',
      sessionIdentifier: ev.sessionIdentifier,
      principalIdentifier: 'anonymous',
      ipAddress: '127.0.0.1',
      versionNumber: ev.versionNumber,
    });
    await c.stop();
  });

  it('reports CONNECTION_LOST when the socket drops without DISCONNECT', async () => {
    const c = await startCoordinator();
    const watcher = await connect(c.url, { clientId: 'watcher' });
    const box = inbox(watcher);
    await watcher.subscribeAsync('$aws/events/presence/#', { qos: 1 });
    const dev = await connect(c.url, { clientId: 'flaky' });
    await box.next((t) => t.endsWith('/connected/flaky'));
    dev.stream.destroy();
    const gone = parse((await box.next((t) => t.endsWith('/disconnected/flaky'))).payload);
    expect(gone).toMatchObject({ disconnectReason: 'CONNECTION_LOST', clientInitiatedDisconnect: false });
    await c.stop();
  });

  it('reports DUPLICATE_CLIENTID for the session taken over, then the new connection', async () => {
    const c = await startCoordinator();
    const watcher = await connect(c.url, { clientId: 'watcher' });
    const box = inbox(watcher);
    await watcher.subscribeAsync('$aws/events/presence/#', { qos: 1 });
    await connect(c.url, { clientId: 'twin' });
    const firstUp = parse((await box.next((t) => t.endsWith('/connected/twin'))).payload);
    await connect(c.url, { clientId: 'twin' });
    const down = parse((await box.next((t) => t.endsWith('/disconnected/twin'))).payload);
    const secondUp = parse((await box.next((t) => t.endsWith('/connected/twin'))).payload);
    expect(down).toMatchObject({ disconnectReason: 'DUPLICATE_CLIENTID', sessionIdentifier: firstUp.sessionIdentifier });
    expect(secondUp.versionNumber as number).toBeGreaterThan(firstUp.versionNumber as number);
    expect(secondUp.sessionIdentifier).not.toBe(firstUp.sessionIdentifier);
    await c.stop();
  });

  it('reports FORBIDDEN_ACCESS when a client is dropped for a denied publish', async () => {
    const c = await startCoordinator();
    const watcher = await connect(c.url, { clientId: 'watcher' });
    const box = inbox(watcher);
    await watcher.subscribeAsync('$aws/events/presence/#', { qos: 1 });
    const rogue = await connect(c.url, { clientId: 'rogue' });
    rogue.publish('$aws/events/presence/connected/someone-else', '{}', { qos: 1 });
    const gone = parse((await box.next((t) => t.endsWith('/disconnected/rogue'))).payload);
    expect(gone.disconnectReason).toBe('FORBIDDEN_ACCESS');
    // The forged event never reached anyone.
    expect(box.messages.some((m) => m.topic.endsWith('/someone-else'))).toBe(false);
    await c.stop();
  });

  it('does not deliver presence events to a "#" subscriber [MQTT-4.7.2-1]', async () => {
    const c = await startCoordinator();
    const all = await connect(c.url, { clientId: 'everything' });
    const box = inbox(all);
    await all.subscribeAsync('#', { qos: 1 });
    const dev = await connect(c.url, { clientId: 'quiet' });
    await dev.publishAsync('hello', 'x', { qos: 1 });
    await box.next((t) => t === 'hello');
    await dev.endAsync();
    await new Promise((r) => setTimeout(r, 200));
    expect(box.messages.filter((m) => m.topic.startsWith('$'))).toEqual([]);
    await c.stop();
  });

  it('announces nothing for a connection that never completes CONNECT', async () => {
    const c = await startCoordinator();
    const watcher = await connect(c.url, { clientId: 'watcher' });
    const box = inbox(watcher);
    await watcher.subscribeAsync('$aws/events/presence/#', { qos: 1 });
    const raw = createConnection({ host: '127.0.0.1', port: c.port });
    await new Promise((r) => raw.once('connect', r));
    raw.destroy();
    const probe = await connect(c.url, { clientId: 'probe' });
    await box.next((t) => t.endsWith('/connected/probe'));
    // (The watcher may see its own connected event: lifecycle events race the SUBSCRIBE, as on AWS.)
    expect(box.messages.map((m) => m.topic).filter((t) => !t.endsWith('/watcher'))).toEqual(['$aws/events/presence/connected/probe']);
    await probe.endAsync();
    await c.stop();
  });

  it('announces SERVER_INITIATED_DISCONNECT for every device when the coordinator stops, durably', async () => {
    const first = await startCoordinator();
    const watcher = await connect(first.url, { clientId: 'fleet-monitor', clean: false });
    await watcher.subscribeAsync('$aws/events/presence/disconnected/+', { qos: 1 });
    await watcher.endAsync();
    await connect(first.url, { clientId: 'pump-1' });
    await connect(first.url, { clientId: 'pump-2' });
    const { code } = await first.stop('SIGTERM');
    expect(code).toBe(0);

    const second = await startCoordinator({ dataDir: first.dataDir });
    const back = await connect(second.url, { clientId: 'fleet-monitor', clean: false });
    const box = inbox(back);
    const one = parse((await box.next((t) => t.endsWith('/pump-1'))).payload);
    const two = parse((await box.next((t) => t.endsWith('/pump-2'))).payload);
    for (const ev of [one, two]) expect(ev).toMatchObject({ disconnectReason: 'SERVER_INITIATED_DISCONNECT', clientInitiatedDisconnect: false });
    await second.stop();
  });
});
