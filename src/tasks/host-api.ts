/**
 * The host API as the core serves it: every call a task makes from its sandbox (ctx.publish, ctx.shadow,
 * ctx.state) arrives here with the task's identity and is checked against the task's permissions before
 * anything happens. A refusal is a coded error thrown inside the task, and a log line here.
 */
import { CoordinatorError } from '../errors.js';
import type { Logger } from '../log/logger.js';
import { isReserved } from '../router/reserved.js';
import { anyMatches, validateTopic } from '../router/topic.js';
import { isJsonObject, ShadowRequestError } from '../shadow/document.js';
import { parseUpdateRequest, type ShadowLimits } from '../shadow/request.js';
import type { ShadowId, ShadowService } from '../shadow/service.js';
import type { DeviceActions } from '../devices/actions.js';
import type { TaskSpec } from './spec.js';
import type { TaskStateStore } from './state-store.js';

/** Limits the host API enforces per task. */
export interface HostApiLimits {
  readonly maxPayloadBytes: number;
  readonly maxPublishesPerInvocation: number;
  readonly maxPublishesPerSecond: number;
}

/** What the host API needs from the rest of the core. */
export interface HostApiDeps {
  readonly log: Logger;
  readonly shadows: ShadowService;
  readonly shadowLimits: ShadowLimits;
  readonly state: TaskStateStore;
  /** The coordinator's own thing: its shadows (e.g. `deployment`) are never writable by tasks. */
  readonly coordinatorThing: string;
  readonly limits: HostApiLimits;
  /** Sends a task's message along its routes. */
  readonly publish: (task: string, topic: string, payload: Buffer, qos: 0 | 1) => void;
  /** Device actions through profiles (ctx.devices.invoke). */
  readonly devices?: DeviceActions;
}

/** The caller of a host-API call. */
export interface Caller {
  readonly spec: TaskSpec;
  readonly invocationId: string;
  /** Publishes so far in this invocation (the host API counts them). */
  publishes: number;
  /** The call comes from outside any running invocation (a pinned task's timer): rate-limited per second instead. */
  readonly background: boolean;
}

function bad(message: string): CoordinatorError {
  return new CoordinatorError('COORD_ERR_TASK_BAD_CALL', message);
}

function parseArgs(argsJson: string): Record<string, unknown> {
  let args: unknown;
  try {
    args = JSON.parse(argsJson);
  } catch {
    throw bad('host call arguments are not JSON');
  }
  if (!isJsonObject(args)) throw bad('host call arguments must be an object');
  return args;
}

function str(args: Record<string, unknown>, key: string, optional = false): string | undefined {
  const v = args[key];
  if (v === undefined || v === null) {
    if (optional) return undefined;
    throw bad(`${key} is required`);
  }
  if (typeof v !== 'string') throw bad(`${key} must be a string`);
  return v;
}

/** Serves host-API calls; create one per coordinator. */
export class HostApi {
  readonly #deps: HostApiDeps;
  /** Publishes per task in the current second outside invocations, for the per-second limit. */
  readonly #buckets = new Map<string, { second: number; count: number }>();

  constructor(deps: HostApiDeps) {
    this.#deps = deps;
  }

  /** Answers one call with the value as JSON (undefined for none); rejects with a CoordinatorError. */
  async call(caller: Caller, method: string, argsJson: string): Promise<string | undefined> {
    try {
      return await this.#dispatch(caller, method, parseArgs(argsJson));
    } catch (err) {
      const e = err instanceof ShadowRequestError ? new CoordinatorError('COORD_ERR_SHADOW_REJECTED', `${err.code} ${err.message}`, { details: { status: err.code } }) : err;
      if (e instanceof CoordinatorError && (e.code === 'COORD_ERR_TASK_DENIED' || e.code === 'COORD_ERR_TASK_LIMIT')) {
        this.#deps.log.warn({ code: e.code, task: caller.spec.name, invocationId: caller.invocationId, method }, e.message);
      }
      throw e;
    }
  }

  /**
   * A one-way ctx.publish from the sandbox (which checked it already): checked again here — the core is
   * the authority — and sent along the task's routes, or dropped and logged. Never throws.
   */
  publishOneWay(caller: Caller, topic: string, payload: Buffer, qos: 0 | 1): void {
    try {
      this.#publishChecked(caller, topic, payload, qos);
    } catch (err) {
      const e = err as CoordinatorError;
      this.#deps.log.warn({ code: e.code, task: caller.spec.name, invocationId: caller.invocationId, topic }, `publish dropped: ${e.message}`);
    }
  }

