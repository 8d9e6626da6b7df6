/**
 * /update/delta and /update/documents are only built for someone who receives them: a subscriber that
 * arrives after updates went unheard gets the next ones, and so does a persistent session while it is
 * offline (its queued copy is delivered when it reconnects).
 */
import { describe, expect, it } from 'vitest';
import { connect, inbox } from '../helpers/mqtt.js';
import { startCoordinator } from '../helpers/process.js';

type Doc = Record<string, unknown>;
const json = (p: Buffer): Doc => JSON.parse(p.toString()) as Doc;
const UPDATE = '$aws/things/heater/shadow/update';
const DOCUMENTS = '$aws/things/heater/shadow/update/documents';
const DELTA = '$aws/things/heater/shadow/update/delta';

describe('shadow responses nobody listened to', () => {
  it('reach a subscriber that arrives after updates went unheard', async () => {
    const c = await startCoordinator();
    const device = await connect(c.url, { clientId: 'heater' });
    const deviceBox = inbox(device);
    await device.subscribeAsync('$aws/things/heater/shadow/update/accepted', { qos: 1 });
    for (let i = 1; i <= 3; i++) {
      await device.publishAsync(UPDATE, JSON.stringify({ state: { desired: { t: i } } }), { qos: 1 });
      await deviceBox.next((t) => t.endsWith('/update/accepted'));
    }

    const app = await connect(c.url, { clientId: 'app' });
    const box = inbox(app);
    await app.subscribeAsync([DOCUMENTS, DELTA], { qos: 1 });
    await device.publishAsync(UPDATE, JSON.stringify({ state: { desired: { t: 4 } }, clientToken: 'late' }), { qos: 1 });
    expect(json((await box.next((t) => t === DOCUMENTS)).payload)).toMatchObject({
      previous: { state: { desired: { t: 3 } }, version: 3 },
      current: { state: { desired: { t: 4 } }, version: 4 },
      clientToken: 'late',
    });
    expect(json((await box.next((t) => t === DELTA)).payload)).toMatchObject({ state: { t: 4 }, version: 4 });
    await c.stop();
  });

  it('are queued for an offline persistent session and delivered when it reconnects', async () => {
    const c = await startCoordinator();
    const watcher = await connect(c.url, { clientId: 'watcher', clean: false });
    await watcher.subscribeAsync(DOCUMENTS, { qos: 1 });
    await watcher.endAsync();

    const device = await connect(c.url, { clientId: 'heater' });
    const deviceBox = inbox(device);
    await device.subscribeAsync('$aws/things/heater/shadow/update/accepted', { qos: 1 });
    await device.publishAsync(UPDATE, JSON.stringify({ state: { reported: { t: 20 } }, clientToken: 'while-away' }), { qos: 1 });
    await deviceBox.next((t) => t.endsWith('/update/accepted'));

    const back = await connect(c.url, { clientId: 'watcher', clean: false });
    expect(back.connack.sessionPresent).toBe(true);
    expect(json((await inbox(back).next((t) => t === DOCUMENTS)).payload)).toMatchObject({
      current: { state: { reported: { t: 20 } }, version: 1 },
      clientToken: 'while-away',
    });
    await c.stop();
  });
});
