/**
 * The embedded MQTT broker: aedes with durable persistence, the auth seam, presence events and the
 * configured listeners.
 */
import { Aedes, type Client, type PublishPacket } from 'aedes';
import type { CoordinatorConfig } from '../config/schema.js';
import { followDeviceConnections } from '../devices/connections.js';
import { listenerTlsFiles } from '../devices/pki-files.js';
import type { DeviceRegistry } from '../devices/registry.js';
import type { Logger } from '../log/logger.js';
import type { Store } from '../store/database.js';
import { createAuthorizer } from './auth.js';
import { startListener, type Listener, type ListenerSpec } from './listeners.js';
import { DurablePersistence } from './persistence.js';
import { Presence } from './presence.js';
import { expectPuback, installPubackGate, releasePuback } from './puback-gate.js';

/** A running broker. */
export interface Broker {
  readonly aedes: Aedes;
  readonly listeners: readonly Listener[];
  /** Messages dropped because a persistent session's queue was full. */
  droppedMessages(): number;
  /** The auth seam's decision on a shadow operation by the client with this id (see auth.ts). */
  shadowAccess: (clientId: string | undefined, thing: string, op: 'get' | 'update' | 'delete', name?: string) => 401 | 403 | null;
  /** Connected clients, for status. */
  clients(): Client[];
  /**
   * Whether a message on `topic` would reach anyone: a connected subscriber or a persistent session's
   * stored subscription. Lets publishers skip building payloads nobody receives.
   */
  hasSubscribers: (topic: string) => boolean | Promise<boolean>;
  /** Disconnects every client, stops the listeners. The store is left to its owner. */
  close(): Promise<void>;
}

/** Topics remembered as having no subscriber (see hasSubscribers); bounded, cleared when full. */
const MAX_UNHEARD_TOPICS = 10_000;

function listenerSpecs(config: CoordinatorConfig): ListenerSpec[] {
  const specs: ListenerSpec[] = [];
  const { mqtt, mqtts } = config.listeners;
  if (mqtt.enabled) specs.push({ name: 'mqtt', host: mqtt.host, port: mqtt.port });
  if (mqtts.enabled) {
    // Configured files, or the gateway PKI's (`coordinator certs init`).
    specs.push({ name: 'mqtts', host: mqtts.host, port: mqtts.port, tls: { ...listenerTlsFiles(config), passphrase: mqtts.passphrase } });
  }
  return specs;
}

/**
 * Starts aedes on the store and binds every enabled listener. With a device registry, devices
 * authenticate (certificate, development password) and get their policies; without one every client
 * is anonymous.
 */
