/**
 * The shadow service as an MQTT client of any broker (Mosquitto, a broker cluster, another coordinator):
 * the same engine, validation, errors and durable store as the coordinator's embedded face, so a
 * self-hosted fleet gets AWS-compatible shadows on the broker it already runs, and tests of the cloud
 * link get "the cloud" from Mosquitto plus this.
 *
 * Delivery: one persistent session (clean=false, a stable client id) subscribed at QoS 1 to the request
 * topics, so requests published while the service restarts wait in the broker. A request is acknowledged
 * (PUBACK) only once it is answered — for an update or delete, once it is durable and /accepted is
 * published — so a crash loses no acknowledged request; the broker redelivers the others (at least once:
 * a redelivered update applies again, as a client retry would). MQTT.js hands us messages one at a time
 * and waits for that acknowledgement, which also keeps requests in arrival order.
 */
import { join } from 'node:path';
import mqtt, { type IClientOptions, type IPublishPacket, type MqttClient } from 'mqtt';
import { startAdminServer, type AdminRoutes, type AdminServer } from '../admin/server.js';
import { ADMIN_SOCKET_FILE } from '../admin/socket.js';
import type { Logger } from '../log/logger.js';
import { noDelay } from './no-delay.js';
import { shadowRoutes } from '../shadow/admin-routes.js';
import { ShadowService } from '../shadow/service.js';
import { answerShadowRequest, forwardShadowEvents, parseRequestTopic, SHADOW_REQUEST_FILTERS, type ShadowAnswering } from '../shadow/topics.js';
import { Store } from '../store/database.js';
import type { BrokerShadowServiceOptions } from './shadow-service-options.js';

/** Where the service stands with its broker. */
export type BrokerState = 'connecting' | 'serving' | 'offline' | 'stopped';

/** The failure a DoneCallback reports so that MQTT.js sends no PUBACK and the broker redelivers later. */
const NOT_TAKEN = new Error('shadow service stopping: request left for the next run');

/** A running shadow service attached to a broker. */
export class BrokerShadowService {
  readonly shadows: ShadowService;
  readonly store: Store;
  readonly options: BrokerShadowServiceOptions;
  readonly #log: Logger;
  readonly #client: MqttClient;
  readonly #admin: AdminServer;
  readonly #detachEvents: () => void;
  readonly #answering = new Set<Promise<void>>();
  #state: BrokerState = 'connecting';
  #attempt = 0;
  #lastError: string | undefined;

