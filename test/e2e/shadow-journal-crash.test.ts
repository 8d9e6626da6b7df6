/**
 * Acknowledged = on disk, for the shadow journal and its compaction: a child process
 * (test/fixtures/shadow-writer.mjs) streams updates over 40 shadows through the shadow service with a
 * compaction every few milliseconds, in steps of 8 documents, and prints every acknowledged update; it is
 * SIGKILLed at a random moment — in the middle of compactions, between their steps — and the store is
 * reopened on the same file. Every acknowledged update is there (its version or a later one), no version
 * is acknowledged twice across rounds, and the journal replays without a problem.
 */
import { existsSync, statSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { ShadowService } from '../../src/shadow/service.js';
import { Store } from '../../src/store/database.js';
import { runUntilKilled, tempDir } from '../helpers/process.js';

const WRITER = fileURLToPath(new URL('../fixtures/shadow-writer.mjs', import.meta.url));
const BUILT = fileURLToPath(new URL('../../dist/shadow/service.js', import.meta.url));
const SOURCE = fileURLToPath(new URL('../../src/shadow/service.ts', import.meta.url));
const SHADOWS = 40;
const ROUNDS = 8;

interface Acked {
  version: number;
  seq: number;
}

/** Runs the writer and SIGKILLs it `killAfterMs` after its first acknowledgement; returns what it acknowledged. */
async function runWriter(dataDir: string, firstSeq: number, killAfterMs: number): Promise<{ acked: [string, Acked][]; stderr: string }> {
  const acked: [string, Acked][] = [];
  const { stderr } = await runUntilKilled(
    WRITER,
    [dataDir, String(firstSeq), String(SHADOWS)],
    (line) => {
      const [kind, thing, version, seq] = line.split(' ');
      if (kind === 'A') acked.push([thing!, { version: Number(version), seq: Number(seq) }]);
    },
    killAfterMs,
  );
  return { acked, stderr };
}

describe('shadow journal crash safety', () => {
  it('keeps every acknowledged update across SIGKILLs in the middle of compactions', async () => {
    // The writer runs the built code: it must be there and not older than the source.
    expect(existsSync(BUILT), 'npm run build first').toBe(true);
    expect(statSync(BUILT).mtimeMs, 'dist/ is older than src/: npm run build first').toBeGreaterThanOrEqual(statSync(SOURCE).mtimeMs);
    const dataDir = tempDir();
    const last = new Map<string, Acked>(); // per shadow, the newest acknowledged update
    let seq = 0;
    let documentRows = 0;
    for (let round = 0; round < ROUNDS; round++) {
      const { acked, stderr } = await runWriter(dataDir, seq, 40 + Math.floor(Math.random() * 200));
      expect(stderr).toBe('');
      expect(acked.length, `round ${round}: updates were acknowledged`).toBeGreaterThan(0);
      for (const [thing, a] of acked) {
        const before = last.get(thing);
        // A version acknowledged again would mean an acknowledged update was lost and its number reused.
        if (before) expect(a.version, `${thing}: v${a.version} after v${before.version} (round ${round})`).toBeGreaterThan(before.version);
        last.set(thing, a);
        seq = Math.max(seq, a.seq + 1);
      }
      seq += 1000; // past anything sent but not acknowledged

      const store = Store.open(dataDir, () => undefined);
      const problems: Error[] = [];
      const shadows = new ShadowService(store, { maxInFlightPerShadow: 10, onStoreError: (err) => problems.push(err), compaction: { afterMs: 3_600_000 } });
      try {
        expect(problems).toEqual([]);
        for (const [thing, a] of last) {
          const doc = shadows.document({ thing }) as { version: number; state: { reported: { seq: number } } } | undefined;
          expect(doc, `${thing} (round ${round})`).toBeDefined();
          expect(doc!.version, `${thing} (round ${round})`).toBeGreaterThanOrEqual(a.version);
          // Updates of one shadow apply in order: the stored one is the acknowledged one or a later one.
          expect(doc!.state.reported.seq, `${thing} (round ${round})`).toBeGreaterThanOrEqual(a.seq);
          if (doc!.version === a.version) expect(doc!.state.reported.seq).toBe(a.seq);
        }
        documentRows = Math.max(documentRows, (store.db.prepare('SELECT COUNT(*) AS n FROM shadows').get() as { n: number }).n);
      } finally {
        shadows.close();
        store.close();
      }
    }
    expect(documentRows, 'compactions wrote documents').toBe(SHADOWS);
  });
});
