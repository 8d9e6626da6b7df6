/**
 * `coordinator simulate --devices N --profile P`: N simulated devices of one profile against the running
 * coordinator, each a real MQTT client over mutual TLS with its own issued certificate (see
 * src/devices/simulator.ts for what each profile does). Devices are registered on first use and their
 * bundles kept (default `<dataDir>/simulated-devices/`), so running it again reuses them. Runs until
 * Ctrl-C (or --duration), then disconnects every device.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { adminRequest } from '../admin/client.js';
import { adminSocketPath } from '../admin/socket.js';
import type { CoordinatorStatus } from '../coordinator.js';
import type { AddedDevice } from '../devices/admin-routes.js';
import { SimulatedDevice } from '../devices/simulator.js';
import { CoordinatorError } from '../errors.js';
import { configFromFlags, type ConfigFlags } from './common.js';
import { writeDeviceBundle } from './devices.js';

/** Flags of `coordinator simulate`. */
export type SimulateFlags = ConfigFlags & {
  socket?: string;
  devices?: string;
  profile?: string;
  prefix?: string;
  telemetryMs?: string;
  certs?: string;
  duration?: string;
};

function positive(name: string, value: string | undefined, dflt: number): number {
  if (value === undefined) return dflt;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0) throw new CoordinatorError('COORD_ERR_CLI_USAGE', `--${name} must be a whole number`);
  return n;
}

/** Registers (first time) and connects the simulated devices; resolves when they have all disconnected. */
export async function runSimulate(flags: SimulateFlags): Promise<void> {
  const config = configFromFlags(flags);
  const socket = flags.socket ?? adminSocketPath(config);
  const count = positive('devices', flags.devices, 1);
  const profile = flags.profile;
  if (!profile) throw new CoordinatorError('COORD_ERR_CLI_USAGE', '--profile is required (smart-plug, relay-board, env-sensor, or one of devices.profilesDir)');
  const prefix = flags.prefix ?? `sim-${profile}`;
  const telemetryMs = positive('telemetry-ms', flags.telemetryMs, 5000);
  const durationS = positive('duration', flags.duration, 0);
  const certs = resolve(flags.certs ?? join(config.dataDir, 'simulated-devices'));

  const status = await adminRequest<CoordinatorStatus>(socket, 'GET', '/v1/status');
  const tls = status.listeners.find((l) => l.name === 'mqtts');
  if (!tls) throw new CoordinatorError('COORD_ERR_CLI_USAGE', 'the coordinator has no TLS listener: enable listeners.mqtts (after `coordinator certs init`)');
  const url = `mqtts://${tls.host === '0.0.0.0' || tls.host === '::' ? '127.0.0.1' : tls.host}:${tls.port}`;

  const devices: SimulatedDevice[] = [];
  const things = Array.from({ length: count }, (_, i) => `${prefix}-${i + 1}`);
  // A few handshakes at a time: a gateway-sized CPU should not be flooded by its own simulator.
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < things.length) {
      const thing = things[next++]!;
      const dir = join(certs, thing);
      if (!existsSync(join(dir, 'cert.pem'))) {
        const added = await adminRequest<AddedDevice>(socket, 'POST', '/v1/devices', { thing, profile }, 30_000);
        writeDeviceBundle(dir, thing, added);
      }
      const read = (f: string): string => readFileSync(join(dir, f), 'utf8');
      devices.push(await SimulatedDevice.start({ thing, profile, url, caPem: read('ca.pem'), certPem: read('cert.pem'), keyPem: read('key.pem'), telemetryMs }));
    }
  };
  try {
    await Promise.all(Array.from({ length: Math.min(16, count) }, worker));
  } catch (err) {
    await Promise.allSettled(devices.map((d) => d.stop()));
    throw err;
  }
  process.stdout.write(`${devices.length} ${profile} devices connected to ${url} (${things[0]} … ${things[things.length - 1]}); bundles in ${certs}\n`);
  await new Promise<void>((done) => {
    const stop = (): void => done();
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
    if (durationS > 0) setTimeout(stop, durationS * 1000).unref();
  });
  await Promise.allSettled(devices.map((d) => d.stop()));
  process.stdout.write(`${devices.length} devices disconnected\n`);
}