  private constructor(options: BrokerShadowServiceOptions, log: Logger, store: Store, admin: AdminServer, routes: AdminRoutes) {
    this.options = options;
    this.#log = log;
    this.store = store;
    this.#admin = admin;
    this.shadows = new ShadowService(store, {
      maxInFlightPerShadow: options.maxInFlightPerShadow,
      onStoreError: (err) => log.error({ err, code: (err as { code?: string }).code ?? 'COORD_ERR_STORE_WRITE' }, err.message),
    });
    Object.assign(routes, shadowRoutes(this.shadows, options.limits));
    this.#client = mqtt.connect(options.broker, this.#clientOptions());
    const ctx: ShadowAnswering = {
      shadows: this.shadows,
      limits: options.limits,
      // Nobody's subscriptions are visible from a client: delta and documents are always published.
      publisher: { publish: this.#publish, notify: this.#publish },
      log,
    };
    this.#detachEvents = forwardShadowEvents(this.shadows, ctx.publisher);
    this.#client.handleMessage = (packet, done) => this.#handle(ctx, packet, done);
    this.#watch();
  }

  /**
   * Claims the data directory (its admin socket, as the coordinator does: `coordinator shadow get
   * --data-dir DIR` works against it), opens the store and starts connecting. Resolves at once: a broker
   * that is not there yet is retried with backoff, never a reason to exit.
   */
  static async start(options: BrokerShadowServiceOptions, log: Logger): Promise<BrokerShadowService> {
    const routes: AdminRoutes = {};
    const admin = await startAdminServer(join(options.dataDir, ADMIN_SOCKET_FILE), routes, log);
    let store: Store | undefined;
    try {
      store = Store.open(
        options.dataDir,
        (err) => log.error({ err, code: 'COORD_ERR_STORE_WRITE' }, 'background durable write failed'),
        (err) => {
          // As in the coordinator: after a failed fdatasync nothing held in memory can be trusted to be on disk.
          log.fatal({ err, code: 'COORD_ERR_STORE_WRITE' }, 'syncing the database log failed; exiting');
          process.exit(1);
        },
      );
      const service = new BrokerShadowService(options, log, store, admin, routes);
      log.info(
        { broker: options.broker, clientId: options.clientId, dataDir: options.dataDir, admin: admin.socketPath, shadows: service.shadows.size },
        'shadow service started',
      );
      return service;
    } catch (err) {
      store?.close();
      await admin.close();
      throw err;
    }
  }

  /** Where the service stands with its broker. */
  get state(): BrokerState {
    return this.#state;
  }

  #clientOptions(): IClientOptions {
    const o = this.options;
    return {
      clientId: o.clientId,
      protocolVersion: 4, // MQTT 3.1.1: what every broker (aedes included) speaks
      // The persistent session: the broker queues requests for us while we are away.
      clean: false,
      keepalive: o.keepaliveS,
      connectTimeout: o.connectTimeoutMs,
      // MQTT.js reconnects; #watch turns its fixed period into a jittered, growing one.
      reconnectPeriod: o.reconnectMinMs,
      // A refused CONNACK (credentials, authorization) is retried too: whoever fixes the broker side
      // should not also have to restart this service.
      reconnectOnConnackError: true,
      // We subscribe on every CONNACK ourselves (see #serve).
      resubscribe: false,
      ...(o.username === undefined ? {} : { username: o.username }),
      ...(o.password === undefined ? {} : { password: o.password }),
      ...o.tls,
    };
  }

