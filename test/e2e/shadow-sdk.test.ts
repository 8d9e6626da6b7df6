/**
 * Compatibility (issue 3, acceptance 3): the AWS IoT Device SDK v2 for JavaScript, unchanged, against the
 * local broker. Its MQTT 3.1.1 connection over plain TCP carries `iotshadow.IotShadowClientv2`, the SDK's
 * request/response shadow client: it subscribes to the response topics, publishes the request with its
 * own clientToken (a UUID), and settles on the /accepted or /rejected message carrying that token. Every
 * assertion goes through the SDK's own API, never through raw topics.
 */
import { randomUUID } from 'node:crypto';
import { io, iotshadow, mqtt, mqtt_request_response } from 'aws-iot-device-sdk-v2';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startCoordinator, type RunningCoordinator } from '../helpers/process.js';

type StreamingOperation<T> = mqtt_request_response.StreamingOperation<T>;

/** The events a streaming operation delivered, with a way to wait for the next one. */
interface Stream<T> {
  readonly operation: StreamingOperation<T>;
  readonly events: T[];
  readonly errors: unknown[];
  next(timeoutMs?: number): Promise<T>;
}

const streams: StreamingOperation<unknown>[] = [];

/**
 * Opens an SDK stream and resolves once its subscription is established (the SDK reports it through the
 * `subscriptionStatus` event), so that nothing published afterwards can be missed.
 */
function openStream<T>(operation: StreamingOperation<T>, timeoutMs = 5000): Promise<Stream<T>> {
  streams.push(operation);
  const events: T[] = [];
  const errors: unknown[] = [];
  const waiters: ((e: T) => void)[] = [];
  let taken = 0;
  operation.on('incomingPublish', ({ message }) => {
    events.push(message);
    const w = waiters.shift();
    if (w) {
      taken++;
      w(message);
    }
  });
  // A payload the SDK could not deserialize: a protocol incompatibility.
  operation.on('incomingPublishError', ({ error }) => errors.push(error));
  const stream: Stream<T> = {
    operation,
    events,
    errors,
    next(waitMs = 5000) {
      if (taken < events.length) return Promise.resolve(events[taken++]!);
      return new Promise<T>((resolve, reject) => {
        const timer = setTimeout(() => {
          waiters.splice(waiters.indexOf(waiter), 1);
          reject(new Error(`no stream event within ${waitMs} ms (errors: ${errors.map(String).join('; ')})`));
        }, waitMs);
        const waiter = (e: T): void => {
          clearTimeout(timer);
          resolve(e);
        };
        waiters.push(waiter);
      });
    },
  };
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`stream subscription not established within ${timeoutMs} ms`)), timeoutMs);
    operation.on('subscriptionStatus', (status) => {
      // aws-crt's SubscriptionStatusEventType: 0 = SubscriptionEstablished, 1 = SubscriptionLost,
      // 2 = SubscriptionHalted (the enum itself is aws-crt's, not re-exported by the SDK).
      const type = Number(status.type);
      if (type === 0) {
        clearTimeout(timer);
        resolve(stream);
      } else {
        clearTimeout(timer);
        reject(new Error(`stream subscription failed (status ${type}): ${status.error?.error_name ?? 'no error'}`));
      }
    });
    operation.open();
  });
}

/** The modeled AWS error document of an SDK request that was answered on /rejected. */
async function rejection(request: Promise<unknown>): Promise<iotshadow.model.V2ErrorResponse> {
  const err = await request.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err, 'the request was accepted').toBeInstanceOf(mqtt_request_response.ServiceError);
  const serviceError = err as mqtt_request_response.ServiceError;
  // internalError is set when the SDK failed on its own (timeout, connection); modeledError is the
  // payload of /rejected.
  expect(serviceError.internalError).toBeUndefined();
  return serviceError.modeledError as iotshadow.model.V2ErrorResponse;
}

