/**
 * `coordinator deploy` and friends, run as processes against a spawned coordinator (issue 5 acceptance:
 * "`coordinator deploy tasks/thermostat` on a gateway with no cloud config works"): deploy, status,
 * history, rollback, a refused manifest that changes nothing, and `coordinator bundle`.
 */
import { createHash, createPublicKey, verify } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { writeConfig } from '../helpers/deploy.js';
import { connect, inbox } from '../helpers/mqtt.js';
import { runCli, startCoordinator, tempDir, type RunningCoordinator } from '../helpers/process.js';

/** The repository root: `tasks/thermostat` is given relative to it, as an operator would type it. */
const REPO = fileURLToPath(new URL('../..', import.meta.url));

type TaskRow = { name: string; version: string; state: string };

async function tasksList(dataDir: string): Promise<string[]> {
  const r = await runCli(['tasks', 'list', '--json', '--data-dir', dataDir]);
  expect(r.code, r.stderr).toBe(0);
  return (JSON.parse(r.stdout) as TaskRow[]).map((t) => `${t.name}@${t.version}`).sort();
}

async function historyJson(dataDir: string): Promise<{ id: string; status: string }[]> {
  const r = await runCli(['deployment', 'history', '--json', '--data-dir', dataDir]);
  expect(r.code, r.stderr).toBe(0);
  return JSON.parse(r.stdout) as { id: string; status: string }[];
}

/** A sensor reading in, the heater command the thermostat task sends back. */
async function heaterCommand(c: RunningCoordinator, room: string, celsius: number): Promise<Record<string, unknown>> {
  const device = await connect(c.url, { clientId: `${room}-${Math.random().toString(36).slice(2, 6)}` });
  try {
    await device.subscribeAsync(`devices/${room}/heater/set`, { qos: 1 });
    await device.publishAsync(`sensors/${room}/temperature`, String(celsius), { qos: 1 });
    const m = await inbox(device).next((t) => t === `devices/${room}/heater/set`, 10_000);
    return JSON.parse(m.payload.toString()) as Record<string, unknown>;
  } finally {
    await device.endAsync(true);
  }
}

/** An echo round trip: what goes out on echo/<id>/in comes back on echo/<id>/out. */
async function echoRoundTrip(c: RunningCoordinator, text: string): Promise<string> {
  const device = await connect(c.url, { clientId: 'echo-device' });
  try {
    await device.subscribeAsync('echo/e1/out', { qos: 1 });
    await device.publishAsync('echo/e1/in', text, { qos: 1 });
    return (await inbox(device).next((t) => t === 'echo/e1/out', 10_000)).payload.toString();
  } finally {
    await device.endAsync(true);
  }
}

