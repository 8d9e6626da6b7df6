/**
 * The embedded MQTT broker: aedes with durable persistence, the auth seam, presence events and the
 * configured listeners.
 */
import { Aedes, type Client } from 'aedes';
import type { CoordinatorConfig } from '../config/schema.js';
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
  /** Connected clients, for status. */
  clients(): Client[];
  /** Disconnects every client, stops the listeners. The store is left to its owner. */
  close(): Promise<void>;
}

function listenerSpecs(config: CoordinatorConfig): ListenerSpec[] {
  const specs: ListenerSpec[] = [];
  const { mqtt, mqtts } = config.listeners;
  if (mqtt.enabled) specs.push({ name: 'mqtt', host: mqtt.host, port: mqtt.port });
  if (mqtts.enabled) {
    specs.push({
      name: 'mqtts',
      host: mqtts.host,
      port: mqtts.port,
      // certFile/keyFile presence is guaranteed by the schema when the listener is enabled.
      tls: { certFile: mqtts.certFile!, keyFile: mqtts.keyFile!, caFile: mqtts.caFile, passphrase: mqtts.passphrase },
    });
  }
  return specs;
}

/** Starts aedes on the store and binds every enabled listener. */
export async function startBroker(config: CoordinatorConfig, store: Store, log: Logger): Promise<Broker> {
  installPubackGate();
  const persistence = new DurablePersistence(store);
  const presence = new Presence(log);
  const authorizer = createAuthorizer({
    anonymous: config.broker.anonymous,
    maxClientIdBytes: config.broker.maxClientIdBytes,
    log,
    onDeny: (client, reason) => presence.markReason(client, reason),
  });

  const aedes = new Aedes({
    persistence,
    // The auth seam checks client-id length in bytes for every protocol level; aedes' own check only
    // covers MQTT 3.1, so let it through here.
    maxClientsIdLength: 65535,
    keepaliveLimit: config.broker.keepaliveLimitS,
    connectTimeout: config.broker.connectTimeoutMs,
    queueLimit: config.broker.queueLimit,
    preConnect: authorizer.preConnect,
    authenticate: (client, username, password, done) => {
      authorizer.authenticate(client, username, password, (err, ok) => {
        // [MQTT-3.1.4-2] an accepted CONNECT with a client id in use takes the old session over.
        if (!err && ok) {
          const existing = (aedes as unknown as { clients: Record<string, Client> }).clients[client.id];
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
    // aedes calls this after the retained store and the offline queues have taken the message.
    published: (packet, client, done) => {
      if (client && packet.qos === 1 && typeof packet.messageId === 'number') releasePuback(client.conn, packet.messageId);
      done(null);
    },
    authorizeSubscribe: authorizer.authorizeSubscribe,
    authorizeForward: authorizer.authorizeForward,
  });
  presence.attach(aedes);

  aedes.on('clientError', (client, err) => {
    log.debug({ clientId: client.id, err: err.message, code: 'COORD_ERR_MQTT_PROTOCOL' }, 'client connection closed on error');
  });
  aedes.on('connectionError', (_client, err) => {
    log.debug({ err: err.message, code: 'COORD_ERR_MQTT_PROTOCOL' }, 'connection closed before CONNECT completed');
  });
  (aedes as NodeJS.EventEmitter).on('error', (err: Error) => log.error({ err, code: 'COORD_ERR_INTERNAL' }, 'broker error'));

  await aedes.listen();

  for (const { clientId, packet } of persistence.takeOrphanedWills()) {
    // [MQTT-3.1.2-8] the previous process died with this client connected: its will is due.
    log.info({ clientId, topic: packet.topic }, 'publishing will of a client connected when the coordinator last stopped');
    aedes.publish({ ...packet, cmd: 'publish', dup: false } as never, (err) => {
      if (err) log.error({ err, clientId, code: 'COORD_ERR_INTERNAL' }, 'will not published');
    });
  }

  const listeners: Listener[] = [];
  try {
    for (const spec of listenerSpecs(config)) listeners.push(await startListener(spec, aedes, log));
  } catch (err) {
    await Promise.all(listeners.map((l) => l.close()));
    await new Promise<void>((resolve) => aedes.close(() => resolve()));
    throw err;
  }

  const clients = (): Client[] => Object.values((aedes as unknown as { clients: Record<string, Client> }).clients);

  return {
    aedes,
    listeners,
    clients,
    close: async () => {
      await new Promise<void>((resolve) => aedes.close(() => resolve()));
      await Promise.all(listeners.map((l) => l.close()));
    },
  };
}
