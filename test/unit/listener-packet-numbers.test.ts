/**
 * The broker's listeners turn off mqtt-packet's cache of all 65,536 two-byte numbers (6–7 MiB of heap,
 * docs/devices.md "Memory") in the very module aedes writes with; packets still carry their ids.
 */
import { createRequire } from 'node:module';
import { Aedes } from 'aedes';
import mqtt from 'mqtt';
import { describe, expect, it } from 'vitest';
import { startListener } from '../../src/broker/listeners.js';
import { createLogger } from '../../src/log/logger.js';

describe('listener packet numbers', () => {
  it('aedes writes numbers without the cache once a listener runs; QoS 1 ids still round-trip', async () => {
    const writer = createRequire(createRequire(import.meta.url).resolve('aedes'))('mqtt-packet/writeToStream.js') as { cacheNumbers: boolean };
    const broker = await Aedes.createBroker();
    const listener = await startListener({ name: 'mqtt', host: '127.0.0.1', port: 0 }, broker, createLogger({ level: 'silent' }));
    try {
      expect(writer.cacheNumbers).toBe(false);
      const client = await mqtt.connectAsync(listener.url, { clientId: 'numbers', reconnectPeriod: 0 });
      try {
        const got = new Promise<number | undefined>((resolve) => client.once('message', (_t, _p, packet) => resolve(packet.messageId)));
        await client.subscribeAsync('n/#', { qos: 1 });
        await client.publishAsync('n/1', 'x', { qos: 1 });
        expect(await got).toBeGreaterThan(0);
      } finally {
        await client.endAsync();
      }
    } finally {
      await listener.close();
      await new Promise<void>((resolve) => broker.close(() => resolve()));
    }
  });
});
