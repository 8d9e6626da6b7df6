/**
 * Acknowledged = on disk, for the cloud spool: a child process (test/fixtures/spool-writer.mjs) appends
 * self-checking messages and acks batches like a sender, printing every acknowledged append and ack; it
 * is SIGKILLed at a random moment, and the spool is reopened on the same file. Every acknowledged message
 * not since acked or evicted is there, in order, intact; a durable ack is never undone; the counters agree
 * with the rows; an acknowledged seq is never handed out again. Some rounds run with a small limit, so
 * eviction is killed mid-way too.
 */
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { CloudSpool, spoolEntryBytes, type SpooledMessage } from '../../src/cloud/spool.js';
import { Store } from '../../src/store/database.js';
import { runUntilKilled, tempDir } from '../helpers/process.js';

const WRITER = fileURLToPath(new URL('../fixtures/spool-writer.mjs', import.meta.url));
const BUILT = fileURLToPath(new URL('../../dist/cloud/spool.js', import.meta.url));
const BIG = 64 << 20;
const SMALL = 48 << 10;
/** Spool limit of each round: SMALL rounds evict while they are killed. */
const ROUNDS = [BIG, BIG, SMALL, BIG, SMALL, BIG];

/** What the child printed before it died. */
interface Run {
  /** seq → message index of every acknowledged append, in the order acknowledged. */
  readonly appended: Map<number, number>;
  /** Highest seq the writer asked to ack (the ack may not have become durable). */
  readonly ackAsked: number;
  /** Highest seq whose ack was durable. */
  readonly ackedThrough: number;
  readonly stderr: string;
}

/** Runs the writer on `dataDir` and SIGKILLs it `killAfterMs` after its first acknowledged append. */
async function runWriter(dataDir: string, firstIndex: number, maxBytes: number, killAfterMs: number): Promise<Run> {
  const appended = new Map<number, number>();
  let ackAsked = 0;
  let ackedThrough = 0;
  const { stderr } = await runUntilKilled(
    WRITER,
    [dataDir, String(firstIndex), String(maxBytes)],
    (line) => {
      const [kind, a, b] = line.split(' ');
      if (kind === 'A') appended.set(Number(a), Number(b));
      else if (kind === 'k') ackAsked = Math.max(ackAsked, Number(a));
      else if (kind === 'K') ackedThrough = Math.max(ackedThrough, Number(a));
    },
    killAfterMs,
  );
  return { appended, ackAsked, ackedThrough, stderr };
}

/** Checks a spooled message against the derivation the writer used; returns its index. */
function verify(m: SpooledMessage): number {
  const body = JSON.parse(m.payload.toString()) as { i: number; pad: string; sha: string };
  expect(createHash('sha256').update(`${body.i}:${body.pad}`).digest('hex'), `payload of seq ${m.seq}`).toBe(body.sha);
  expect(m.topic).toBe(`crash/${body.i % 5}`);
  expect(m.qos).toBe(body.i % 2);
  return body.i;
}

function readAll(spool: CloudSpool): SpooledMessage[] {
  const all: SpooledMessage[] = [];
  for (let batch = spool.peek(256); batch.length > 0; batch = spool.peek(256, batch[batch.length - 1]!.seq)) all.push(...batch);
  return all;
}

describe('cloud spool crash safety', () => {
  it('keeps every acknowledged message, in order and intact, across SIGKILLs at random moments', async () => {
    expect(existsSync(BUILT), 'the writer runs the built code: npm run build first').toBe(true);
    const dataDir = tempDir('coord-spool-crash-');
    /** seq → index of every acknowledged append (all rounds) not yet known to be acked or evicted. */
    const known = new Map<number, number>();
    let highestAcknowledged = 0;
    let totalAcknowledged = 0;
    let ackAsked = 0;
    let ackedThrough = 0;
    for (const [round, maxBytes] of ROUNDS.entries()) {
      const run = await runWriter(dataDir, round * 1_000_000, maxBytes, 40 + Math.floor(Math.random() * 260));
      expect(run.appended.size, `round ${round}: the writer acknowledged appends before the kill (${run.stderr})`).toBeGreaterThan(0);
      totalAcknowledged += run.appended.size;
      ackAsked = Math.max(ackAsked, run.ackAsked);
      ackedThrough = Math.max(ackedThrough, run.ackedThrough);
      const seqs = [...run.appended.keys()];
      // A seq acknowledged before a crash is never handed out again.
      expect(seqs.reduce((a, b) => Math.min(a, b)), `round ${round}: seq reused`).toBeGreaterThan(highestAcknowledged);
      highestAcknowledged = seqs.reduce((a, b) => Math.max(a, b), highestAcknowledged);
      for (const [seq, i] of run.appended) known.set(seq, i);

      const store = Store.open(dataDir, (err) => {
        throw err;
      });
      try {
        expect(store.db.pragma('integrity_check', { simple: true })).toBe('ok');
        const spool = new CloudSpool(store, { maxBytes });
        const rows = readAll(spool);
        const present = new Map(rows.map((m) => [m.seq, verify(m)]));
        // Order: seq and message index rise together, across rounds too.
        const indexes = rows.map((m) => present.get(m.seq)!);
        expect(indexes).toEqual([...indexes].sort((a, b) => a - b));
        expect(new Set(indexes).size).toBe(indexes.length);

        // Acks and evictions remove only a prefix: every acknowledged message from the oldest one left
        // onwards is there, with its own content; a durable ack is never undone.
        const oldest = rows[0]?.seq ?? Infinity;
        expect(oldest, `round ${round}: a durable ack was undone`).toBeGreaterThan(ackedThrough);
        for (const [seq, i] of known) {
          if (seq >= oldest) expect(present.get(seq), `round ${round}: acknowledged seq ${seq} (message ${i})`).toBe(i);
          // Without eviction, only an ack the writer asked for removes anything.
          else if (maxBytes === BIG) expect(seq, `round ${round}: acknowledged seq ${seq} (message ${i}) vanished`).toBeLessThanOrEqual(ackAsked);
        }
        for (const seq of known.keys()) if (seq < oldest) known.delete(seq);

        // The counters agree with the rows.
        const s = spool.stats;
        expect(s.messages).toBe(rows.length);
        expect(s.appended - s.acked - s.evicted).toBe(rows.length);
        expect(s.bytes).toBe(rows.reduce((a, m) => a + spoolEntryBytes(m.topic, m.payload), 0));
        if (maxBytes === SMALL) expect(s.bytes).toBeLessThanOrEqual(SMALL);
        if (process.env.CRASH_DEBUG) process.stderr.write(`round ${round}: ${run.appended.size} acknowledged, ${rows.length} left, stats ${JSON.stringify(s)}\n`);
        expect(s.appended).toBeGreaterThanOrEqual(totalAcknowledged);
      } finally {
        store.close();
      }
    }
  });
});
