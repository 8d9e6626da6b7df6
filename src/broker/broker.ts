/**
 * The embedded MQTT broker: aedes with durable persistence, the auth seam, presence events and the
 * configured listeners.
 *
 * It reaches into aedes internals (aedes.mq._matcher, aedes.counter, aedes.clients, a client's
 * deliverQoS) and patches aedes.publish; these, and the patches of ./packet-writer.ts and friends, are
 * listed and checked in ./patches.ts: start-up refuses with COORD_ERR_BROKER_PATCH_FAILED before any
 * listener binds if one of them did not take effect.
 */
import { Aedes, type Client, type PublishPacket } from 'aedes';
import type { AedesPacket } from 'aedes-packet';
import type { CoordinatorConfig } from '../config/schema.js';
import { followDeviceConnections } from '../devices/connections.js';
import { listenerTlsFiles } from '../devices/pki-files.js';
import type { DeviceRegistry } from '../devices/registry.js';
import type { Logger } from '../log/logger.js';
import type { Store } from '../store/database.js';
import { createAuthorizer } from './auth.js';
import { startListener, type Listener, type ListenerSpec } from './listeners.js';
import { applyBrokerPatches, verifyBrokerInstance } from './patches.js';
import { DurablePersistence } from './persistence.js';
import { Presence } from './presence.js';
import { expectPuback, releasePuback } from './puback-gate.js';

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
  /**
   * Sets the step every PUBLISH a client sends goes through once authorized, before its PUBACK: for
   * writes that must be durable when the client is told its message is safe (the cloud spool). A QoS 1
   * PUBACK waits until the returned promise settles as well as the broker's own queues; if it rejects,
   * the PUBACK is never sent and the client is disconnected, so it sends the message again [MQTT-4.3.2].
   */
  onAccept(step: AcceptStep): void;
  /** Disconnects every client, stops the listeners. The store is left to its owner. */
  close(): Promise<void>;
}

/** See Broker.onAccept. */
export type AcceptStep = (client: Client, packet: PublishPacket) => Promise<unknown> | undefined;

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

/** aedes' live delivery of one connection (Client#deliverQoS in lib/client.js). */
type Deliver = (packet: AedesPacket, cb: () => void) => void;

interface Connection {
  readonly deliver: Deliver;
  /** Live deliveries waiting for the queue replay to end; undefined once it has. */
  held: AedesPacket[] | undefined;
}

interface Session {
  /** Broker counters of messages a replay to this session has read, while a live copy may still come. */
  readonly replayed: Set<number>;
  /** Its connections still holding live deliveries (replay not finished). */
  readonly holding: Set<Connection>;
  /** Broker counters of messages delivered live to another of its connections meanwhile. */
  readonly deliveredElsewhere: Set<number>;
}

/**
 * Keeps the replay of a persistent session's queue and live deliveries from sending the same message.
 *
 * aedes' CONNECT sequence (lib/handlers/connect.js) first re-subscribes the session's stored
 * subscriptions (restoreSubs: from then on matching messages are delivered live, Client#deliverQoS in
 * lib/client.js), and only after CONNACK replays the stored queue (emptyQueue, a snapshot from
 * persistence.outgoingStream). aedes queues every QoS 1/2 message for a persistent session
 * (enqueueOffline) *before* it delivers it live (emitPacket), and our durable store makes that gap a whole
 * group commit. So a message queued before the snapshot and emitted after restoreSubs goes out twice, and
 * nothing relates the two copies (aedes' dedupe by broker counter only sees live deliveries): whichever
 * comes second calls outgoingUpdate for a message the client may already have acknowledged
 * (outgoingClearMessageId removed it), MemoryPersistence#outgoingUpdate throws 'no such packet' and aedes
 * drops the client (emptyQueueFilter / writeQoS emit 'error'). Otherwise the message goes out twice in one
 * connection, live copies overtake the replay, one can even precede CONNACK [MQTT-3.2.0-1], and a live
 * copy can arrive after the replay of an *earlier* connection already delivered it and had it
 * acknowledged. aedes 1.2 with aedes-persistence's memory store shows the same race, in a narrower window.
 *
 * The guard: (1) from authentication until aedes reports the connection ready ('clientReady', emitted once
 * emptyQueue has sent the whole snapshot), live deliveries are held, then those that no replay has read
 * and no other connection of the session (one being taken over [MQTT-3.1.4-2]) has been sent meanwhile go
 * out in order, through aedes' own path; (2) a live copy of a message a replay of the session has read is
 * dropped whenever it arrives. Dropped copies lose nothing: the message stays queued until acknowledged,
 * and every replay sends what is queued.
 */
class ResumeGuard {
  readonly #connections = new WeakMap<Client, Connection>();
  readonly #sessions = new Map<string, Session>();
  /** Our own messages' broker counter (messages from elsewhere, e.g. restored ones, never come live). */
  readonly #counterOf: (packet: AedesPacket) => number | undefined;
  readonly #inPipeline: ReadonlySet<number>;

