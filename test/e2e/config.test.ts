/**
 * A bad configuration is refused before anything starts, with every problem listed by path, source,
 * the value given and what is allowed. `config check` and `config print` work on the same rules.
 */
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { runCli, tempDir } from '../helpers/process.js';

interface BadCase {
  name: string;
  /** File contents: an object is written as JSON, a string as is; undefined means no file is written. */
  file?: unknown;
  args?: string[];
  env?: NodeJS.ProcessEnv;
  code: string;
  /** The case sets the MQTT port itself (otherwise --mqtt-port 0 is added so nothing can collide). */
  setsPort?: boolean;
  /** Every fragment must appear in stderr. */
  expect: string[];
}

const cases: BadCase[] = [
  {
    name: 'port out of range',
    file: { listeners: { mqtt: { port: 70000 } } },
    setsPort: true,
    code: 'COORD_ERR_CONFIG_INVALID',
    expect: ['listeners.mqtt.port (from file', 'got 70000', 'allowed: a value <= 65535'],
  },
  {
    name: 'unknown log level',
    file: { logLevel: 'loud' },
    code: 'COORD_ERR_CONFIG_INVALID',
    expect: ['logLevel (from file', 'got "loud"', 'allowed: one of "fatal", "error", "warn", "info", "debug", "trace", "silent"'],
  },
  {
    name: 'misspelt key',
    file: { mqttPort: 1884 },
    code: 'COORD_ERR_CONFIG_INVALID',
    expect: ['mqttPort (from file', 'unknown key', 'got 1884', 'known keys here: thingName, dataDir, logLevel, listeners, broker, shadows, tasks, deployments, devices, cloud, admin, shutdownTimeoutMs'],
  },
  {
    name: 'thing name with characters AWS does not allow',
    file: { thingName: 'my gateway!' },
    code: 'COORD_ERR_CONFIG_INVALID',
    expect: ['thingName (from file', 'may contain only letters, digits', 'got "my gateway!"'],
  },
  {
    name: 'thing name longer than 128 bytes',
    file: { thingName: 'g'.repeat(129) },
    code: 'COORD_ERR_CONFIG_INVALID',
    expect: ['thingName', 'must be at most 128 bytes'],
  },
  {
    name: 'unknown anonymous mode',
    file: { broker: { anonymous: 'sometimes' } },
    code: 'COORD_ERR_CONFIG_INVALID',
    expect: ['broker.anonymous (from file', 'allowed: one of "loopback", "never", "always"'],
  },
  {
    name: 'TLS listener with a certificate but no key',
    file: { listeners: { mqtts: { enabled: true, certFile: '/etc/coordinator/server.pem' } } },
    code: 'COORD_ERR_CONFIG_INVALID',
    expect: ['1 problem', 'listeners.mqtts.keyFile', 'must be set together with listeners.mqtts.certFile/keyFile'],
  },
  {
    name: 'wrong type',
    file: { shutdownTimeoutMs: 'fast' },
    code: 'COORD_ERR_CONFIG_INVALID',
    expect: ['shutdownTimeoutMs (from file', 'got "fast"', 'allowed: a number'],
  },
  {
    name: 'several problems at once, all listed',
    file: { listeners: { mqtt: { port: -1, host: '' } }, broker: { maxClientIdBytes: 5 }, extra: true },
    setsPort: true,
    code: 'COORD_ERR_CONFIG_INVALID',
    expect: ['4 problems', 'listeners.mqtt.port', 'listeners.mqtt.host', 'broker.maxClientIdBytes', 'extra'],
  },
  {
    name: 'top level is not an object',
    file: [1, 2, 3],
    code: 'COORD_ERR_CONFIG_INVALID',
    expect: ['must contain a JSON object at the top level'],
  },
  {
    name: 'secrets are never echoed, even under a misspelt key',
    file: { listeners: { mqtts: { passphrase: 12345, passphrse: 'hunter2' } } },
    code: 'COORD_ERR_CONFIG_INVALID',
    expect: ['listeners.mqtts.passphrase', 'listeners.mqtts.passphrse', 'got ****'],
  },
  {
    name: '__proto__ in the file is an unknown key, not prototype pollution',
    file: '{ "__proto__": { "polluted": true } }',
    code: 'COORD_ERR_CONFIG_INVALID',
    expect: ['__proto__ (from file', 'unknown key'],
  },
  {
    name: 'file is not JSON',
    file: '{ "logLevel": "info", }',
    code: 'COORD_ERR_CONFIG_FILE_PARSE',
    expect: ['is not valid JSON'],
  },
  {
    name: 'file does not exist',
    code: 'COORD_ERR_CONFIG_FILE_UNREADABLE',
    expect: ['cannot read config file', 'ENOENT'],
  },
  {
    name: 'bad value from the environment names the variable',
    env: { COORDINATOR_LISTENERS__MQTT__PORT: '99999' },
    setsPort: true,
    code: 'COORD_ERR_CONFIG_INVALID',
    expect: ['listeners.mqtt.port (from env COORDINATOR_LISTENERS__MQTT__PORT)', 'got 99999'],
  },
  {
    name: 'unknown environment setting',
    env: { COORDINATOR_MQTT_PORT: '1884' },
    code: 'COORD_ERR_CONFIG_INVALID',
    expect: ['mqttPort (from env COORDINATOR_MQTT_PORT)', 'unknown key'],
  },
  {
    name: 'bad flag value names the flag',
    args: ['--mqtt-port', 'abc'],
    setsPort: true,
    code: 'COORD_ERR_CONFIG_INVALID',
    expect: ['listeners.mqtt.port (from --mqtt-port)', 'got "abc"', 'allowed: a number'],
  },
];