describe('coordinator deploy', () => {
  it('deploys tasks/thermostat to a gateway started with no configuration at all (default 10 s health window)', async () => {
    const c = await startCoordinator();
    try {
      const started = Date.now();
      const r = await runCli(['deploy', 'tasks/thermostat', '--data-dir', c.dataDir], { cwd: REPO, timeoutMs: 45_000 });
      expect(r.code, `stdout: ${r.stdout}\nstderr: ${r.stderr}`).toBe(0);
      expect(r.stdout).toMatch(/^deployment local-[0-9a-f]{12} requested: thermostat@1\.0\.0$/m);
      expect(r.stdout).toMatch(/^IN_PROGRESS: /m);
      expect(r.stdout).toMatch(/^SUCCEEDED: running since /m);
      // The default health window (10 s) was waited for before SUCCEEDED.
      expect(Date.now() - started).toBeGreaterThanOrEqual(10_000);
      // 18.5 °C against the default target of 21 °C: heat.
      expect(await heaterCommand(c, 'room-1', 18.5)).toEqual({ heater: 'on', targetC: 21, temperatureC: 18.5 });
      // Nothing ran before it: there is nothing to roll back to.
      const rollback = await runCli(['deployment', 'rollback', '--data-dir', c.dataDir]);
      expect(rollback.code).toBe(1);
      expect(rollback.stderr).toMatch(/^coordinator: COORD_ERR_DEPLOY_NO_PREVIOUS: /);
    } finally {
      await c.stop();
    }
  }, 60_000);

  it('deploys, shows status and history, replaces the set, rolls back, and refuses a broken manifest without changing anything', async () => {
    const c = await startCoordinator({ args: ['--config', writeConfig({ deployments: { healthWindowMs: 500 } })] });
    try {
      const dataDir = c.dataDir;
      const deployed = await runCli(['deploy', 'tasks/thermostat', '--data-dir', dataDir], { cwd: REPO, timeoutMs: 30_000 });
      expect(deployed.code, deployed.stderr).toBe(0);
      expect(deployed.stdout).toMatch(/^SUCCEEDED: /m);
      const thermostatId = /deployment (local-[0-9a-f]{12}) requested/.exec(deployed.stdout)![1]!;
      expect(await heaterCommand(c, 'room-2', 23)).toEqual({ heater: 'off', targetC: 21, temperatureC: 23 });

      // status: what is desired, what runs, how it went, the tasks.
      const status = await runCli(['deployment', 'status', '--data-dir', dataDir]);
      expect(status.code, status.stderr).toBe(0);
      expect(status.stdout).toMatch(new RegExp(`^desired: +${thermostatId}$`, 'm'));
      expect(status.stdout).toMatch(new RegExp(`^running: +${thermostatId}$`, 'm'));
      expect(status.stdout).toMatch(new RegExp(`^status: +SUCCEEDED \\(${thermostatId}\\)$`, 'm'));
      expect(status.stdout).toMatch(/^reason: +running since /m);
      expect(status.stdout).toMatch(/^ {2}thermostat@1\.0\.0 {2}(INSTALLED|RUNNING)$/m);
      const statusJson = await runCli(['deployment', 'status', '--json', '--data-dir', dataDir]);
      expect(JSON.parse(statusJson.stdout)).toMatchObject({ desired: { id: thermostatId }, reported: { id: thermostatId, status: 'SUCCEEDED', running: thermostatId }, active: { id: thermostatId }, inProgress: null });

      // history: a table, newest first.
      const table = await runCli(['deployment', 'history', '--data-dir', dataDir]);
      expect(table.code, table.stderr).toBe(0);
      const lines = table.stdout.trimEnd().split('\n');
      expect(lines[0]).toMatch(/^SEQ +ID +STATUS +STEP +ATTEMPTS +UPDATED +REASON$/);
      expect(lines).toHaveLength(2);
      expect(lines[1]).toMatch(new RegExp(`^1 +${thermostatId} +SUCCEEDED +done +\\d+ +\\S+ +running since `));

      // Deploying tasks/echo replaces the whole set.
      const echo = await runCli(['deploy', 'tasks/echo', '--data-dir', dataDir], { cwd: REPO, timeoutMs: 30_000 });
      expect(echo.code, echo.stderr).toBe(0);
      expect(echo.stdout).toMatch(/^SUCCEEDED: /m);
      expect(await tasksList(dataDir)).toEqual(['echo@1.0.0']);
      expect(await echoRoundTrip(c, 'ping')).toBe('ping');

      // rollback: the thermostat set again, under a new id, through the same path.
      const rollback = await runCli(['deployment', 'rollback', '--data-dir', dataDir], { cwd: REPO, timeoutMs: 30_000 });
      expect(rollback.code, `stdout: ${rollback.stdout}\nstderr: ${rollback.stderr}`).toBe(0);
      const rollbackId = /^deployment (rollback-\S+) requested$/m.exec(rollback.stdout)?.[1];
      expect(rollbackId).toContain(thermostatId);
      expect(rollback.stdout).toMatch(/^SUCCEEDED: /m);
      expect(await tasksList(dataDir)).toEqual(['thermostat@1.0.0']);
      expect(await heaterCommand(c, 'room-3', 17)).toMatchObject({ heater: 'on', temperatureC: 17 });
      // The echo folder again: a document that succeeded before and no longer runs is deployed again.
      const echoAgain = await runCli(['deploy', 'tasks/echo', '--data-dir', dataDir], { cwd: REPO, timeoutMs: 30_000 });
      expect(echoAgain.code, echoAgain.stderr).toBe(0);
      expect(echoAgain.stdout).toMatch(/^SUCCEEDED: /m);
      const echoId = /deployment (local-[0-9a-f]{12}) requested/.exec(echo.stdout)![1]!;
      expect(echoAgain.stdout).toContain(`deployment ${echoId} requested`);
      expect(await tasksList(dataDir)).toEqual(['echo@1.0.0']);
      expect(await echoRoundTrip(c, 'again')).toBe('again');
      // And rollback brings back the set that ran before it: the thermostat (the rollback deployment).
      const rollback2 = await runCli(['deployment', 'rollback', '--data-dir', dataDir], { cwd: REPO, timeoutMs: 30_000 });
      expect(rollback2.code, `stdout: ${rollback2.stdout}\nstderr: ${rollback2.stderr}`).toBe(0);
      expect(await tasksList(dataDir)).toEqual(['thermostat@1.0.0']);

      const h = await historyJson(dataDir);
      expect(h.map((d) => d.status)).toEqual(['SUCCEEDED', 'SUCCEEDED', 'SUCCEEDED', 'SUCCEEDED', 'SUCCEEDED']);
      expect(h[2]!.id).toBe(rollbackId);
      expect(h[4]!.id).toBe(thermostatId);

      // A broken manifest: refused before anything is sent, with a coded error; nothing changes.
      const broken = join(tempDir('coord-broken-task-'), 'broken');
      mkdirSync(broken);
      writeFileSync(join(broken, 'task.json'), JSON.stringify({ name: 'Broken Task', version: 'one', limits: { memoryMb: 2 } }));
      writeFileSync(join(broken, 'index.ts'), 'export default { onEvent() { return null; } };\n');
      const statusBefore = JSON.parse((await runCli(['deployment', 'status', '--json', '--data-dir', dataDir])).stdout) as Record<string, unknown>;
      const refused = await runCli(['deploy', broken, '--data-dir', dataDir], { timeoutMs: 30_000 });
      expect(refused.code).not.toBe(0);
      expect(refused.stderr).toMatch(/^coordinator: COORD_ERR_TASK_MANIFEST: /);
      expect(refused.stderr).toMatch(/name: /);
      expect(refused.stderr).toMatch(/version: /);
      expect(refused.stderr).toMatch(/limits\.memoryMb: /);
      expect(refused.stdout).toBe('');
      expect(await historyJson(dataDir)).toEqual(h);
      expect(JSON.parse((await runCli(['deployment', 'status', '--json', '--data-dir', dataDir])).stdout)).toEqual(statusBefore);
      expect(await tasksList(dataDir)).toEqual(['thermostat@1.0.0']);
    } finally {
      await c.stop();
    }
  }, 60_000);

  it('coordinator bundle writes the bundle and prints a document entry whose sha256 (and signature) match the file', async () => {
    const dir = tempDir('coord-bundle-');
    const out = join(dir, 'echo.js');
    const r = await runCli(['bundle', 'tasks/echo', '--out', out, '--url', 'https://x/echo.js'], { cwd: REPO });
    expect(r.code, r.stderr).toBe(0);
    const bytes = readFileSync(out);
    expect(r.stderr).toContain(`wrote ${out} (${bytes.length} bytes)`);
    const entry = JSON.parse(r.stdout) as { name: string; version: string; bundle: { url: string; sha256: string; signature?: string } };
    expect(entry).toMatchObject({ name: 'echo', version: '1.0.0', triggers: [{ topic: 'echo/+/in' }], bundle: { url: 'https://x/echo.js' } });
    expect(entry.bundle.sha256).toBe(createHash('sha256').update(bytes).digest('hex'));
    expect(entry.bundle.signature).toBeUndefined();
    expect(bytes.toString()).toMatch(/export\s*\{|export default/);

    // With --key: an ed25519 signature over the same bytes, verifiable with the public key.
    const keys = await runCli(['keys', 'create', '--out', dir]);
    expect(keys.code, keys.stderr).toBe(0);
    const signedOut = join(dir, 'echo-signed.js');
    const signed = await runCli(['bundle', 'tasks/echo', '--out', signedOut, '--url', 'https://x/echo.js', '--key', join(dir, 'signing-key.pem')], { cwd: REPO });
    expect(signed.code, signed.stderr).toBe(0);
    const signedEntry = JSON.parse(signed.stdout) as typeof entry;
    const signedBytes = readFileSync(signedOut);
    expect(signedEntry.bundle.sha256).toBe(createHash('sha256').update(signedBytes).digest('hex'));
    const publicKey = createPublicKey(readFileSync(join(dir, 'signing-key.pub.pem'), 'utf8'));
    expect(verify(null, signedBytes, publicKey, Buffer.from(signedEntry.bundle.signature!, 'base64'))).toBe(true);
  });
});