  constructor(counterOf: (packet: AedesPacket) => number | undefined, inPipeline: ReadonlySet<number>) {
    this.#counterOf = counterOf;
    this.#inPipeline = inPipeline;
  }

  /** A persistent session's connection is authenticated: aedes restores its subscriptions next. */
  hold(client: Client): void {
    const internals = client as unknown as { deliverQoS: Deliver };
    const connection: Connection = { deliver: internals.deliverQoS, held: [] };
    this.#connections.set(client, connection);
    this.#session(client.id).holding.add(connection);
    internals.deliverQoS = (packet, cb) => {
      if (connection.held) connection.held.push(packet);
      else if (!this.#wasReplayed(client.id, packet)) return this.#deliver(client.id, connection, packet, cb);
      // Taken care of: do not keep mqemitter (every other subscriber) waiting meanwhile.
      setImmediate(cb);
    };
    // A connection that never gets ready holds nothing any more once closed.
    client.conn.once('close', () => this.#release(client.id, connection));
  }

  /** aedes' replay to `client` read `packet` from the session's queue (persistence onReplay). */
  replayed(client: Client, packet: AedesPacket): void {
    const counter = this.#counterOf(packet);
    // A clean session's replay only empties the queue; its live deliveries never touch it.
    if (counter !== undefined && this.#connections.has(client)) this.#session(client.id).replayed.add(counter);
  }

  /** aedes has replayed the queue to `client` ('clientReady'). */
  ready(client: Client): void {
    const connection = this.#connections.get(client);
    const due = connection?.held;
    if (!connection || !due) return;
    connection.held = undefined;
    const session = this.#sessions.get(client.id);
    session?.holding.delete(connection);
    for (const packet of due) {
      const counter = this.#counterOf(packet);
      const sent = counter !== undefined && (session?.replayed.has(counter) === true || session?.deliveredElsewhere.has(counter) === true);
      if (!sent) this.#deliver(client.id, connection, packet, () => undefined);
    }
    this.#sweep();
  }

  #deliver(clientId: string, connection: Connection, packet: AedesPacket, cb: () => void): void {
    // Another connection of this session (the one taking this one over, or being taken over) still holds
    // live copies: it must not send this message too, whose acknowledgement here may clear it.
    const session = this.#sessions.get(clientId);
    const counter = this.#counterOf(packet);
    if (session && session.holding.size > 0 && counter !== undefined) session.deliveredElsewhere.add(counter);
    connection.deliver(packet, cb);
  }

  #wasReplayed(clientId: string, packet: AedesPacket): boolean {
    const counter = this.#counterOf(packet);
    return counter !== undefined && this.#sessions.get(clientId)?.replayed.has(counter) === true;
  }

  #session(clientId: string): Session {
    let session = this.#sessions.get(clientId);
    if (!session) {
      session = { replayed: new Set(), holding: new Set(), deliveredElsewhere: new Set() };
      this.#sessions.set(clientId, session);
    }
    return session;
  }

  #release(clientId: string, connection: Connection): void {
    connection.held = undefined;
    if (this.#sessions.get(clientId)?.holding.delete(connection)) this.#sweep();
  }

  /**
   * Once no connection of a session holds live copies, only messages still in their publish pipeline can
   * still arrive live: the rest is forgotten. Every session is swept, so none lingers for a client that
   * does not come back.
   */
  #sweep(): void {
    for (const [id, session] of this.#sessions) {
      if (session.holding.size > 0) continue;
      session.deliveredElsewhere.clear();
      for (const counter of session.replayed) if (!this.#inPipeline.has(counter)) session.replayed.delete(counter);
      if (session.replayed.size === 0) this.#sessions.delete(id);
    }
  }
}

/**
 * Starts aedes on the store and binds every enabled listener. With a device registry, devices
 * authenticate (certificate, development password) and get their policies; without one every client
 * is anonymous.
 */
