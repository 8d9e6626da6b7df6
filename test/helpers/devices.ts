/**
 * Device onboarding for end-to-end tests, through the real CLI: `certs init`, a coordinator with the
 * TLS listener on a free loopback port, `devices add` writing a bundle; and MQTT.js connection attempts
 * that report how they ended (CONNACK, refusal, or a closed connection) instead of hanging.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import mqtt, { type IClientOptions, type MqttClient, type Packet } from 'mqtt';
import { afterAll, expect } from 'vitest';
import { adminRequest } from '../../src/admin/client.js';
import { connect } from './mqtt.js';
import { runCli, startCoordinator, tempDir, type RunningCoordinator } from './process.js';

/** A coordinator with a device CA and the TLS listener. */
export interface TlsCoordinator extends RunningCoordinator {
  readonly tlsPort: number;
  readonly tlsUrl: string;
  readonly configFile: string;
  /** The admin socket, for direct requests. */
  readonly socket: string;
}

/** `certs init` in a fresh data directory (or `dataDir`). */
export async function certsInit(dataDir: string): Promise<void> {
  const r = await runCli(['certs', 'init', '--data-dir', dataDir]);
  expect(r.code, r.stderr).toBe(0);
}

/**
 * Starts a coordinator with the gateway PKI and `listeners.mqtts` on a free port; `config` is merged
 * into the config file (e.g. devices.policies). `init: false` skips `certs init` (restarts).
 */
export async function startTlsCoordinator(options: { config?: Record<string, unknown>; dataDir?: string; init?: boolean } = {}): Promise<TlsCoordinator> {
  const dataDir = options.dataDir ?? tempDir('coord-dev-');
  if (options.init !== false) await certsInit(dataDir);
  const config = options.config ?? {};
  const listeners = (config.listeners ?? {}) as Record<string, unknown>;
  const file = join(tempDir('coord-cfg-'), 'config.json');
  writeFileSync(
    file,
    JSON.stringify({ ...config, listeners: { ...listeners, mqtts: { enabled: true, port: 0, ...((listeners.mqtts as object | undefined) ?? {}) } } }),
  );
  const c = await startCoordinator({ dataDir, args: ['--config', file] });
  const tls = c.logs.find((l) => l.listener === 'mqtts')!;
  const tlsPort = tls.port as number;
  return Object.assign(c, { tlsPort, tlsUrl: `mqtts://127.0.0.1:${tlsPort}`, configFile: file, socket: join(dataDir, 'coordinator.sock') });
}

/** What `devices add` wrote. */
export interface Bundle {
  readonly thing: string;
  readonly dir: string;
  readonly cert: string;
  readonly key: string;
  readonly ca: string;
  readonly fingerprint: string;
  readonly password?: string;
  readonly deviceJson: { thingName: string; endpoint: { host: string; port: number } };
}

/** `coordinator devices add THING [args]` against `c`; returns the bundle it wrote. */
export async function addDevice(c: { dataDir: string }, thing: string, args: string[] = []): Promise<Bundle> {
  const out = tempDir('bundle-');
  const r = await runCli(['devices', 'add', thing, '--data-dir', c.dataDir, '--out', out, '--json', ...args]);
  expect(r.code, r.stderr).toBe(0);
  const printed = JSON.parse(r.stdout) as { device: { certFingerprint: string }; password?: string };
  const dir = join(out, thing);
  const read = (f: string): string => readFileSync(join(dir, f), 'utf8');
  return {
    thing,
    dir,
    cert: read('cert.pem'),
    key: read('key.pem'),
    ca: read('ca.pem'),
    fingerprint: printed.device.certFingerprint,
    ...(printed.password ? { password: printed.password } : {}),
    deviceJson: JSON.parse(read('device.json')) as Bundle['deviceJson'],
  };
}

/** Connects a device over mutual TLS with its bundle (client id = thing name unless overridden). */
export function connectDevice(c: TlsCoordinator, bundle: Bundle, options: IClientOptions = {}): ReturnType<typeof connect> {
  return connect(c.tlsUrl, { ca: bundle.ca, cert: bundle.cert, key: bundle.key, clientId: bundle.thing, ...options });
}

/** How a connection attempt ended. */
export type Attempt = { kind: 'connected'; client: MqttClient } | { kind: 'refused'; returnCode: number } | { kind: 'failed'; error: string } | { kind: 'closed' };

const attempts = new Set<MqttClient>();
afterAll(() => {
  for (const c of attempts) c.end(true);
});

/** Tries to connect and reports how it ended: never hangs, never reconnects. */
export function attempt(url: string, options: IClientOptions = {}, timeoutMs = 5000): Promise<Attempt> {
  return new Promise((resolve) => {
    const client = mqtt.connect(url, { reconnectPeriod: 0, connectTimeout: timeoutMs, ...options });
    attempts.add(client);
    let settled = false;
    const settle = (a: Attempt): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (a.kind !== 'connected') client.end(true);
      resolve(a);
    };
    const timer = setTimeout(() => settle({ kind: 'failed', error: 'timeout' }), timeoutMs + 1000);
    client.once('connect', () => settle({ kind: 'connected', client }));
    client.once('error', (err: Error & { code?: number | string }) => {
      if (typeof err.code === 'number') settle({ kind: 'refused', returnCode: err.code });
      else settle({ kind: 'failed', error: `${err.code ?? ''} ${err.message}` });
    });
    client.once('close', () => settle({ kind: 'closed' }));
  });
}

/** A registered device as the admin channel reports it. */
export interface DeviceInfo {
  thing: string;
  connected: boolean;
  lastSeen: string | null;
  revokedAt: string | null;
  certFingerprint: string | null;
  attributes: Record<string, string>;
}

/** `GET /v1/devices/show` of the running coordinator. */
export function deviceInfo(c: { socket: string }, thing: string): Promise<DeviceInfo> {
  return adminRequest<DeviceInfo>(c.socket, 'GET', `/v1/devices/show?${new URLSearchParams({ thing }).toString()}`);
}

/** Polls `check` every 20 ms until it holds; rejects after `timeoutMs`. Returns the elapsed time. */
export async function eventually(check: () => Promise<boolean>, timeoutMs: number, what: string): Promise<number> {
  const started = Date.now();
  for (;;) {
    if (await check()) return Date.now() - started;
    if (Date.now() - started > timeoutMs) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** SUBSCRIBEs and resolves with the SUBACK's return codes as sent (MQTT.js turns a 0x80 into an error). */
export function suback(client: MqttClient, filters: string[], qos: 0 | 1 = 1): Promise<number[]> {
  return new Promise((resolve) => {
    const onPacket = (packet: Packet): void => {
      if (packet.cmd !== 'suback') return;
      client.off('packetreceive', onPacket);
      resolve(packet.granted.map(Number));
    };
    client.on('packetreceive', onPacket);
    client.subscribe(filters, { qos }, () => undefined);
  });
}