  readonly #publish = (topic: string, payload: Record<string, unknown>, json?: string): void => {
    // QoS 1 from a single MQTT.js client: published in order, and kept and resent across reconnects.
    this.#client.publish(topic, json ?? JSON.stringify(payload), { qos: 1 }, (err) => {
      if (err && this.#state !== 'stopped') this.#log.error({ err, topic, code: 'COORD_ERR_SHADOW_SERVICE_BROKER' }, 'shadow response not published');
    });
  };

  #handle(ctx: ShadowAnswering, packet: IPublishPacket, done: (err?: Error) => void): void {
    if (this.#state === 'stopped') {
      done(NOT_TAKEN);
      return;
    }
    const request = parseRequestTopic(packet.topic);
    // Only request topics are subscribed; anything else (a broker that delivers more) is acknowledged and dropped.
    if (!request) {
      done();
      return;
    }
    const payload = typeof packet.payload === 'string' ? Buffer.from(packet.payload) : packet.payload;
    const answered = answerShadowRequest(ctx, request, payload);
    if (!answered) {
      done();
      return;
    }
    this.#answering.add(answered);
    void answered.then(() => {
      this.#answering.delete(answered);
      done();
    });
  }

  #watch(): void {
    const client = this.#client;
    const o = this.options;
    client.on('connect', (connack) => {
      // Request/response over small packets: Nagle's algorithm with the peer's delayed ACKs would add
      // ~40 ms to every answer (measured: 20 shadow updates/s instead of hundreds).
      noDelay(client);
      this.#attempt = 0;
      this.#lastError = undefined;
      client.options.reconnectPeriod = o.reconnectMinMs;
      this.#log.info({ broker: o.broker, clientId: o.clientId, sessionPresent: connack.sessionPresent }, 'connected to broker');
      this.#serve(connack.sessionPresent);
    });
    client.on('error', (err) => {
      const previous = this.#lastError;
      this.#lastError = err.message;
      // A CONNACK refusal (bad credentials, not authorized) repeats on every attempt until someone acts.
      const returnCode = (err as { code?: unknown }).code;
      // Logged once per streak of the same refusal; the reconnect lines carry it afterwards.
      if (typeof returnCode === 'number' && this.#lastError !== previous) {
        this.#log.error({ broker: o.broker, clientId: o.clientId, returnCode, err: err.message, code: 'COORD_ERR_SHADOW_SERVICE_BROKER' }, 'broker refused the connection');
      }
    });
    client.on('close', () => {
      if (this.#state === 'stopped') return;
      if (this.#state === 'serving') {
        this.#log.warn({ broker: o.broker, err: this.#lastError, code: 'COORD_ERR_SHADOW_SERVICE_BROKER' }, 'broker connection lost; reconnecting');
      }
      this.#state = 'offline';
    });
    client.on('reconnect', () => {
      // The wait before the attempt after this one: full jitter over a doubling ceiling, so services that
      // lost a broker together do not come back in step.
      this.#attempt++;
      const ceiling = Math.min(o.reconnectMaxMs, o.reconnectMinMs * 2 ** Math.min(this.#attempt, 20));
      client.options.reconnectPeriod = Math.round(o.reconnectMinMs / 2 + Math.random() * (ceiling - o.reconnectMinMs / 2));
      this.#state = 'connecting';
      // The first attempts and then every tenth: a long outage should not flood the log.
      if (this.#attempt <= 3 || this.#attempt % 10 === 0) {
        this.#log.warn(
          { broker: o.broker, attempt: this.#attempt, nextDelayMs: client.options.reconnectPeriod, err: this.#lastError, code: 'COORD_ERR_SHADOW_SERVICE_BROKER' },
          'reconnecting to broker',
        );
      }
    });
  }

  #serve(sessionPresent: boolean): void {
    // Subscribed on every connection, session present or not: cheap, idempotent ([MQTT-3.8.4-3]) and
    // it repairs a session the broker kept without our subscriptions (an ACL change, a restored broker).
    const subscriptions = Object.fromEntries(SHADOW_REQUEST_FILTERS.map((f) => [f, { qos: 1 as const }]));
    this.#client.subscribe(subscriptions, (err, granted) => {
      if (this.#state === 'stopped') return;
      const refused = (granted ?? []).filter((g) => g.qos === 128).map((g) => g.topic);
      if (err || refused.length > 0) {
        // The connection stays up: whatever was granted is served, and the next connection tries again.
        this.#log.error(
          { broker: this.options.broker, err: err?.message, refused, code: 'COORD_ERR_SHADOW_SERVICE_SUBSCRIBE' },
          'broker refused the subscription to shadow request topics',
        );
        if (err) return;
      }
      this.#state = 'serving';
      this.#log.info({ broker: this.options.broker, sessionPresent, filters: SHADOW_REQUEST_FILTERS.length - refused.length }, 'serving shadow requests');
    });
  }

  /**
   * Stops cleanly: takes no new request (those stay unacknowledged in the broker for the next run),
   * finishes the ones being answered, lets the broker acknowledge the answers (up to drainTimeoutMs),
   * disconnects keeping the session, then closes the store and the admin socket.
   */
  async stop(): Promise<void> {
    if (this.#state === 'stopped') return;
    this.#state = 'stopped';
    await Promise.all([...this.#answering]);
    this.#detachEvents();
    const client = this.#client;
    let timer: NodeJS.Timeout | undefined;
    const drained = await Promise.race([
      client.endAsync(false).then(
        () => true,
        () => true,
      ),
      new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), this.options.drainTimeoutMs))),
    ]);
    clearTimeout(timer);
    if (!drained) {
      this.#log.warn({ broker: this.options.broker, timeoutMs: this.options.drainTimeoutMs }, 'broker did not acknowledge the last answers in time; disconnecting anyway');
      client.end(true);
      client.stream?.destroy();
    }
    this.shadows.close();
    this.store.close();
    await this.#admin.close();
  }
}
