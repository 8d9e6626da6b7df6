/**
 * The coordinator's connection to its upstream MQTT service: AWS IoT Core (mutual TLS on 8883) or any
 * MQTT 3.1.1 broker with a shadow service (plain or TLS), including another coordinator. MQTT.js does
 * the protocol; this file owns the policy around it: one connection, a persistent session (so QoS 1
 * answers sent while the link was down are not lost), reconnects with jittered exponential backoff
 * (AWS IoT's guidance: many gateways must not reconnect in step after an outage), and a state others
 * can watch and `coordinator cloud status` shows.
 */
import { EventEmitter } from 'node:events';
import { readFileSync } from 'node:fs';
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';
import type { Logger } from '../log/logger.js';
import { noDelay } from './no-delay.js';

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
  down: [];
  message: [topic: string, payload: Buffer];
}

/** One supervised upstream connection. */
export class CloudConnection extends EventEmitter<ConnectionEvents> {
  readonly #options: ConnectionOptions;
  readonly #log: Logger;
  #client: MqttClient | undefined;
  #state: LinkState = 'offline';
  #attempt = 0;
  #timer: NodeJS.Timeout | undefined;
  #since = new Date();
  #lastError: string | undefined;
  connects = 0;

  constructor(options: ConnectionOptions, log: Logger) {
    super();
    this.#options = options;
    this.#log = log;
  }

  get state(): LinkState {
    return this.#state;
  }

  /** The connected client, or undefined while the link is down. */
  get client(): MqttClient | undefined {
    return this.#state === 'connected' ? this.#client : undefined;
  }

  /** State, since when, the last error, connections made. */
  status(): { state: LinkState; since: string; url: string; clientId: string; lastError: string | null; connects: number } {
    return { state: this.#state, since: this.#since.toISOString(), url: this.#options.url, clientId: this.#options.clientId, lastError: this.#lastError ?? null, connects: this.connects };
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
    const o = this.#options;
    const read = (f: string | undefined): Buffer | undefined => (f === undefined ? undefined : readFileSync(f));
    const options: IClientOptions = {
      clientId: o.clientId,
      // A persistent session: QoS 1 answers and cloud deltas published while we reconnect wait for us.
      clean: false,
      keepalive: o.keepaliveS,
      // Reconnects are ours (jittered backoff), not MQTT.js's fixed period.
      reconnectPeriod: 0,
      connectTimeout: o.connectTimeoutMs,
      ...(o.caFile ? { ca: read(o.caFile) } : {}),
      ...(o.certFile ? { cert: read(o.certFile), key: read(o.keyFile) } : {}),
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
    client.on('connect', (connack) => {
      // Request/response over small packets: Nagle's algorithm with the peer's delayed ACKs would add
      // ~40 ms to every answer (measured: 20 shadow updates/s instead of hundreds).
      noDelay(client);
      this.#attempt = 0;
      this.connects++;
      this.#lastError = undefined;
      this.#set('connected');
      this.#log.info({ url: o.url, clientId: o.clientId, sessionPresent: connack.sessionPresent }, 'cloud link connected');
      this.emit('up', client, connack.sessionPresent);
    });
    client.on('message', (topic, payload) => this.emit('message', topic, payload));
    client.on('error', (err) => {
      this.#lastError = err.message;
    });
    client.on('close', () => {
      if (this.#client !== client) return;
      const wasUp = this.#state === 'connected';
      client.removeAllListeners();
      client.end(true);
      this.#client = undefined;
      if (this.#state === 'stopped') return;
      this.#set('offline');
      if (wasUp) {
        this.#log.warn({ url: o.url, code: 'COORD_ERR_CLOUD_OFFLINE', err: this.#lastError }, 'cloud link lost; working offline');
        this.emit('down');
      }
      this.#schedule();
    });
  }

  #failed(err: Error): void {
    this.#lastError = err.message;
    this.#set('offline');
    this.#schedule();
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
