/**
 * The shadow MQTT protocol apart from any transport (AWS IoT device-shadow-mqtt.html): which topics are
 * requests, where answers and notifications go, and how one request is answered from the shadow service.
 * Both MQTT faces use it — the embedded broker's (./mqtt.ts) and the shadow-service client of another
 * broker (../cloud/shadow-service.ts) — so the two cannot disagree on a topic or a payload.
 */
import type { Logger } from '../log/logger.js';
import { ShadowRequestError } from './document.js';
import { parseSimpleRequest, parseUpdateRequest, salvageClientToken, type ShadowLimits } from './request.js';
import type { ShadowId, ShadowService } from './service.js';

/** A shadow request operation. */
export type ShadowOp = 'get' | 'update' | 'delete';

/** A request topic, parsed. */
export interface ShadowRequestTopic {
  readonly id: ShadowId;
  readonly op: ShadowOp;
}

const REQUEST = /^\$aws\/things\/([^/]+)\/shadow\/(?:name\/([^/]+)\/)?(get|update|delete)$/;

/**
 * Filters matching every request topic and no response topic: a `#` filter would also hand every
 * response the service publishes back to it.
 */
export const SHADOW_REQUEST_FILTERS: readonly string[] = (['get', 'update', 'delete'] as const).flatMap((op) => [
  `$aws/things/+/shadow/${op}`,
  `$aws/things/+/shadow/name/+/${op}`,
]);

/** `$aws/things/<thing>/shadow[/name/<shadow>]`, the root of one shadow's topics. */
export function shadowTopicPrefix(id: ShadowId): string {
  return `$aws/things/${id.thing}/shadow${id.name === undefined ? '' : `/name/${id.name}`}`;
}

/** The shadow and operation of a request topic; undefined for any other topic. */
export function parseRequestTopic(topic: string): ShadowRequestTopic | undefined {
  const match = REQUEST.exec(topic);
  if (!match) return undefined;
  const [, thing, name, op] = match as unknown as [string, string, string | undefined, ShadowOp];
  return { id: name === undefined ? { thing } : { thing, name }, op };
}

/** How a face puts answers on the wire. */
export interface ShadowPublisher {
  /** Publishes an answer (accepted / rejected); `json` is the payload's JSON text when already made. */
  publish(topic: string, payload: Record<string, unknown>, json?: string): void;
  /** Publishes a notification that often has no listener (/update/delta, /update/documents). */
  notify(topic: string, payload: Record<string, unknown>): void;
}

/** What answering requests needs, built once per face. */
export interface ShadowAnswering {
  readonly shadows: ShadowService;
  readonly limits: ShadowLimits;
  readonly publisher: ShadowPublisher;
  readonly log: Logger;
}

function reject(ctx: ShadowAnswering, { id, op }: ShadowRequestTopic, err: unknown, payload: Buffer): void {
  const known = err instanceof ShadowRequestError;
  const code = known ? err.code : 500;
  const message = known ? err.message : 'Internal service failure';
  const clientToken = salvageClientToken(payload);
  ctx.log.info({ code: 'COORD_ERR_SHADOW_REJECTED', thing: id.thing, shadow: id.name, op, status: code, reason: message }, 'shadow request rejected');
  if (!known) ctx.log.error({ err, code: 'COORD_ERR_INTERNAL' }, 'shadow request failed');
  // AWS shadow: error document {code, message, timestamp, clientToken} on /rejected.
  ctx.publisher.publish(`${shadowTopicPrefix(id)}/${op}/rejected`, {
    code,
    message,
    timestamp: Math.floor(Date.now() / 1000),
    ...(clientToken === undefined ? {} : { clientToken }),
  });
}

/**
 * Answers one request. The request is taken (parsed, and for an update given its version) before this
 * returns, so calls in arrival order are applied in arrival order. A get or a rejection is published
 * before it returns (result undefined); an update or delete returns a promise that settles, never
 * rejecting, once it is answered — /accepted comes from the service's events (see forwardShadowEvents),
 * i.e. only once durable. `authorize` is the transport's access decision (null = allowed).
 */
export function answerShadowRequest(
  ctx: ShadowAnswering,
  request: ShadowRequestTopic,
  payload: Buffer,
  authorize?: () => 401 | 403 | null,
): Promise<void> | undefined {
  let answered!: () => void;
  const settled = new Promise<void>((resolve) => {
    answered = resolve;
  });
  return takeShadowRequest(ctx, request, payload, authorize, answered) ? settled : undefined;
}

/**
 * answerShadowRequest() for a face that need not know when the answer has gone (the embedded broker's):
 * no promise per request. Returns true when the answer comes later, and then calls `answered` (if
 * given) once it has been published; false when it was published before returning.
 */
export function takeShadowRequest(
  ctx: ShadowAnswering,
  request: ShadowRequestTopic,
  payload: Buffer,
  authorize?: () => 401 | 403 | null,
  answered?: () => void,
): boolean {
  const { id, op } = request;
  try {
    // AWS shadow: 401 Unauthorized / 403 Forbidden, decided by the transport's authorization seam.
    const denied = authorize ? authorize() : null;
    if (denied !== null) throw new ShadowRequestError(denied, denied === 401 ? 'Unauthorized' : 'Forbidden');
    if (op === 'get') {
      const { clientToken } = parseSimpleRequest(payload, ctx.limits);
      ctx.publisher.publish(`${shadowTopicPrefix(id)}/get/accepted`, ctx.shadows.get(id, clientToken));
      return false;
    }
    if (op === 'delete') {
      const { clientToken } = parseSimpleRequest(payload, ctx.limits);
      ctx.shadows.delete(id, clientToken).then(
        () => answered?.(),
        (err: unknown) => {
          reject(ctx, request, err, payload);
          answered?.();
        },
      );
      return true;
    }
    ctx.shadows.submitUpdate(id, parseUpdateRequest(payload, ctx.limits), (err) => {
      if (err) reject(ctx, request, err, payload);
      answered?.();
    });
    return true;
  } catch (err) {
    reject(ctx, request, err, payload);
    return false;
  }
}

/**
 * Publishes every accepted change on its topics, whoever made it (a client over MQTT, a task, the CLI,
 * the deployment agent), as AWS does: /update/accepted, /update/delta, /update/documents,
 * /delete/accepted. Returns a function that stops.
 */
export function forwardShadowEvents(shadows: ShadowService, publisher: ShadowPublisher): () => void {
  const onAccepted = (id: ShadowId, payload: Record<string, unknown>, json: string): void =>
    publisher.publish(`${shadowTopicPrefix(id)}/update/accepted`, payload, json);
  const onDelta = (id: ShadowId, payload: Record<string, unknown>): void => publisher.notify(`${shadowTopicPrefix(id)}/update/delta`, payload);
  const onDocuments = (id: ShadowId, payload: Record<string, unknown>): void => publisher.notify(`${shadowTopicPrefix(id)}/update/documents`, payload);
  const onDeleted = (id: ShadowId, payload: Record<string, unknown>): void => publisher.publish(`${shadowTopicPrefix(id)}/delete/accepted`, payload);
  shadows.on('accepted', onAccepted);
  shadows.on('delta', onDelta);
  shadows.on('documents', onDocuments);
  shadows.on('deleted', onDeleted);
  return () => {
    shadows.off('accepted', onAccepted);
    shadows.off('delta', onDelta);
    shadows.off('documents', onDocuments);
    shadows.off('deleted', onDeleted);
  };
}
