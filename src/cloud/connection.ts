/**
 * The coordinator's connection to its upstream MQTT service: AWS IoT Core (mutual TLS on 8883) or any
 * MQTT 3.1.1 broker with a shadow service (plain or TLS), including another coordinator. MQTT.js does
 * the protocol; this file owns the policy around it: one connection, a persistent session (so QoS 1
 * answers sent while the link was down are not lost), reconnects with jittered exponential backoff
 * (AWS IoT's guidance: many gateways must not reconnect in step after an outage), and a state others
 * can watch and `coordinator cloud status` shows.
 */
import { EventEmitter } from 'node:events';
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';
import type { ErrorCode } from '../errors.js';
import type { Logger } from '../log/logger.js';
import { noDelay } from './no-delay.js';
import { loadCloudTls, type CloudTlsMaterial } from './tls-files.js';

/** Where the link stands. */
export type LinkState = 'connecting' | 'connected' | 'offline' | 'stopped';

/** Connection settings (config `cloud`). */
export interface ConnectionOptions {
  readonly url: string;
  readonly clientId: string;
  readonly keepaliveS: number;
  readonly caFile?: string | undefined;
  readonly certFile?: string | undefined;
  readonly keyFile?: string | undefined;
  readonly username?: string | undefined;
  readonly password?: string | undefined;
  readonly reconnectMinMs: number;
  readonly reconnectMaxMs: number;
  readonly connectTimeoutMs: number;
}

/** What the connection tells its users. */
export interface ConnectionEvents {
  /** Connected (again); `sessionPresent` false means the upstream forgot our subscriptions. */
  up: [client: MqttClient, sessionPresent: boolean];
  /** An established connection ended; `error` is why, when the client said (e.g. "Keepalive timeout"). */
  down: [error: string | undefined];
  /** An attempt ended before CONNACK: the upstream is unreachable or refused us. */
  failed: [error: string | undefined];
  message: [topic: string, payload: Buffer];
}

/** MQTT.js's message when the upstream stopped answering PINGREQs: the network, not the upstream's choice. */
export const KEEPALIVE_TIMEOUT = 'Keepalive timeout';

/**
 * COORD_ERR_CLOUD_AUTH when `err` says the upstream refused who we are (or we refused its certificate):
 * retrying will not help until someone fixes credentials, so it is worth a warning of its own.
 */
function classify(err: Error & { code?: unknown }): ErrorCode {
  // [MQTT-3.2.2.3] CONNACK 2 identifier rejected, 4 bad user name or password, 5 not authorized.
  if (typeof err.code === 'number') return err.code === 2 || err.code === 4 || err.code === 5 ? 'COORD_ERR_CLOUD_AUTH' : 'COORD_ERR_CLOUD_OFFLINE';
  // OpenSSL alerts (ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED, ..._UNKNOWN_CA, ..._BAD_CERTIFICATE) and
  // node's verification of the server (ERR_TLS_CERT_ALTNAME_INVALID, UNABLE_TO_VERIFY_LEAF_SIGNATURE, CERT_HAS_EXPIRED).
  if (typeof err.code === 'string' && /^ERR_SSL_|^ERR_TLS_|CERT|SIGNATURE|ISSUER/.test(err.code)) return 'COORD_ERR_CLOUD_AUTH';
  return 'COORD_ERR_CLOUD_OFFLINE';
}

/** One supervised upstream connection. */
export class CloudConnection extends EventEmitter<ConnectionEvents> {
  readonly #options: ConnectionOptions;
  readonly #tls: CloudTlsMaterial;
  readonly #log: Logger;
  #client: MqttClient | undefined;
  #state: LinkState = 'offline';
  #attempt = 0;
  #timer: NodeJS.Timeout | undefined;
  #since = new Date();
  #lastError: string | undefined;
  #lastErrorCode: ErrorCode | undefined;
  /** What the last COORD_ERR_CLOUD_AUTH warning said: the same refusal is not repeated at every attempt. */
  #warned: string | undefined;
  connects = 0;

  /** Reads the TLS files now: throws COORD_ERR_CLOUD_TLS for one that is missing or unusable. */
  constructor(options: ConnectionOptions, log: Logger) {
    super();
    this.#options = options;
    this.#tls = loadCloudTls(options);
    this.#log = log;
  }

  get state(): LinkState {
    return this.#state;
  }

  /** The connected client, or undefined while the link is down. */
  get client(): MqttClient | undefined {
    return this.#state === 'connected' ? this.#client : undefined;
  }

  /** State, since when, the last error (and its code), connections made. */
  status(): { state: LinkState; since: string; url: string; clientId: string; lastError: string | null; lastErrorCode: ErrorCode | null; connects: number } {
    return {
      state: this.#state,
      since: this.#since.toISOString(),
      url: this.#options.url,
      clientId: this.#options.clientId,
      lastError: this.#lastError ?? null,
      lastErrorCode: this.#lastErrorCode ?? null,
      connects: this.connects,
    };
  }

  start(): void {
    this.#connect();
  }

