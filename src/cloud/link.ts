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
import { CloudShadows } from './cloud-shadows.js';
import { CloudConnection } from './connection.js';
import { ShadowSync, type SyncedShadow } from './shadow-sync.js';

/** The cloud link of one coordinator. */
export class CloudLink {
  readonly #connection: CloudConnection;
  readonly #cloud: CloudShadows;
  readonly #sync: ShadowSync;
  readonly #log: Logger;

  constructor(deps: { config: CoordinatorConfig; log: Logger; shadows: ShadowService; store: Store }) {
    const c = deps.config.cloud;
    if (c.url === undefined) throw new Error('CloudLink needs cloud.url');
    this.#log = deps.log;
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
    this.#connection.on('message', (topic, payload) => void this.#cloud.handle(topic, payload));
    this.#connection.on('up', (client) => {
      void (async () => {
        try {
          // Subscribed on every connect: an upstream that lost our session (or never kept it) still answers us.
          await client.subscribeAsync(this.#sync.topics(), { qos: 1 });
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

  /** Connection state, sync counters and the synced shadows, for `coordinator cloud status`. */
  status(): Record<string, unknown> {
    return { ...this.#connection.status(), sync: { ...this.#sync.stats, shadows: this.#sync.pairs } };
  }

  async stop(): Promise<void> {
    this.#sync.stop();
    this.#cloud.failAll();
    await this.#connection.stop();
  }
}