export async function startBroker(config: CoordinatorConfig, store: Store, log: Logger, devices?: DeviceRegistry): Promise<Broker> {
  // Resolved first: a missing PKI file is a configuration problem, reported before anything starts.
  const specs = listenerSpecs(config);
  // The PUBACK gate, write batching and number cache patch mqtt-packet as aedes loaded it; refused here
  // (COORD_ERR_BROKER_PATCH_FAILED) if a patch did not take effect or a pinned version is not installed.
  applyBrokerPatches();
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
    markRedeliveries: true,
    onReplay: (client, packet) => resumes.replayed(client, packet),
    onQueued: (brokerId, brokerCounter) => {
      if (brokerId === aedes.id) settle(brokerCounter);
    },
  });
  /**
   * PUBACKs waiting for their message's durable writes, by the broker counter aedes gave the message:
   * the offline queues (onQueued) and, when the message has one, its accept step.
   */
  const heldPubacks = new Map<number, { conn: Client['conn']; messageId: number; waiting: number }>();
  /** One of the durable writes of message `brokerCounter` is done: the last one releases its PUBACK. */
  const settle = (brokerCounter: number): void => {
    const held = heldPubacks.get(brokerCounter);
    if (!held || --held.waiting > 0) return;
    heldPubacks.delete(brokerCounter);
    releasePuback(held.conn, held.messageId);
  };
  let acceptStep: AcceptStep | undefined;
  /** Broker counters of QoS 1/2 messages from publish() to the end of their pipeline (live delivery included). */
  const inPipeline = new Set<number>();
  const resumes = new ResumeGuard((packet) => (packet.brokerId === aedes.id ? packet.brokerCounter : undefined), inPipeline);

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
          // Before aedes restores the session's subscriptions (the next steps of its CONNECT sequence).
          if (!client.clean) resumes.hold(client);
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

  aedes.on('clientReady', (client) => resumes.ready(client));
  // aedes keeps connected clients in a public-but-untyped map; read it in one place.
  const clientMap = (): Record<string, Client> => (aedes as unknown as { clients: Record<string, Client> }).clients;
  let unfollow: (() => void) | undefined;
  if (devices) {
    unfollow = followDeviceConnections({ aedes, clientById: (id) => clientMap()[id], markReason: (client, reason) => presence.markReason(client, reason) }, devices, log);
  }

  // aedes runs a message's pipeline from broker.publish, called right after the (held) PUBACK: retained
  // copy, then offline queues (persistence.outgoingEnqueueCombi, reached for every QoS 1 message), then
  // delivery. The PUBACK is released when the queueing is durable (onQueued above), never waiting for
  // delivery: a slow subscriber must not hold a publisher's acknowledgements. Every QoS 1/2 message is in
  // inPipeline until its pipeline, live delivery included, has ended (see ResumeGuard).
  type PublishFn = (packet: PublishPacket, client?: Client | null | ((err?: Error) => void), done?: (err?: Error) => void) => void;
  const publish = aedes.publish.bind(aedes) as unknown as PublishFn;
  const counter = (): number => (aedes as unknown as { counter: number }).counter;
  const gatedPublish: PublishFn = (packet, clientOrDone, maybeDone) => {
    const client = typeof clientOrDone === 'function' ? null : (clientOrDone ?? null);
    const done = typeof clientOrDone === 'function' ? clientOrDone : maybeDone;
    // Started before the broker's own writes, in arrival order: both go into the same group commit.
    const accepted = client && acceptStep ? acceptStep(client, packet) : undefined;
    if (!packet.qos) {
      accepted?.catch(() => undefined); // QoS 0: nothing to acknowledge; the step logged its failure
      publish(packet, client, done); // QoS 0: never queued, nothing to acknowledge
      return;
    }
    // publish() stamps the message with the next broker counter synchronously (aedes-packet), before any
    // persistence call can complete; if the counter did not move, aedes refused the packet outright.
    const expected = counter() + 1;
    const gated = client !== null && packet.qos === 1 && typeof packet.messageId === 'number';
    publish(packet, client, (err) => {
      inPipeline.delete(expected);
      if (err) heldPubacks.delete(expected); // never released: the client retries, as QoS 1 allows
      done?.(err);
    });
    if (counter() < expected) {
      accepted?.catch(() => undefined);
      return;
    }
    inPipeline.add(expected);
    if (gated && heldPubacks.get(expected) === undefined) heldPubacks.set(expected, { conn: client.conn, messageId: packet.messageId!, waiting: accepted ? 2 : 1 });
    accepted?.then(
      () => settle(expected),
      (err: unknown) => {
        // Not durable: this PUBACK must never go. The client resends after reconnecting [MQTT-4.4.0-1].
        if (!heldPubacks.delete(expected) || !client) return;
        log.warn({ err, clientId: client.id, topic: packet.topic, code: 'COORD_ERR_STORE_WRITE' }, 'accepted message not made durable; disconnecting its publisher so that it resends');
        client.close();
      },
    );
  };
  (aedes as unknown as { publish: PublishFn }).publish = gatedPublish;

  aedes.on('clientError', (client, err) => {
    log.debug({ clientId: client.id, err: err.message, code: 'COORD_ERR_MQTT_PROTOCOL' }, 'client connection closed on error');
  });
  aedes.on('connectionError', (_client, err) => {
    log.debug({ err: err.message, code: 'COORD_ERR_MQTT_PROTOCOL' }, 'connection closed before CONNECT completed');
  });
  (aedes as NodeJS.EventEmitter).on('error', (err: Error) => log.error({ err, code: 'COORD_ERR_INTERNAL' }, 'broker error'));

  // Every touch of this instance's internals holds, or nothing starts (no persistence set up, no
  // listener bound): see ./patches.ts.
  try {
    verifyBrokerInstance(aedes, gatedPublish);
  } catch (err) {
    unfollow?.(); // aedes itself has not started (no listen()): nothing else to undo
    throw err;
  }
  const matcher = (aedes as unknown as { mq: { _matcher: { match(topic: string): unknown[] } } }).mq._matcher;

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
    onAccept: (step) => {
      acceptStep = step;
    },
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
