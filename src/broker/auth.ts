/**
 * The broker's one authentication and authorization seam: who may connect on which listener, what a
 * client may publish, subscribe to and receive, and which shadows it may use. Everything else in the
 * broker calls only these hooks.
 *
 * Principals: a **device** authenticated by its client certificate on the TLS listener (client id =
 * thing name in the certificate), or by its development password (user name = thing name), gets its
 * compiled policy (src/devices/policy.ts); an **anonymous** client (development mode: loopback
 * listeners only unless broker.anonymous says otherwise) keeps the open topic policy. For everyone,
 * reserved `$` topics are limited to what a client may legitimately use on AWS IoT (the shadow request
 * topics to publish; shadow and lifecycle topics to read).
 */
import type { Client, AuthenticateError, Subscription, AedesPublishPacket, PublishPacket, ConnectPacket } from 'aedes';
import { createHash } from 'node:crypto';
import type { Duplex } from 'node:stream';
import type { TLSSocket } from 'node:tls';
import type { DeviceRecord } from '../devices/registry.js';
import { verifyPassword } from '../devices/passwords.js';
import { compilePolicy, type CompiledPolicy, type PolicyGroup } from '../devices/policy.js';
import type { Logger } from '../log/logger.js';
import { CoordinatorError, type ErrorCode } from '../errors.js';

/** The listener a connection arrived on. */
export interface ListenerInfo {
  readonly name: string;
  readonly tls: boolean;
  /** True when the listener is bound to a loopback address only. */
  readonly loopback: boolean;
}

/** An anonymous client (development mode): open topic policy. */
export interface AnonymousPrincipal {
  readonly kind: 'anonymous';
  /** AWS `principalIdentifier` in lifecycle events. */
  readonly id: 'anonymous';
}

/** A registered device, authenticated by certificate or development password. */
export interface DevicePrincipal {
  readonly kind: 'device';
  /** AWS `principalIdentifier`: the certificate fingerprint (AWS: certificate id), or the thing name for a password login. */
  readonly id: string;
  readonly thing: string;
  readonly attributes: Readonly<Record<string, string>>;
  readonly via: 'certificate' | 'password';
  readonly policy: CompiledPolicy;
}

/** Who a connected client is. */
export type Principal = AnonymousPrincipal | DevicePrincipal;

/** What the authorizer reads from the device registry. */
export interface DeviceDirectory {
  get(thing: string): DeviceRecord | undefined;
  byFingerprint(fingerprint: string): DeviceRecord | undefined;
}

/** Device authentication settings (the `devices` config section and the registry). */
export interface DeviceAuthOptions {
  readonly directory: DeviceDirectory;
  /** Where a development password is accepted: loopback listeners, every listener, or nowhere. */
  readonly passwordAuth: 'loopback' | 'always' | 'never';
  readonly policies: readonly PolicyGroup[];
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
  /** Device identities and policies; without them every client is anonymous (unit tests, embedders). */
  readonly devices?: DeviceAuthOptions;
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
// Compared against when a user name is unknown, so a wrong name costs the same time as a wrong password.
const DUMMY_HASH = 'scrypt$16384$8$1$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA';

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
   * Whether `client` may perform a shadow operation on `thing`'s classic shadow (or the named shadow
   * `name`): null when allowed, else the AWS status for the shadow's /rejected topic (401 no
   * authenticated principal, 403 forbidden by policy).
   */
  shadowAccess: (client: Client | undefined, thing: string, op: 'get' | 'update' | 'delete', name?: string) => 401 | 403 | null;
}

