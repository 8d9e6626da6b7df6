/** compileCoordinatorOptions: defaults, precedence, environment mapping, path resolution. */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { compileCoordinatorOptions, envKeyToPath } from '../../src/config/load.js';
import { maskSecrets } from '../../src/config/mask.js';
import { defaultThingName } from '../../src/config/schema.js';
import { isCoordinatorError, type CoordinatorError } from '../../src/errors.js';

function configFile(content: unknown): string {
  const dir = mkdtempSync(join(tmpdir(), 'coord-cfg-'));
  const file = join(dir, 'config.json');
  writeFileSync(file, JSON.stringify(content));
  return file;
}

describe('compileCoordinatorOptions', () => {
  it('embeds working defaults: loopback broker on 1883, ./device-shadows, host-derived thing name', () => {
    const c = compileCoordinatorOptions({ env: {}, cwd: '/srv/gw' });
    expect(c.listeners.mqtt).toEqual({ enabled: true, host: '127.0.0.1', port: 1883 });
    expect(c.listeners.mqtts.enabled).toBe(false);
    expect(c.dataDir).toBe('/srv/gw/device-shadows');
    expect(c.thingName).toBe(defaultThingName());
    expect(c.broker.anonymous).toBe('loopback');
    expect(c.logLevel).toBe('info');
  });

  it('applies file < environment < flags', () => {
    const file = configFile({ logLevel: 'debug', thingName: 'file-gw', listeners: { mqtt: { port: 1000, host: '::1' } } });
    const c = compileCoordinatorOptions({
      file,
      env: { COORDINATOR_LOG_LEVEL: 'warn', COORDINATOR_LISTENERS__MQTT__PORT: '2000', UNRELATED: 'x' },
      overrides: [{ path: 'listeners.mqtt.port', value: 3000, source: '--mqtt-port' }],
    });
    expect(c.thingName).toBe('file-gw');
    expect(c.logLevel).toBe('warn');
    expect(c.listeners.mqtt).toEqual({ enabled: true, host: '::1', port: 3000 });
  });

  it('reads the file named by COORDINATOR_CONFIG', () => {
    const file = configFile({ thingName: 'env-selected' });
    expect(compileCoordinatorOptions({ env: { COORDINATOR_CONFIG: file } }).thingName).toBe('env-selected');
  });

  it('resolves relative paths against the working directory', () => {
    const c = compileCoordinatorOptions({ env: { COORDINATOR_DATA_DIR: 'var/data', COORDINATOR_ADMIN__SOCKET_PATH: 'run/c.sock' }, cwd: '/opt/coord' });
    expect(c.dataDir).toBe('/opt/coord/var/data');
    expect(c.admin.socketPath).toBe('/opt/coord/run/c.sock');
  });

  it('reports every problem with path, source, value and what is allowed', () => {
    const file = configFile({ logLevel: 'loud' });
    let err: CoordinatorError | undefined;
    try {
      compileCoordinatorOptions({ file, env: { COORDINATOR_BROKER__QUEUE_LIMIT: '0' } });
    } catch (e) {
      if (isCoordinatorError(e)) err = e;
    }
    expect(err?.code).toBe('COORD_ERR_CONFIG_INVALID');
    const problems = err?.details?.problems as { path: string; source: string; given: string; allowed: string }[];
    expect(problems).toEqual([
      expect.objectContaining({ path: 'logLevel', source: `file ${file}`, given: '"loud"' }),
      expect.objectContaining({ path: 'broker.queueLimit', source: 'env COORDINATOR_BROKER__QUEUE_LIMIT', given: '0', allowed: 'a value >= 1' }),
    ]);
  });
});

describe('environment and names', () => {
  it('maps COORDINATOR_* names to config paths', () => {
    expect(envKeyToPath('DATA_DIR')).toBe('dataDir');
    expect(envKeyToPath('LISTENERS__MQTTS__CERT_FILE')).toBe('listeners.mqtts.certFile');
    expect(envKeyToPath('BROKER__MAX_CLIENT_ID_BYTES')).toBe('broker.maxClientIdBytes');
  });

  it('derives a valid AWS thing name from any host name', () => {
    expect(defaultThingName('pi-gateway.local')).toBe('coordinator-pi-gateway-local');
    expect(defaultThingName('...')).toBe('coordinator-gateway');
    expect(defaultThingName('x'.repeat(300))).toHaveLength(128);
  });

  it('masks secrets for printing without touching the original', () => {
    const c = compileCoordinatorOptions({ env: { COORDINATOR_LISTENERS__MQTTS__PASSPHRASE: '"s3cret"' } });
    const masked = maskSecrets(c) as { listeners: { mqtts: { passphrase: string } } };
    expect(masked.listeners.mqtts.passphrase).toBe('****');
    expect(c.listeners.mqtts.passphrase).toBe('s3cret');
  });
});
