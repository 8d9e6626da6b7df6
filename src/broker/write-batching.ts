/**
 * One socket write per connection per event-loop turn for the packets aedes sends.
 *
 * aedes delivers each message from a setImmediate of its own (Client#deliverQoS in lib/client.js), and
 * mqtt-packet's writeToStream corks the socket only until the next tick, which comes after every
 * immediate: so each delivered packet is its own writev syscall. On a busy connection (a device reading
 * its shadow answers, a subscriber to a hot topic) that syscall, with the TCP work the kernel does in
 * it, was the largest single cost of a message. Here the first packet written to a connection corks
 * it, and an immediate queued then uncorks it: it runs after the immediates already queued — the other
 * deliveries of this turn — so they leave in one write, at most one loop iteration later.
 *
 * Nothing is reordered (cork only buffers), and writes made meanwhile by others (the PUBACK gate, which
 * corks for its own flush) are buffered with the rest. A stream without cork() is written as before.
 * Closing after a write does not lose it: aedes closes a connection it answers (a refusing CONNACK) from
 * the write's callback, an immediate queued after ours, so the uncork comes first.
 */
import type { Writable } from 'node:stream';
import { wrapPacketWriter } from './packet-writer.js';

const held = new WeakSet<Writable>();
let installed = false;

function release(stream: Writable): void {
  held.delete(stream);
  stream.uncork();
}

/** Patches aedes' packet writer once per process; compatible with the PUBACK gate in either order. */
export function installWriteBatching(): void {
  if (installed) return;
  installed = true;
  wrapPacketWriter((original) => (packet, stream, opts) => {
    if (!held.has(stream) && typeof stream.cork === 'function' && !stream.destroyed) {
      held.add(stream);
      stream.cork();
      setImmediate(release, stream);
    }
    return original(packet, stream, opts);
  });
}
