/**
 * AWS IoT lifecycle (presence) events: `$aws/events/presence/connected/<clientId>` and
 * `$aws/events/presence/disconnected/<clientId>`, with AWS's payload fields, published by the broker
 * itself at QoS 1 so persistent subscribers get them queued.
 */
import { randomUUID } from 'node:crypto';
import type { Aedes, Client } from 'aedes';
import type { Logger } from '../log/logger.js';
import { principalOf } from './auth.js';

/** AWS `disconnectReason` values the coordinator produces. */
export type DisconnectReason =
  | 'CLIENT_INITIATED_DISCONNECT'
  | 'CLIENT_ERROR'
  | 'CONNECTION_LOST'
  | 'DUPLICATE_CLIENTID'
  | 'FORBIDDEN_ACCESS'
  | 'AUTH_ERROR'
  | 'MQTT_KEEP_ALIVE_TIMEOUT'
  | 'SERVER_INITIATED_DISCONNECT';

interface Session {
  readonly sessionIdentifier: string;
  readonly versionNumber: number;
  readonly principalIdentifier: string;
  readonly ipAddress: string;
  reason?: DisconnectReason;
}

/** Tracks sessions and publishes their lifecycle events. */
export class Presence {
  #broker: Aedes | undefined;
  readonly #log: Logger;
  readonly #sessions = new WeakMap<Client, Session>();
  /**
   * AWS versionNumber must increase with each connection of a client id. One counter for all ids does
   * that without a map that grows with every id ever seen; seeding it from the clock keeps it
   * increasing across restarts too.
   */
  #version = Date.now() * 1000;

  constructor(log: Logger) {
    this.#log = log;
  }

  /** Starts following `broker`'s connections. */
  attach(broker: Aedes): void {
    this.#broker = broker;
    // 'client' fires when aedes registers the session, just before CONNACK; unlike 'clientReady' it is
    // always before that client's 'clientDisconnect', even when the client is dropped at once.
    broker.on('client', (client) => this.#connected(client));
    broker.on('clientDisconnect', (client) => void this.#disconnected(client));
    broker.on('keepaliveTimeout', (client) => this.markReason(client, 'MQTT_KEEP_ALIVE_TIMEOUT'));
    broker.on('clientError', (client, err) => {
      const code = (err as NodeJS.ErrnoException).code;
      const lost = code === 'ECONNRESET' || code === 'EPIPE' || code === 'ETIMEDOUT';
      this.markReason(client, lost ? 'CONNECTION_LOST' : 'CLIENT_ERROR');
    });
  }

  /** Sets why a client is about to be disconnected; the first reason recorded wins. */
  markReason(client: Client, reason: DisconnectReason): void {
    const session = this.#sessions.get(client);
    if (session && !session.reason) session.reason = reason;
  }

  /** Called when a CONNECT for `clientId` will take over an existing session [MQTT-3.1.4-2]. */
  markTakeover(existing: Client | undefined): void {
    if (existing) this.markReason(existing, 'DUPLICATE_CLIENTID');
  }

  #connected(client: Client): void {
    const conn = client.conn as { remoteAddress?: string };
    const session: Session = {
      sessionIdentifier: randomUUID(),
      versionNumber: ++this.#version,
      principalIdentifier: principalOf(client)?.id ?? 'anonymous',
      ipAddress: (conn.remoteAddress ?? '').replace(/^::ffff:/, ''),
    };
    this.#sessions.set(client, session);
    void this.#publish('connected', client.id, {
      clientId: client.id,
      timestamp: Date.now(),
      eventType: 'connected',
      sessionIdentifier: session.sessionIdentifier,
      principalIdentifier: session.principalIdentifier,
      ipAddress: session.ipAddress,
      versionNumber: session.versionNumber,
    });
  }

  /**
   * Announces every connected client as disconnected by the server, before the broker closes (after
   * that nothing can be published); resolves once the events are queued durably for their subscribers.
   */
  async announceShutdown(clients: readonly Client[]): Promise<void> {
    await Promise.all(
      clients.map((client) => {
        this.markReason(client, 'SERVER_INITIATED_DISCONNECT');
        return this.#disconnected(client);
      }),
    );
  }

  #disconnected(client: Client): Promise<void> {
    const session = this.#sessions.get(client);
    if (!session) return Promise.resolve(); // never announced, or already announced at shutdown
    this.#sessions.delete(client);
    // aedes sets _disconnected only when the client sent DISCONNECT; no public API exposes it (checked
    // at start, ./patches.ts).
    const graceful = (client as unknown as { _disconnected?: boolean })._disconnected === true;
    const reason = graceful ? 'CLIENT_INITIATED_DISCONNECT' : (session.reason ?? 'CONNECTION_LOST');
    return this.#publish('disconnected', client.id, {
      clientId: client.id,
      timestamp: Date.now(),
      eventType: 'disconnected',
      sessionIdentifier: session.sessionIdentifier,
      principalIdentifier: session.principalIdentifier,
      clientInitiatedDisconnect: reason === 'CLIENT_INITIATED_DISCONNECT',
      disconnectReason: reason,
      ipAddress: session.ipAddress,
      versionNumber: session.versionNumber,
    });
  }

  #publish(kind: 'connected' | 'disconnected', clientId: string, event: Record<string, unknown>): Promise<void> {
    // AWS: client ids containing # or + get no lifecycle events (they cannot form a topic name).
    if (/[#+]/.test(clientId)) return Promise.resolve();
    const broker = this.#broker;
    if (!broker || broker.closed) return Promise.resolve();
    const topic = `$aws/events/presence/${kind}/${clientId}`;
    this.#log.debug({ topic }, 'presence event');
    return new Promise((resolve) => {
      broker.publish({ cmd: 'publish', topic, payload: Buffer.from(JSON.stringify(event)), qos: 1, retain: false, dup: false }, (err) => {
        if (err) this.#log.error({ err, topic, code: 'COORD_ERR_INTERNAL' }, 'presence event not published');
        resolve();
      });
    });
  }
}
