/**
 * The device registry (issue 6, acceptance 4): presence follows connect and disconnect within a
 * second, and registrations, revocations and last-seen survive SIGKILL and restart.
 */
import { describe, expect, it } from 'vitest';
import { addDevice, attempt, connectDevice, deviceInfo, eventually, startTlsCoordinator } from '../helpers/devices.js';
import { runCli } from '../helpers/process.js';

describe('device registry', () => {
  it('follows connect and disconnect within 1 s', async () => {
    const c = await startTlsCoordinator();
    const b = await addDevice(c, 'meter-1', ['--attr', 'site=farm', '--profile', 'env-sensor']);
    const before = await deviceInfo(c, 'meter-1');
    expect(before).toMatchObject({ connected: false, lastSeen: null, certFingerprint: b.fingerprint, attributes: { site: 'farm' } });

    const dev = await connectDevice(c, b);
    const up = await eventually(async () => (await deviceInfo(c, 'meter-1')).connected, 1000, 'connected');
    expect(up).toBeLessThan(1000);
    const seen = (await deviceInfo(c, 'meter-1')).lastSeen!;
    expect(Date.parse(seen)).toBeGreaterThan(Date.now() - 5000);

    dev.stream.destroy(); // a dropped connection, not a DISCONNECT
    const down = await eventually(async () => !(await deviceInfo(c, 'meter-1')).connected, 1000, 'disconnected');
    expect(down).toBeLessThan(1000);

    const again = await connectDevice(c, b);
    await eventually(async () => (await deviceInfo(c, 'meter-1')).connected, 1000, 'connected again');
    await again.endAsync();
    await eventually(async () => !(await deviceInfo(c, 'meter-1')).connected, 1000, 'disconnected again');

    const list = await runCli(['devices', 'list', '--data-dir', c.dataDir]);
    expect(list.stdout).toMatch(/^THING\s+STATE\s+CONNECTED/);
    expect(list.stdout).toMatch(/meter-1\s+active\s+no\s+\S+\s+env-sensor/);
    await c.stop();
  });

  it('survives SIGKILL and restart: registrations, revocations, last seen; connected is reset', async () => {
    const c = await startTlsCoordinator();
    const keep = await addDevice(c, 'valve-1', ['--attr', 'zone=north']);
    const gone = await addDevice(c, 'valve-2');
    expect((await runCli(['devices', 'revoke', 'valve-2', '--data-dir', c.dataDir])).code).toBe(0);
    const dev = await connectDevice(c, keep);
    await eventually(async () => (await deviceInfo(c, 'valve-1')).connected, 1000, 'connected');
    const lastSeen = (await deviceInfo(c, 'valve-1')).lastSeen;
    await c.kill();
    dev.end(true);

    const back = await startTlsCoordinator({ dataDir: c.dataDir, init: false });
    const kept = await deviceInfo(back, 'valve-1');
    expect(kept).toMatchObject({ thing: 'valve-1', connected: false, lastSeen, certFingerprint: keep.fingerprint, attributes: { zone: 'north' }, revokedAt: null });
    expect((await deviceInfo(back, 'valve-2')).revokedAt).toEqual(expect.any(String));

    // The issued certificate still works after the restart; the revoked one is still refused.
    const again = await connectDevice(back, keep);
    await eventually(async () => (await deviceInfo(back, 'valve-1')).connected, 1000, 'connected after restart');
    expect(await attempt(back.tlsUrl, { ca: gone.ca, cert: gone.cert, key: gone.key, clientId: 'valve-2' })).toEqual({ kind: 'refused', returnCode: 5 });
    // Adding a registered thing again is refused.
    const dup = await runCli(['devices', 'add', 'valve-1', '--data-dir', back.dataDir, '--out', gone.dir]);
    expect(dup.stderr).toMatch(/COORD_ERR_DEVICE_EXISTS/);
    await again.endAsync();
    await back.stop();
  });
});
