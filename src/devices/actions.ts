/**
 * Carries out a generic action on a device through its profile (see ./profiles.ts): what
 * `ctx.devices.invoke(thing, action, params)` does once the host API has checked the task may drive
 * that device. The coordinator acts as itself here (a shadow update through the in-process API, a
 * PUBLISH from the broker): the device's own policy decides what it receives.
 */
import { randomUUID } from 'node:crypto';
import type { Aedes, AedesPublishPacket } from 'aedes';
import { CoordinatorError } from '../errors.js';
import type { Logger } from '../log/logger.js';
import { parseUpdateRequest, type ShadowLimits } from '../shadow/request.js';
import type { ShadowService } from '../shadow/service.js';
import { render, type DeviceProfile, type TemplateScope } from './profiles.js';
import type { DeviceRegistry } from './registry.js';

/** What the executor needs. */
export interface DeviceActionsDeps {
  readonly registry: DeviceRegistry;
  readonly profiles: ReadonlyMap<string, DeviceProfile>;
  readonly shadows: ShadowService;
  readonly shadowLimits: ShadowLimits;
  readonly aedes: Aedes;
  readonly log: Logger;
}

const payloadOf = (value: unknown): Buffer => Buffer.from(value === undefined ? '' : typeof value === 'string' ? value : JSON.stringify(value));

function parsePayload(payload: Buffer): unknown {
  const text = payload.toString('utf8');
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return text;
  }
}

/** Executes profile actions. */
export class DeviceActions {
  readonly #deps: DeviceActionsDeps;

  constructor(deps: DeviceActionsDeps) {
    this.#deps = deps;
  }

  /** The profiles known to this coordinator. */
  get profiles(): ReadonlyMap<string, DeviceProfile> {
    return this.#deps.profiles;
  }

  /** Runs `action` on `thing` with `params`; resolves with the action's result (see docs/devices.md). */
  async invoke(thing: string, action: string, params: Readonly<Record<string, unknown>>): Promise<unknown> {
    const device = this.#deps.registry.get(thing);
    if (!device) throw new CoordinatorError('COORD_ERR_DEVICE_UNKNOWN', `no device named ${thing} is registered`);
    if (device.revokedAt) throw new CoordinatorError('COORD_ERR_DEVICE_ACTION', `device ${thing} is revoked`);
    if (device.profile === null) throw new CoordinatorError('COORD_ERR_DEVICE_ACTION', `device ${thing} has no profile`);
    const profile = this.#deps.profiles.get(device.profile);
    if (!profile) throw new CoordinatorError('COORD_ERR_DEVICE_PROFILE', `device ${thing} names profile ${device.profile}, which is not loaded`);
    const step = profile.actions[action];
    if (!step) throw new CoordinatorError('COORD_ERR_DEVICE_ACTION', `profile ${profile.name} has no action ${action} (it has ${Object.keys(profile.actions).join(', ')})`);
    const scope: TemplateScope = { thingName: thing, requestId: randomUUID(), params };

    if ('shadow' in step) {
      const desired = render(step.shadow.desired, scope);
      // Validated as any shadow update is (size, depth, types): a profile cannot write what a device could not.
      const request = parseUpdateRequest(Buffer.from(JSON.stringify({ state: { desired } })), this.#deps.shadowLimits);
      const id = step.shadow.name === undefined ? { thing } : { thing, name: step.shadow.name };
      const result = await this.#deps.shadows.update(id, request);
      return { version: result.document.version };
    }
    if ('read' in step) {
      const id = step.read.name === undefined ? { thing } : { thing, name: step.read.name };
      const doc = this.#deps.shadows.document(id);
      if (!doc) return null;
      if (step.read.section === 'delta') {
        const got = this.#deps.shadows.get(id) as { state?: { delta?: unknown } };
        return got.state?.delta ?? null;
      }
      return doc.state[step.read.section] ?? null;
    }
    if ('publish' in step) {
      const topic = String(render(step.publish.topic, scope));
      await this.#publish(topic, payloadOf(render(step.publish.payload, scope)), step.publish.qos);
      return null;
    }
    const r = step.request;
    const topic = String(render(r.topic, scope));
    const responseTopic = String(render(r.responseTopic, scope));
    return this.#request(topic, payloadOf(render(r.payload, scope)), responseTopic, r.correlationField, scope.requestId, r.timeoutMs);
  }

  #publish(topic: string, payload: Buffer, qos: 0 | 1): Promise<void> {
    return new Promise((resolve, reject) => {
      this.#deps.aedes.publish({ cmd: 'publish', topic, payload, qos, retain: false, dup: false }, (err) => (err ? reject(err) : resolve()));
    });
  }

  /** Publishes a request and resolves with the first matching answer on `responseTopic`, or fails after `timeoutMs`. */
  #request(topic: string, payload: Buffer, responseTopic: string, field: string | undefined, requestId: string, timeoutMs: number): Promise<unknown> {
    const { aedes } = this.#deps;
    return new Promise((resolve, reject) => {
      let settled = false;
      const finish = (fn: () => void): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        aedes.unsubscribe(responseTopic, onMessage, () => undefined);
        fn();
      };
      const onMessage = (packet: AedesPublishPacket, done: () => void): void => {
        done();
        const value = parsePayload(packet.payload as Buffer);
        if (field !== undefined && (value === null || typeof value !== 'object' || (value as Record<string, unknown>)[field] !== requestId)) return;
        finish(() => resolve(value));
      };
      const timer = setTimeout(
        () => finish(() => reject(new CoordinatorError('COORD_ERR_DEVICE_TIMEOUT', `no answer on ${responseTopic} within ${timeoutMs} ms`))),
        timeoutMs,
      );
      // Subscribed before the request goes out, so an answer cannot arrive unheard.
      aedes.subscribe(responseTopic, onMessage, () => {
        this.#publish(topic, payload, 1).catch((err: Error) => finish(() => reject(err)));
      });
    });
  }
}
