/**
 * One buffer and one socket write for each PUBLISH and PUBACK aedes sends.
 *
 * aedes writes every packet through mqtt-packet's writeToStream, which writes a PUBLISH in six pieces
 * (fixed header, remaining length, topic length, topic, packet id, payload) and a PUBACK in three, and
 * corks the socket for each packet with a process.nextTick of its own. On a corked socket (see
 * ./write-batching.ts) every piece becomes an entry in the stream's buffer, so a QoS 1 message cost
 * about ten stream writes, two ticks and several two-byte Buffers between its PUBLISH and its PUBACK.
 * These two packets are the whole traffic of a busy gateway, so they are encoded here, by the rules
 * below, into one Buffer each. A large payload is written after the encoded head, not copied into it.
 *
 * Only MQTT 3.1 / 3.1.1 (aedes calls writeToStream without options, i.e. protocol level 4; an MQTT 5
 * caller passes protocolVersion 5) and only well-formed packets take this path; anything else, and
 * every other packet type, goes to mqtt-packet unchanged, which also reports what is malformed.
 */
import type { Writable } from 'node:stream';
import { requireFromAedes } from './aedes-modules.js';

/** A packet as aedes hands it to mqtt-packet's writer (only the fields the layers here read). */
export interface Packet {
  cmd: string;
  topic?: unknown;
  payload?: unknown;
  qos?: number;
  dup?: boolean;
  retain?: boolean;
  messageId?: number;
}
/** mqtt-packet's writeToStream, and every layer put around it. */
export type WriteToStream = (packet: Packet, stream: Writable, opts?: { protocolVersion?: number }) => boolean;

/** A payload at least this long is written on its own rather than copied behind the header. */
const COPY_PAYLOAD_BELOW = 2048;
/** [MQTT-2.2.3] the largest Remaining Length four bytes can encode. */
const MAX_REMAINING_LENGTH = 268_435_455;
/** [MQTT-1.5.3] a UTF-8 string is prefixed by a two-byte length. */
const MAX_STRING_BYTES = 65_535;

let installed = false;
/** mqtt-packet's own writeToStream as it was before the first layer (the start-time check compares). */
let underlying: unknown;
/** The outermost layer put in place here: aedes' writeToStream must be this (./patches.ts checks). */
let outermost: WriteToStream | undefined;
let packetNumbersUncached = false;

/** Bytes of the Remaining Length field for `n` [MQTT-2.2.3]: 7 bits per byte. */
function varIntBytes(n: number): number {
  return n < 128 ? 1 : n < 16_384 ? 2 : n < 2_097_152 ? 3 : 4;
}

/** Writes the Remaining Length `n` at `offset` [MQTT-2.2.3]; returns the next offset. */
function writeVarInt(buf: Buffer, offset: number, n: number): number {
  do {
    let digit = n % 128;
    n = Math.floor(n / 128);
    if (n > 0) digit |= 0x80;
    buf[offset++] = digit;
  } while (n > 0);
  return offset;
}

/** A packet id is 1..65535 [MQTT-2.3.1]. */
const isPacketId = (id: number | undefined): id is number => typeof id === 'number' && Number.isInteger(id) && id > 0 && id <= 0xffff;

/**
 * PUBLISH [MQTT-3.3]: fixed header 0x30 | DUP << 3 | QoS << 1 | RETAIN, Remaining Length, Topic Name
 * (two-byte length + UTF-8), Packet Identifier when QoS > 0, then the payload. Returns undefined when the
 * packet is not one this writer handles (mqtt-packet then writes or refuses it).
 */
