/**
 * Acknowledged = on disk, for shadows: a client streams QoS 1 updates while the coordinator is killed at
 * random moments and restarted; every update whose /accepted arrived is there afterwards, no version is
 * handed out twice, documents are intact. Then a restart with 10,000 shadows stored.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ShadowService } from '../../src/shadow/service.js';
import { Store } from '../../src/store/database.js';
import { connect } from '../helpers/mqtt.js';
import { runCli, startCoordinator } from '../helpers/process.js';

const SHADOWS = ['boiler', 'pump', 'valve'];

type StoredDoc = { version: number; state: { reported: { seq: number } } };

/**
 * Streams QoS 1 updates `{reported: {seq}}` round-robin over `things` into a coordinator on `dataDir`,
 * SIGKILLing it 150–500 ms into each of `rounds` runs. Returns, per shadow, version → seq of every
 * update whose /accepted arrived (asserting no version is accepted twice), and each seq's round.
 */
async function streamWhileKilling(
  dataDir: string,
  things: readonly string[],
  rounds: number,
  env?: NodeJS.ProcessEnv,
  afterKill?: (accepted: Map<string, Map<number, number>>, roundOf: Map<number, number>) => void,
): Promise<{ accepted: Map<string, Map<number, number>>; roundOf: Map<number, number> }> {
  const accepted = new Map<string, Map<number, number>>(things.map((s) => [s, new Map()]));
  const roundOf = new Map<number, number>(); // seq → round it was sent in, for failure messages
  let seq = 0;
  for (let round = 0; round < rounds; round++) {
    const c = await startCoordinator({ dataDir, ...(env ? { env } : {}) });
    const client = await connect(c.url, { clientId: `streamer-${round}` });
    client.on('message', (topic, payload) => {
      const thing = topic.split('/')[2]!;
      const body = JSON.parse(payload.toString()) as StoredDoc;
      const versions = accepted.get(thing)!;
      // A version handed out twice would mean an acknowledged update was lost and its number reused.
      expect(versions.has(body.version), `${thing} v${body.version} accepted twice`).toBe(false);
      versions.set(body.version, body.state.reported.seq);
    });
    await client.subscribeAsync('$aws/things/+/shadow/update/accepted', { qos: 1 });
    const killAt = Date.now() + 150 + Math.floor(Math.random() * 350);
    const inFlight = new Set<Promise<unknown>>();
    while (Date.now() < killAt) {
      const thing = things[seq % things.length]!;
      const p = client.publishAsync(`$aws/things/${thing}/shadow/update`, JSON.stringify({ state: { reported: { seq } } }), { qos: 1 }).catch(() => undefined);
      roundOf.set(seq, round);
      seq++;
      inFlight.add(p);
      void p.finally(() => inFlight.delete(p));
      if (inFlight.size >= 30) await Promise.race(inFlight);
    }
    await c.kill();
    client.end(true);
    afterKill?.(accepted, roundOf);
  }
  return { accepted, roundOf };
}

/** Every accepted update of `thing` is in `doc`: its version or a later one, applied in order. */
function expectHolds(thing: string, doc: StoredDoc | undefined, accepted: Map<number, number>, roundOf: Map<number, number>): void {
  const versions = [...accepted.entries()].sort((a, b) => a[0] - b[0]);
  expect(versions.length, `${thing}: some updates were accepted`).toBeGreaterThan(0);
  expect(doc, `${thing}: stored`).toBeDefined();
  const [lastVersion, lastSeq] = versions[versions.length - 1]!;
  // Every accepted version is on disk: the stored version is at least the newest accepted one...
  expect(doc!.version, thing).toBeGreaterThanOrEqual(lastVersion);
  // ...and the stored state is that update's or a later one's (updates of one shadow apply in order).
  expect(doc!.state.reported.seq, thing).toBeGreaterThanOrEqual(lastSeq);
  // Within a shadow, higher versions always carry later updates.
  for (let i = 1; i < versions.length; i++) {
    const [v0, s0] = versions[i - 1]!;
    const [v1, s1] = versions[i]!;
    expect(s1, `${thing}: v${v0} carries seq ${s0} (round ${roundOf.get(s0)}), v${v1} seq ${s1} (round ${roundOf.get(s1)})`).toBeGreaterThan(s0);
  }
}

describe('shadow crash safety', () => {
  it('keeps every accepted update across SIGKILLs at random moments', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'coord-crash-'));
    const { accepted, roundOf } = await streamWhileKilling(dataDir, SHADOWS, 5);
    const c = await startCoordinator({ dataDir });
    for (const thing of SHADOWS) {
      const got = await runCli(['shadow', 'get', thing, '--data-dir', dataDir]);
      expect(got.code, got.stderr).toBe(0);
      expectHolds(thing, JSON.parse(got.stdout) as StoredDoc, accepted.get(thing)!, roundOf);
    }
    await c.stop();
  });

  it('keeps every accepted update when the kills also land while the journal is compacted', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'coord-crash-compact-'));
    // 600 shadows: a compaction takes three steps (256 documents each), so kills land between them too.
    const things = Array.from({ length: 600 }, (_, i) => `unit-${i}`);
    const env = { COORDINATOR_SHADOWS__COMPACT_AFTER_MS: '10' };
    let compacted = 0;
    // After every kill, read the store back as a restart does: every acknowledged update is there.
    const check = (accepted: Map<string, Map<number, number>>, roundOf: Map<number, number>): void => {
      const store = Store.open(dataDir, () => undefined);
      const problems: Error[] = [];
      const shadows = new ShadowService(store, { maxInFlightPerShadow: 10, onStoreError: (err) => problems.push(err), compaction: { afterMs: 3_600_000 } });
      try {
        expect(problems).toEqual([]);
        for (const thing of things) {
          const versions = accepted.get(thing)!;
          if (versions.size > 0) expectHolds(thing, shadows.document({ thing }) as unknown as StoredDoc, versions, roundOf);
        }
        compacted = (store.db.prepare('SELECT COUNT(*) AS n FROM shadows').get() as { n: number }).n;
      } finally {
        shadows.close();
        store.close();
      }
    };
    await streamWhileKilling(dataDir, things, 8, env, check);
    expect(compacted, 'compactions wrote documents').toBeGreaterThan(100);
  });

  it('restarts with 10,000 shadows stored, all intact', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'coord-10k-'));
    const store = Store.open(dataDir, () => undefined);
    const shadows = new ShadowService(store, { maxInFlightPerShadow: 10 });
    await Promise.all(
      Array.from({ length: 10_000 }, (_, i) =>
        shadows.update({ thing: `sensor-${i}` }, { state: { reported: { temperatureC: 20 + (i % 10), battery: 90 }, desired: { intervalS: 60 } } }),
      ),
    );
    store.close();

    const c = await startCoordinator({ dataDir });
    const ready = c.logs.find((l) => l.msg === 'coordinator ready')!;
    expect(ready.shadows).toBe(10_000);
    // The restart figure (target < 1 s) is reported here and measured by `npm run bench`; not asserted.
    console.log(`restart with 10,000 shadows: ready ${String(ready.startupMs)} ms after process start`);
    const one = await runCli(['shadow', 'get', 'sensor-4321', '--data-dir', dataDir]);
    expect(JSON.parse(one.stdout)).toMatchObject({ state: { reported: { temperatureC: 21, battery: 90 } }, version: 1 });
    await c.stop();
  });
});
