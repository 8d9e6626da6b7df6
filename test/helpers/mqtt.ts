/** MQTT.js helpers for tests: connect and wait, collect messages. */
import mqtt, { type IClientOptions, type MqttClient, type IConnackPacket } from 'mqtt';
import { afterAll } from 'vitest';

const clients = new Set<MqttClient>();
afterAll(async () => {
  await Promise.all([...clients].map((c) => c.endAsync(true).catch(() => undefined)));
});

/** Connects and resolves once CONNACK arrives (rejects on refusal or timeout); no automatic reconnects. */
export function connect(url: string, options: IClientOptions = {}): Promise<MqttClient & { connack: IConnackPacket }> {
  return new Promise((resolve, reject) => {
    const client = mqtt.connect(url, { reconnectPeriod: 0, connectTimeout: 5000, ...options });
    clients.add(client);
    // Record from the first byte: queued messages can arrive in the same read as CONNACK, before the
    // caller's continuation runs.
    inbox(client);
    client.once('connect', (connack) => resolve(Object.assign(client, { connack })));
    client.once('error', (err) => {
      client.end(true);
      reject(err);
    });
  });
}

/** Received messages, with a way to wait for the next matching one. */
export interface Inbox {
  readonly messages: { topic: string; payload: Buffer; retain: boolean }[];
  next(pred?: (topic: string, payload: Buffer) => boolean, timeoutMs?: number): Promise<{ topic: string; payload: Buffer; retain: boolean }>;
  /** Resolves once `n` messages matching `pred` have arrived in total. */
  count(n: number, pred?: (topic: string) => boolean, timeoutMs?: number): Promise<void>;
}

const inboxes = new WeakMap<MqttClient, Inbox>();

/** Every message `client` has received since it was connected by `connect()`. */
export function inbox(client: MqttClient): Inbox {
  const existing = inboxes.get(client);
  if (existing) return existing;
  const created = createInbox(client);
  inboxes.set(client, created);
  return created;
}

/**
 * Resolves with the first defined result of `check`, run now and each time a listener in `signal` is
 * called (the caller calls them when something arrived); rejects after `timeoutMs` naming `what()`.
 */
export function waitOnSignal<T>(signal: Set<() => void>, check: () => T | undefined, timeoutMs: number, what: () => string): Promise<T> {
  return new Promise((resolve, reject) => {
    const hit = check();
    if (hit !== undefined) return resolve(hit);
    const timer = setTimeout(() => {
      signal.delete(listener);
      reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what()}`));
    }, timeoutMs);
    const listener = (): void => {
      const r = check();
      if (r === undefined) return;
      clearTimeout(timer);
      signal.delete(listener);
      resolve(r);
    };
    signal.add(listener);
  });
}

function createInbox(client: MqttClient): Inbox {
  const messages: Inbox['messages'] = [];
  const listeners = new Set<() => void>();
  client.on('message', (topic, payload, packet) => {
    messages.push({ topic, payload, retain: packet.retain });
    for (const l of [...listeners]) l();
  });
  const waitFor = <T>(check: () => T | undefined, timeoutMs: number, what: string): Promise<T> =>
    waitOnSignal(listeners, check, timeoutMs, () => `${what}; got ${messages.map((m) => m.topic).join(', ')}`);
  const taken = new Set<number>();
  return {
    messages,
    next(pred = () => true, timeoutMs = 5000) {
      return waitFor(
        () => {
          const i = messages.findIndex((m, idx) => !taken.has(idx) && pred(m.topic, m.payload));
          if (i < 0) return undefined;
          taken.add(i);
          return messages[i];
        },
        timeoutMs,
        'a message',
      );
    },
    count(n, pred = () => true, timeoutMs = 5000) {
      return waitFor(() => (messages.filter((m) => pred(m.topic)).length >= n ? true : undefined), timeoutMs, `${n} messages`).then(() => undefined);
    },
  };
}
