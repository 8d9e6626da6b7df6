/**
 * The cloud link with another coordinator as the upstream (issue 7, nested gateways): a deployment
 * written to the upstream's copy of the gateway's `deployment` shadow runs on the gateway and its
 * reported SUCCEEDED appears upstream; conflicts after a time apart follow the documented rules (desired:
 * the cloud wins; reported: the gateway wins); with both sides idle, versions stop moving.
 * Real components: two embedded coordinators (real brokers, stores, task hosts), MQTT between them.
 */
import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import type { Coordinator } from '../../src/coordinator.js';
import { startInProcess } from '../helpers/in-process.js';

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
  it('receives a deployment through the upstream and reports SUCCEEDED back; reconciles conflicts by the rules; goes quiet when idle', async () => {
    const { coordinator: upstream, url } = await startInProcess({ thingName: 'cloud' });
    const { coordinator: gw } = await startInProcess({
      thingName: 'gw-nested',
      'cloud.url': url,
      'cloud.reconnectMinMs': 50,
      'cloud.reconnectMaxMs': 200,
      'cloud.shadows': [{ thing: 'room-1', direction: 'both' }],
      'deployments.healthWindowMs': 200,
    });
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
  return startInProcess({
    dataDir,
    thingName: 'gw-nested',
    'cloud.url': url,
    'cloud.reconnectMinMs': 50,
    'cloud.reconnectMaxMs': 200,
    'cloud.shadows': [{ thing: 'room-1', direction: 'both' }],
    'deployments.healthWindowMs': 200,
  });
}
