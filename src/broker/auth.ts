/**
 * The broker's one authentication and authorization seam: who may connect on which listener, what a
 * client may publish, subscribe to and receive. The devices issue plugs certificates, credentials and
 * per-device policies in here; everything else in the broker calls only these hooks.
 *
 * Today's policy (development mode): anonymous clients, accepted on loopback listeners only unless the
 * config says otherwise; ordinary topics open; reserved `$` topics limited to what a client may
 * legitimately use on AWS IoT (the shadow request topics to publish; shadow and lifecycle topics to read).
 */
import type { Client, AuthenticateError, Subscription, AedesPublishPacket, PublishPacket, ConnectPacket } from 'aedes';
import type { Duplex } from 'node:stream';
import type { Logger } from '../log/logger.js';
import { CoordinatorError } from '../errors.js';

/** The listener a connection arrived on. */
export interface ListenerInfo {
  readonly name: string;
  readonly tls: boolean;
  /** True when the listener is bound to a loopback address only. */
  readonly loopback: boolean;
}

/** Who a connected client is. */
export interface Principal {
  readonly kind: 'anonymous';
  /** AWS `principalIdentifier` in lifecycle events. */
  readonly id: string;
}

/** Settings of the authorizer, from the `broker` config section. */
export interface AuthorizerOptions {
  readonly anonymous: 'loopback' | 'never' | 'always';
  readonly maxClientIdBytes: number;
  /** Largest PUBLISH (or will) payload accepted, in bytes. */
  readonly maxPayloadBytes: number;
  /** The coordinator's own thing name: its shadows (e.g. `deployment`) are its control plane. */
  readonly coordinatorThing: string;
  /** MQTT client ids that may change the coordinator's own shadows (shadows.controlClients). */
  readonly controlClients?: readonly string[];
  readonly log: Logger;
  /** Called with the AWS disconnect reason when a hook decides to drop a client. */
  readonly onDeny?: (client: Client, reason: 'FORBIDDEN_ACCESS' | 'AUTH_ERROR' | 'CLIENT_ERROR') => void;
}

const listenerOfConn = new WeakMap<Duplex, ListenerInfo>();
const connectFacts = new WeakMap<Client, { emptyClientId: boolean; clientIdBytes: number }>();
const principals = new WeakMap<Client, Principal>();

/** Records which listener accepted `conn`; called by the listener before aedes sees the stream. */
export function tagConnection(conn: Duplex, listener: ListenerInfo): void {
  listenerOfConn.set(conn, listener);
}

/** The listener of a client's connection (undefined for streams the listeners did not create). */
export function listenerOf(client: Client): ListenerInfo | undefined {
  return listenerOfConn.get(client.conn);
}

/** The principal a client authenticated as. */
export function principalOf(client: Client): Principal | undefined {
  return principals.get(client);
}

// AWS shadow request topics a client may publish to: $aws/things/<thing>/shadow[/name/<shadow>]/(get|update|delete)
const SHADOW_REQUEST = /^\$aws\/things\/[^/]+\/shadow\/(?:name\/[^/]+\/)?(?:get|update|delete)$/;
// Reserved topic filters a client may subscribe to: shadow responses and lifecycle events.
const READABLE_RESERVED = /^\$aws\/(?:things|events)\//;

function authError(code: 2 | 4 | 5, message: string): AuthenticateError {
  return Object.assign(new Error(message), { returnCode: code });
}

/** The aedes hooks implementing the policy. */
export interface Authorizer {
  preConnect: (client: Client, packet: ConnectPacket, done: (err: Error | null, ok: boolean) => void) => void;
  authenticate: (
    client: Client,
    username: string | undefined,
    password: Buffer | undefined,
    done: (err: AuthenticateError | null, ok: boolean | null) => void,
  ) => void;
  authorizePublish: (client: Client | null, packet: PublishPacket, done: (err?: Error | null) => void) => void;
  authorizeSubscribe: (client: Client, sub: Subscription, done: (err: Error | null, sub?: Subscription | null) => void) => void;
  authorizeForward: (client: Client, packet: AedesPublishPacket) => AedesPublishPacket | null;
  /** Whether `client` may hold a subscription to `filter` (persistence keeps only these). */
  maySubscribe: (client: Client, filter: string) => boolean;
  /** Whether a will on `topic` may be published (checked at CONNECT and again for orphaned wills). */
  mayPublishWill: (topic: string) => boolean;
  /**
   * Whether `client` may perform a shadow operation: null when allowed, else the AWS status for the
   * shadow's /rejected topic (401 no authenticated principal, 403 forbidden by policy).
   */
  shadowAccess: (client: Client | undefined, thing: string, op: 'get' | 'update' | 'delete') => 401 | 403 | null;
}