function writePublish(packet: Packet, stream: Writable): boolean | undefined {
  const { topic, qos = 0, messageId } = packet;
  const payload = packet.payload ?? EMPTY;
  if (typeof topic !== 'string' || (qos !== 0 && qos !== 1 && qos !== 2)) return undefined;
  if (qos > 0 && !isPacketId(messageId)) return undefined;
  const isBuffer = Buffer.isBuffer(payload);
  if (!isBuffer && typeof payload !== 'string') return undefined;
  const topicBytes = Buffer.byteLength(topic);
  if (topicBytes > MAX_STRING_BYTES) return undefined;
  const payloadBytes = isBuffer ? payload.length : Buffer.byteLength(payload);
  const remaining = 2 + topicBytes + (qos > 0 ? 2 : 0) + payloadBytes;
  if (remaining > MAX_REMAINING_LENGTH) return undefined;
  const copyPayload = payloadBytes < COPY_PAYLOAD_BELOW;
  const headBytes = 1 + varIntBytes(remaining) + remaining - (copyPayload ? 0 : payloadBytes);
  const buf = Buffer.allocUnsafe(headBytes);
  // [MQTT-3.3.1-2] DUP is 0 on every QoS 0 message.
  buf[0] = 0x30 | (packet.dup && qos > 0 ? 0x08 : 0) | (qos << 1) | (packet.retain ? 0x01 : 0);
  let offset = writeVarInt(buf, 1, remaining);
  buf.writeUInt16BE(topicBytes, offset);
  offset += 2;
  offset += buf.write(topic, offset, 'utf8');
  if (qos > 0) {
    buf.writeUInt16BE(messageId!, offset);
    offset += 2;
  }
  if (!copyPayload) {
    stream.write(buf);
    return stream.write(payload);
  }
  if (isBuffer) payload.copy(buf, offset);
  else buf.write(payload, offset, 'utf8');
  return stream.write(buf);
}

const EMPTY = Buffer.alloc(0);

/** PUBACK [MQTT-3.4]: 0x40, Remaining Length 2, Packet Identifier. */
function writePuback(packet: Packet, stream: Writable): boolean | undefined {
  const id = packet.messageId;
  if (!isPacketId(id)) return undefined;
  const buf = Buffer.allocUnsafe(4);
  buf[0] = 0x40;
  buf[1] = 2;
  buf.writeUInt16BE(id, 2);
  return stream.write(buf);
}

/** Installs the writer under aedes' writeToStream, once per process (see wrapPacketWriter). */
export function installPacketWriter(): void {
  if (installed) return;
  installed = true;
  const mqttPacket = requireFromAedes<{ writeToStream: WriteToStream }>('mqtt-packet');
  underlying = mqttPacket.writeToStream;
  const original = mqttPacket.writeToStream.bind(mqttPacket);
  const writer: WriteToStream = (packet, stream, opts) => {
    if (opts?.protocolVersion === undefined || opts.protocolVersion < 5) {
      const written = packet.cmd === 'publish' ? writePublish(packet, stream) : packet.cmd === 'puback' ? writePuback(packet, stream) : undefined;
      if (written !== undefined) return written;
    }
    return original(packet, stream, opts);
  };
  outermost = writer;
  // Throws (strict mode) if the property is read-only; an accessor may also ignore it: ./patches.ts checks.
  mqttPacket.writeToStream = writer;
}

/**
 * Puts a layer around aedes' packet writer (the very mqtt-packet instance aedes writes with): `wrap` gets
 * the writer as it is now and returns its replacement. Layers installed later are outside earlier ones;
 * this module's one-buffer writer is always the innermost (installed first, here), so the PUBACK gate
 * sees every PUBACK before anything is written.
 */
export function wrapPacketWriter(wrap: (inner: WriteToStream) => WriteToStream): void {
  installPacketWriter();
  const mqttPacket = requireFromAedes<{ writeToStream: WriteToStream }>('mqtt-packet');
  const writer = wrap(mqttPacket.writeToStream.bind(mqttPacket));
  outermost = writer;
  mqttPacket.writeToStream = writer;
}

/**
 * The writers as this module left them, for the start-time check (./patches.ts): `outermost` is the layer
 * aedes' mqtt-packet.writeToStream must be now; `underlying` is mqtt-packet's own writer that the layers
 * end in (undefined before the first install).
 */
export function packetWriterState(): { readonly outermost: WriteToStream | undefined; readonly underlying: unknown } {
  return { outermost, underlying };
}

/**
 * mqtt-packet, which aedes writes every packet with, builds a cache of all 65,536 two-byte numbers
 * (packet ids, string lengths) the first time it writes: one Buffer object each, 6–7 MiB of V8 heap
 * that never goes away, to save allocating 2 bytes per number written. Turned off before the first
 * connection can make anything write (at broker start, and by every listener). The setter lives on the
 * module's own function: aedes' exported `writeToStream` may already be one of the layers above.
 */
export function uncachePacketNumbers(): void {
  if (packetNumbersUncached) return;
  packetNumbersUncached = true;
  requireFromAedes<{ cacheNumbers: boolean }>('mqtt-packet/writeToStream.js').cacheNumbers = false;
}
