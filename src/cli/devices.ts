/**
 * `coordinator devices add|list|show|revoke`: the running coordinator's device registry, over the
 * admin socket. `add` writes the device's bundle (certificate, key, CA, device.json) for flashing.
 */
import { existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { adminRequest } from '../admin/client.js';
import { adminSocketPath } from '../admin/socket.js';
import type { AddedDevice, DeviceView } from '../devices/admin-routes.js';
import { CoordinatorError } from '../errors.js';
import { configFromFlags, type ConfigFlags } from './common.js';

/** Flags of the device commands. */
export type DeviceFlags = ConfigFlags & {
  socket?: string;
  json?: boolean;
  profile?: string;
  attr?: string[];
  out?: string;
  password?: boolean;
  days?: string;
};

function socketOf(flags: DeviceFlags): string {
  return flags.socket ?? adminSocketPath(configFromFlags(flags));
}

function parseAttributes(pairs: readonly string[] = []): Record<string, string> {
  const out: Record<string, string> = {};
  for (const pair of pairs) {
    const eq = pair.indexOf('=');
    if (eq <= 0) throw new CoordinatorError('COORD_ERR_CLI_USAGE', `--attr ${pair}: expected NAME=VALUE`);
    out[pair.slice(0, eq)] = pair.slice(eq + 1);
  }
  return out;
}

/** Registers a device, issues its certificate and writes its bundle to OUT/THING/. */
export async function runDevicesAdd(thing: string, flags: DeviceFlags): Promise<void> {
  const attributes = parseAttributes(flags.attr);
  const dir = join(resolve(flags.out ?? '.'), thing);
  // Checked before the coordinator issues anything: a device must never be registered without its bundle.
  if (existsSync(dir) && readdirSync(dir).length > 0) {
    throw new CoordinatorError('COORD_ERR_CLI_USAGE', `${dir} already exists and is not empty; choose another --out directory`);
  }
  const body = { thing, attributes, password: flags.password === true, ...(flags.profile ? { profile: flags.profile } : {}), ...(flags.days ? { days: Number(flags.days) } : {}) };
  const added = await adminRequest<AddedDevice>(socketOf(flags), 'POST', '/v1/devices', body, 30_000);
  writeDeviceBundle(dir, thing, added);
  if (flags.json) {
    process.stdout.write(`${JSON.stringify({ device: added.device, bundle: dir, endpoint: added.endpoint, ...(added.password ? { password: added.password } : {}) }, null, 2)}\n`);
    return;
  }
  process.stdout.write(
    `device ${thing} registered; certificate sha256 ${added.device.certFingerprint ?? ''}, valid until ${added.device.certNotAfter ?? ''}\n` +
      `bundle: ${dir}/ (cert.pem, key.pem, ca.pem, device.json); endpoint mqtts://${added.endpoint.host}:${added.endpoint.port}\n` +
      (added.password ? `development password (shown once, only its hash is kept): ${added.password}\n` : ''),
  );
}

/** Prints the registered devices. */
export async function runDevicesList(flags: DeviceFlags): Promise<void> {
  const { devices } = await adminRequest<{ devices: DeviceView[] }>(socketOf(flags), 'GET', '/v1/devices');
  if (flags.json) {
    process.stdout.write(`${JSON.stringify(devices, null, 2)}\n`);
    return;
  }
  const rows = [['THING', 'STATE', 'CONNECTED', 'LAST SEEN', 'PROFILE', 'CERT UNTIL', 'PASSWORD']];
  for (const d of devices) {
    rows.push([d.thing, d.revokedAt ? 'revoked' : 'active', d.connected ? 'yes' : 'no', d.lastSeen ?? '-', d.profile ?? '-', d.certNotAfter ?? '-', d.hasPassword ? 'yes' : 'no']);
  }
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => r[c]!.length)));
  process.stdout.write(rows.map((r) => r.map((cell, c) => cell.padEnd(widths[c]!)).join('  ').trimEnd()).join('\n') + '\n');
}

/** Prints one device with its effective policy. */
export async function runDevicesShow(thing: string, flags: DeviceFlags): Promise<void> {
  const device = await adminRequest<unknown>(socketOf(flags), 'GET', `/v1/devices/show?${new URLSearchParams({ thing }).toString()}`);
  process.stdout.write(`${JSON.stringify(device, null, 2)}\n`);
}

/** Revokes a device: its certificate and password are refused and its connection is closed. */
export async function runDevicesRevoke(thing: string, flags: DeviceFlags): Promise<void> {
  const d = await adminRequest<DeviceView>(socketOf(flags), 'POST', '/v1/devices/revoke', { thing });
  process.stdout.write(`device ${thing} revoked at ${d.revokedAt ?? ''}: its certificate and password are refused and any live connection was closed\n`);
}

/** Writes a device's bundle (key, certificate, CA, device.json) into `dir`; throws a coded error if it cannot. */
export function writeDeviceBundle(dir: string, thing: string, added: AddedDevice): void {
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    writeFileSync(join(dir, 'key.pem'), added.keyPem, { flag: 'wx', mode: 0o600 });
    writeFileSync(join(dir, 'cert.pem'), added.certPem, { flag: 'wx', mode: 0o644 });
    writeFileSync(join(dir, 'ca.pem'), added.caPem, { flag: 'wx', mode: 0o644 });
    const deviceJson = {
      thingName: thing,
      clientId: thing,
      endpoint: added.endpoint,
      caFile: 'ca.pem',
      certFile: 'cert.pem',
      keyFile: 'key.pem',
      certificateFingerprint: added.device.certFingerprint,
      certificateNotAfter: added.device.certNotAfter,
    };
    writeFileSync(join(dir, 'device.json'), `${JSON.stringify(deviceJson, null, 2)}\n`, { flag: 'wx', mode: 0o644 });
  } catch (err) {
    throw new CoordinatorError(
      'COORD_ERR_CLI_USAGE',
      `device ${thing} was registered but its bundle could not be written to ${dir}: ${(err as Error).message}; revoke it with \`coordinator devices revoke ${thing}\``,
      { cause: err },
    );
  }
}
