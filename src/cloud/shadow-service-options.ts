/**
 * Options of `coordinator shadow-service`: the flags as given, compiled once into validated, defaulted
 * values (certificate files read, the client id settled) before anything connects.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { CoordinatorError } from '../errors.js';
import { AWS_SHADOW_LIMITS, type ShadowLimits } from '../shadow/request.js';
import { ensureDataDir } from '../store/database.js';

/** The flags of `coordinator shadow-service`, as parsed. */
export interface ShadowServiceFlags {
  broker?: string;
  dataDir?: string;
  clientId?: string;
  username?: string;
  password?: string;
  ca?: string;
  cert?: string;
  key?: string;
  logLevel?: string;
}

/** Validated, defaulted options of the broker shadow service. */
export interface BrokerShadowServiceOptions {
  /** mqtt://, mqtts://, tcp://, ssl://, ws:// or wss:// URL of the broker. */
  readonly broker: string;
  /** Absolute path of the service's own data directory (database, admin socket, client id). */
  readonly dataDir: string;
  /** Stable client id: the broker keeps the persistent session under it. */
  readonly clientId: string;
  readonly username?: string | undefined;
  readonly password?: string | undefined;
  /** PEM contents, read at compile time so a missing file stops the command before it connects. */
  readonly tls: { readonly ca?: Buffer; readonly cert?: Buffer; readonly key?: Buffer };
  readonly logLevel: string;
  readonly keepaliveS: number;
  readonly connectTimeoutMs: number;
  /** Reconnect backoff: jittered, doubling from min to max. */
  readonly reconnectMinMs: number;
  readonly reconnectMaxMs: number;
  /** How long a clean stop waits for the broker to acknowledge the last answers. */
  readonly drainTimeoutMs: number;
  readonly limits: ShadowLimits;
  readonly maxInFlightPerShadow: number;
}

/** Default data directory, relative to the working directory (not the coordinator's ./device-shadows). */
export const DEFAULT_SHADOW_SERVICE_DATA_DIR = 'shadow-service';
/** File in the data directory holding the generated client id. */
export const CLIENT_ID_FILE = 'client-id';
/** Environment variable read for the broker password when --password is not given (keeps it out of `ps`). */
export const PASSWORD_ENV = 'SHADOW_SERVICE_PASSWORD';

const PROTOCOLS = new Set(['mqtt:', 'mqtts:', 'tcp:', 'ssl:', 'ws:', 'wss:']);
const TLS_PROTOCOLS = new Set(['mqtts:', 'ssl:', 'wss:']);
const LOG_LEVELS = new Set(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']);

function usage(message: string): CoordinatorError {
  return new CoordinatorError('COORD_ERR_CLI_USAGE', `${message} (see coordinator shadow-service --help)`);
}

function readPem(flag: string, file: string): Buffer {
  try {
    return readFileSync(file);
  } catch (err) {
    throw new CoordinatorError('COORD_ERR_SHADOW_SERVICE_TLS', `cannot read ${flag} ${file}: ${(err as Error).message}`, { cause: err });
  }
}

/**
 * The client id kept in the data directory, created on first use: stable across restarts (so the broker
 * keeps queuing requests for the session while the service is down) and different for every data directory.
 */
function storedClientId(dataDir: string): string {
  const file = join(dataDir, CLIENT_ID_FILE);
  try {
    const id = readFileSync(file, 'utf8').trim();
    if (id) return id;
    throw new CoordinatorError('COORD_ERR_DATA_DIR', `${file} is empty: delete it (a new client id is made) or pass --client-id`);
  } catch (err) {
    if (err instanceof CoordinatorError) throw err;
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw new CoordinatorError('COORD_ERR_DATA_DIR', `cannot read ${file}: ${(err as Error).message}`, { cause: err });
  }
  // [MQTT-3.1.3-5]: a server must accept 1–23 alphanumeric bytes; this is 19.
  const id = `shadowsvc${randomBytes(5).toString('hex')}`;
  try {
    // 'wx': of two services started together on one directory, the first id written wins.
    writeFileSync(file, `${id}\n`, { mode: 0o600, flag: 'wx' });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return storedClientId(dataDir);
    throw new CoordinatorError('COORD_ERR_DATA_DIR', `cannot write ${file}: ${(err as Error).message}`, { cause: err });
  }
  return id;
}

/** Validates the flags and settles every default; throws COORD_ERR_CLI_USAGE / _TLS / COORD_ERR_DATA_DIR. */
export function compileBrokerShadowServiceOptions(flags: ShadowServiceFlags, env: NodeJS.ProcessEnv = process.env): BrokerShadowServiceOptions {
  if (flags.broker === undefined) throw usage('--broker URL is required, e.g. --broker mqtt://127.0.0.1:1883');
  let url: URL;
  try {
    url = new URL(flags.broker);
  } catch {
    throw usage(`--broker ${flags.broker} is not a URL`);
  }
  if (!PROTOCOLS.has(url.protocol)) throw usage(`--broker ${flags.broker}: the scheme must be mqtt, mqtts, tcp, ssl, ws or wss`);
  const tlsUrl = TLS_PROTOCOLS.has(url.protocol);
  if (!tlsUrl && (flags.ca ?? flags.cert ?? flags.key) !== undefined) throw usage('--ca, --cert and --key need a TLS broker URL (mqtts://, ssl:// or wss://)');
  if ((flags.cert === undefined) !== (flags.key === undefined)) throw usage('--cert and --key go together');
  const password = flags.password ?? env[PASSWORD_ENV];
  // [MQTT-3.1.2-22]: no password without a user name.
  if (password !== undefined && flags.username === undefined && url.username === '') throw usage('a password needs --username');
  const logLevel = flags.logLevel ?? 'info';
  if (!LOG_LEVELS.has(logLevel)) throw usage(`--log-level ${logLevel} is not one of ${[...LOG_LEVELS].join(', ')}`);
  if (flags.clientId !== undefined && (flags.clientId === '' || Buffer.byteLength(flags.clientId) > 128)) throw usage('--client-id must be 1 to 128 bytes');

  const dataDir = resolve(flags.dataDir ?? DEFAULT_SHADOW_SERVICE_DATA_DIR);
  ensureDataDir(dataDir);
  const tls: { ca?: Buffer; cert?: Buffer; key?: Buffer } = {};
  if (flags.ca !== undefined) tls.ca = readPem('--ca', flags.ca);
  if (flags.cert !== undefined) tls.cert = readPem('--cert', flags.cert);
  if (flags.key !== undefined) tls.key = readPem('--key', flags.key);

  return {
    broker: flags.broker,
    dataDir,
    clientId: flags.clientId ?? storedClientId(dataDir),
    username: flags.username,
    password,
    tls,
    logLevel,
    keepaliveS: 30,
    connectTimeoutMs: 10_000,
    reconnectMinMs: 500,
    reconnectMaxMs: 30_000,
    drainTimeoutMs: 3000,
    limits: AWS_SHADOW_LIMITS,
    maxInFlightPerShadow: 100,
  };
}
