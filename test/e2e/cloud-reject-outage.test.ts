/**
 * Issue 7: the rule that sets aside a message the upstream never accepts (docs/cloud.md) must never fire
 * on a normal outage. The child gateway runs with the most eager setting, cloud.spoolRejectAfterDrops=1,
 * and each round makes the worst case happen on purpose: the upstream is frozen (SIGSTOP) so the one
 * spooled message is in flight alone without a PUBACK, then killed (SIGKILL) — exactly the drop a
 * refusal would cause. Because the next connection attempts fail (the upstream is away), the drop is an
 * outage, not evidence: the message stays, and is delivered once the upstream is back.
 * Real components: `coordinator start` processes (upstream over mTLS and the child), MQTT.js clients.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { addDevice, type TlsCoordinator } from '../helpers/devices.js';
import { connect, inbox } from '../helpers/mqtt.js';
import { childConfig, cloudStatus, deploymentDoc, reportedDeployment, startChild, startUpstream, tlsFilesOf, until } from '../helpers/nested.js';
import { runCli } from '../helpers/process.js';

let upstream: TlsCoordinator | undefined;
afterAll(async () => {
  await upstream?.stop();
});

describe('normal outages and the set-aside rule', () => {
  it('a message alone in flight when the upstream dies is kept and delivered, even with spoolRejectAfterDrops=1', async () => {
    upstream = await startUpstream();
    const tlsPort = upstream.tlsPort;
    const bundle = await addDevice(upstream, 'gw-child');
    const gw = await startChild(childConfig('gw-child', { url: upstream.tlsUrl, ...tlsFilesOf(bundle), spoolRejectAfterDrops: 1 }));
    const desired = deploymentDoc('outage-1', [{ source: 'device:*', filter: 'devices/gw-child/#', target: 'cloud' }]);
    const update = await runCli(['shadow', 'update', 'gw-child', '--name', 'deployment', '--state', JSON.stringify({ desired }), '--socket', upstream.socket]);
    expect(update.code, update.stderr).toBe(0);
    await until('SUCCEEDED on the upstream', async () => ((await reportedDeployment(upstream!, 'gw-child'))?.status === 'SUCCEEDED' ? true : undefined));

    // The fleet side keeps a persistent session on the upstream: what arrives while it reconnects waits.
    const watch = async (url: string): Promise<ReturnType<typeof inbox>> => {
      const w = await connect(url, { clientId: 'fleet-watcher', clean: false });
      await w.subscribeAsync('devices/gw-child/#', { qos: 1 });
      return inbox(w);
    };
    let seen = await watch(upstream.url);
    const sensor = await connect(gw.url, { clientId: 'sensor-1' });
    await sensor.publishAsync('devices/gw-child/before', 'x', { qos: 1 });
    await seen.next((t) => t === 'devices/gw-child/before');

    for (const round of [1, 2]) {
      upstream.proc.kill('SIGSTOP');
      // Durable in the child's spool, then sent upstream alone — where nobody answers.
      await sensor.publishAsync(`devices/gw-child/round-${round}`, String(round), { qos: 1 });
      await new Promise((r) => setTimeout(r, 200));
      await upstream.kill();
      // The child saw the drop with that message alone in flight: a drop that would count...
      const dropped = await gw.waitForLog((l) => l.msg === 'cloud link dropped with spooled messages in flight' && l.topic === `devices/gw-child/round-${round}`, 10_000);
      expect(dropped).toMatchObject({ verdict: 'counted', inFlight: 1 });
      // ...were the upstream there to take the gateway back. It is not: the attempts fail.
      await until('a failed attempt', async () => ((await cloudStatus(gw)).lastError?.includes('ECONNREFUSED') ? true : undefined));
      upstream = await startUpstream({ dataDir: upstream.dataDir, tlsPort, init: false });
      seen = await watch(upstream.url);
      await seen.next((t) => t === `devices/gw-child/round-${round}`, 15_000);
    }

    // The spool's ack of the last message is written just after its PUBACK.
    const status = await until('the spool empty', async () => {
      const s = await cloudStatus(gw);
      return s.spool.messages === 0 ? s : undefined;
    });
    expect(status.state).toBe('connected');
    expect(status.spool).toMatchObject({ rejected: 0, messages: 0, rejectAfterDrops: 1, suspect: null, recentRejected: [] });
    expect(gw.logs.some((l) => l.code === 'COORD_ERR_CLOUD_SPOOL_REJECTED')).toBe(false);
    await gw.stop();
  }, 60_000);
});
