/**
 * The rule that keeps one message the upstream never accepts from blocking the spool for ever
 * (docs/cloud.md, "A message the upstream refuses").
 *
 * MQTT 3.1.1 has no negative PUBACK. AWS IoT Core answers a publish outside the gateway's policy by
 * closing the connection (so does a coordinator upstream, src/broker/auth.ts); the link reconnects and
 * sends the same head again, for ever. A closed connection alone proves nothing, though: upstreams
 * restart and networks fail with messages in flight. So a drop counts against a message only when all of
 * these hold:
 *
 * 1. the message was **alone in flight** on an established connection (after a drop with a window of
 *    messages in flight, the link sends that window again one message at a time, so the culprit is
 *    isolated and earlier messages are not blamed for it);
 * 2. no PUBACK came for it, and the client did not give up on the upstream (a keepalive timeout is the
 *    network, not a refusal);
 * 3. the **very next connection attempt succeeded** — the upstream was there and took us back at once.
 *    Any failed attempt (upstream stopped, unreachable, refusing us) clears the count: an outage is never
 *    evidence against a message.
 *
 * `limit` such drops in a row — without the message being acknowledged in between — and the message is
 * due to be set aside. Counts live in memory: a restart starts them again, which errs on keeping messages.
 */

/** What the link shows about the rule in `coordinator cloud status`. */
export interface RejectRuleStatus {
  /** Drops in a row that set a message aside (cloud.spoolRejectAfterDrops; 0: never). */
  rejectAfterDrops: number;
  /** Messages up to this seq are sent one at a time (0: none), after a drop with several in flight. */
  isolatingThrough: number;
  /** The message drops are being counted against, if any. */
  suspect: { seq: number; drops: number } | null;
}

/** What happened, for the link's log lines. */
export type DropVerdict = 'isolating' | 'counted' | 'ignored';

/** State of the rule for one link. */
export class RejectRule {
  readonly #limit: number;
  #isolateThrough = 0;
  #suspect: { seq: number; drops: number; pending: boolean } | undefined;

  /** `limit` drops in a row set a message aside; 0 disables setting aside (isolation still applies). */
  constructor(limit: number) {
    this.#limit = limit;
  }

  /** Whether the message `seq` (the oldest waiting) must be sent alone. */
  isolating(seq: number): boolean {
    return seq <= this.#isolateThrough;
  }

  /**
   * An established connection dropped with messages in flight: `unacked` is the oldest one without
   * PUBACK, `lastSent` the newest one sent, `alone` whether it was the only one in flight,
   * `keepaliveTimeout` whether the client gave up on a silent upstream.
   */
  dropped(unacked: number, lastSent: number, alone: boolean, keepaliveTimeout: boolean): DropVerdict {
    if (!alone) {
      // Any of the window may be the culprit: send them again one at a time to find out.
      this.#isolateThrough = Math.max(this.#isolateThrough, lastSent);
      return 'isolating';
    }
    if (keepaliveTimeout) {
      this.#suspect = undefined;
      return 'ignored';
    }
    this.#suspect = this.#suspect?.seq === unacked ? { ...this.#suspect, pending: true } : { seq: unacked, drops: 0, pending: true };
    return 'counted';
  }

  /** A connection attempt succeeded: a drop waiting for this proof now counts. Returns the suspect's drops. */
  connected(): { seq: number; drops: number } | undefined {
    const s = this.#suspect;
    if (!s?.pending) return undefined;
    s.drops++;
    s.pending = false;
    return { seq: s.seq, drops: s.drops };
  }

  /** A connection attempt failed: the upstream was away, so the drops before were an outage. */
  attemptFailed(): void {
    this.#suspect = undefined;
  }

  /** The upstream acknowledged every message up to `seq`. */
  acked(seq: number): void {
    if (this.#suspect !== undefined && this.#suspect.seq <= seq) this.#suspect = undefined;
  }

  /** Whether `seq` (the oldest waiting message) has been dropped on `limit` times in a row. */
  due(seq: number): boolean {
    return this.#limit > 0 && this.#suspect?.seq === seq && !this.#suspect.pending && this.#suspect.drops >= this.#limit;
  }

  /** `seq` left the spool (set aside, evicted or acknowledged): nothing more to count against it. */
  forget(seq: number): void {
    if (this.#suspect?.seq === seq) this.#suspect = undefined;
  }

  status(): RejectRuleStatus {
    return {
      rejectAfterDrops: this.#limit,
      isolatingThrough: this.#isolateThrough,
      suspect: this.#suspect ? { seq: this.#suspect.seq, drops: this.#suspect.drops } : null,
    };
  }
}
