/**
 * The cloud link (DESIGN.md §1, §3 path 3): the upstream connection, the shadow sync over it (the
 * coordinator's `deployment` shadow always — a deployment written to the cloud's shadow reaches the
 * local one, drives the deployment agent, and its reported status travels back), and `coordinator cloud
 * status`. The gateway works the same whether the link is up or not; the link only carries changes
 * across when it can, and reconciles on every reconnect.
 */
import type { CoordinatorConfig } from '../config/schema.js';
import { DEPLOYMENT_SHADOW } from '../deployment/document.js';
import type { Logger } from '../log/logger.js';
import type { ShadowService } from '../shadow/service.js';
import type { Store } from '../store/database.js';
import { anyMatches } from '../router/topic.js';
import { CloudShadows } from './cloud-shadows.js';
import type { CloudSpool } from './spool.js';
import { CloudConnection } from './connection.js';
import { ShadowSync, type SyncedShadow } from './shadow-sync.js';

/** The cloud link of one coordinator. */
export class CloudLink {
  readonly #connection: CloudConnection;
  readonly #cloud: CloudShadows;
  readonly #sync: ShadowSync;
  readonly #log: Logger;
  readonly #spool: CloudSpool;
  readonly #subscribe: readonly string[];
  /** Messages from the cloud on cloud.subscribe topics go here (the router, source `cloud`). */
  readonly #deliver: (topic: string, payload: Buffer) => void;
  #draining = false;
  #again = false;
  readonly #batchTimeoutMs: number;
  /** Spooled messages published upstream: sent, and acknowledged since this connection came up. */
  readonly spooled = { sent: 0, delivered: 0 };

  constructor(deps: { config: CoordinatorConfig; log: Logger; shadows: ShadowService; store: Store; spool: CloudSpool; deliver: (topic: string, payload: Buffer) => void }) {
    const c = deps.config.cloud;
    if (c.url === undefined) throw new Error('CloudLink needs cloud.url');
    this.#log = deps.log;
    this.#spool = deps.spool;
    this.#batchTimeoutMs = c.requestTimeoutMs;
    this.#subscribe = c.subscribe;
    this.#deliver = deps.deliver;
    this.#connection = new CloudConnection(
      {
        url: c.url,
        clientId: c.clientId ?? deps.config.thingName,
        keepaliveS: c.keepaliveS,
        caFile: c.caFile,
        certFile: c.certFile,
        keyFile: c.keyFile,
        username: c.username,
        password: c.password,
        reconnectMinMs: c.reconnectMinMs,
        reconnectMaxMs: c.reconnectMaxMs,
        connectTimeoutMs: c.connectTimeoutMs,
      },
      deps.log,
    );
    this.#cloud = new CloudShadows(c.requestTimeoutMs);
    const own: SyncedShadow = { thing: deps.config.thingName, name: DEPLOYMENT_SHADOW, direction: 'both' };
    const pairs = [own, ...c.shadows.filter((s) => !(s.thing === own.thing && s.name === own.name))];
    this.#sync = new ShadowSync({ shadows: deps.shadows, cloud: this.#cloud, store: deps.store, log: deps.log, pairs });
    this.#connection.on('message', (topic, payload) => {
      if (this.#cloud.handle(topic, payload)) return;
      if (anyMatches(this.#subscribe, topic)) this.#deliver(topic, payload);
    });
    this.#spool.on('appended', () => void this.#drain());
    this.#connection.on('up', (client) => {
      void (async () => {
        try {
          // Subscribed on every connect: an upstream that lost our session (or never kept it) still answers us.
          await client.subscribeAsync([...this.#sync.topics(), ...this.#subscribe], { qos: 1 });
          void this.#drain();
          await this.#sync.connected(client);
        } catch (err) {
          this.#log.warn({ err, code: 'COORD_ERR_CLOUD_SYNC' }, 'cloud link: subscribing or reconciling failed; retried at the next connection');
        }
      })();
    });
    this.#connection.on('down', () => {
      this.#sync.disconnected();
      this.#cloud.failAll();
    });
  }

  start(): void {
    this.#sync.start();
    this.#connection.start();
  }

  /**
   * Sends the spool upstream in order while the link is up: QoS 1, a window of messages in flight, each
   * removed from the spool only once the upstream acknowledged it (and everything before it). A message
   * in flight when the link drops stays spooled and is sent again after the reconnect: at least once.
   */
  async #drain(): Promise<void> {
    if (this.#draining) {
      // An append while a drain is finishing: it looks again once done, so nothing waits for the next one.
      this.#again = true;
      return;
    }
    this.#draining = true;
    this.#again = false;
    try {
      let after = 0;
      for (;;) {
        const client = this.#connection.client;
        if (!client) return;
        const batch = this.#spool.peek(64, after);
        if (batch.length === 0) return;
        // MQTT.js sends in order; PUBACKs may complete in any order, so acknowledge the batch's last once all are in.
        const sent = Promise.all(
          batch.map(async (m) => {
            await client.publishAsync(m.topic, Buffer.from(m.payload), { qos: 1 });
            this.spooled.sent++;
          }),
        );
        // A link that dies mid-batch may never settle its publishes: bounded, so the drain cannot stall.
        let timer: NodeJS.Timeout | undefined;
        const limit = new Promise<never>((_resolve, reject) => {
          timer = setTimeout(() => reject(new Error(`no PUBACK for a spool batch within ${this.#batchTimeoutMs} ms`)), this.#batchTimeoutMs);
        });
        try {
          await Promise.race([sent, limit]);
        } finally {
          clearTimeout(timer);
          sent.catch(() => undefined);
        }
        after = batch[batch.length - 1]!.seq;
        await this.#spool.ack(after);
        this.spooled.delivered += batch.length;
      }
    } catch (err) {
      // The link went down mid-batch: what was not acknowledged stays spooled for the next connection.
      this.#log.info({ err, code: 'COORD_ERR_CLOUD_OFFLINE' }, 'spool drain paused');
      // Still connected (a slow upstream): try again shortly; otherwise the next connection resumes it.
      if (this.#connection.client) setTimeout(() => void this.#drain(), 1000).unref();
    } finally {
      this.#draining = false;
      if (this.#again) void this.#drain();
    }
  }

  /** Connection state, sync counters, the spool, the synced shadows, for `coordinator cloud status`. */
  status(): Record<string, unknown> {
    return { ...this.#connection.status(), sync: { ...this.#sync.stats, shadows: this.#sync.pairs }, spool: { ...this.#spool.stats, ...this.spooled } };
  }

  async stop(): Promise<void> {
    this.#sync.stop();
    this.#cloud.failAll();
    await this.#connection.stop();
  }
}
