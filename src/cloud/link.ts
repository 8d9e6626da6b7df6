/**
 * The cloud link (DESIGN.md §1, §3 path 3): the upstream connection, the shadow sync over it (the
 * coordinator's `deployment` shadow always — a deployment written to the cloud's shadow reaches the
 * local one, drives the deployment agent, and its reported status travels back), and `coordinator cloud
 * status`. The gateway works the same whether the link is up or not; the link only carries changes
 * across when it can, and reconciles on every reconnect.
 */
import type { MqttClient } from 'mqtt';
import type { CoordinatorConfig } from '../config/schema.js';
import { DEPLOYMENT_SHADOW } from '../deployment/document.js';
import type { Logger } from '../log/logger.js';
import type { ShadowService } from '../shadow/service.js';
import type { Store } from '../store/database.js';
import { anyMatches } from '../router/topic.js';
import { CloudShadows } from './cloud-shadows.js';
import type { CloudSpool, SpooledMessage } from './spool.js';
import { CloudConnection, KEEPALIVE_TIMEOUT } from './connection.js';
import { RejectRule } from './reject-rule.js';
import { ShadowSync, type SyncedShadow } from './shadow-sync.js';

/** Messages in flight at once while draining normally. */
const WINDOW = 64;

/** One established upstream connection, as the drain sees it. */
interface Live {
  readonly client: MqttClient;
  /** Rejects when the connection drops: a drain waiting for PUBACKs stops waiting at once. */
  readonly closed: Promise<never>;
  readonly close: (err: Error) => void;
  /** The reconcile of this connection has settled: only then is a message sent alone (see #drain). */
  settled: boolean;
}

