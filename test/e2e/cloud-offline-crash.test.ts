/**
 * Issue 7, acceptance 2 (the SIGKILL part): a gateway offline from its cloud spools cloud-bound
 * telemetry; it is SIGKILLed while offline, the instant its devices got their PUBACKs; after a restart, with the cloud (Mosquitto) back, every spooled
 * message reaches the cloud, in order. Real processes: the coordinator CLI, Mosquitto, MQTT.js clients.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { adminRequest } from '../../src/admin/client.js';
import { freePort, startMosquitto } from '../helpers/mosquitto.js';
import { connect, inbox } from '../helpers/mqtt.js';
import { startCoordinator, tempDir } from '../helpers/process.js';

describe('cloud spool across a SIGKILL while offline', () => {
  it('loses none of the spooled messages and delivers them in order once the cloud is back', async () => {
    const port = await freePort();
    const cloud = await startMosquitto({ persistence: true, port });
    // The cloud-side consumer's persistent session exists before the outage: it gets whatever arrives later.
    const first = await connect(cloud.url, { clientId: 'cloud-consumer', clean: false });
    await first.subscribeAsync('telemetry/#', { qos: 1 });
    await first.endAsync();
    await cloud.stop();

    const dataDir = tempDir('coord-offline-');
    const config = join(tempDir('coord-cfg-'), 'gateway.json');
    writeFileSync(config, JSON.stringify({ thingName: 'gw-offline', cloud: { url: cloud.url, reconnectMinMs: 50, reconnectMaxMs: 200 }, deployments: { healthWindowMs: 0 } }));
    const socket = join(dataDir, 'coordinator.sock');
    let gw = await startCoordinator({ dataDir, args: ['--config', config] });
    await adminRequest(socket, 'POST', '/v1/deployment', {
      document: { schema: 1, id: 'telemetry-up', tasks: [], routes: [{ source: 'device:*', filter: 'telemetry/#', target: 'cloud' }] },
    });
    for (let i = 0; i < 200; i++) {
      const r = await adminRequest<{ reported: { status?: string } | null }>(socket, 'GET', '/v1/deployment');
      if (r.reported?.status === 'SUCCEEDED') break;
      await new Promise((res) => setTimeout(res, 25));
    }

    // Acknowledged = durable: the gateway is SIGKILLed the moment the device has its last PUBACK, so a
    // message acknowledged before its spool write was on disk would be missing afterwards. Twice, the
    // second time after a restart that is still offline.
    const N = 30;
    let sent = 0;
    for (let round = 0; round < 2; round++) {
      if (round > 0) gw = await startCoordinator({ dataDir, args: ['--config', config] });
      const device = await connect(gw.url, { clientId: 'meter-9', reconnectPeriod: 0 });
      const acks = [];
      // Not awaited one by one: a window of PUBLISHes in flight, as a real device streams them.
      for (let i = 0; i < N; i++) acks.push(device.publishAsync('telemetry/meter-9', String(++sent), { qos: 1 }));
      await Promise.all(acks);
      await gw.kill();
      device.end(true);
    }
    await cloud.start();
    gw = await startCoordinator({ dataDir, args: ['--config', config] });
    const consumer = await connect(cloud.url, { clientId: 'cloud-consumer', clean: false });
    const box = inbox(consumer);
    await box.count(sent, undefined, 20_000);
    expect(box.messages.slice(0, sent).map((m) => m.payload.toString())).toEqual(Array.from({ length: sent }, (_, k) => String(k + 1)));
    for (let i = 0; i < 200; i++) {
      const s = await adminRequest<{ spool: { messages: number } }>(socket, 'GET', '/v1/cloud');
      if (s.spool.messages === 0) break;
      await new Promise((res) => setTimeout(res, 25));
    }
    expect((await adminRequest<{ spool: { messages: number } }>(socket, 'GET', '/v1/cloud')).spool.messages).toBe(0);
    await gw.stop();
    await cloud.stop();
  }, 60_000);
});
