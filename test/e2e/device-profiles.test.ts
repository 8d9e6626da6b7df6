/**
 * Device profiles end to end (issue 6, acceptance 3): the thermostat task drives simulated devices through
 * ctx.devices.invoke — the same generic action reaches a smart plug through its shadow and a relay board
 * through its topics, and each device's reported state changes. Also: a request/response action (a sensor
 * read), and the refusals (a device outside permissions.devices, an unknown action, a silent device).
 * Everything real: spawned coordinator with its own CA, devices over mutual TLS with issued certificates,
 * tasks deployed through the deployment shadow.
 */
import { createHash } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { adminRequest } from '../../src/admin/client.js';
import { SimulatedDevice } from '../../src/devices/simulator.js';
import { stopBundler } from '../../src/tasks/bundle.js';
import { loadTaskFolder } from '../../src/tasks/local.js';
import { addDevice, eventually, startTlsCoordinator, type Bundle, type TlsCoordinator } from '../helpers/devices.js';
import { connect } from '../helpers/mqtt.js';

const THERMOSTAT = fileURLToPath(new URL('../../tasks/thermostat', import.meta.url));
const dataUrl = (code: string): string => `data:text/javascript;base64,${Buffer.from(code).toString('base64')}`;
const sha = (code: string): string => createHash('sha256').update(code).digest('hex');

/**
 * A task answering `invoke` events {thing, action, params} with ctx.devices.invoke's result, or the coded
 * error the task saw (caught, so the refusals below do not make the probe itself BROKEN).
 */
const PROBE = `export default { async onEvent(e, ctx) {
  const p = e.payload;
  try { return { ok: await ctx.devices.invoke(p.thing, p.action, p.params) }; }
  catch (err) { return { error: String(err.code) + ' ' + err.message }; }
} }`;

