/**
 * The shadow service's MQTT face: requests on `$aws/things/<thing>/shadow[/name/<shadow>]/{get,update,delete}`
 * answered on `.../accepted` and `.../rejected`, plus `/update/delta` and `/update/documents`, exactly as
 * AWS IoT's Device Shadow MQTT API (device-shadow-mqtt.html). It is an adapter: every rule lives in the
 * shadow service, so the in-process API and MQTT cannot disagree, and the protocol (topics, answers) lives
 * in ./topics.ts, shared with the shadow-service that serves the same API on another broker.
 */
import type { Aedes, AedesPublishPacket } from 'aedes';
import type { Logger } from '../log/logger.js';
import type { ShadowLimits } from './request.js';
import type { ShadowService } from './service.js';
import { forwardShadowEvents, parseRequestTopic, SHADOW_REQUEST_FILTERS, takeShadowRequest, type ShadowAnswering } from './topics.js';

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
  const publish = (topic: string, payload: Record<string, unknown>, json?: string): void => {
    broker.publish({ cmd: 'publish', topic, payload: Buffer.from(json ?? JSON.stringify(payload)), qos: 1, retain: false, dup: false }, (err) => {
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

  const ctx: ShadowAnswering = { shadows, limits, publisher: { publish, notify: publishIfHeard }, log };

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
    const request = parseRequestTopic(packet.topic);
    if (!request) return; // the filters below only deliver request topics; kept so a filter change cannot crash this
    const payload = Buffer.isBuffer(packet.payload) ? packet.payload : Buffer.from(packet.payload);
    const clientId = (packet as { clientId?: string }).clientId;
    takeShadowRequest(ctx, request, payload, () => access(clientId, request.id.thing, request.op, request.id.name));
  };

  const detachEvents = forwardShadowEvents(shadows, ctx.publisher);

  const filters = SHADOW_REQUEST_FILTERS;
  const each = (fn: (filter: string, done: () => void) => void): Promise<void> =>
    Promise.all(filters.map((f) => new Promise<void>((done) => fn(f, done)))).then(() => undefined);
  return each((f, done) => broker.subscribe(f, handle, done)).then(() => () => {
    detachEvents();
    return each((f, done) => broker.unsubscribe(f, handle, done));
  });
}
