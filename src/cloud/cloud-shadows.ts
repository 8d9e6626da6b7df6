/**
 * The cloud's shadows as a client sees them: AWS IoT Device Shadow MQTT requests (get/update/delete)
 * over the upstream connection, each matched to its answer by clientToken (device-shadow-mqtt.html), and
 * the cloud's /update/documents and /delete/accepted announcements. Every token this client makes starts
 * with SYNC_TOKEN, so the sync can tell its own changes from everyone else's on both sides.
 */
import { EventEmitter } from 'node:events';
import type { MqttClient } from 'mqtt';
import { CoordinatorError } from '../errors.js';
import type { ShadowId } from '../shadow/service.js';

/** Prefix of every clientToken the sync uses (AWS allows 64 bytes). */
export const SYNC_TOKEN = 'coord-sync-';

/** A shadow document as the cloud answers /get. */
export interface CloudDocument {
  state: { desired?: Record<string, unknown>; reported?: Record<string, unknown> };
  version: number;
}

/** What the cloud announces. */
export interface CloudShadowEvents {
  documents: [id: ShadowId, payload: { previous?: CloudDocument; current?: CloudDocument; clientToken?: string }];
  deleted: [id: ShadowId, payload: { version?: number; clientToken?: string }];
}

/** `$aws/things/<thing>/shadow[/name/<name>]`. */
export function shadowTopic(id: ShadowId): string {
  return `$aws/things/${id.thing}/shadow${id.name === undefined ? '' : `/name/${id.name}`}`;
}

const RESPONSE = /^\$aws\/things\/([^/]+)\/shadow\/(?:name\/([^/]+)\/)?(get|update|delete)\/(accepted|rejected|documents)$/;

interface Pending {
  resolve: (payload: Record<string, unknown>) => void;
  reject: (err: Error) => void;
  timer: NodeJS.Timeout;
}

/** Requests to the cloud's shadows, and their announcements. */
export class CloudShadows extends EventEmitter<CloudShadowEvents> {
  readonly #pending = new Map<string, Pending>();
  readonly #timeoutMs: number;
  #seq = 0;

  constructor(timeoutMs: number) {
    super();
    this.#timeoutMs = timeoutMs;
  }

  /** The topics to subscribe to for `id`'s answers and announcements. */
  static topicsFor(id: ShadowId): string[] {
    const t = shadowTopic(id);
    return [`${t}/get/+`, `${t}/update/accepted`, `${t}/update/rejected`, `${t}/update/documents`, `${t}/delete/+`];
  }

  /** Routes an upstream message; returns false when it is not a shadow answer. */
  handle(topic: string, payload: Buffer): boolean {
    const m = RESPONSE.exec(topic);
    if (!m) return false;
    const id: ShadowId = m[2] === undefined ? { thing: m[1]! } : { thing: m[1]!, name: m[2] };
    let body: Record<string, unknown>;
    try {
      body = JSON.parse(payload.toString('utf8')) as Record<string, unknown>;
    } catch {
      return true;
    }
    const op = m[3]!;
    const result = m[4]!;
    if (result === 'documents') {
      this.emit('documents', id, body);
      return true;
    }
    if (op === 'delete' && result === 'accepted') this.emit('deleted', id, body);
    const token = typeof body.clientToken === 'string' ? body.clientToken : undefined;
    const pending = token === undefined ? undefined : this.#pending.get(token);
    if (!pending) return true;
    this.#pending.delete(token!);
    clearTimeout(pending.timer);
    if (result === 'accepted') pending.resolve(body);
    else pending.reject(new CoordinatorError('COORD_ERR_CLOUD_REJECTED', `cloud shadow ${shadowTopic(id)} ${op}: ${String(body.code)} ${String(body.message)}`, { details: { status: body.code } }));
    return true;
  }

  /** The cloud document, or undefined when the cloud has none (404). */
  async get(client: MqttClient, id: ShadowId): Promise<CloudDocument | undefined> {
    try {
      return (await this.#request(client, id, 'get', {})) as unknown as CloudDocument;
    } catch (err) {
      if ((err as CoordinatorError).details && ((err as CoordinatorError).details as { status?: unknown }).status === 404) return undefined;
      throw err;
    }
  }

  /** Applies `state` to the cloud shadow; resolves with the accepted payload (version included). */
  update(client: MqttClient, id: ShadowId, state: Record<string, unknown>): Promise<Record<string, unknown>> {
    return this.#request(client, id, 'update', { state });
  }

  delete(client: MqttClient, id: ShadowId): Promise<Record<string, unknown>> {
    return this.#request(client, id, 'delete', {});
  }

  #request(client: MqttClient, id: ShadowId, op: 'get' | 'update' | 'delete', body: Record<string, unknown>): Promise<Record<string, unknown>> {
    const clientToken = `${SYNC_TOKEN}${(++this.#seq).toString(36)}-${Date.now().toString(36)}`;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(clientToken);
        reject(new CoordinatorError('COORD_ERR_CLOUD_TIMEOUT', `cloud shadow ${shadowTopic(id)} ${op}: no answer within ${this.#timeoutMs} ms`));
      }, this.#timeoutMs);
      this.#pending.set(clientToken, { resolve, reject, timer });
      client.publish(`${shadowTopic(id)}/${op}`, JSON.stringify({ ...body, clientToken }), { qos: 1 }, (err) => {
        if (!err) return;
        clearTimeout(timer);
        this.#pending.delete(clientToken);
        reject(new CoordinatorError('COORD_ERR_CLOUD_OFFLINE', `cloud shadow ${shadowTopic(id)} ${op}: ${err.message}`, { cause: err }));
      });
    });
  }

  /** Fails every request waiting for an answer (the link went down). */
  failAll(): void {
    for (const [token, p] of this.#pending) {
      clearTimeout(p.timer);
      p.reject(new CoordinatorError('COORD_ERR_CLOUD_OFFLINE', 'the cloud link went down before the answer'));
      this.#pending.delete(token);
    }
  }
}
