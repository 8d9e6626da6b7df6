/**
 * The one-buffer PUBLISH/PUBACK writer produces exactly the bytes mqtt-packet's own writer does, and
 * leaves everything it does not handle (other packets, MQTT 5, malformed packets) to mqtt-packet.
 */
import { createRequire } from 'node:module';
import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { installPacketWriter } from '../../src/broker/packet-writer.js';

interface Packet {
  cmd: string;
  [key: string]: unknown;
}
type WriteToStream = (packet: Packet, stream: Writable, opts?: object) => boolean;
const requireFromAedes = createRequire(createRequire(import.meta.url).resolve('aedes'));
const mqttPacket = requireFromAedes('mqtt-packet') as { writeToStream: WriteToStream; parser: (opts?: object) => NodeJS.EventEmitter & { parse(b: Buffer): void } };
// mqtt-packet's own writer, taken before any patch (the module exports it as writeToStream).
const reference = (requireFromAedes('mqtt-packet/writeToStream.js') as WriteToStream).bind(null);

/** Every chunk written to a stream, and how many write() calls it took. */
function sink(): { stream: Writable; bytes: () => Buffer; calls: () => number; destroyed: () => boolean } {
  const chunks: Buffer[] = [];
  let calls = 0;
  const stream = new Writable({
    write(chunk: Buffer | string, _enc, cb) {
      chunks.push(Buffer.from(chunk));
      cb();
    },
  });
  const write = stream.write.bind(stream);
  stream.write = ((chunk: Buffer | string, ...rest: never[]) => {
    calls++;
    return write(chunk, ...rest);
  }) as typeof stream.write;
  stream.on('error', () => undefined);
  return { stream, bytes: () => Buffer.concat(chunks), calls: () => calls, destroyed: () => stream.destroyed };
}

const turn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/** What mqtt-packet writes (it corks the stream until the next tick, hence the wait). */
async function viaReference(packet: Packet, opts?: object): Promise<Buffer> {
  const s = sink();
  reference(packet, s.stream, opts);
  await turn();
  return s.bytes();
}

const publish = (fields: Record<string, unknown>): Packet => ({ cmd: 'publish', topic: 'a/b', payload: Buffer.from('hello'), qos: 0, dup: false, retain: false, ...fields });

describe('packet writer', () => {
  installPacketWriter();

  const cases: [string, Packet][] = [
    ['QoS 0', publish({})],
    ['QoS 1', publish({ qos: 1, messageId: 1 })],
    ['QoS 2, packet id 65535', publish({ qos: 2, messageId: 65535 })],
    ['retained', publish({ qos: 1, messageId: 7, retain: true })],
    ['DUP on QoS 1', publish({ qos: 1, messageId: 7, dup: true })],
    ['string payload with multi-byte characters', publish({ qos: 1, messageId: 9, payload: 'température 21 °C ✓' })],
    ['empty payload', publish({ qos: 1, messageId: 3, payload: Buffer.alloc(0) })],
    ['no payload at all', publish({ payload: undefined })],
    ['non-ASCII topic', publish({ topic: 'maison/salle/température', qos: 1, messageId: 300 })],
    ['$aws shadow answer', publish({ topic: '$aws/things/bench-7/shadow/update/accepted', qos: 1, messageId: 4242, payload: Buffer.from('{"state":{}}') })],
    ['PUBACK', { cmd: 'puback', messageId: 1 }],
    ['PUBACK, packet id 65535', { cmd: 'puback', messageId: 65535 }],
  ];
  // Remaining Length boundaries [MQTT-2.2.3]: 127/128 (1→2 bytes), 16383/16384 (2→3 bytes); the head
  // holds topic length (2), topic "a/b" (3) and packet id (2), so payload = length - 7.
  for (const remaining of [127, 128, 2054, 2055, 16_383, 16_384, 2_097_151, 2_097_152]) {
    cases.push([`remaining length ${remaining}`, publish({ qos: 1, messageId: 5, payload: Buffer.alloc(remaining - 7, 0x61) })]);
  }

  it.each(cases)('%s: the same bytes as mqtt-packet, in one write when small', async (_name, packet) => {
    const s = sink();
    mqttPacket.writeToStream(packet, s.stream);
    await turn();
    expect(s.bytes().equals(await viaReference(packet))).toBe(true);
    const payload = packet.payload;
    const large = (Buffer.isBuffer(payload) ? payload.length : 0) >= 2048;
    expect(s.calls()).toBe(large ? 2 : 1); // a large payload is written behind its head, never copied
  });

  it('writes DUP as 0 on a QoS 0 message [MQTT-3.3.1-2]', async () => {
    const s = sink();
    mqttPacket.writeToStream(publish({ dup: true }), s.stream);
    await turn();
    expect(s.bytes()[0]).toBe(0x30);
  });

  it('parses back to the same packet', async () => {
    const s = sink();
    const sent = publish({ topic: 'x/ü', qos: 1, messageId: 12, retain: true, payload: Buffer.from([0, 1, 2, 255]) });
    mqttPacket.writeToStream(sent, s.stream);
    await turn();
    const parser = mqttPacket.parser();
    const got: Packet[] = [];
    parser.on('packet', (p: Packet) => got.push(p));
    parser.parse(s.bytes());
    expect(got).toHaveLength(1);
    expect(got[0]).toMatchObject({ cmd: 'publish', topic: 'x/ü', qos: 1, messageId: 12, retain: true });
    expect(Buffer.compare(got[0]!.payload as Buffer, Buffer.from([0, 1, 2, 255]))).toBe(0);
  });

  it('leaves MQTT 5, other packets and malformed packets to mqtt-packet', async () => {
    const v5 = publish({ qos: 1, messageId: 2, properties: { contentType: 'text/plain' } });
    const s5 = sink();
    mqttPacket.writeToStream(v5, s5.stream, { protocolVersion: 5 });
    await turn();
    expect(s5.calls()).toBeGreaterThan(1); // mqtt-packet's own, piece by piece
    expect(s5.bytes().equals(await viaReference(v5, { protocolVersion: 5 }))).toBe(true);

    const suback = { cmd: 'suback', messageId: 3, granted: [1] };
    const ss = sink();
    mqttPacket.writeToStream(suback, ss.stream);
    await turn();
    expect(ss.bytes().equals(await viaReference(suback))).toBe(true);

    // No packet id on a QoS 1 PUBLISH, or a topic that is not a string: mqtt-packet refuses them.
    for (const bad of [publish({ qos: 1 }), publish({ topic: 42 }), { cmd: 'puback' }]) {
      const s = sink();
      expect(mqttPacket.writeToStream(bad, s.stream)).toBe(false);
      expect(s.destroyed()).toBe(true);
    }
  });
});
