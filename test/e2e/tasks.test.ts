/**
 * The task runtime end to end (issue 4, acceptance 1 and 3): the coordinator started as `npm start` does,
 * with the example tasks of tasks/; a device played by Mosquitto's command-line client; the CLI spawned
 * for tasks list / logs / invoke; and the task host SIGKILLed under a running gateway.
 */
import { spawn } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { connect, inbox } from '../helpers/mqtt.js';
import { CLI, runCli, startCoordinator, tempDir } from '../helpers/process.js';

const EXAMPLES = fileURLToPath(new URL('../../tasks', import.meta.url));
type Doc = Record<string, unknown>;
const json = (p: Buffer): Doc => JSON.parse(p.toString()) as Doc;

/** mosquitto_pub, as a device maker would test with; resolves when it exits 0. */
function mosquittoPub(port: number, topic: string, message: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const p = spawn('mosquitto_pub', ['-h', '127.0.0.1', '-p', String(port), '-i', 'sensor-lobby', '-t', topic, '-m', message, '-q', '1'], { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    p.stderr.on('data', (c: Buffer) => (err += c.toString()));
    p.once('error', reject);
    p.once('exit', (code) => (code === 0 ? resolve() : reject(new Error(`mosquitto_pub exited ${code}: ${err}`))));
  });
}

describe('example tasks', () => {
  it('thermostat answers a temperature with a heater command, keeps its state across a restart; heartbeat arrives', async () => {
    const dataDir = tempDir('coord-tasks-');
    let c = await startCoordinator({ dataDir, args: ['--tasks-dir', EXAMPLES] });
    await c.waitForLog((l) => l.msg === 'tasks installed');
    const heater = await connect(c.url, { clientId: 'thermostat-1' });
    const box = inbox(heater);
    await heater.subscribeAsync(['devices/thermostat-1/heater/set', 'gateway/heartbeat'], { qos: 1 });

    // 18.5 °C against the seeded target of 21 °C: heat.
    await mosquittoPub(c.port, 'sensors/thermostat-1/temperature', '18.5');
    const command = json((await box.next((t) => t === 'devices/thermostat-1/heater/set')).payload);
    expect(command).toMatchObject({ heater: 'on', targetC: 21, temperatureC: 18.5 });
    const shadow = await runCli(['shadow', 'get', 'thermostat-1', '--data-dir', dataDir]);
    expect(JSON.parse(shadow.stdout)).toMatchObject({ state: { reported: { heater: 'on', temperatureC: 18.5 } } });

    const beat = json((await box.next((t) => t === 'gateway/heartbeat', 11_000)).payload);
    expect(beat).toMatchObject({ gateway: 'demo-gateway', status: 'ok' });
    expect(beat.seq).toBeGreaterThanOrEqual(1);

    const list = await runCli(['tasks', 'list', '--data-dir', dataDir, '--json']);
    const tasks = JSON.parse(list.stdout) as { name: string; state: string; succeeded: number }[];
    expect(tasks.map((t) => t.name).sort()).toEqual(['echo', 'heartbeat', 'thermostat']);
    expect(tasks.find((t) => t.name === 'thermostat')).toMatchObject({ state: 'RUNNING', succeeded: 1 });
    const logs = await runCli(['tasks', 'logs', 'thermostat', '--data-dir', dataDir]);
    expect(logs.stdout).toContain('heater off → on');
    const invoked = await runCli(['invoke', 'thermostat', '--payload', '{"hello":1}', '--data-dir', dataDir]);
    expect(JSON.parse(invoked.stdout)).toEqual({ ignored: 'invoke' });

    // logs --follow prints lines as they come: a reading that is not a temperature is logged as a warning.
    const follow = spawn(process.execPath, [CLI, 'tasks', 'logs', 'thermostat', '--follow', '--data-dir', dataDir], { stdio: ['ignore', 'pipe', 'pipe'] });
    let followed = '';
    follow.stdout.on('data', (c: Buffer) => (followed += c.toString()));
    try {
      await new Promise((r) => setTimeout(r, 700));
      await mosquittoPub(c.port, 'sensors/thermostat-1/temperature', 'warm-ish');
      for (let i = 0; i < 40 && !followed.includes('not a temperature'); i++) await new Promise((r) => setTimeout(r, 100));
      expect(followed).toMatch(/WARN .*ignoring a reading from thermostat-1 that is not a temperature: warm-ish/);
    } finally {
      follow.kill('SIGKILL');
    }
    heater.end(true);
    await c.stop();

    // After a restart the heater is still on: 21.2 °C is inside the band, so it stays as it was.
    c = await startCoordinator({ dataDir, args: ['--tasks-dir', EXAMPLES] });
    await c.waitForLog((l) => l.msg === 'tasks installed');
    const again = await connect(c.url, { clientId: 'thermostat-1' });
    const box2 = inbox(again);
    await again.subscribeAsync('devices/thermostat-1/heater/set', { qos: 1 });
    await mosquittoPub(c.port, 'sensors/thermostat-1/temperature', '{"celsius": 21.2}');
    expect(json((await box2.next()).payload)).toMatchObject({ heater: 'on', temperatureC: 21.2 });
    again.end(true);
    await c.stop();
  }, 40_000);
});