describe('device profiles', () => {
  let c: TlsCoordinator;
  const devices: SimulatedDevice[] = [];

  async function simulate(bundle: Bundle, profile: string): Promise<SimulatedDevice> {
    const d = await SimulatedDevice.start({ thing: bundle.thing, profile, url: c.tlsUrl, caPem: bundle.ca, certPem: bundle.cert, keyPem: bundle.key });
    devices.push(d);
    return d;
  }

  const reported = async (thing: string): Promise<Record<string, unknown>> => {
    const doc = await adminRequest<{ state: { reported?: Record<string, unknown> } }>(c.socket, 'GET', `/v1/shadow?thing=${thing}`);
    return doc.state.reported ?? {};
  };
  const invoke = (payload: unknown): Promise<unknown> => adminRequest(c.socket, 'POST', '/v1/task/invoke', { name: 'probe', payload, timeoutMs: 10_000 }, 15_000);

  beforeAll(async () => {
    c = await startTlsCoordinator({ config: { deployments: { healthWindowMs: 200 } } });
    const plug = await addDevice(c, 'plug-1', ['--profile', 'smart-plug']);
    const relay = await addDevice(c, 'relay-1', ['--profile', 'relay-board']);
    const sensor = await addDevice(c, 'sensor-1', ['--profile', 'env-sensor']);
    await addDevice(c, 'sensor-offline', ['--profile', 'env-sensor']);
    await simulate(plug, 'smart-plug');
    await simulate(relay, 'relay-board');
    await simulate(sensor, 'env-sensor');

    const thermostat = await loadTaskFolder(THERMOSTAT);
    await stopBundler();
    // A deployment names no local entry file: the manifest minus `entry`.
    const spec: Partial<typeof thermostat.spec> = { ...thermostat.spec };
    delete spec.entry;
    const document = {
      schema: 1,
      id: 'profiles-e2e',
      tasks: [
        { ...spec, config: { ...thermostat.spec.config, heaters: { 'room-1': 'plug-1', 'room-2': 'relay-1' } }, bundle: { url: dataUrl(thermostat.code), sha256: thermostat.sha256 } },
        { name: 'probe', version: '1.0.0', permissions: { devices: ['plug-1', 'relay-1', 'sensor-1', 'sensor-offline'] }, bundle: { url: dataUrl(PROBE), sha256: sha(PROBE) } },
      ],
      routes: [],
    };
    await adminRequest(c.socket, 'POST', '/v1/deployment', { document });
    await eventually(
      async () => ((await adminRequest<{ reported: { id?: string; status?: string } | null }>(c.socket, 'GET', '/v1/deployment')).reported?.status ?? '') === 'SUCCEEDED',
      20_000,
      'the deployment to succeed',
    );
  }, 60_000);

  afterAll(async () => {
    await Promise.allSettled(devices.map((d) => d.stop()));
    await c?.stop();
  });

  it('the thermostat switches a smart plug through its shadow and a relay board through its topics: one action, two interfaces', async () => {
    expect(await reported('plug-1')).toMatchObject({ power: 'off' });
    expect(await reported('relay-1')).toMatchObject({ channels: { 1: false } });
    const sensor = await connect(c.url, { clientId: 'room-sensors' });
    await sensor.publishAsync('sensors/room-1/temperature', '15.5', { qos: 1 });
    await sensor.publishAsync('sensors/room-2/temperature', '15.5', { qos: 1 });
    // The plug follows its shadow's desired.power and reports it; the relay board switches on its topic and reports it.
    await eventually(async () => (await reported('plug-1')).power === 'on', 5000, 'plug-1 to report power on');
    await eventually(async () => ((await reported('relay-1')).channels as Record<string, boolean>)['1'] === true, 5000, 'relay-1 to report channel 1 on');
    const plugShadow = await adminRequest<{ state: { desired?: Record<string, unknown> } }>(c.socket, 'GET', '/v1/shadow?thing=plug-1');
    expect(plugShadow.state.desired).toEqual({ power: 'on' });
    // The relay board was never told through its shadow: only its own topic interface.
    expect((await adminRequest<{ state: { desired?: unknown } }>(c.socket, 'GET', '/v1/shadow?thing=relay-1')).state.desired).toBeUndefined();

    await sensor.publishAsync('sensors/room-1/temperature', '25', { qos: 1 });
    await sensor.publishAsync('sensors/room-2/temperature', '25', { qos: 1 });
    await eventually(async () => (await reported('plug-1')).power === 'off', 5000, 'plug-1 to report power off');
    await eventually(async () => ((await reported('relay-1')).channels as Record<string, boolean>)['1'] === false, 5000, 'relay-1 to report channel 1 off');
  });

  it('reads a sensor by request/response, reads a plug from its shadow, passes parameters', async () => {
    await expect(invoke({ thing: 'sensor-1', action: 'read' })).resolves.toMatchObject({ result: { ok: { temperatureC: expect.any(Number) as number, humidity: 40 } } });
    await expect(invoke({ thing: 'plug-1', action: 'read' })).resolves.toMatchObject({ result: { ok: { power: expect.stringMatching(/^(on|off)$/) as string } } });
    await invoke({ thing: 'relay-1', action: 'setChannel', params: { channel: 3, on: true } });
    await eventually(async () => ((await reported('relay-1')).channels as Record<string, boolean>)['3'] === true, 5000, 'relay-1 channel 3 on');
  });

  it('refuses a device outside permissions.devices, an unknown action, a missing parameter, and times out on a silent device', async () => {
    const code = async (payload: unknown): Promise<string> => {
      const { result } = (await invoke(payload)) as { result: { ok?: unknown; error?: string } };
      return result.error ?? `accepted: ${JSON.stringify(result.ok)}`;
    };
    expect(await code({ thing: 'lamp-9', action: 'turnOn' })).toMatch(/COORD_ERR_TASK_DENIED/);
    expect(await code({ thing: 'plug-1', action: 'selfDestruct' })).toMatch(/COORD_ERR_DEVICE_ACTION.*no action selfDestruct/);
    expect(await code({ thing: 'relay-1', action: 'setChannel', params: { on: true } })).toMatch(/COORD_ERR_DEVICE_ACTION.*channel is required/);
    expect(await code({ thing: 'sensor-offline', action: 'read' })).toMatch(/COORD_ERR_DEVICE_TIMEOUT/);
  });
});
