/**
 * Acknowledged = durable, for writes outside the broker's own queues: a QoS 1 PUBACK waits for the
 * broker's accept step (the cloud spool append), keeps PUBLISH order, and is never sent when that step
 * fails: the publisher is disconnected and resends. Real coordinator in this process, real MQTT.js client.
 */
import { describe, expect, it } from 'vitest';
import { connect } from '../helpers/mqtt.js';
import { startInProcess } from '../helpers/in-process.js';

interface Deferred {
  readonly promise: Promise<void>;
  resolve(): void;
  reject(err: Error): void;
}

function deferred(): Deferred {
  let resolve!: () => void;
  let reject!: (err: Error) => void;
  const promise = new Promise<void>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

const settledWithin = async (p: Promise<unknown>, ms: number): Promise<boolean> =>
  Promise.race([p.then(() => true, () => true), new Promise<boolean>((r) => setTimeout(() => r(false), ms))]);

describe('PUBACK after the accept step', () => {
  it('holds each PUBACK until its accept step settles, in PUBLISH order', async () => {
    const { coordinator, url } = await startInProcess();
    const steps = new Map<string, Deferred>();
    coordinator.broker.onAccept((_client, packet) => {
      const d = deferred();
      steps.set(String(packet.payload), d);
      return d.promise;
    });
    const device = await connect(url, { clientId: 'acc-1' });
    const first = device.publishAsync('telemetry/acc-1', 'one', { qos: 1 });
    const second = device.publishAsync('telemetry/acc-1', 'two', { qos: 1 });
    // Both reached the broker (their steps ran) but neither step is done: no PUBACK yet.
    await expect.poll(() => steps.size).toBe(2);
    expect(await settledWithin(first, 200)).toBe(false);
    // The second one's step finishing first does not let its PUBACK overtake the first [MQTT-4.6.0-2].
    steps.get('two')!.resolve();
    expect(await settledWithin(second, 200)).toBe(false);
    steps.get('one')!.resolve();
    expect(await settledWithin(first, 2000)).toBe(true);
    expect(await settledWithin(second, 2000)).toBe(true);
    // QoS 0 goes through the step too, with nothing to hold.
    await device.publishAsync('telemetry/acc-1', 'zero', { qos: 0 });
    await expect.poll(() => steps.has('zero')).toBe(true);
    await device.endAsync();
  });

  it('never acknowledges a message whose accept step failed: the publisher is disconnected and resends', async () => {
    const { coordinator, url } = await startInProcess();
    let failNext = true;
    const seen: string[] = [];
    coordinator.broker.onAccept((_client, packet) => {
      seen.push(String(packet.payload));
      if (failNext) {
        failNext = false;
        return Promise.reject(new Error('disk full'));
      }
      return Promise.resolve();
    });
    // Reconnects on its own and resends the unacknowledged PUBLISH (with DUP), as MQTT.js does.
    const device = await connect(url, { clientId: 'acc-2', clean: false, reconnectPeriod: 100 });
    const closed = new Promise<void>((r) => device.once('close', () => r()));
    const acked = device.publishAsync('telemetry/acc-2', 'payload', { qos: 1 });
    await closed;
    await acked;
    expect(seen).toEqual(['payload', 'payload']);
    await device.endAsync();
  });
});
