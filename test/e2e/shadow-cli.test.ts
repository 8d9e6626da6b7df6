/** `coordinator shadow ...` against a running coordinator, and seed documents in the data directory. */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { runCli, startCoordinator, tempDir } from '../helpers/process.js';

describe('coordinator shadow', () => {
  it('seeds, gets, updates, lists, deletes and exports shadows', async () => {
    const dataDir = tempDir();
    writeFileSync(join(dataDir, 'boiler.json'), JSON.stringify({ thingName: 'boiler', state: { desired: { on: true }, reported: { on: false } } }));
    writeFileSync(join(dataDir, 'broken.json'), '{ not json');
    const c = await startCoordinator({ dataDir });
    await c.waitForLog((l) => l.code === 'COORD_ERR_SHADOW_SEED' && String(l.file).endsWith('broken.json'));

    const got = await runCli(['shadow', 'get', 'boiler', '--data-dir', dataDir]);
    expect(got.code).toBe(0);
    expect(JSON.parse(got.stdout)).toMatchObject({ state: { desired: { on: true }, reported: { on: false }, delta: { on: true } }, version: 1 });

    const upd = await runCli(['shadow', 'update', 'boiler', '--name', 'schedule', '--state', '{"desired":{"start":"06:00"}}', '--data-dir', dataDir]);
    expect(upd.code).toBe(0);
    expect(JSON.parse(upd.stdout)).toMatchObject({ state: { desired: { start: '06:00' } }, version: 1 });

    const stale = await runCli(['shadow', 'update', 'boiler', '--state', '{"reported":{"on":true}}', '--version', '7', '--data-dir', dataDir]);
    expect(stale.code).toBe(1);
    expect(stale.stderr).toContain('COORD_ERR_SHADOW_REJECTED: 409 Version conflict');

    const list = await runCli(['shadow', 'list', '--data-dir', dataDir]);
    expect(list.stdout.trim().split('\n').sort()).toEqual(['boiler', 'boiler/schedule']);

    const out = tempDir();
    const exported = await runCli(['shadow', 'export', out, '--data-dir', dataDir]);
    expect(exported.stdout).toContain('exported 2 shadow(s)');
    expect(JSON.parse(readFileSync(join(out, 'boiler~schedule.json'), 'utf8'))).toMatchObject({
      thingName: 'boiler',
      shadowName: 'schedule',
      state: { desired: { start: '06:00' } },
      version: 1,
    });

    const del = await runCli(['shadow', 'delete', 'boiler', '--data-dir', dataDir]);
    expect(JSON.parse(del.stdout)).toMatchObject({ version: 1 });
    const gone = await runCli(['shadow', 'get', 'boiler', '--data-dir', dataDir]);
    expect(gone.code).toBe(1);
    expect(gone.stderr).toContain("404 No shadow exists with name: 'boiler'");
    await c.stop();

    // A seed never resurrects a shadow that was deleted: its version history is kept instead.
    const again = await startCoordinator({ dataDir });
    expect((await runCli(['shadow', 'get', 'boiler', '--data-dir', dataDir])).code).toBe(1);
    await again.stop();
  });
});
