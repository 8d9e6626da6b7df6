/**
 * The shadow service's MQTT face: requests on `$aws/things/<thing>/shadow[/name/<shadow>]/{get,update,delete}`
 * answered on `.../accepted` and `.../rejected`, plus `/update/delta` and `/update/documents`, exactly as
 * AWS IoT's Device Shadow MQTT API (device-shadow-mqtt.html). It is an adapter: every rule lives in the
 * shadow service, so the in-process API and MQTT cannot disagree.
 */
import type { Aedes, AedesPublishPacket } from 'aedes';
import type { Logger } from '../log/logger.js';
import { ShadowRequestError } from './document.js';
import { parseSimpleRequest, parseUpdateRequest, salvageClientToken, type ShadowLimits } from './request.js';
import type { ShadowId, ShadowService } from './service.js';

const REQUEST = /^\$aws\/things\/([^/]+)\/shadow\/(?:name\/([^/]+)\/)?(get|update|delete)$/;

function prefix(id: ShadowId): string {
  return `$aws/things/${id.thing}/shadow${id.name === undefined ? '' : `/name/${id.name}`}`;
}

/** Whether anyone would receive a message on a topic (see Broker.hasSubscribers). */
export type HasSubscribers = (topic: string) => boolean | Promise<boolean>;

/** The broker's authorization seam for shadow operations (null = allowed, else 401/403). */
export type ShadowAccess = (clientId: string | undefined, thing: string, op: 'get' | 'update' | 'delete', name?: string) => 401 | 403 | null;

/** Attaches the shadow MQTT API to the broker; returns a function that detaches it. */
export function attachShadowMqtt(
  broker: Aedes,
  shadows: ShadowService,
  limits: ShadowLimits,
  access: ShadowAccess,
  hasSubscribers: HasSubscribers,
  log: Logger,
): Promise<() => Promise<void>> {
  const publish = (topic: string, payload: Record<string, unknown>): void => {
    broker.publish({ cmd: 'publish', topic, payload: Buffer.from(JSON.stringify(payload)), qos: 1, retain: false, dup: false }, (err) => {
      if (err) log.error({ err, topic, code: 'COORD_ERR_INTERNAL' }, 'shadow response not published');
    });
  };

  // /update/delta and /update/documents go to whoever listens, often no one: serializing a document
  // pair nobody receives was a large share of an update's cost.
  const publishIfHeard = (topic: string, payload: Record<string, unknown>): void => {
    const heard = hasSubscribers(topic);
    if (heard === true) publish(topic, payload);
    else if (heard !== false) {
      heard.then(
        (yes) => {
          if (yes) publish(topic, payload);
        },
        (err: unknown) => log.error({ err, topic, code: 'COORD_ERR_INTERNAL' }, 'shadow response not published'),
      );
    }
  };

  const reject = (id: ShadowId, op: string, err: unknown, payload: Buffer): void => {
    const known = err instanceof ShadowRequestError;
    const code = known ? err.code : 500;
    const message = known ? err.message : 'Internal service failure';
    const clientToken = salvageClientToken(payload);
    log.info({ code: 'COORD_ERR_SHADOW_REJECTED', thing: id.thing, shadow: id.name, op, status: code, reason: message }, 'shadow request rejected');
    if (!known) log.error({ err, code: 'COORD_ERR_INTERNAL' }, 'shadow request failed');
    // AWS shadow: error document {code, message, timestamp, clientToken} on /rejected.
    publish(`${prefix(id)}/${op}/rejected`, {
      code,
      message,
      timestamp: Math.floor(Date.now() / 1000),
      ...(clientToken === undefined ? {} : { clientToken }),
    });
  };

  const handle = (packet: AedesPublishPacket, done: () => void): void => {
    // Take the request (parse it, give it its version) before calling done(), and call done() without
    // waiting for the commit. Order matters: when mqemitter has messages queued (it is at its concurrency
    // limit, e.g. a slow QoS 1 subscriber holds slots), done() synchronously dispatches the next queued
    // message to this handler, recursively; code placed after done() would run for the queued requests
    // in reverse order and give later updates of a shadow the lower versions.
    try {
      take(packet);
    } finally {
      done();
    }
  };

  const take = (packet: AedesPublishPacket): void => {
    const match = REQUEST.exec(packet.topic);
    if (!match) return; // the filters below only deliver request topics; kept so a filter change cannot crash this
    const [, thing, name, op] = match as unknown as [string, string, string | undefined, 'get' | 'update' | 'delete'];
    const id: ShadowId = name === undefined ? { thing } : { thing, name };
    const payload = Buffer.isBuffer(packet.payload) ? packet.payload : Buffer.from(packet.payload);
    try {
      // AWS shadow: 401 Unauthorized / 403 Forbidden, decided by the broker's authorization seam.
      const denied = access((packet as { clientId?: string }).clientId, thing, op, name);
      if (denied !== null) throw new ShadowRequestError(denied, denied === 401 ? 'Unauthorized' : 'Forbidden');
      if (op === 'get') {
        const { clientToken } = parseSimpleRequest(payload, limits);
        publish(`${prefix(id)}/get/accepted`, shadows.get(id, clientToken));
      } else if (op === 'delete') {
        // Accepted deletes and updates are published from the service's events (below).
        const { clientToken } = parseSimpleRequest(payload, limits);
        shadows.delete(id, clientToken).catch((err: unknown) => reject(id, op, err, payload));
      } else {
        shadows.update(id, parseUpdateRequest(payload, limits)).catch((err: unknown) => reject(id, op, err, payload));
      }
    } catch (err) {
      reject(id, op, err, payload);
    }
  };

  // AWS shadow: /update/accepted, /delta, /documents and /delete/accepted are published for every
  // accepted change, whoever made it (a device over MQTT, a task, the CLI, the deployment agent).
  const onAccepted = (id: ShadowId, payload: Record<string, unknown>): void => publish(`${prefix(id)}/update/accepted`, payload);
  const onDelta = (id: ShadowId, payload: Record<string, unknown>): void => publishIfHeard(`${prefix(id)}/update/delta`, payload);
  const onDocuments = (id: ShadowId, payload: Record<string, unknown>): void => publishIfHeard(`${prefix(id)}/update/documents`, payload);
  const onDeleted = (id: ShadowId, payload: Record<string, unknown>): void => publish(`${prefix(id)}/delete/accepted`, payload);
  shadows.on('accepted', onAccepted);
  shadows.on('delta', onDelta);
  shadows.on('documents', onDocuments);
  shadows.on('deleted', onDeleted);
  const detachEvents = (): void => {
    shadows.off('accepted', onAccepted);
    shadows.off('delta', onDelta);
    shadows.off('documents', onDocuments);
    shadows.off('deleted', onDeleted);
  };

  // Only the request topics: a `#` filter would also hand every response we publish back to us.
  const filters = ['get', 'update', 'delete'].flatMap((op) => [`$aws/things/+/shadow/${op}`, `$aws/things/+/shadow/name/+/${op}`]);
  const each = (fn: (filter: string, done: () => void) => void): Promise<void> =>
    Promise.all(filters.map((f) => new Promise<void>((done) => fn(f, done)))).then(() => undefined);
  return each((f, done) => broker.subscribe(f, handle, done)).then(() => () => {
    detachEvents();
    return each((f, done) => broker.unsubscribe(f, handle, done));
  });
}