/** The batch waiting for its PUBACKs. */
interface InFlight {
  readonly client: MqttClient;
  readonly batch: readonly SpooledMessage[];
  readonly acked: Set<number>;
}

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
  readonly #rule: RejectRule;
  #live: Live | undefined;
  #inFlight: InFlight | undefined;
  /** Spooled messages published upstream: sent, and acknowledged since this connection came up. */
  readonly spooled = { sent: 0, delivered: 0 };

  constructor(deps: { config: CoordinatorConfig; log: Logger; shadows: ShadowService; store: Store; spool: CloudSpool; deliver: (topic: string, payload: Buffer) => void }) {
    const c = deps.config.cloud;
    if (c.url === undefined) throw new Error('CloudLink needs cloud.url');
    this.#log = deps.log;
    this.#spool = deps.spool;
    this.#batchTimeoutMs = c.requestTimeoutMs;
    this.#rule = new RejectRule(c.spoolRejectAfterDrops);
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
    this.#spool.on('evicted', (_count, through) => this.#rule.acked(through));
    this.#connection.on('up', (client) => {
      const counted = this.#rule.connected();
      if (counted) {
        this.#log.info(
          { seq: counted.seq, drops: counted.drops, limit: this.#rule.status().rejectAfterDrops },
          'cloud link: the upstream took the gateway back at once after dropping it with one spooled message alone in flight; counted against that message',
        );
      }
      let close!: (err: Error) => void;
      const closed = new Promise<never>((_resolve, reject) => (close = reject));
      closed.catch(() => undefined);
      const live: Live = { client, closed, close, settled: false };
      this.#live = live;
      void (async () => {
        try {
          // Subscribed on every connect: an upstream that lost our session (or never kept it) still answers us.
          await client.subscribeAsync([...this.#sync.topics(), ...this.#subscribe], { qos: 1 });
          void this.#drain();
          await this.#sync.connected(client);
        } catch (err) {
          this.#log.warn({ err, code: 'COORD_ERR_CLOUD_SYNC' }, 'cloud link: subscribing or reconciling failed; retried at the next connection');
        } finally {
          live.settled = true;
          void this.#drain();
        }
      })();
    });
    this.#connection.on('failed', () => this.#rule.attemptFailed());
    this.#connection.on('down', (error) => {
      this.#sync.disconnected();
      this.#cloud.failAll();
      this.#dropped(error);
    });
  }

  /** The connection dropped: judge what was in flight (reject-rule.ts), then release the drain. */
  #dropped(error: string | undefined): void {
    const live = this.#live;
    this.#live = undefined;
    const f = this.#inFlight;
    if (f && f.client === live?.client) {
      const unacked = f.batch.find((m) => !f.acked.has(m.seq));
      if (unacked) {
        const verdict = this.#rule.dropped(unacked.seq, f.batch[f.batch.length - 1]!.seq, f.batch.length === 1, error === KEEPALIVE_TIMEOUT);
        this.#log.info({ seq: unacked.seq, topic: unacked.topic, inFlight: f.batch.length, verdict, err: error }, 'cloud link dropped with spooled messages in flight');
      }
    }
    live?.close(new Error(`the cloud link dropped${error ? `: ${error}` : ''}`));
  }

  start(): void {
    this.#sync.start();
    this.#connection.start();
  }

  /**
   * Sends the spool upstream in order while the link is up: QoS 1, a window of messages in flight, each
   * removed from the spool only once the upstream acknowledged it (and everything before it). A message
   * in flight when the link drops stays spooled and is sent again after the reconnect: at least once.
   * After such a drop the messages that were in flight go again one at a time, and a message the
   * upstream keeps refusing is set aside by the rule of reject-rule.ts.
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
      for (;;) {
        const live = this.#live;
        if (!live || this.#connection.client !== live.client) return;
        const head = this.#spool.peek(1)[0];
        if (!head) return;
        if (this.#rule.due(head.seq)) {
          await this.#setAside(head);
          continue;
        }
        const alone = this.#rule.isolating(head.seq);
        // A message sent alone is one a drop may be counted against: not while the reconcile's shadow
        // requests are still going out, since a drop they cause would be blamed on it. Resumed by `up`.
        if (alone && !live.settled) return;
        const batch = alone ? [head] : this.#spool.peek(WINDOW);
        await this.#send(live, batch);
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

  /** Publishes `batch` and acks it in the spool once every PUBACK is in; throws when it cannot. */
  async #send(live: Live, batch: readonly SpooledMessage[]): Promise<void> {
    const client = live.client;
    const inFlight: InFlight = { client, batch, acked: new Set() };
    this.#inFlight = inFlight;
    // MQTT.js sends in order; PUBACKs may complete in any order, so acknowledge the batch's last once all are in.
    const sent = Promise.all(
      batch.map(async (m) => {
        await client.publishAsync(m.topic, Buffer.from(m.payload), { qos: 1 });
        inFlight.acked.add(m.seq);
        this.spooled.sent++;
      }),
    );
    // With a persistent session MQTT.js never settles publishes of a closed connection: bounded by the
    // drop itself and by a time limit (a slow or silent upstream), so the drain cannot stall.
    let timer: NodeJS.Timeout | undefined;
    const limit = new Promise<never>((_resolve, reject) => {
      timer = setTimeout(() => reject(new Error(`no PUBACK for a spool batch within ${this.#batchTimeoutMs} ms`)), this.#batchTimeoutMs);
    });
    try {
      await Promise.race([sent, limit, live.closed]);
    } catch (err) {
      // What the upstream did acknowledge leaves the spool now: fewer duplicates after the reconnect.
      let through = 0;
      for (const m of batch) {
        if (!inFlight.acked.has(m.seq)) break;
        through = m.seq;
      }
      if (through > 0) await this.#delivered(through, batch.filter((m) => m.seq <= through).length);
      throw err;
    } finally {
      clearTimeout(timer);
      sent.catch(() => undefined);
      if (this.#inFlight === inFlight) this.#inFlight = undefined;
    }
    await this.#delivered(batch[batch.length - 1]!.seq, batch.length);
  }

  async #delivered(through: number, count: number): Promise<void> {
    await this.#spool.ack(through);
    this.#rule.acked(through);
    this.spooled.delivered += count;
  }

  /** The rule says the head will never be accepted: into the dead-letter table, and the drain goes on. */
  async #setAside(head: SpooledMessage): Promise<void> {
    const { rejectAfterDrops } = this.#rule.status();
    const reason = `the upstream closed the connection ${rejectAfterDrops} times in a row while this message alone was in flight`;
    const moved = await this.#spool.reject(head.seq, reason);
    this.#rule.forget(head.seq);
    if (!moved) return;
    this.#log.warn(
      { code: 'COORD_ERR_CLOUD_SPOOL_REJECTED', seq: head.seq, topic: head.topic, bytes: head.payload.byteLength, enqueuedAt: head.enqueuedAt, drops: rejectAfterDrops },
      `cloud-bound message on ${head.topic} set aside: ${reason} (a publish the upstream's policy refuses); the spool goes on with the next`,
    );
  }

  /** Connection state, sync counters, the spool, the synced shadows, for `coordinator cloud status`. */
  status(): Record<string, unknown> {
    return {
      ...this.#connection.status(),
      sync: { ...this.#sync.stats, shadows: this.#sync.pairs },
      spool: { ...this.#spool.stats, ...this.spooled, ...this.#rule.status(), recentRejected: this.#spool.rejectedMessages(5) },
    };
  }

  async stop(): Promise<void> {
    this.#sync.stop();
    this.#cloud.failAll();
    // A stopped connection says no `down`: release a drain waiting for PUBACKs that will not come.
    this.#live?.close(new Error('the cloud link stopped'));
    this.#live = undefined;
    await this.#connection.stop();
  }
}