export async function startBroker(config: CoordinatorConfig, store: Store, log: Logger, devices?: DeviceRegistry): Promise<Broker> {
  // Resolved first: a missing PKI file is a configuration problem, reported before anything starts.
  const specs = listenerSpecs(config);
  installPubackGate();
  const presence = new Presence(log);
  const authorizer = createAuthorizer({
    anonymous: config.broker.anonymous,
    maxClientIdBytes: config.broker.maxClientIdBytes,
    maxPayloadBytes: config.broker.maxPayloadBytes,
    coordinatorThing: config.thingName,
    controlClients: config.shadows.controlClients,
    ...(devices ? { devices: { directory: devices, passwordAuth: config.devices.passwordAuth, policies: config.devices.policies } } : {}),
    log,
    onDeny: (client, reason) => presence.markReason(client, reason),
  });
  const persistence = new DurablePersistence(store, {
    maySubscribe: authorizer.maySubscribe,
    maxQueuedPerSession: config.broker.maxQueuedPerSession,
    onQueueFull: (clientId, topic, dropped) => {
      // Powers of ten: a device offline for a week must not flood the log with one line per message.
      if (Number.isInteger(Math.log10(dropped))) {
        log.warn({ code: 'COORD_ERR_BROKER_QUEUE_FULL', clientId, topic, droppedTotal: dropped }, 'persistent session queue full; message dropped for it');
      }
    },
    onRestoreError: (what, err) => log.error({ code: 'COORD_ERR_STORE_RESTORE', what, err }, 'stored broker state skipped at start-up'),
    onQueued: (brokerId, brokerCounter) => {
      if (brokerId !== aedes.id) return;
      const held = heldPubacks.get(brokerCounter);
      if (!held) return;
      heldPubacks.delete(brokerCounter);
      releasePuback(held.conn, held.messageId);
    },
  });
  /** PUBACKs waiting for their message's durable writes, by the broker counter aedes gave the message. */
  const heldPubacks = new Map<number, { conn: Client['conn']; messageId: number }>();

  const aedes = new Aedes({
    persistence,
    // The auth seam checks client-id length in bytes for every protocol level; aedes' own check only
    // covers MQTT 3.1, so let it through here.
    maxClientsIdLength: 65535,
    // No keepalive cap: aedes would refuse with CONNACK 6, which MQTT 3.1.1 does not define.
    keepaliveLimit: 0,
    connectTimeout: config.broker.connectTimeoutMs,
    queueLimit: config.broker.queueLimit,
    preConnect: authorizer.preConnect,
    authenticate: (client, username, password, done) => {
      authorizer.authenticate(client, username, password, (err, ok) => {
        // [MQTT-3.1.4-2] an accepted CONNECT with a client id in use takes the old session over.
        if (!err && ok) {
          const existing = clientMap()[client.id];
          if (existing && existing !== client) presence.markTakeover(existing);
        }
        done(err, ok);
      });
    },
    authorizePublish: (client, packet, done) => {
      authorizer.authorizePublish(client, packet, (err) => {
        // Acknowledged = durable: this PUBLISH's PUBACK waits until `published` below.
        if (!err && client && packet.qos === 1 && typeof packet.messageId === 'number') expectPuback(client.conn, packet.messageId);
        done(err);
      });
    },
    authorizeSubscribe: authorizer.authorizeSubscribe,
    authorizeForward: authorizer.authorizeForward,
  });
  presence.attach(aedes);
  // aedes keeps connected clients in a public-but-untyped map; read it in one place.
  const clientMap = (): Record<string, Client> => (aedes as unknown as { clients: Record<string, Client> }).clients;
  if (devices) {
    followDeviceConnections({ aedes, clientById: (id) => clientMap()[id], markReason: (client, reason) => presence.markReason(client, reason) }, devices, log);
  }

  // aedes runs a message's pipeline from broker.publish, called right after the (held) PUBACK: retained
  // copy, then offline queues (persistence.outgoingEnqueueCombi, reached for every QoS 1 message), then
  // delivery. The PUBACK is released when the queueing is durable (onQueued above), never waiting for
  // delivery: a slow subscriber must not hold a publisher's acknowledgements.
  type PublishFn = (packet: PublishPacket, client?: Client | null | ((err?: Error) => void), done?: (err?: Error) => void) => void;
  const publish = aedes.publish.bind(aedes) as unknown as PublishFn;
  const counter = (): number => (aedes as unknown as { counter: number }).counter;
  (aedes as unknown as { publish: PublishFn }).publish = (packet, client, done) => {
    if (!(client && typeof client === 'object' && packet.qos === 1 && typeof packet.messageId === 'number')) {
      publish(packet, client, done);
      return;
    }
    // publish() stamps the message with the next broker counter synchronously (aedes-packet), before any
    // persistence call can complete; if the counter did not move, aedes refused the packet outright.
    const expected = counter() + 1;
    const entry = { conn: client.conn, messageId: packet.messageId };
    publish(packet, client, (err) => {
      if (err) heldPubacks.delete(expected); // never released: the client retries, as QoS 1 allows
      done?.(err);
    });
    if (counter() >= expected && heldPubacks.get(expected) === undefined) heldPubacks.set(expected, entry);
  };

  aedes.on('clientError', (client, err) => {
    log.debug({ clientId: client.id, err: err.message, code: 'COORD_ERR_MQTT_PROTOCOL' }, 'client connection closed on error');
  });
  aedes.on('connectionError', (_client, err) => {
    log.debug({ err: err.message, code: 'COORD_ERR_MQTT_PROTOCOL' }, 'connection closed before CONNECT completed');
  });
  (aedes as NodeJS.EventEmitter).on('error', (err: Error) => log.error({ err, code: 'COORD_ERR_INTERNAL' }, 'broker error'));

  await aedes.listen();

  // [MQTT-3.1.2-8] the previous process died with these clients connected: their wills are due. Done
  // before any listener opens, so a reconnecting client cannot race its own old will.
  await Promise.all(
    persistence.takeOrphanedWills().map(async ({ clientId, packet }) => {
      const topic = String(packet.topic);
      if (authorizer.mayPublishWill(topic)) {
        log.info({ clientId, topic }, 'publishing will of a client connected when the coordinator last stopped');
        await new Promise<void>((resolve) =>
          aedes.publish({ ...packet, cmd: 'publish', dup: false } as never, (err) => {
            if (err) log.error({ err, clientId, code: 'COORD_ERR_INTERNAL' }, 'will not published');
            resolve();
          }),
        );
      } else {
        log.warn({ clientId, topic, code: 'COORD_ERR_MQTT_PUBLISH_DENIED' }, 'stored will dropped: its topic is not allowed');
      }
      await persistence.forgetOrphanedWill(clientId);
    }),
  );

  const listeners: Listener[] = [];
  try {
    for (const spec of specs) listeners.push(await startListener(spec, aedes, log));
  } catch (err) {
    await Promise.all(listeners.map((l) => l.close()));
    await new Promise<void>((resolve) => aedes.close(() => resolve()));
    throw err;
  }

  const clients = (): Client[] => Object.values(clientMap());
  // Every live subscription (any QoS, any session) is a handler in aedes' mqemitter; persistent sessions'
  // QoS 1/2 subscriptions also stay in persistence while they are offline.
  // A "no" is remembered until the next SUBSCRIBE anywhere (only a new subscription can turn it into a
  // "yes"), so topics nobody listens to cost one map lookup.
  const matcher = (aedes as unknown as { mq: { _matcher: { match(topic: string): unknown[] } } }).mq._matcher;
  const unheard = new Set<string>();
  let subscribes = 0; // a lookup that straddles a SUBSCRIBE must not store its "no"
  aedes.on('subscribe', () => {
    subscribes++;
    unheard.clear();
  });
  const hasSubscribers = (topic: string): boolean | Promise<boolean> => {
    if (unheard.has(topic)) return false;
    if (matcher.match(topic).length > 0) return true;
    const seen = subscribes;
    return persistence.subscriptionsByTopic(topic).then((subs) => {
      if (subs.length > 0) return true;
      if (seen !== subscribes) return false;
      if (unheard.size >= MAX_UNHEARD_TOPICS) unheard.clear();
      unheard.add(topic);
      return false;
    });
  };

  return {
    aedes,
    listeners,
    clients,
    hasSubscribers,
    droppedMessages: () => persistence.droppedMessages,
    shadowAccess: (clientId, thing, op, name) =>
      authorizer.shadowAccess(clientId === undefined ? undefined : clientMap()[clientId], thing, op, name),
    close: async () => {
      // Subscribers to presence (persistent ones get them queued) learn that every device went away.
      await presence.announceShutdown(clients());
      await new Promise<void>((resolve) => aedes.close(() => resolve()));
      await Promise.all(listeners.map((l) => l.close()));
    },
  };
}
