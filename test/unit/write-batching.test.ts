/** aedes' packet writes coalesce into one socket write per connection per event-loop turn, in order. */
import { createRequire } from 'node:module';
import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { installWriteBatching } from '../../src/broker/write-batching.js';

type WriteToStream = (packet: object, stream: Writable) => boolean;
const requireFromAedes = createRequire(createRequire(import.meta.url).resolve('aedes'));
const mqttPacket = requireFromAedes('mqtt-packet') as { writeToStream: WriteToStream; parser: () => NodeJS.EventEmitter & { parse(b: Buffer): void } };

/** A socket stand-in that records each write it is asked to do (one entry per syscall a socket would make). */
function recorder(): { stream: Writable; writes: Buffer[][] } {
  const writes: Buffer[][] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      writes.push([chunk]);
      cb();
    },
    writev(chunks, cb) {
      writes.push(chunks.map((c) => c.chunk as Buffer));
      cb();
    },
  });
  return { stream, writes };
}

const publish = (n: number): object => ({ cmd: 'publish', topic: `t/${n}`, payload: Buffer.from(`m${n}`), qos: 1, messageId: n, retain: false, dup: false });
const turn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

describe('write batching', () => {
  it('sends the packets of one turn, written from separate immediates as aedes does, in one write and in order', async () => {
    installWriteBatching();
    const { stream, writes } = recorder();
    // aedes delivers each message from an immediate of its own (Client#deliverQoS).
    for (let n = 1; n <= 5; n++) setImmediate(() => mqttPacket.writeToStream(publish(n), stream));
    await turn();
    expect(writes).toEqual([]); // held until the turn's deliveries are all written
    await turn();
    expect(writes).toHaveLength(1);
    const parser = mqttPacket.parser();
    const ids: number[] = [];
    parser.on('packet', (p: { messageId: number }) => ids.push(p.messageId));
    for (const chunk of writes[0]!) parser.parse(chunk);
    expect(ids).toEqual([1, 2, 3, 4, 5]);

    // The next turn's packets go in a write of their own.
    mqttPacket.writeToStream(publish(6), stream);
    await turn();
    expect(writes).toHaveLength(2);
  });

  it('leaves a destroyed stream alone', async () => {
    installWriteBatching();
    const { stream, writes } = recorder();
    stream.destroy();
    expect(() => mqttPacket.writeToStream(publish(1), stream)).not.toThrow();
    await turn();
    expect(writes).toEqual([]);
  });
});
