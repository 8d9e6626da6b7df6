/**
 * A persistent session resuming while QoS 1 messages for it are being published. aedes re-subscribes the
 * session's stored subscriptions (live deliveries start) before it replays the stored queue after
 * CONNACK, so some messages are both in the replayed queue and delivered live; that used to drop the
 * client with 'no such packet' (see ResumeGuard in src/broker/broker.ts). Every message must arrive, none
 * twice within one connection, in order, and the client must stay connected; a re-delivery after a
 * reconnect keeps its packet id and has DUP set.
 */
import type { Aedes, Client } from 'aedes';
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';
import { afterAll, describe, expect, it } from 'vitest';
import { startInProcess } from '../helpers/in-process.js';
import { connect } from '../helpers/mqtt.js';
import { startCoordinator, type RunningCoordinator } from '../helpers/process.js';

const SHADOW = '$aws/things/X/shadow/name/deployment';
const DOCUMENTS = `${SHADOW}/update/documents`;

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function payloads(prefix: string, n: number): string[] {
  return Array.from({ length: n }, (_, i) => `${prefix}-${i}`);
}

/** Publishes as the coordinator itself does (shadow service): clients may not publish on .../documents. */
function brokerPublish(aedes: Aedes, payload: string): Promise<void> {
  return new Promise((resolve, reject) =>
    aedes.publish({ cmd: 'publish', topic: DOCUMENTS, payload: Buffer.from(payload), qos: 1, retain: false, dup: false }, (err) =>
      err ? reject(err) : resolve(),
    ),
  );
}

interface Received {
  payload: string;
  messageId: number | undefined;
  dup: boolean;
}

interface Recording {
  readonly client: MqttClient;
  readonly received: Received[];
  /** Whether the connection has closed. */
  readonly closed: () => boolean;
}

const recorded = new Set<MqttClient>();
afterAll(async () => {
  await Promise.all([...recorded].map((c) => c.endAsync(true).catch(() => undefined)));
});

/**
 * Connects and records every PUBLISH from the first byte (the replay can arrive in the same read as
 * CONNACK, before a listener added after connecting would run), with its packet id and DUP flag.
 */
function connectRecording(url: string, options: IClientOptions): Promise<Recording & { sessionPresent: boolean }> {
  const client = mqtt.connect(url, { reconnectPeriod: 0, connectTimeout: 5000, ...options });
  recorded.add(client);
  const received: Received[] = [];
  let closed = false;
  client.on('message', (_topic, payload, packet) => received.push({ payload: payload.toString(), messageId: packet.messageId, dup: packet.dup }));
  client.on('close', () => (closed = true));
  return new Promise((resolve, reject) => {
    client.once('connect', (connack) => resolve({ client, received, closed: () => closed, sessionPresent: connack.sessionPresent }));
    client.once('error', reject);
  });
}

/** Publishes `payloads` from inside the CONNECT sequence of `clientId`, once (see the first test). */
function publishDuringConnect(aedes: Aedes, clientId: string, during: string[]): void {
  // 'client' fires when aedes registers the connection: after it restored the session's subscriptions,
  // before CONNACK and the replay of the queue. These messages land in the queue the replay reads and
  // are delivered live too once their queueing is durable.
  const onClient = (client: Client): void => {
    if (client.id !== clientId) return;
    aedes.off('client', onClient);
    for (const p of during) void brokerPublish(aedes, p);
  };
  aedes.on('client', onClient);
}

