/**
 * The task author's view: the events a task receives and the `ctx` it is given (DESIGN.md §4.3).
 * Exported from the package so a task's TypeScript gets completion and type errors:
 *
 *   import type { Task } from 'edge-coordinator';
 *   export default { async onEvent(event, ctx) { ... } } satisfies Task;
 *
 * Everything crosses the sandbox boundary as JSON: values a task passes to ctx must be JSON-serializable.
 */

/** A JSON value. */
export type JsonValue = null | boolean | number | string | JsonValue[] | { [key: string]: JsonValue };

/** Where a message came from. */
export type EventSource = { kind: 'device'; id: string } | { kind: 'task'; id: string } | { kind: 'shadow' } | { kind: 'cloud' };

/** An MQTT message that matched one of the task's routes or topic triggers. */
export interface MessageEvent {
  readonly type: 'message';
  readonly topic: string;
  /** The payload parsed as JSON when it is JSON, otherwise its UTF-8 text. */
  readonly payload: JsonValue;
  /** The payload as UTF-8 text (binary payloads: as base64 in `payloadBase64`, and this is ''). */
  readonly text: string;
  readonly payloadBase64?: string;
  readonly qos: 0 | 1;
  readonly source: EventSource;
}

/** A cron trigger fired. */
export interface CronEvent {
  readonly type: 'cron';
  readonly schedule: string;
  /** ISO 8601 time it fired. */
  readonly firedAt: string;
}

/** The desired state of a watched shadow differs from its reported state (the /update/delta payload). */
export interface ShadowDeltaEvent {
  readonly type: 'shadowDelta';
  readonly thing: string;
  readonly shadow?: string;
  readonly state: { [key: string]: JsonValue };
  readonly version: number;
}

/** `coordinator invoke NAME --payload JSON` or the admin API. */
export interface InvokeEvent {
  readonly type: 'invoke';
  readonly payload: JsonValue;
}

/** Any event a task receives. */
export type TaskEvent = MessageEvent | CronEvent | ShadowDeltaEvent | InvokeEvent;

/** Options of ctx.publish. */
export interface PublishOptions {
  readonly qos?: 0 | 1;
}

/** A shadow update request, as on `$aws/things/<thing>/shadow/update`. */
export interface ShadowUpdateRequest {
  readonly state: { readonly desired?: { [key: string]: JsonValue } | null; readonly reported?: { [key: string]: JsonValue } | null };
  readonly version?: number;
  readonly clientToken?: string;
}

/** Everything a task can do: all of it is checked against the task's permissions in the coordinator. */
export interface TaskContext {
  /** Id of this invocation (in log lines too). */
  readonly invocationId: string;
  /** The task's `config` from its manifest or deployment (a private copy per invocation). */
  readonly config: { [key: string]: JsonValue } | undefined;
  /** Publishes to `topic` (must match permissions.publish); routes decide who receives it. A string is sent as is, bytes as bytes, anything else as JSON. */
  publish(topic: string, payload?: JsonValue | Uint8Array | ArrayBuffer, options?: PublishOptions): Promise<void>;
  readonly shadow: {
    /** The /get/accepted document (state, metadata, version); rejects with COORD_ERR_SHADOW_REJECTED "404 ..." when there is none. */
    get(thing: string, shadowName?: string): Promise<{ state: { desired?: JsonValue; reported?: JsonValue; delta?: JsonValue }; version: number }>;
    /** Applies an update; resolves with the /update/accepted payload once it is durable. */
    update(thing: string, request: ShadowUpdateRequest, shadowName?: string): Promise<{ version: number }>;
    delete(thing: string, shadowName?: string): Promise<{ version: number }>;
  };
  /** The thin devices of the gateway, through their profiles (docs/devices.md). */
  readonly devices: {
    /**
     * Carries out a generic action (turnOn, turnOff, read, …) on device `thing` as its profile maps it;
     * the thing must match permissions.devices. Resolves with the action's result: `{version}` for a
     * shadow action, `null` for a publish, the device's answer for a request, the shadow section for a read.
     */
    invoke(thing: string, action: string, params?: { [key: string]: JsonValue }): Promise<JsonValue>;
  };
  /** Persistent key-value state of this task (survives restarts and redeploys); values are JSON. */
  readonly state: {
    get<T extends JsonValue = JsonValue>(key: string): Promise<T | undefined>;
    /** Resolves once the value is on disk. */
    set(key: string, value: JsonValue): Promise<void>;
    delete(key: string): Promise<void>;
    keys(): Promise<string[]>;
  };
  /** The task's log: `coordinator tasks logs NAME`, and the coordinator log. console.* writes here too. */
  readonly log: {
    debug(...args: unknown[]): void;
    info(...args: unknown[]): void;
    warn(...args: unknown[]): void;
    error(...args: unknown[]): void;
  };
}

/** A task module's default export. */
export interface Task {
  /** Called for every event; the resolved value (JSON) is the invocation's result. */
  onEvent(event: TaskEvent, ctx: TaskContext): unknown;
  /** Pinned tasks: called once when the task starts (after a deploy, a restart or a task host restart). */
  onStart?(ctx: TaskContext): unknown;
  /** Pinned tasks: called when the task is stopped or replaced. */
  onStop?(ctx: TaskContext): unknown;
}
