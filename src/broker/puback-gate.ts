/**
 * Holds each QoS 1 PUBACK back until the message it acknowledges is durable.
 *
 * aedes (lib/handlers/publish.js, `case 1`) writes the PUBACK first and only then runs the publish
 * pipeline — store the retained message, queue it for offline persistent sessions, deliver it. A crash
 * between the two loses a message the publisher was told is safe, which breaks "acknowledged means
 * durable" (DESIGN.md §2). aedes offers no option for this, so the gate intercepts the PUBACK where
 * aedes serialises it (mqtt-packet's writeToStream, the very module instance aedes loaded) and writes it
 * once aedes' `published` hook reports the pipeline done, i.e. after the durable writes committed.
 *
 * Only connections accepted by our listeners and PUBACKs the gate was told to expect are held; every
 * other write passes through untouched. PUBACKs leave in the order their PUBLISHes arrived
 * [MQTT-4.6.0-2]. If the pipeline fails, aedes closes the connection and the held PUBACK is never sent:
 * the publisher retries, as QoS 1 requires [MQTT-4.3.2].
 */
import { createRequire } from 'node:module';
import type { Writable } from 'node:stream';

type Packet = { cmd: string; messageId?: number };
type WriteToStream = (packet: Packet, stream: Writable, opts?: unknown) => boolean;

interface Held {
  readonly messageId: number;
  released: boolean;
  write?: () => void;
}

const gated = new WeakMap<Writable, Held[]>();
let installed = false;

/** The mqtt-packet instance aedes itself imports (not a possibly different copy of our own). */
function aedesMqttPacket(): { writeToStream: WriteToStream } {
  const requireFromAedes = createRequire(import.meta.resolve('aedes'));
  return requireFromAedes('mqtt-packet') as { writeToStream: WriteToStream };
}

/** Patches aedes' packet writer once per process. */
export function installPubackGate(): void {
  if (installed) return;
  installed = true;
  const mqttPacket = aedesMqttPacket();
  const original = mqttPacket.writeToStream.bind(mqttPacket);
  mqttPacket.writeToStream = (packet, stream, opts) => {
    if (packet.cmd !== 'puback') return original(packet, stream, opts);
    const held = gated.get(stream)?.find((h) => h.messageId === packet.messageId && !h.write);
    if (!held) return original(packet, stream, opts);
    held.write = () => {
      if (!stream.destroyed) original(packet, stream, opts);
    };
    flush(stream);
    // Report success so aedes goes on to run the publish pipeline that will release this PUBACK.
    return true;
  };
}

/** Enables the gate for a connection (called by the listener for every accepted socket). */
export function gateConnection(stream: Writable): void {
  gated.set(stream, []);
}

/** Announces an incoming QoS 1 PUBLISH whose PUBACK must wait for `release`. */
export function expectPuback(stream: Writable, messageId: number): void {
  gated.get(stream)?.push({ messageId, released: false });
}

/** The publish pipeline of `messageId` finished: its PUBACK may go, after any earlier ones. */
export function releasePuback(stream: Writable, messageId: number): void {
  const queue = gated.get(stream);
  const held = queue?.find((h) => h.messageId === messageId && !h.released);
  if (!held) return;
  held.released = true;
  flush(stream);
}

const corked = new WeakSet<Writable>();

function flush(stream: Writable): void {
  const queue = gated.get(stream);
  if (!queue || !(queue[0]?.released && queue[0].write)) return;
  // One group commit releases many PUBACKs in the same tick: cork so they leave in one write syscall.
  if (!corked.has(stream)) {
    corked.add(stream);
    stream.cork();
    process.nextTick(() => {
      corked.delete(stream);
      stream.uncork();
    });
  }
  while (queue.length > 0 && queue[0].released && queue[0].write) {
    queue.shift()!.write!();
  }
}