describe('task host crash', () => {
  it('SIGKILL of the task host: devices stay connected, the next invocation succeeds, pinned tasks start again', async () => {
    const dir = tempDir('coord-tasks-pinned-');
    mkdirSync(join(dir, 'announcer'));
    writeFileSync(
      join(dir, 'announcer', 'task.json'),
      JSON.stringify({
        name: 'announcer',
        version: '1.0.0',
        lifecycle: 'pinned',
        routes: [{ source: 'task:announcer', filter: 'announce/#', target: 'broker' }],
        permissions: { publish: ['announce/#'] },
      }),
    );
    writeFileSync(
      join(dir, 'announcer', 'index.ts'),
      `import type { Task } from 'edge-coordinator';
export default {
  async onStart(ctx) { await ctx.publish('announce/started', String(Date.now()), { qos: 1 }); },
  onEvent() { return null; },
} satisfies Task;
`,
    );
    mkdirSync(join(dir, 'echo'));
    for (const f of ['task.json', 'index.ts']) writeFileSync(join(dir, 'echo', f), (await import('node:fs')).readFileSync(join(EXAMPLES, 'echo', f)));

    const c = await startCoordinator({ args: ['--tasks-dir', dir] });
    const device = await connect(c.url, { clientId: 'device-7' });
    let closed = false;
    device.on('close', () => (closed = true));
    const box = inbox(device);
    await device.subscribeAsync(['echo/+/out', 'announce/#'], { qos: 1 });
    await c.waitForLog((l) => l.msg === 'tasks installed');
    await device.publishAsync('echo/1/in', 'before', { qos: 1 });
    expect((await box.next((t) => t === 'echo/1/out')).payload.toString()).toBe('before');

    const status = JSON.parse((await runCli(['status', '--json', '--data-dir', c.dataDir])).stdout) as { tasks: { host: { pid: number } } };
    const hostPid = status.tasks.host.pid;
    expect(hostPid).toBeGreaterThan(0);
    process.kill(hostPid, 'SIGKILL');

    // The pinned task runs onStart again in the new host.
    // (Its first onStart ran before this device subscribed.)
    await box.next((t) => t === 'announce/started', 10_000);
    await c.waitForLog((l) => l.msg === 'task host restarted; tasks reloaded', 10_000);
    await device.publishAsync('echo/2/in', 'after', { qos: 1 });
    expect((await box.next((t) => t === 'echo/2/out', 10_000)).payload.toString()).toBe('after');
    expect(closed).toBe(false);
    const after = JSON.parse((await runCli(['status', '--json', '--data-dir', c.dataDir])).stdout) as { tasks: { host: { pid: number; restarts: number } }; clients: { ids: string[] } };
    expect(after.tasks.host.restarts).toBe(1);
    expect(after.tasks.host.pid).not.toBe(hostPid);
    expect(after.clients.ids).toContain('device-7');
    device.end(true);
    await c.stop();
  }, 40_000);
});