describe('AWS IoT Device SDK v2 (MQTT 3.1.1, IotShadowClientv2) against the local broker', () => {
  let coordinator: RunningCoordinator;
  let client: mqtt.MqttClient;
  let connection: mqtt.MqttClientConnection;
  let shadow: iotshadow.IotShadowClientv2;
  const connectionErrors: unknown[] = [];

  beforeAll(async () => {
    coordinator = await startCoordinator();
    client = new mqtt.MqttClient();
    // Plain TCP, no TLS: the SDK's AwsIotMqttConnectionConfigBuilder always builds a TLS context (AWS IoT
    // Core is TLS-only), so a connection to a local plain-TCP broker is configured with the
    // MqttConnectionConfig the builder would produce, minus tls_ctx.
    const config: mqtt.MqttConnectionConfig = {
      client_id: `sdk-v2-${randomUUID()}`,
      host_name: '127.0.0.1',
      port: coordinator.port,
      clean_session: true,
      keep_alive: 30,
      socket_options: new io.SocketOptions(io.SocketType.STREAM, io.SocketDomain.IPV4, 5000),
      use_websocket: false,
      tls_ctx: undefined,
      reconnect_min_sec: 1,
      reconnect_max_sec: 2,
    };
    connection = client.new_connection(config);
    connection.on('error', (e) => connectionErrors.push(e));
    await connection.connect();
    shadow = iotshadow.IotShadowClientv2.newFromMqtt311(connection, {
      maxRequestResponseSubscriptions: 8,
      maxStreamingSubscriptions: 8,
      operationTimeoutInSeconds: 5,
    });
  });

  afterAll(async () => {
    for (const s of streams) s.close();
    shadow?.close();
    if (connection) await connection.disconnect();
    if (coordinator) await coordinator.stop();
  });

  it('classic shadow: updateShadow (reported, desired) → deltas and documents on the streams; getShadow; deleteShadow', async () => {
    const thingName = 'sdk-bulb';
    const deltas = await openStream(shadow.createShadowDeltaUpdatedStream({ thingName }));
    const documents = await openStream(shadow.createShadowUpdatedStream({ thingName }));

    const reported = await shadow.updateShadow({ thingName, state: { reported: { color: 'red', brightness: 40 } } });
    expect(reported).toMatchObject({ state: { reported: { color: 'red', brightness: 40 } }, version: 1 });
    expect(reported.clientToken).toEqual(expect.any(String));
    expect(reported.timestamp).toEqual(expect.any(Number));
    expect(reported.metadata).toMatchObject({ reported: { color: { timestamp: expect.any(Number) as number } } });
    const first = await documents.next();
    expect(first.previous).toBeUndefined();
    expect(first.current).toMatchObject({ state: { reported: { color: 'red', brightness: 40 } }, version: 1 });

    const desired = await shadow.updateShadow({ thingName, state: { desired: { color: 'green', brightness: 40 } } });
    expect(desired).toMatchObject({ state: { desired: { color: 'green', brightness: 40 } }, version: 2 });
    // Delta: only the desired keys that differ from reported.
    const delta = await deltas.next();
    expect(delta).toMatchObject({ state: { color: 'green' }, version: 2 });
    expect(delta.state).not.toHaveProperty('brightness');
    expect(delta.metadata).toMatchObject({ color: { timestamp: expect.any(Number) as number } });
    const second = await documents.next();
    expect(second).toMatchObject({
      previous: { state: { reported: { color: 'red' } }, version: 1 },
      current: { state: { desired: { color: 'green' }, reported: { color: 'red' } }, version: 2 },
    });

    const got = await shadow.getShadow({ thingName });
    expect(got).toMatchObject({
      state: { desired: { color: 'green', brightness: 40 }, reported: { color: 'red', brightness: 40 }, delta: { color: 'green' } },
      metadata: { desired: { color: { timestamp: expect.any(Number) as number } }, reported: { color: { timestamp: expect.any(Number) as number } } },
      version: 2,
    });
    expect(got.state?.delta).not.toHaveProperty('brightness');

    // The device catches up: reported matches desired, no delta is published, the delta disappears.
    const caughtUp = await shadow.updateShadow({ thingName, state: { reported: { color: 'green' } }, version: 2 });
    expect(caughtUp.version).toBe(3);
    const afterCatchUp = await shadow.getShadow({ thingName });
    expect(afterCatchUp.version).toBe(3);
    expect(afterCatchUp.state?.delta).toBeUndefined();

    // Optimistic locking through the SDK: a stale version is rejected with 409.
    const conflict = await rejection(shadow.updateShadow({ thingName, state: { desired: { color: 'blue' } }, version: 1 }));
    expect(conflict).toMatchObject({ code: 409, message: 'Version conflict' });
    expect(conflict.clientToken).toEqual(expect.any(String));

    const deleted = await shadow.deleteShadow({ thingName });
    expect(deleted).toMatchObject({ version: 3 });
    const gone = await rejection(shadow.getShadow({ thingName }));
    expect(gone).toMatchObject({ code: 404, message: `No shadow exists with name: '${thingName}'` });

    expect(deltas.events).toHaveLength(1);
    expect(deltas.errors).toEqual([]);
    expect(documents.errors).toEqual([]);
  });

  it('named shadow: updateNamedShadow → delta on the named stream only; getNamedShadow; deleteNamedShadow', async () => {
    const thingName = 'sdk-bulb';
    const shadowName = 'schedule';
    const named = await openStream(shadow.createNamedShadowDeltaUpdatedStream({ thingName, shadowName }));
    const classic = await openStream(shadow.createShadowDeltaUpdatedStream({ thingName }));

    const r1 = await shadow.updateNamedShadow({ thingName, shadowName, state: { reported: { on: '06:30', days: ['mon', 'tue'] } } });
    expect(r1).toMatchObject({ state: { reported: { on: '06:30', days: ['mon', 'tue'] } }, version: 1 });
    const r2 = await shadow.updateNamedShadow({ thingName, shadowName, state: { desired: { on: '07:00', days: ['mon', 'tue'], nested: { a: { b: 1 } } } } });
    expect(r2.version).toBe(2);

    const delta = await named.next();
    // Arrays that are equal are not in the delta; nested paths are reported in full.
    expect(delta).toMatchObject({ state: { on: '07:00', nested: { a: { b: 1 } } }, version: 2 });
    expect(delta.state).not.toHaveProperty('days');

    const got = await shadow.getNamedShadow({ thingName, shadowName });
    expect(got).toMatchObject({
      state: {
        desired: { on: '07:00', days: ['mon', 'tue'], nested: { a: { b: 1 } } },
        reported: { on: '06:30', days: ['mon', 'tue'] },
        delta: { on: '07:00', nested: { a: { b: 1 } } },
      },
      version: 2,
    });

    // A named shadow's delta is not published on the classic shadow's topic.
    expect(classic.events).toEqual([]);

    const deleted = await shadow.deleteNamedShadow({ thingName, shadowName });
    expect(deleted.version).toBe(2);
    const gone = await rejection(shadow.getNamedShadow({ thingName, shadowName }));
    expect(gone).toMatchObject({ code: 404, message: expect.stringContaining('No shadow exists') as string });
    expect(named.errors).toEqual([]);
  });

  it('rejected: get of a shadow that does not exist surfaces the 404 error document', async () => {
    const err = await rejection(shadow.getShadow({ thingName: 'sdk-nothing-here' }));
    expect(err).toMatchObject({ code: 404, message: "No shadow exists with name: 'sdk-nothing-here'" });
    expect(err.clientToken).toEqual(expect.any(String));
    expect(err.timestamp).toEqual(expect.any(Number));
    const named = await rejection(shadow.getNamedShadow({ thingName: 'sdk-nothing-here', shadowName: 'nope' }));
    expect(named).toMatchObject({ code: 404 });
    expect(connectionErrors).toEqual([]);
  });
});