describe('a persistent session resuming while messages for it are published', () => {
  it('gets its queue and the messages published during CONNECT, each once, in order, and stays connected', async () => {
    const { coordinator, url } = await startInProcess();
    const aedes = coordinator.broker.aedes;
    const errors: string[] = [];
    aedes.on('clientError', (client, err) => errors.push(`${client.id}: ${err.message}`));

    const first = await connect(url, { clientId: 'resumer', clean: false });
    await first.subscribeAsync(DOCUMENTS, { qos: 1 });
    await first.endAsync();
    const backlog = payloads('queued', 20);
    for (const p of backlog) await brokerPublish(aedes, p);

    const during = payloads('during', 20);
    publishDuringConnect(aedes, 'resumer', during);
    const { client: back, received, closed, sessionPresent } = await connectRecording(url, { clientId: 'resumer', clean: false });
    expect(sessionPresent).toBe(true);
    const after = payloads('after', 5);
    for (const p of after) await brokerPublish(aedes, p);

    const expected = [...backlog, ...during, ...after];
    for (let i = 0; i < 100 && received.length < expected.length; i++) await sleep(50);
    await sleep(300); // a second copy of anything would have arrived by now

    expect(errors).toEqual([]);
    expect(closed()).toBe(false);
    expect(received.map((m) => m.payload)).toEqual(expected);
    expect(received.every((m) => !m.dup)).toBe(true);
    await back.endAsync();
  });

  it('re-sends what was in flight when the connection dropped with its packet ids and DUP set, then the rest once', async () => {
    const { coordinator, url } = await startInProcess();
    const aedes = coordinator.broker.aedes;
    const errors: string[] = [];
    aedes.on('clientError', (client, err) => errors.push(`${client.id}: ${err.message}`));

    const { client: first, received: seen } = await connectRecording(url, { clientId: 'flaky', clean: false });
    await first.subscribeAsync(DOCUMENTS, { qos: 1 });
    // Never acknowledge: MQTT.js sends PUBACK once handleMessage calls back, and reads no further packet
    // until then, so it stops at the first message and the rest stays unread in the socket.
    first.handleMessage = () => undefined;
    const firstReceived = new Promise<void>((resolve) => first.once('message', () => resolve()));
    const inFlight = payloads('in-flight', 10);
    for (const p of inFlight) await brokerPublish(aedes, p);
    await firstReceived;
    await sleep(100); // aedes has written all ten (each with a packet id) to the socket
    first.end(true); // the connection is lost: no DISCONNECT, nothing acknowledged

    const during = payloads('during', 10);
    publishDuringConnect(aedes, 'flaky', during);
    const { client: back, received, closed } = await connectRecording(url, { clientId: 'flaky', clean: false });
    const expected = [...inFlight, ...during];
    for (let i = 0; i < 100 && received.length < expected.length; i++) await sleep(50);
    await sleep(300);

    expect(errors).toEqual([]);
    expect(closed()).toBe(false);
    expect(received.map((m) => m.payload)).toEqual(expected);
    // [MQTT-4.4.0-1] same packet id, [MQTT-3.3.1-1] DUP on the re-delivery; new messages are not DUP.
    expect(received[0]).toMatchObject({ payload: 'in-flight-0', messageId: seen[0]!.messageId, dup: true });
    expect(received.slice(0, inFlight.length).every((m) => m.dup)).toBe(true);
    expect(received.slice(inFlight.length).every((m) => !m.dup)).toBe(true);
    await back.endAsync();
  });

  it('survives reconnects, takeovers and a SIGKILL restart during a flood of shadow updates: no error, nothing lost', async () => {
    const thing = 'agent-x';
    const logsOf: RunningCoordinator[] = [];
    let coord = await startCoordinator({ args: ['--log-level', 'debug'] });
    logsOf.push(coord);

    /** Versions of .../update/documents seen, per connection of the subscriber. */
    const connections: Received[][] = [];
    let unexpectedCloses = 0;
    let subscriber: MqttClient | undefined;
    const resume = async (url: string): Promise<void> => {
      const { client, received } = await connectRecording(url, { clientId: thing, clean: false });
      connections.push(received);
      client.on('close', () => {
        if (subscriber === client) unexpectedCloses++;
      });
      subscriber = client;
    };
    const versionOf = (m: Received): number => (JSON.parse(m.payload) as { current: { version: number } }).current.version;
    /** Ends the subscriber's connection: with DISCONNECT, by dropping it, or not at all (taken over). */
    const drop = (how: 'graceful' | 'forced' | 'takeover'): void => {
      const client = subscriber!;
      subscriber = undefined;
      if (how !== 'takeover') client.end(how === 'forced');
    };
    const ways = ['graceful', 'forced', 'takeover'] as const;

    const first = await connect(coord.url, { clientId: thing, clean: false });
    await first.subscribeAsync(DOCUMENTS, { qos: 1 });
    await first.endAsync();

    /** Shadow updates, four in flight at a time, until stopped or the connection goes. */
    const flood = async (url: string): Promise<{ stop: () => Promise<void>; abandon: () => void; version: () => Promise<number> }> => {
      const pub = await connect(url);
      await pub.subscribeAsync(`${SHADOW}/get/+`, { qos: 1 });
      let running = true;
      let n = 0;
      const loops = Array.from({ length: 4 }, async () => {
        while (running) {
          try {
            await pub.publishAsync(`${SHADOW}/update`, JSON.stringify({ state: { desired: { n: n++ } } }), { qos: 1 });
          } catch {
            return; // the coordinator went away
          }
        }
      });
      return {
        stop: async () => {
          running = false;
          await Promise.all(loops);
        },
        // The coordinator is gone: MQTT.js keeps unacknowledged QoS 1 publishes for a reconnect, unsettled.
        abandon: () => {
          running = false;
          pub.end(true);
        },
        version: async () => {
          // No shadow yet: get/rejected (404), version 0.
          const reply = new Promise<number>((resolve) =>
            pub.once('message', (topic, payload) => resolve(topic.endsWith('/accepted') ? (JSON.parse(payload.toString()) as { version: number }).version : 0)),
          );
          await pub.publishAsync(`${SHADOW}/get`, '{}', { qos: 1 });
          return reply;
        },
      };
    };
    const received = (): Set<number> => new Set(connections.flat().map(versionOf));
    const expectAll = async (from: number, to: number): Promise<void> => {
      for (let i = 0; i < 200; i++) {
        const got = received();
        const missing = [];
        for (let v = from; v <= to; v++) if (!got.has(v)) missing.push(v);
        if (missing.length === 0) return;
        if (i === 199) expect(missing).toEqual([]);
        await sleep(50);
      }
    };

    // 1. Reconnects while the coordinator publishes documents for the flood.
    let updates = await flood(coord.url);
    const v0 = await updates.version();
    await resume(coord.url);
    for (let i = 0; i < 9; i++) {
      await sleep(30 + i * 5);
      drop(ways[i % 3]!);
      await sleep((i % 4) * 5);
      await resume(coord.url);
    }
    await updates.stop();
    const v1 = await updates.version();
    await expectAll(v0 + 1, v1);
    // Without a crash, a message seen again on a later connection was in flight: re-sent with DUP.
    const seen = new Set<number>();
    for (const messages of connections) {
      for (const m of messages) expect({ version: versionOf(m), dup: m.dup }).toEqual({ version: versionOf(m), dup: m.dup || seen.has(versionOf(m)) });
      for (const m of messages) seen.add(versionOf(m));
    }

    // 2. SIGKILL mid-flood with the subscriber connected, restart, and resume while the new coordinator
    //    publishes again: the restored queue is replayed while live deliveries start.
    updates = await flood(coord.url);
    await sleep(200);
    subscriber = undefined; // its connection goes with the coordinator
    await coord.kill();
    updates.abandon();
    coord = await startCoordinator({ dataDir: coord.dataDir, args: ['--log-level', 'debug'] });
    logsOf.push(coord);
    updates = await flood(coord.url);
    const v2 = await updates.version();
    await sleep(50);
    await resume(coord.url);
    for (let i = 0; i < 3; i++) {
      await sleep(50);
      drop(ways[i]!);
      await resume(coord.url);
    }
    await updates.stop();
    const v3 = await updates.version();
    await expectAll(v2 + 1, v3);
    await sleep(300);

    // Our own drops above show up as ECONNRESET/EPIPE or deliveries to a closed connection ('connection
    // closed'); anything else ('no such packet') is a failure.
    const problems = logsOf
      .flatMap((c) => c.logs)
      .filter((l) => l.clientId === thing && typeof l.err === 'string' && !/ECONNRESET|EPIPE|^connection closed$/.test(l.err));
    expect(problems.map((l) => l.err)).toEqual([]);
    expect(unexpectedCloses).toBe(0);
    // Duplicates only across connections (QoS 1 re-delivery after a reconnect), never within one.
    for (const messages of connections) {
      const versions = messages.map(versionOf);
      expect(new Set(versions).size).toBe(versions.length);
    }
    expect(v3 - v2).toBeGreaterThan(20);
    drop('graceful');
    await coord.stop();
  }, 60_000);
});