describe('bad configuration is refused before anything starts', () => {
  for (const c of cases) {
    it(c.name, async () => {
      const dir = tempDir();
      const dataDir = join(dir, 'data');
      const args = ['start', '--data-dir', dataDir, ...(c.args ?? [])];
      if (c.file !== undefined || c.name === 'file does not exist') {
        const file = join(dir, 'config.json');
        if (c.file !== undefined) writeFileSync(file, typeof c.file === 'string' ? c.file : JSON.stringify(c.file));
        args.push('--config', file);
      }
      if (!c.setsPort) args.push('--mqtt-port', '0');
      const r = await runCli(args, { env: c.env });
      expect(r.code).toBe(78);
      expect(r.stderr).toContain(c.code);
      for (const fragment of c.expect) expect(r.stderr).toContain(fragment);
      expect(r.stderr).not.toContain('hunter2');
      expect(r.stderr).not.toContain('12345');
      // Nothing started: no listener line, no data directory, no database.
      expect(r.stdout).not.toContain('listener on');
      expect(existsSync(dataDir)).toBe(false);
    });
  }
});

describe('coordinator config', () => {
  it('check accepts a valid file', async () => {
    const dir = tempDir();
    const file = join(dir, 'ok.json');
    writeFileSync(file, JSON.stringify({ thingName: 'gw-1', listeners: { mqtt: { port: 1884 } } }));
    const r = await runCli(['config', 'check', file]);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('is a valid coordinator configuration');
  });

  it('check lists every problem of an invalid file and exits 78', async () => {
    const dir = tempDir();
    const file = join(dir, 'bad.json');
    writeFileSync(file, JSON.stringify({ logLevel: 'chatty', listeners: { mqtt: { port: 'x' } } }));
    const r = await runCli(['config', 'check', file]);
    expect(r.code).toBe(78);
    expect(r.stderr).toContain('2 problems');
    expect(r.stderr).toContain('logLevel');
    expect(r.stderr).toContain('listeners.mqtt.port');
  });

  it('print shows the effective config with precedence file < env < flags and secrets masked', async () => {
    const dir = tempDir();
    const file = join(dir, 'c.json');
    writeFileSync(
      file,
      JSON.stringify({
        thingName: 'from-file',
        logLevel: 'debug',
        listeners: { mqtt: { port: 1000 }, mqtts: { passphrase: 'hunter2' } },
      }),
    );
    const r = await runCli(['config', 'print', '--config', file, '--mqtt-port', '3000', '--data-dir', dir], {
      env: { COORDINATOR_LISTENERS__MQTT__PORT: '2000', COORDINATOR_LOG_LEVEL: 'warn' },
    });
    expect(r.code).toBe(0);
    const printed = JSON.parse(r.stdout) as {
      thingName: string;
      logLevel: string;
      dataDir: string;
      broker: unknown;
      listeners: { mqtt: unknown; mqtts: { passphrase: string } };
    };
    expect(printed.thingName).toBe('from-file');
    expect(printed.logLevel).toBe('warn');
    expect(printed.listeners.mqtt).toEqual({ enabled: true, host: '127.0.0.1', port: 3000 });
    expect(printed.listeners.mqtts.passphrase).toBe('****');
    expect(r.stdout).not.toContain('hunter2');
    expect(printed.dataDir).toBe(dir);
    expect(printed.broker).toEqual({
      anonymous: 'loopback',
      maxClientIdBytes: 128,
      maxPayloadBytes: 131072,
      maxQueuedPerSession: 5000,
      connectTimeoutMs: 30000,
      queueLimit: 1000,
    });
  });

  it('an unknown command or flag is a usage error (exit 64)', async () => {
    const a = await runCli(['strat']);
    expect(a.code).toBe(64);
    expect(a.stderr).toContain('COORD_ERR_CLI_USAGE');
    const b = await runCli(['start', '--mqtt-prot', '1']);
    expect(b.code).toBe(64);
    expect(b.stderr).toContain('COORD_ERR_CLI_USAGE');
  });
});
