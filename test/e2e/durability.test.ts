/** Acknowledged = on disk: broker state survives SIGKILL and a restart on the same data directory. */
import { describe, expect, it } from 'vitest';
import { connect, inbox } from '../helpers/mqtt.js';
import { startCoordinator } from '../helpers/process.js';

describe('broker persistence across SIGKILL', () => {
  it("delivers a persistent session's queued QoS 1 messages after a restart", async () => {
    const first = await startCoordinator();
    const device = await connect(first.url, { clientId: 'relay-12', clean: false });
    await device.subscribeAsync('cmd/relay-12/#', { qos: 1 });
    await device.endAsync();

    const controller = await connect(first.url, { clientId: 'controller' });
    const sent = Array.from({ length: 50 }, (_, i) => `switch-${i}`);
    // Each publish resolves on PUBACK: from here on the broker owes the message to relay-12.
    for (const payload of sent) await controller.publishAsync('cmd/relay-12/switch', payload, { qos: 1 });
    await first.kill();

    const second = await startCoordinator({ dataDir: first.dataDir });
    const back = await connect(second.url, { clientId: 'relay-12', clean: false });
    expect(back.connack.sessionPresent).toBe(true);
    const box = inbox(back);
    await box.count(sent.length, undefined, 10_000);
    expect(box.messages.map((m) => m.payload.toString())).toEqual(sent);
    await back.endAsync();
    await second.stop();
  });

  it('keeps the subscription of a persistent session, so messages published after the restart are queued too', async () => {
    const first = await startCoordinator();
    const device = await connect(first.url, { clientId: 'meter-3', clean: false });
    await device.subscribeAsync('meters/3/#', { qos: 1 });
    await device.endAsync();
    await first.kill();

    const second = await startCoordinator({ dataDir: first.dataDir });
    const pub = await connect(second.url);
    await pub.publishAsync('meters/3/read', 'now', { qos: 1 });
    const back = await connect(second.url, { clientId: 'meter-3', clean: false });
    const box = inbox(back);
    expect((await box.next()).payload.toString()).toBe('now');
    await second.stop();
  });

  it('keeps retained messages', async () => {
    const first = await startCoordinator();
    const pub = await connect(first.url);
    await pub.publishAsync('config/site', '{"tz":"Europe/Berlin"}', { qos: 1, retain: true });
    await pub.publishAsync('config/gone', 'x', { qos: 1, retain: true });
    await pub.publishAsync('config/gone', '', { qos: 1, retain: true });
    await first.kill();

    const second = await startCoordinator({ dataDir: first.dataDir });
    const sub = await connect(second.url);
    const box = inbox(sub);
    await sub.subscribeAsync('config/#', { qos: 1 });
    const m = await box.next();
    expect(m).toMatchObject({ topic: 'config/site', retain: true });
    expect(m.payload.toString()).toBe('{"tz":"Europe/Berlin"}');
    await new Promise((r) => setTimeout(r, 200));
    expect(box.messages).toHaveLength(1);
    await second.stop();
  });

  it('publishes the will of a client that was connected when the coordinator was killed', async () => {
    const first = await startCoordinator();
    const watcher = await connect(first.url, { clientId: 'watcher', clean: false });
    await watcher.subscribeAsync('status/#', { qos: 1 });
    await watcher.endAsync();
    await connect(first.url, { clientId: 'plug-9', will: { topic: 'status/plug-9', payload: Buffer.from('offline'), qos: 1, retain: false } });
    await first.kill();

    const second = await startCoordinator({ dataDir: first.dataDir });
    const back = await connect(second.url, { clientId: 'watcher', clean: false });
    const box = inbox(back);
    const will = await box.next((t) => t === 'status/plug-9');
    expect(will.payload.toString()).toBe('offline');
    await second.stop();
  });

  it('a clean session discards what a previous persistent session left', async () => {
    const first = await startCoordinator();
    const device = await connect(first.url, { clientId: 'sensor-5', clean: false });
    await device.subscribeAsync('s5/#', { qos: 1 });
    await device.endAsync();
    const pub = await connect(first.url);
    await pub.publishAsync('s5/x', 'queued', { qos: 1 });
    const clean = await connect(first.url, { clientId: 'sensor-5', clean: true });
    expect(clean.connack.sessionPresent).toBe(false);
    await clean.endAsync();
    await first.kill();

    const second = await startCoordinator({ dataDir: first.dataDir });
    const again = await connect(second.url, { clientId: 'sensor-5', clean: false });
    expect(again.connack.sessionPresent).toBe(false);
    const box = inbox(again);
    await new Promise((r) => setTimeout(r, 300));
    expect(box.messages).toHaveLength(0);
    await second.stop();
  });

  it('a PUBACK means the message is on disk: SIGKILL the moment it arrives, nothing is lost', async () => {
    let dataDir: string | undefined;
    {
      const c = await startCoordinator();
      dataDir = c.dataDir;
      const sub = await connect(c.url, { clientId: 'archiver', clean: false });
      await sub.subscribeAsync('readings/#', { qos: 1 });
      await sub.endAsync();
      await c.stop();
    }
    const expected: string[] = [];
    for (let round = 0; round < 6; round++) {
      const c = await startCoordinator({ dataDir });
      const pub = await connect(c.url, { clientId: `pub-${round}` });
      // Fire a burst without waiting, so acknowledgements race the commits; kill on the last PUBACK.
      const burst = Array.from({ length: 20 }, (_, i) => `r${round}-m${i}`);
      expected.push(...burst);
      const acks = burst.map((payload) => pub.publishAsync('readings/power', payload, { qos: 1, retain: true }));
      await acks[acks.length - 1];
      await c.kill();
      await Promise.allSettled(acks);
    }
    const c = await startCoordinator({ dataDir });
    const late = await connect(c.url, { clientId: 'late' });
    const retained = inbox(late);
    await late.subscribeAsync('readings/power', { qos: 1 });
    expect((await retained.next()).payload.toString()).toBe(expected[expected.length - 1]);
    const archiver = await connect(c.url, { clientId: 'archiver', clean: false });
    const box = inbox(archiver);
    await box.count(expected.length, undefined, 10_000);
    expect(box.messages.map((m) => m.payload.toString())).toEqual(expected);
    await c.stop();
  });
});
