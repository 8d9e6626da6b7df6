/**
 * Issue 7, acceptance 1: Mosquitto + `coordinator shadow-service` as the cloud. A deployment written to
 * the cloud's copy of the gateway's `deployment` shadow (by a plain MQTT client on Mosquitto, as a fleet
 * tool would) runs on the gateway, and the reported SUCCEEDED appears in the cloud shadow. Then the cloud
 * goes away and comes back: telemetry routed to the cloud meanwhile arrives in order.
 * Real components: a Mosquitto process, the shadow-service process, an embedded gateway.
 */
import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { startInProcess } from '../helpers/in-process.js';
import { startMosquitto, startShadowService } from '../helpers/mosquitto.js';
import { connect, inbox } from '../helpers/mqtt.js';

const dataUrl = (code: string): string => `data:text/javascript;base64,${Buffer.from(code).toString('base64')}`;
const sha = (code: string): string => createHash('sha256').update(code).digest('hex');
type Doc = Record<string, unknown>;

describe('the cloud link with Mosquitto + shadow-service as the cloud', () => {
  it('a deployment written to the cloud shadow runs on the gateway and SUCCEEDED appears in the cloud shadow', async () => {
    const broker = await startMosquitto({ persistence: true });
    const service = await startShadowService(broker.url);
    try {
      const { coordinator: gw, url: gwUrl } = await startInProcess({
        thingName: 'gw-moss',
        'cloud.url': broker.url,
        'cloud.reconnectMinMs': 50,
        'cloud.reconnectMaxMs': 300,
        'deployments.healthWindowMs': 300,
      });
      const fleet = await connect(broker.url, { clientId: 'fleet-tool' });
      const box = inbox(fleet);
      const prefix = '$aws/things/gw-moss/shadow/name/deployment';
      await fleet.subscribeAsync([`${prefix}/update/documents`, `${prefix}/update/accepted`], { qos: 1 });

      const code = `export default { onEvent(e) { return 'deployed from the cloud: ' + e.payload; } }`;
      const desired = {
        schema: 1,
        id: 'cloud-d1',
        tasks: [{ name: 'hello', version: '1.0.0', triggers: [{ topic: 'hello/in' }], bundle: { url: dataUrl(code), sha256: sha(code) } }],
        routes: [{ source: 'device:*', filter: 'telemetry/#', target: 'cloud' }],
      };
      await fleet.publishAsync(`${prefix}/update`, JSON.stringify({ state: { desired }, clientToken: 'fleet-1' }), { qos: 1 });
      // The gateway's reports arrive in the cloud shadow: IN_PROGRESS, then SUCCEEDED.
      const succeeded = await box.next((t, p) => {
        if (t !== `${prefix}/update/documents`) return false;
        const reported = ((JSON.parse(p.toString()) as Doc).current as { state?: { reported?: Doc } } | undefined)?.state?.reported;
        return reported?.id === 'cloud-d1' && reported.status === 'SUCCEEDED';
      }, 20_000);
      const reported = ((JSON.parse(succeeded.payload.toString()) as Doc).current as { state: { reported: Doc } }).state.reported;
      expect(reported).toMatchObject({ running: 'cloud-d1', tasks: [{ name: 'hello', version: '1.0.0' }] });
      await expect(gw.tasks.invoke('hello', { type: 'invoke', payload: 'hi' })).resolves.toBe('deployed from the cloud: hi');

      // The cloud goes away; telemetry routed to it is spooled, and arrives in order when it returns. The
      // cloud-side consumer has a persistent session (Mosquitto keeps it across its restart), so nothing
      // the gateway sends before the consumer reconnects is missed.
      const first = await connect(broker.url, { clientId: 'telemetry-sink', clean: false });
      await first.subscribeAsync('telemetry/#', { qos: 1 });
      await first.endAsync();
      await broker.stop();
      const device = await connect(gwUrl, { clientId: 'meter-3' });
      for (let i = 1; i <= 10; i++) await device.publishAsync('telemetry/meter-3', String(i), { qos: 1 });
      await broker.start();
      const watcher = await connect(broker.url, { clientId: 'telemetry-sink', clean: false });
      const sink = inbox(watcher);
      await sink.count(10, undefined, 20_000);
      expect(sink.messages.map((m) => m.payload.toString())).toEqual(['1', '2', '3', '4', '5', '6', '7', '8', '9', '10']);
      await gw.stop();
    } finally {
      await service.stop();
      await broker.stop();
    }
  }, 90_000);
});