/** Builds the authentication/authorization hooks for aedes. */
export function createAuthorizer(options: AuthorizerOptions): Authorizer {
  const { log } = options;

  function mayRead(principal: Principal | undefined, filterOrTopic: string, kind: 'subscribe' | 'receive'): boolean {
    // '$' is 36: reserved topics only as AWS IoT allows, for everyone.
    if (filterOrTopic.charCodeAt(0) === 36 && !READABLE_RESERVED.test(filterOrTopic)) return false;
    if (principal?.kind !== 'device') return true;
    return kind === 'subscribe' ? principal.policy.maySubscribe(filterOrTopic) : principal.policy.mayReceive(filterOrTopic);
  }

  function mayPublish(principal: Principal | undefined, topic: string): boolean {
    // Shadow requests always reach the shadow service, which answers 403 on /rejected for a shadow the
    // device's policy does not grant (see shadowAccess): the AWS shadow error, not a disconnect.
    if (topic.charCodeAt(0) === 36) return SHADOW_REQUEST.test(topic);
    return principal?.kind !== 'device' || principal.policy.mayPublish(topic);
  }

  /** A will is a PUBLISH made later on the client's behalf: a valid topic name [MQTT-3.1.3-11] the client may publish to. */
  function mayPublishWillAs(principal: Principal | undefined, topic: string): boolean {
    return topic.length > 0 && !topic.includes('#') && !topic.includes('+') && !topic.includes('\u0000') && mayPublish(principal, topic);
  }

  function deviceAllowed(device: DeviceRecord, clientId: string): { reason: string } | { policy: CompiledPolicy } {
    if (device.revokedAt !== null) return { reason: `device ${device.thing} was revoked at ${device.revokedAt}` };
    // AWS IoT convention, and what makes presence, shadows and revocation per thing: client id = thing name.
    if (clientId !== device.thing) return { reason: `client id must be the thing name ${device.thing}` };
    const policy = compilePolicy(options.devices?.policies ?? [], device);
    if (!policy.connect) return { reason: `policy group(s) ${policy.groups.join(', ')} refuse connect` };
    return { policy };
  }

  return {
    preConnect(client, packet, done) {
      // aedes replaces an empty client id with a generated one before authenticate runs, so remember
      // here what the client actually sent; authenticate is where aedes lets us answer CONNACK 0x02.
      connectFacts.set(client, { emptyClientId: packet.clientId === '', clientIdBytes: Buffer.byteLength(packet.clientId ?? '') });
      done(null, true);
    },

    authenticate(client, username, password, done) {
      const facts = connectFacts.get(client);
      // Needed only here, and a device may stay connected for months.
      connectFacts.delete(client);
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
      const refuse = (returnCode: 4 | 5, code: ErrorCode, reason: string, extra: Record<string, unknown> = {}): void => {
        log.warn({ code, clientId: client.id, ip, listener: listener?.name, reason, ...extra }, `CONNECT refused: ${reason}`);
        options.onDeny?.(client, 'AUTH_ERROR');
        done(returnCode === 4 ? authError(4, 'bad user name or password') : authError(5, 'not authorized'), false);
      };
      const accept = (principal: Principal): void => {
        // aedes internals (no public API has the will before CONNACK): checked at start, ./patches.ts.
        const will = (client as unknown as { _will?: { topic: string; payload: Buffer } })._will;
        if (will && !mayPublishWillAs(principal, will.topic)) {
          log.warn({ code: 'COORD_ERR_MQTT_PUBLISH_DENIED', clientId: client.id, ip, topic: will.topic }, 'CONNECT refused: will topic not allowed');
          return done(authError(5, 'not authorized'), false);
        }
        if (will && will.payload.length > options.maxPayloadBytes) {
          log.warn({ code: 'COORD_ERR_MQTT_PAYLOAD_TOO_LARGE', clientId: client.id, ip, bytes: will.payload.length }, 'CONNECT refused: will payload too large');
          return done(authError(5, 'not authorized'), false);
        }
        principals.set(client, principal);
        if (principal.kind === 'device') {
          log.info({ clientId: client.id, thing: principal.thing, via: principal.via, groups: principal.policy.groups, ip, listener: listener?.name }, 'device connected');
        }
        done(null, true);
      };
      const devices = options.devices;

      // The TLS listener verified the certificate chain in the handshake (device CA, validity, client
      // use); here the certificate must also be a registered, unrevoked device's. User name and password
      // are ignored: the AWS SDKs put metrics in the user name.
      if (listener?.tls && devices) {
        const peer = typeof (client.conn as Partial<TLSSocket>).getPeerCertificate === 'function' ? (client.conn as TLSSocket).getPeerCertificate() : undefined;
        if (!peer?.raw) return refuse(5, 'COORD_ERR_DEVICE_NOT_AUTHORIZED', 'no client certificate');
        const fingerprint = createHash('sha256').update(peer.raw).digest('hex');
        const device = devices.directory.byFingerprint(fingerprint);
        if (!device) return refuse(5, 'COORD_ERR_DEVICE_NOT_AUTHORIZED', 'certificate is not registered to any device', { fingerprint });
        const verdict = deviceAllowed(device, client.id);
        if ('reason' in verdict) return refuse(5, 'COORD_ERR_DEVICE_NOT_AUTHORIZED', verdict.reason, { thing: device.thing, fingerprint });
        // The registry's copy of the fingerprint (the same text): one string per device, not per connection.
        return accept({ kind: 'device', id: device.certFingerprint ?? fingerprint, thing: device.thing, attributes: device.attributes, via: 'certificate', policy: verdict.policy });
      }

      // A password makes it a device login (MQTT: a password always comes with a user name [MQTT-3.1.2-22]).
      if (password !== undefined && devices) {
        const allowed = devices.passwordAuth === 'always' || (devices.passwordAuth === 'loopback' && listener?.loopback === true);
        if (!allowed) return refuse(5, 'COORD_ERR_DEVICE_NOT_AUTHORIZED', `password login is not allowed on this listener (devices.passwordAuth=${devices.passwordAuth})`);
        const device = username === undefined ? undefined : devices.directory.get(username);
        verifyPassword(password.toString('utf8'), device?.passwordHash ?? DUMMY_HASH).then(
          (ok) => {
            if (!ok || !device?.passwordHash) return refuse(4, 'COORD_ERR_DEVICE_BAD_CREDENTIALS', 'bad user name or password', { username });
            const verdict = deviceAllowed(device, client.id);
            if ('reason' in verdict) return refuse(5, 'COORD_ERR_DEVICE_NOT_AUTHORIZED', verdict.reason, { thing: device.thing });
            accept({ kind: 'device', id: device.thing, thing: device.thing, attributes: device.attributes, via: 'password', policy: verdict.policy });
          },
          (err: unknown) => {
            log.error({ err, code: 'COORD_ERR_INTERNAL', clientId: client.id }, 'password check failed');
            done(authError(5, 'not authorized'), false);
          },
        );
        return;
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
      // A registered device's client id is its identity: an anonymous client must not take over its
      // session (queued messages, subscriptions) [MQTT-3.1.4-2], even in development mode.
      if (devices?.directory.get(client.id)) {
        return refuse(5, 'COORD_ERR_DEVICE_NOT_AUTHORIZED', `client id ${client.id} is a registered device: connect as that device (certificate or password)`);
      }
      accept({ kind: 'anonymous', id: 'anonymous' });
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
      if (!mayPublish(principals.get(client), topic)) {
        log.warn({ code: 'COORD_ERR_MQTT_PUBLISH_DENIED', clientId: client.id, topic }, 'PUBLISH denied by policy; disconnecting client (AWS IoT behaviour)');
        options.onDeny?.(client, 'FORBIDDEN_ACCESS');
        return done(new CoordinatorError('COORD_ERR_MQTT_PUBLISH_DENIED', `publish to ${topic} is not allowed`));
      }
      done(null);
    },

    authorizeSubscribe(client, sub, done) {
      if (!mayRead(principals.get(client), sub.topic, 'subscribe')) {
        log.warn({ code: 'COORD_ERR_MQTT_SUBSCRIBE_DENIED', clientId: client.id, topic: sub.topic }, 'SUBSCRIBE denied by policy (SUBACK 0x80)');
        // A null subscription makes aedes answer 0x80 for this filter [MQTT-3.9.3].
        return done(null, null);
      }
      done(null, sub);
    },

    authorizeForward(client, packet) {
      // Checked on every delivery: a wide subscription (or one restored from a persistent session) must
      // not carry messages the policy does not let this client receive.
      return mayRead(principals.get(client), packet.topic, 'receive') ? packet : null;
    },

    maySubscribe: (client, filter) => mayRead(principals.get(client), filter, 'subscribe'),
    mayPublishWill: (topic) => mayPublishWillAs(undefined, topic),

    shadowAccess(client, thing, op, name) {
      const principal = client ? principals.get(client) : undefined;
      if (!client || !principal) return 401;
      // The coordinator's own shadows carry its deployments: no device changes them over MQTT (the CLI
      // and the cloud link use the in-process API).
      if (thing === options.coordinatorThing && op !== 'get' && !options.controlClients?.includes(client.id)) {
        log.warn({ code: 'COORD_ERR_SHADOW_REJECTED', clientId: client.id, thing, op }, "shadow request forbidden: the coordinator's own shadows are read-only over MQTT");
        return 403;
      }
      // A device reaches a shadow when its policy lets it publish that shadow's request topic: its own
      // by default, another's only when a group grants it.
      if (principal.kind === 'device') {
        const topic = `$aws/things/${thing}/shadow${name === undefined ? '' : `/name/${name}`}/${op}`;
        if (!principal.policy.mayPublish(topic)) {
          log.warn({ code: 'COORD_ERR_SHADOW_REJECTED', clientId: client.id, thing, shadow: name, op }, "shadow request forbidden by the device's policy");
          return 403;
        }
      }
      return null;
    },
  };
}
