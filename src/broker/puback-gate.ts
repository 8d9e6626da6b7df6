/**
 * Holds each QoS 1 PUBACK back until the message it acknowledges is durable.
 *
 * aedes (lib/handlers/publish.js, `case 1`) writes the PUBACK first and only then runs the publish
 * pipeline — store the retained message, queue it for offline persistent sessions, deliver it. A crash
 * between the two loses a message the publisher was told is safe, which breaks "acknowledged means
 * durable" (DESIGN.md §2). aedes offers no option for this, so the gate intercepts the PUBACK where
 * aedes serialises it (mqtt-packet's writeToStream, the very module instance aedes loaded) and writes it
 * when the broker releases it: once the durable writes that message caused have committed (see
 * ./broker.ts). It does not wait for delivery, so a slow subscriber never holds a publisher's PUBACK.
 *
 * Only connections accepted by our listeners and PUBACKs the gate was told to expect are held; every
 * other write passes through untouched. PUBACKs leave in the order their PUBLISHes arrived
 * [MQTT-4.6.0-2]. If the pipeline fails, aedes closes the connection and the held PUBACK is never sent:
 * the publisher retries, as QoS 1 requires [MQTT-4.3.2].
 */
import type { Writable } from 'node:stream';
import { wrapPacketWriter } from './packet-writer.js';

interface Held {
  readonly messageId: number;
  released: boolean;
  write?: () => void;
}

/** Held PUBACKs of one connection: FIFO order for sending, an index by packet id for O(1) lookup. */
interface Gate {
  readonly byId: Map<number, Held>;
  order: Held[];
  head: number;
}

const gated = new WeakMap<Writable, Gate>();
let installed = false;

/** Patches aedes' packet writer once per process. */
export function installPubackGate(): void {
  if (installed) return;
  installed = true;
  wrapPacketWriter((original) => (packet, stream, opts) => {
    if (packet.cmd !== 'puback') return original(packet, stream, opts);
    const held = packet.messageId === undefined ? undefined : gated.get(stream)?.byId.get(packet.messageId);
    if (!held || held.write) return original(packet, stream, opts);
    held.write = () => {
      if (!stream.destroyed) original(packet, stream, opts);
    };
    scheduleFlush(stream);
    // Report success so aedes goes on to run the publish pipeline that will release this PUBACK.
    return true;
  });
}

/** Enables the gate for a connection (called by the listener for every accepted socket). */
export function gateConnection(stream: Writable): void {
  gated.set(stream, { byId: new Map(), order: [], head: 0 });
}

/** Announces an incoming QoS 1 PUBLISH whose PUBACK must wait for `release`. */
export function expectPuback(stream: Writable, messageId: number): void {
  const gate = gated.get(stream);
  if (!gate) return;
  const held: Held = { messageId, released: false };
  gate.order.push(held);
  gate.byId.set(messageId, held);
}

/** The publish pipeline of `messageId` finished: its PUBACK may go, after any earlier ones. */
export function releasePuback(stream: Writable, messageId: number): void {
  const held = gated.get(stream)?.byId.get(messageId);
  if (!held || held.released) return;
  held.released = true;
  scheduleFlush(stream);
}

const scheduled = new WeakSet<Writable>();

/**
 * Releases land one by one as aedes finishes each message's pipeline; flushing once per event-loop turn
 * sends every PUBACK released meanwhile in a single write, as aedes does when it answers a whole read.
 */
function scheduleFlush(stream: Writable): void {
  if (scheduled.has(stream)) return;
  scheduled.add(stream);
  setImmediate(() => {
    scheduled.delete(stream);
    flush(stream);
  });
}

function ready(gate: Gate): Held | undefined {
  const first = gate.order[gate.head];
  return first?.released && first.write ? first : undefined;
}

function flush(stream: Writable): void {
  const gate = gated.get(stream);
  if (!gate || !ready(gate)) return;
  stream.cork();
  for (let held = ready(gate); held; held = ready(gate)) {
    gate.head++;
    if (gate.byId.get(held.messageId) === held) gate.byId.delete(held.messageId);
    held.write!();
  }
  stream.uncork();
  // Drop the sent prefix now and then instead of shifting the array on every PUBACK.
  if (gate.head > 1024 && gate.head * 2 > gate.order.length) {
    gate.order = gate.order.slice(gate.head);
    gate.head = 0;
  }
}