/** Builds the authentication/authorization hooks for aedes. */
export function createAuthorizer(options: AuthorizerOptions): Authorizer {
  const { log } = options;

  function mayRead(topic: string): boolean {
    // '$' is 36: ordinary topics are open; reserved ones only as AWS IoT allows.
    return topic.charCodeAt(0) !== 36 || READABLE_RESERVED.test(topic);
  }

  function mayPublish(topic: string): boolean {
    return topic.charCodeAt(0) !== 36 || SHADOW_REQUEST.test(topic);
  }

  /** A will is a PUBLISH made later on the client's behalf: a valid topic name [MQTT-3.1.3-11] the client may publish to. */
  function mayPublishWill(topic: string): boolean {
    return topic.length > 0 && !topic.includes('#') && !topic.includes('+') && !topic.includes('\u0000') && mayPublish(topic);
  }

  return {
    preConnect(client, packet, done) {
      // aedes replaces an empty client id with a generated one before authenticate runs, so remember
      // here what the client actually sent; authenticate is where aedes lets us answer CONNACK 0x02.
      connectFacts.set(client, { emptyClientId: packet.clientId === '', clientIdBytes: Buffer.byteLength(packet.clientId ?? '') });
      done(null, true);
    },

    authenticate(client, username, _password, done) {
      const facts = connectFacts.get(client);
      const listener = listenerOf(client);
      const ip = client.conn && 'remoteAddress' in client.conn ? String(client.conn.remoteAddress) : 'unknown';
      // [MQTT-3.1.3-8] A zero-byte ClientId with CleanSession=0 MUST get CONNACK 0x02 and a close.
      if (facts?.emptyClientId && !client.clean) {
        log.warn({ code: 'COORD_ERR_MQTT_CLIENT_ID', ip }, 'CONNECT refused: empty client id with cleanSession=0 [MQTT-3.1.3-8]');
        return done(authError(2, 'identifier rejected'), false);
      }
      // [MQTT-3.1.3-5] permits longer ids than 23 bytes; AWS IoT caps them at 128, and so do we (configurable).
      if (facts && facts.clientIdBytes > options.maxClientIdBytes) {
        log.warn({ code: 'COORD_ERR_MQTT_CLIENT_ID', ip, bytes: facts.clientIdBytes }, 'CONNECT refused: client id too long');
        return done(authError(2, 'identifier rejected'), false);
      }
      const anonymousAllowed =
        options.anonymous === 'always' || (options.anonymous === 'loopback' && listener?.loopback === true);
      if (!anonymousAllowed) {
        log.warn(
          { code: 'COORD_ERR_MQTT_NOT_AUTHORIZED', clientId: client.id, ip, listener: listener?.name },
          'CONNECT refused: anonymous clients are not accepted on this listener',
        );
        options.onDeny?.(client, 'AUTH_ERROR');
        return done(username === undefined ? authError(5, 'not authorized') : authError(4, 'bad user name or password'), false);
      }
      const will = (client as unknown as { _will?: { topic: string; payload: Buffer } })._will;
      if (will && !mayPublishWill(will.topic)) {
        log.warn({ code: 'COORD_ERR_MQTT_PUBLISH_DENIED', clientId: client.id, ip, topic: will.topic }, 'CONNECT refused: will topic not allowed');
        return done(authError(5, 'not authorized'), false);
      }
      if (will && will.payload.length > options.maxPayloadBytes) {
        log.warn({ code: 'COORD_ERR_MQTT_PAYLOAD_TOO_LARGE', clientId: client.id, ip, bytes: will.payload.length }, 'CONNECT refused: will payload too large');
        return done(authError(5, 'not authorized'), false);
      }
      principals.set(client, { kind: 'anonymous', id: 'anonymous' });
      done(null, true);
    },

    authorizePublish(client, packet, done) {
      // Publishes made by the coordinator itself (client null) are trusted.
      if (client === null) return done(null);
      const topic = packet.topic;
      if (packet.payload.length > options.maxPayloadBytes) {
        // AWS IoT disconnects a client publishing over its payload limit (reason CLIENT_ERROR).
        log.warn(
          { code: 'COORD_ERR_MQTT_PAYLOAD_TOO_LARGE', clientId: client.id, topic, bytes: packet.payload.length, limit: options.maxPayloadBytes },
          'PUBLISH refused: payload too large; disconnecting client',
        );
        options.onDeny?.(client, 'CLIENT_ERROR');
        return done(new CoordinatorError('COORD_ERR_MQTT_PAYLOAD_TOO_LARGE', `payload of ${packet.payload.length} bytes exceeds ${options.maxPayloadBytes}`));
      }
      if (!mayPublish(topic)) {
        log.warn({ code: 'COORD_ERR_MQTT_PUBLISH_DENIED', clientId: client.id, topic }, 'PUBLISH denied by policy; disconnecting client (AWS IoT behaviour)');
        options.onDeny?.(client, 'FORBIDDEN_ACCESS');
        return done(new CoordinatorError('COORD_ERR_MQTT_PUBLISH_DENIED', `publish to ${topic} is not allowed`));
      }
      done(null);
    },

    authorizeSubscribe(client, sub, done) {
      if (!mayRead(sub.topic)) {
        log.warn({ code: 'COORD_ERR_MQTT_SUBSCRIBE_DENIED', clientId: client.id, topic: sub.topic }, 'SUBSCRIBE denied by policy (SUBACK 0x80)');
        // A null subscription makes aedes answer 0x80 for this filter [MQTT-3.9.3].
        return done(null, null);
      }
      done(null, sub);
    },

    authorizeForward(client, packet) {
      // Checked again on delivery: a subscription restored from a persistent session must not outlive
      // the policy that allowed it.
      return mayRead(packet.topic) ? packet : null;
    },

    maySubscribe: (_client, filter) => mayRead(filter),
    mayPublishWill,

    shadowAccess(client, thing, op) {
      if (!client || !principals.get(client)) return 401;
      // The coordinator's own shadows carry its deployments: no device changes them over MQTT (the CLI
      // and the cloud link use the in-process API). Per-device shadow policies come with device identities.
      if (thing === options.coordinatorThing && op !== 'get' && !options.controlClients?.includes(client.id)) {
        log.warn({ code: 'COORD_ERR_SHADOW_REJECTED', clientId: client.id, thing, op }, "shadow request forbidden: the coordinator's own shadows are read-only over MQTT");
        return 403;
      }
      return null;
    },
  };
}
