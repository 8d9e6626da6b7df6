/**
 * The cloud link with another coordinator as the upstream (issue 7, nested gateways): a deployment
 * written to the upstream's copy of the gateway's `deployment` shadow runs on the gateway and its
 * reported SUCCEEDED appears upstream; conflicts after a time apart follow the documented rules (desired:
 * the cloud wins; reported: the gateway wins); with both sides idle, versions stop moving.
 * Real components: two embedded coordinators (real brokers, stores, task hosts), MQTT between them.
 */
import { createHash } from 'node:crypto';
import { createServer, type AddressInfo } from 'node:net';
import { describe, expect, it } from 'vitest';
import type { Coordinator } from '../../src/coordinator.js';
import { startInProcess } from '../helpers/in-process.js';
import { connect, inbox } from '../helpers/mqtt.js';
import { tempDir } from '../helpers/process.js';

const dataUrl = (code: string): string => `data:text/javascript;base64,${Buffer.from(code).toString('base64')}`;
const sha = (code: string): string => createHash('sha256').update(code).digest('hex');

async function until<T>(what: string, fn: () => T | undefined, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = fn();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

const reportedOf = (c: Coordinator, thing: string, name?: string): Record<string, unknown> | undefined =>
  c.shadows.document(name === undefined ? { thing } : { thing, name })?.state.reported;

describe('cloud link to an upstream coordinator', () => {
  it('receives a deployment through the upstream and reports SUCCEEDED back; reconciles conflicts by the rules; syncs deletes; goes quiet when idle', async () => {
    const { coordinator: upstream, url } = await startInProcess({ thingName: 'cloud' });
    const { coordinator: gw } = await startInProcess(gatewayOptions(url));
    await until('the link', () => (gw.cloud!.status().state === 'connected' ? true : undefined));

    // A deployment written upstream ("the cloud") runs on the gateway.
    const code = `export default { onEvent() { return 'hello from the cloud'; } }`;
    await upstream.shadows.update(
      { thing: 'gw-nested', name: 'deployment' },
      { state: { desired: { schema: 1, id: 'from-cloud-1', tasks: [{ name: 'greeter', version: '1.0.0', bundle: { url: dataUrl(code), sha256: sha(code) } }], routes: [] } } },
    );
    const report = await until('SUCCEEDED upstream', () => {
      const r = reportedOf(upstream, 'gw-nested', 'deployment');
      return r?.id === 'from-cloud-1' && r.status === 'SUCCEEDED' ? r : undefined;
    });
    expect(report).toMatchObject({ running: 'from-cloud-1', tasks: [{ name: 'greeter', version: '1.0.0' }] });
    await expect(gw.tasks.invoke('greeter', { type: 'invoke', payload: null })).resolves.toBe('hello from the cloud');

    // Live sync of a configured shadow: gateway reported goes up; cloud desired comes down.
    await gw.shadows.update({ thing: 'room-1' }, { state: { reported: { temperatureC: 19 } } });
    await until('reported upstream', () => (reportedOf(upstream, 'room-1')?.temperatureC === 19 ? true : undefined));
    await upstream.shadows.update({ thing: 'room-1' }, { state: { desired: { targetC: 22 } } });
    await until('desired downstream', () => (gw.shadows.document({ thing: 'room-1' })?.state.desired?.targetC === 22 ? true : undefined));

    // Apart: both sides change desired and reported; on reconnect desired follows the cloud, reported the gateway.
    await gw.cloud!.stop();
    await gw.shadows.update({ thing: 'room-1' }, { state: { desired: { targetC: 18, mode: 'eco' }, reported: { temperatureC: 17 } } });
    await upstream.shadows.update({ thing: 'room-1' }, { state: { desired: { targetC: 23 }, reported: { temperatureC: 99, stale: true } } });
    const { coordinator: again } = await restartLink(gw, url);
    await until('reconciled', () => (again.cloud!.status().sync as { reconciled: number }).reconciled >= 2 ? true : undefined);
    await until('desired from the cloud', () => (again.shadows.document({ thing: 'room-1' })?.state.desired?.targetC === 23 ? true : undefined));
    expect(again.shadows.document({ thing: 'room-1' })?.state.desired).toEqual({ targetC: 23 });
    await until('reported from the gateway', () => (reportedOf(upstream, 'room-1')?.temperatureC === 17 ? true : undefined));
    expect(reportedOf(upstream, 'room-1')).toEqual({ temperatureC: 17 });

    // Deletes travel too: the gateway deletes its shadow, the cloud's goes; the cloud recreates it, the gateway's comes back.
    await again.shadows.delete({ thing: 'room-1' });
    await until('the cloud copy deleted', () => (upstream.shadows.document({ thing: 'room-1' }) === undefined ? true : undefined));
    await upstream.shadows.update({ thing: 'room-1' }, { state: { desired: { targetC: 20 } } });
    await until('recreated on the gateway', () => (again.shadows.document({ thing: 'room-1' })?.state.desired?.targetC === 20 ? true : undefined));
    await again.shadows.update({ thing: 'room-1' }, { state: { reported: { temperatureC: 20 } } });
    await until('reported upstream again', () => (reportedOf(upstream, 'room-1')?.temperatureC === 20 ? true : undefined));

    // Idle: versions stop moving on both sides.
    await new Promise((r) => setTimeout(r, 500));
    const versions = (): number[] => [again.shadows.document({ thing: 'room-1' })!.version, upstream.shadows.document({ thing: 'room-1' })!.version];
    const before = versions();
    await new Promise((r) => setTimeout(r, 1500));
    expect(versions()).toEqual(before);
  }, 60_000);
});

/**
 * The gateway again with its link (the same data directory: the stored sync marks are what tell which
 * side changed while apart).
 */
async function restartLink(gw: Coordinator, url: string): Promise<{ coordinator: Coordinator }> {
  const dataDir = gw.config.dataDir;
  await gw.stop();
  return startInProcess({ dataDir, ...gatewayOptions(url) });
}

/** The nested gateway's settings: its upstream, quick reconnects, one synced shadow, a short health window. */
function gatewayOptions(url: string): Record<string, unknown> {
  return {
    thingName: 'gw-nested',
    'cloud.url': url,
    'cloud.reconnectMinMs': 50,
    'cloud.reconnectMaxMs': 200,
    'cloud.shadows': [{ thing: 'room-1', direction: 'both' }],
    'deployments.healthWindowMs': 200,
  };
}

describe('cloud-bound messages through the spool', () => {
  it('delivers in order after an outage, evicts the oldest beyond the bound, and routes messages from the cloud to devices', async () => {
    const port = await freePort();
    const upstreamDir = tempDir('coord-up-');
    const start = (): ReturnType<typeof startInProcess> => startInProcess({ thingName: 'cloud', dataDir: upstreamDir, 'listeners.mqtt.port': port });
    let { coordinator: upstream } = await start();
    const url = `mqtt://127.0.0.1:${port}`;
    const { coordinator: gw, url: gwUrl } = await startInProcess({
      thingName: 'gw-spool',
      'cloud.url': url,
      'cloud.reconnectMinMs': 50,
      'cloud.reconnectMaxMs': 200,
      'cloud.subscribe': ['commands/#'],
      'cloud.spoolMaxBytes': 8192,
      'deployments.healthWindowMs': 0,
    });
    // Routes only, no tasks: device telemetry to the cloud, cloud commands to the devices.
    await gw.deployments.request({
      schema: 1,
      id: 'routes-only',
      tasks: [],
      routes: [
        { source: 'device:*', filter: 'telemetry/#', target: 'cloud' },
        { source: 'cloud', filter: 'commands/#', target: 'broker' },
      ],
    });
    await until('the routes', () => ((gw.deployments.status().reported as { status?: string } | null)?.status === 'SUCCEEDED' ? true : undefined));
    await until('the link', () => (gw.cloud!.status().state === 'connected' ? true : undefined));

    const device = await connect(gwUrl, { clientId: 'sensor-7' });
    const deviceBox = inbox(device);
    await device.subscribeAsync('commands/#', { qos: 1 });
    const watcher = async (): Promise<{ box: ReturnType<typeof inbox> }> => {
      const c = await connect(url, { clientId: `cloud-watcher-${Math.random().toString(36).slice(2)}` });
      await c.subscribeAsync('telemetry/#', { qos: 1 });
      return { box: inbox(c) };
    };
    let w = await watcher();

    // Online: in order, straight through the spool.
    for (let i = 1; i <= 5; i++) await device.publishAsync('telemetry/t', JSON.stringify({ i }), { qos: 1 });
    await w.box.count(5);
    expect(w.box.messages.map((m) => (JSON.parse(m.payload.toString()) as { i: number }).i)).toEqual([1, 2, 3, 4, 5]);

    // From the cloud to the gateway's devices.
    const cloudApp = await connect(url, { clientId: 'cloud-app' });
    await cloudApp.publishAsync('commands/sensor-7', 'recalibrate', { qos: 1 });
    expect((await deviceBox.next((t) => t === 'commands/sensor-7')).payload.toString()).toBe('recalibrate');

    // Offline: the upstream goes away; the gateway keeps taking telemetry, spooled in order.
    await upstream.stop();
    await until('the link down', () => (gw.cloud!.status().state !== 'connected' ? true : undefined));
    for (let i = 6; i <= 25; i++) await device.publishAsync('telemetry/t', JSON.stringify({ i }), { qos: 1 });
    await until('spooled', () => ((gw.cloud!.status().spool as { messages: number }).messages === 20 ? true : undefined));
    ({ coordinator: upstream } = await start());
    w = await watcher();
    await w.box.count(20, undefined, 15_000);
    expect(w.box.messages.map((m) => (JSON.parse(m.payload.toString()) as { i: number }).i)).toEqual(Array.from({ length: 20 }, (_, k) => k + 6));

    // Overflow while offline: 8 KB of spool keeps the newest, evicts (and counts) the oldest.
    await upstream.stop();
    await until('the link down again', () => (gw.cloud!.status().state !== 'connected' ? true : undefined));
    const big = 'x'.repeat(1000);
    for (let i = 100; i < 120; i++) await device.publishAsync('telemetry/t', JSON.stringify({ i, big }), { qos: 1 });
    const spool = await until('evictions', () => {
      const s = gw.cloud!.status().spool as { evicted: number; messages: number };
      return s.evicted > 0 && s.messages + s.evicted >= 20 ? s : undefined;
    });
    ({ coordinator: upstream } = await start());
    w = await watcher();
    await w.box.count(spool.messages, undefined, 15_000);
    const got = w.box.messages.map((m) => (JSON.parse(m.payload.toString()) as { i: number }).i);
    // The newest survive, in order, ending with the last one sent.
    expect(spool.messages).toBeGreaterThanOrEqual(5);
    expect(got.length).toBe(spool.messages);
    expect(got).toEqual(Array.from({ length: spool.messages }, (_, k) => 120 - spool.messages + k));
  }, 90_000);
});

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}