  async #dispatch(caller: Caller, method: string, args: Record<string, unknown>): Promise<string | undefined> {
    const task = caller.spec.name;
    switch (method) {
      case 'shadow.get':
        return JSON.stringify(this.#deps.shadows.get(this.#shadowId(caller, args, 'read')));
      case 'shadow.update': {
        const id = this.#shadowId(caller, args, 'write');
        const request = parseUpdateRequest(Buffer.from(str(args, 'requestJson')!), this.#deps.shadowLimits);
        return JSON.stringify((await this.#deps.shadows.update(id, request)).accepted);
      }
      case 'shadow.delete':
        return JSON.stringify(await this.#deps.shadows.delete(this.#shadowId(caller, args, 'write')));
      case 'state.get':
        return this.#deps.state.get(task, str(args, 'key')!);
      case 'state.set': {
        const valueJson = str(args, 'valueJson')!;
        await this.#deps.state.set(task, str(args, 'key')!, valueJson);
        return undefined;
      }
      case 'state.delete':
        await this.#deps.state.delete(task, str(args, 'key')!);
        return undefined;
      case 'state.keys':
        return JSON.stringify(this.#deps.state.keys(task));
      case 'devices.invoke': {
        const thing = str(args, 'thing')!;
        const action = str(args, 'action')!;
        const params = args.params ?? {};
        if (!isJsonObject(params)) throw bad('params must be an object');
        if (!anyMatches(caller.spec.permissions.devices, thing)) {
          throw new CoordinatorError('COORD_ERR_TASK_DENIED', `task ${task} may not drive device ${thing} (permissions.devices)`);
        }
        if (!this.#deps.devices) throw new CoordinatorError('COORD_ERR_DEVICE_UNKNOWN', `no device named ${thing} is registered`);
        return JSON.stringify((await this.#deps.devices.invoke(thing, action, params)) ?? null);
      }
      default:
        throw bad(`unknown host call ${method}`);
    }
  }

  #publishChecked(caller: Caller, topic: string, payload: Buffer, qos: 0 | 1): void {
    const { spec } = caller;
    const problem = validateTopic(topic);
    if (problem) throw bad(`topic ${JSON.stringify(topic)} ${problem}`);
    // Reserved topics ($aws shadow and presence messages, $SYS) are the coordinator's alone, whatever the
    // permissions say: devices trust them because no one else writes them.
    if (isReserved(topic)) throw new CoordinatorError('COORD_ERR_TASK_DENIED', `task ${spec.name} may not publish to ${topic}: $ topics are reserved to the coordinator`);
    // [MQTT-4.7.2-1] holds here too: '#' in a permission never grants '$' topics.
    if (!anyMatches(spec.permissions.publish, topic)) {
      throw new CoordinatorError('COORD_ERR_TASK_DENIED', `task ${spec.name} may not publish to ${topic} (permissions.publish)`);
    }
    const { limits } = this.#deps;
    if (payload.length > limits.maxPayloadBytes) {
      throw new CoordinatorError('COORD_ERR_TASK_LIMIT', `payload of ${payload.length} bytes exceeds broker.maxPayloadBytes (${limits.maxPayloadBytes})`);
    }
    if (!caller.background && ++caller.publishes > limits.maxPublishesPerInvocation) {
      throw new CoordinatorError('COORD_ERR_TASK_LIMIT', `task ${spec.name} published more than ${limits.maxPublishesPerInvocation} messages in one invocation (tasks.maxPublishesPerInvocation)`);
    }
    if (caller.background) {
      // A pinned task's timers publish outside any invocation: bounded per second instead.
      const second = Math.floor(Date.now() / 1000);
      const bucket = this.#buckets.get(spec.name);
      if (!bucket || bucket.second !== second) this.#buckets.set(spec.name, { second, count: 1 });
      else if (++bucket.count > limits.maxPublishesPerSecond) {
        throw new CoordinatorError('COORD_ERR_TASK_LIMIT', `task ${spec.name} published more than ${limits.maxPublishesPerSecond} messages in one second outside invocations (tasks.maxPublishesPerSecond)`);
      }
    }
    this.#deps.publish(spec.name, topic, payload, qos);
  }

  #shadowId(caller: Caller, args: Record<string, unknown>, access: 'read' | 'write'): ShadowId {
    const thing = str(args, 'thing')!;
    const name = str(args, 'name', true);
    const path = name === undefined ? thing : `${thing}/${name}`;
    if (!anyMatches(caller.spec.permissions.shadows, path)) {
      throw new CoordinatorError('COORD_ERR_TASK_DENIED', `task ${caller.spec.name} may not use shadow ${path} (permissions.shadows)`);
    }
    if (access === 'write' && thing === this.#deps.coordinatorThing) {
      throw new CoordinatorError('COORD_ERR_TASK_DENIED', `task ${caller.spec.name} may not change the coordinator's own shadows (${path})`);
    }
    return name === undefined ? { thing } : { thing, name };
  }
}