  #set(state: LinkState): void {
    if (this.#state === state) return;
    this.#state = state;
    this.#since = new Date();
  }

  #connect(): void {
    if (this.#state === 'stopped') return;
    this.#set('connecting');
    // What went wrong in this attempt; the previous attempt's error stays on show until replaced.
    let attemptError: { message: string; code: ErrorCode } | undefined;
    const o = this.#options;
    const options: IClientOptions = {
      clientId: o.clientId,
      // A persistent session: QoS 1 answers and cloud deltas published while we reconnect wait for us.
      clean: false,
      keepalive: o.keepaliveS,
      // Reconnects are ours (jittered backoff), not MQTT.js's fixed period.
      reconnectPeriod: 0,
      connectTimeout: o.connectTimeoutMs,
      ...this.#tls,
      ...(o.username !== undefined ? { username: o.username } : {}),
      ...(o.password !== undefined ? { password: o.password } : {}),
    };
    let client: MqttClient;
    try {
      client = mqtt.connect(o.url, options);
    } catch (err) {
      this.#failed(err as Error);
      return;
    }
    this.#client = client;
    let secured = false;
    client.stream?.once('secureConnect', () => (secured = true));
    client.on('connect', (connack) => {
      // Request/response over small packets: Nagle's algorithm with the peer's delayed ACKs would add
      // ~40 ms to every answer (measured: 20 shadow updates/s instead of hundreds).
      noDelay(client);
      this.#attempt = 0;
      this.connects++;
      this.#lastError = undefined;
      this.#lastErrorCode = undefined;
      this.#warned = undefined;
      this.#set('connected');
      this.#log.info({ url: o.url, clientId: o.clientId, sessionPresent: connack.sessionPresent }, 'cloud link connected');
      this.emit('up', client, connack.sessionPresent);
    });
    client.on('message', (topic, payload) => this.emit('message', topic, payload));
    client.on('error', (err) => {
      attemptError = { message: err.message, code: classify(err) };
      this.#lastError = err.message;
      this.#lastErrorCode = attemptError.code;
    });
    client.on('close', () => {
      if (this.#client !== client) return;
      const wasUp = this.#state === 'connected';
      client.removeAllListeners();
      client.end(true);
      this.#client = undefined;
      if (this.#state === 'stopped') return;
      this.#set('offline');
      if (!wasUp && secured && attemptError === undefined) {
        // With TLS 1.3 the client's handshake ends before the server has checked the client certificate;
        // a server that refuses it (node's, AWS IoT for an unknown or inactive certificate) then just closes.
        attemptError = { message: 'the upstream closed the connection after the TLS handshake without answering CONNECT: it does not accept the client certificate', code: 'COORD_ERR_CLOUD_AUTH' };
        this.#lastError = attemptError.message;
      }
      this.#lastErrorCode = attemptError?.code ?? 'COORD_ERR_CLOUD_OFFLINE';
      if (wasUp) {
        this.#log.warn({ url: o.url, code: 'COORD_ERR_CLOUD_OFFLINE', err: this.#lastError }, 'cloud link lost; working offline');
        this.emit('down', attemptError?.message);
      } else {
        if (attemptError?.code === 'COORD_ERR_CLOUD_AUTH') this.#refused(attemptError.message);
        this.emit('failed', attemptError?.message);
      }
      this.#schedule();
    });
  }

  #failed(err: Error): void {
    this.#lastError = err.message;
    this.#lastErrorCode = classify(err);
    this.#set('offline');
    this.emit('failed', this.#lastError);
    this.#schedule();
  }

  /** A failed attempt the upstream refused: a warning when the refusal is new, and every 10th attempt. */
  #refused(err: string): void {
    if (this.#warned === err && (this.#attempt + 1) % 10 !== 0) return;
    this.#warned = err;
    this.#log.warn(
      { url: this.#options.url, clientId: this.#options.clientId, code: 'COORD_ERR_CLOUD_AUTH', attempt: this.#attempt + 1, err },
      `cloud link refused: ${err}; check cloud.certFile/keyFile/caFile and the upstream's record of this gateway`,
    );
  }

  #schedule(): void {
    const o = this.#options;
    // Full jitter over an exponential ceiling: gateways that lost the cloud together come back spread out.
    const ceiling = Math.min(o.reconnectMaxMs, o.reconnectMinMs * 2 ** Math.min(this.#attempt, 20));
    const delay = Math.round(o.reconnectMinMs / 2 + Math.random() * (ceiling - o.reconnectMinMs / 2));
    this.#attempt++;
    if (this.#attempt === 1 || this.#attempt % 10 === 0) this.#log.info({ url: o.url, attempt: this.#attempt, delayMs: delay, err: this.#lastError }, 'cloud link reconnecting');
    this.#timer = setTimeout(() => this.#connect(), delay);
    this.#timer.unref();
  }

  /** Closes the connection for good (a clean DISCONNECT when connected). */
  async stop(): Promise<void> {
    this.#set('stopped');
    clearTimeout(this.#timer);
    const client = this.#client;
    this.#client = undefined;
    if (client) await client.endAsync().catch(() => undefined);
  }
}
