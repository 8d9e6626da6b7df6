/**
 * The shadow store's journal on a real database: changes come back exactly after a restart whether or not
 * they were compacted, compaction folds them into the document rows and empties the journal, replay skips
 * what a document already holds, and a journal that does not follow on from the documents is refused.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { ShadowDocument } from '../../src/shadow/document.js';
import { ShadowService, type ShadowId, type ShadowServiceOptions } from '../../src/shadow/service.js';
import { Store } from '../../src/store/database.js';

const open: { store: Store; shadows: ShadowService }[] = [];
afterEach(() => {
  for (const { store, shadows } of open.splice(0)) {
    shadows.close();
    store.close();
  }
});

let clock = 1_700_000_000;
/** A store and a service on `dir`; compaction only when asked for (`compaction`), never by surprise. */
function start(dir: string, compaction: ShadowServiceOptions['compaction'] = { afterMs: 3_600_000, afterRecords: 1e9 }): { store: Store; shadows: ShadowService } {
  const store = Store.open(dir, () => undefined);
  const shadows = new ShadowService(store, { maxInFlightPerShadow: 1000, now: () => clock, compaction });
  const opened = { store, shadows };
  open.push(opened);
  return opened;
}

function stop(opened: { store: Store; shadows: ShadowService }): void {
  open.splice(open.indexOf(opened), 1);
  opened.shadows.close();
  opened.store.close();
}

const journalRows = (store: Store): number => (store.db.prepare('SELECT COUNT(*) AS n FROM shadow_journal').get() as { n: number }).n;
const documentRow = (store: Store, thing: string, name = ''): { document: string | null; version: number } | undefined =>
  store.db.prepare('SELECT document, version FROM shadows WHERE thing = ? AND name = ?').get(thing, name) as { document: string | null; version: number } | undefined;

const ids: ShadowId[] = [{ thing: 'lamp' }, { thing: 'lamp', name: 'config' }, { thing: 'meter' }, { thing: 'valve' }, { thing: 'pump' }];

/** Updates, nested and null deletions, a section removed, a delete and a re-creation, across five shadows. */
async function workload(shadows: ShadowService): Promise<Map<string, ShadowDocument | undefined>> {
  for (let round = 0; round < 4; round++) {
    clock++;
    await Promise.all(
      ids.map((id, i) =>
        shadows.update(id, {
          state: {
            reported: { n: round, nested: { a: round * i, list: [round, i] }, ...(round === 2 ? { n: null } : {}) },
            ...(i % 2 === 0 ? { desired: round === 3 ? null : { target: round } } : {}),
          },
          clientToken: `r${round}-${i}`,
        }),
      ),
    );
  }
  await shadows.delete({ thing: 'pump' });
  await shadows.delete({ thing: 'valve' });
  clock++;
  await shadows.update({ thing: 'valve' }, { state: { reported: { back: true } } });
  return new Map(ids.map((id) => [`${id.thing}/${id.name ?? ''}`, shadows.document(id)]));
}

function expectSame(shadows: ShadowService, expected: Map<string, ShadowDocument | undefined>): void {
  for (const id of ids) expect(shadows.document(id), `${id.thing}/${id.name ?? ''}`).toEqual(expected.get(`${id.thing}/${id.name ?? ''}`));
}

describe('shadow journal', () => {
  it('brings every change back exactly from the journal alone (nothing compacted)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'coord-journal-'));
    const first = start(dir);
    const expected = await workload(first.shadows);
    expect(journalRows(first.store)).toBeGreaterThan(0);
    expect(documentRow(first.store, 'lamp')).toBeUndefined(); // only in the journal
    stop(first);

    const again = start(dir);
    expectSame(again.shadows, expected);
    // Versions carry on, a deleted shadow stays deleted and keeps its version.
    expect(() => again.shadows.get({ thing: 'pump' })).toThrow(expect.objectContaining({ code: 404 }) as Error);
    await expect(again.shadows.update({ thing: 'pump' }, { state: { reported: { x: 1 } } })).resolves.toMatchObject({ document: { version: 5 } });
    await expect(again.shadows.update({ thing: 'meter' }, { state: { reported: { x: 1 } } })).resolves.toMatchObject({ document: { version: 5 } });
  });

  it('compaction writes the documents in steps, empties the journal, and a restart reads the same', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'coord-journal-'));
    const first = start(dir);
    const expected = await workload(first.shadows);
    stop(first);
    // Reopened with five shadows in the journal and compaction two documents a step: three steps.
    const second = start(dir, { afterMs: 5, afterRecords: 1e9, chunk: 2 });
    const commitsBefore = second.store.writer.stats.commits;
    await expect.poll(() => journalRows(second.store), { timeout: 5_000, interval: 10 }).toBe(0);
    expect(second.store.writer.stats.commits - commitsBefore).toBe(3);
    expect(JSON.parse(documentRow(second.store, 'meter')!.document!)).toEqual(expected.get('meter/'));
    expect(documentRow(second.store, 'pump')).toEqual({ document: null, version: 4 });
    expectSame(second.shadows, expected);
    stop(second);

    const third = start(dir);
    expectSame(third.shadows, expected);
  });

  it('compacts while changes go on, and every change is in a document or in the journal', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'coord-journal-'));
    const first = start(dir, { afterMs: 1, afterRecords: 1e9, chunk: 2 });
    const expected = await workload(first.shadows);
    await expect.poll(() => journalRows(first.store), { timeout: 5_000, interval: 10 }).toBe(0);
    stop(first);
    expectSame(start(dir).shadows, expected);
  });

  it('compacts once enough changes were journaled, without waiting for the timer', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'coord-journal-'));
    const { store, shadows } = start(dir, { afterMs: 3_600_000, afterRecords: 50 });
    for (let i = 0; i < 60; i++) await shadows.update({ thing: `t${i % 7}` }, { state: { reported: { i } } });
    await expect.poll(() => documentRow(store, 't3')?.version ?? 0, { timeout: 5_000, interval: 10 }).toBeGreaterThan(0);
  });

  it('replay skips what a document row already holds, a delete included', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'coord-journal-'));
    const first = start(dir);
    await first.shadows.update({ thing: 'x' }, { state: { reported: { v: 1 } } });
    await first.shadows.update({ thing: 'x' }, { state: { reported: { v: 2 } } });
    const atTwo = first.shadows.document({ thing: 'x' })!;
    await first.shadows.update({ thing: 'x' }, { state: { reported: { v: 3 } } });
    await first.shadows.delete({ thing: 'x' });
    await first.shadows.update({ thing: 'x' }, { state: { desired: { v: 4 } } });
    const atFour = first.shadows.document({ thing: 'x' });
    stop(first);

    const rowThen = (document: string | null, version: number): ShadowDocument | undefined => {
      // The journal is left as it is: versions 1 to 4, the delete at 3 among them.
      const store = Store.open(dir, () => undefined);
      store.db.prepare('INSERT INTO shadows (thing, name, document, version) VALUES (?, ?, ?, ?) ON CONFLICT DO UPDATE SET document = excluded.document, version = excluded.version').run('x', '', document, version);
      store.close();
      const again = start(dir);
      const doc = again.shadows.document({ thing: 'x' });
      stop(again);
      return doc;
    };
    // A compaction that wrote version 2: updates 1 and 2 are skipped, the rest applied.
    expect(rowThen(JSON.stringify(atTwo), 2)).toEqual(atFour);
    // One that wrote the delete: the delete record (version 3) matches a deleted row and changes nothing.
    expect(rowThen(null, 3)).toEqual(atFour);
    // One that wrote version 4: the delete record is older than the row and is skipped.
    expect(rowThen(JSON.stringify(atFour), 4)).toEqual(atFour);
  });

  it('a journal with versions missing: the shadow keeps what follows on, the rest is reported, the others are whole', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'coord-journal-'));
    const first = start(dir);
    for (let v = 1; v <= 3; v++) {
      await first.shadows.update({ thing: 'gap' }, { state: { reported: { v } } });
      await first.shadows.update({ thing: 'whole' }, { state: { reported: { v } } });
    }
    await first.shadows.update({ thing: 'whole' }, { state: { reported: { v: 4 } } });
    const expectedWhole = first.shadows.document({ thing: 'whole' });
    const rows = first.store.db.prepare('SELECT seq, records FROM shadow_journal ORDER BY seq').all() as { seq: number; records: string }[];
    // Remove the journal row holding 'gap' version 2 (and put back the other records it held).
    const victim = rows.find((r) => r.records.includes('"t":"gap"') && r.records.includes('"v":2'))!;
    const kept = (JSON.parse(victim.records) as { t: string }[]).filter((r) => r.t !== 'gap');
    first.store.db.prepare('UPDATE shadow_journal SET records = ? WHERE seq = ?').run(JSON.stringify(kept), victim.seq);
    // And a row that is not JSON at all, after everything else.
    first.store.db.prepare('INSERT INTO shadow_journal (seq, records) VALUES (?, ?)').run(rows.at(-1)!.seq + 1, '[{"t":"gap","n":"","v":');
    stop(first);

    const problems: string[] = [];
    const store = Store.open(dir, () => undefined);
    const shadows = new ShadowService(store, { maxInFlightPerShadow: 10, onStoreError: (err) => problems.push(`${(err as { code?: string }).code} ${err.message}`) });
    open.push({ store, shadows });
    expect(problems).toEqual([
      expect.stringMatching(/^COORD_ERR_STORE_RESTORE shadow gap: journal row \d+ holds version 3: versions missing in between; kept at version 1/),
      expect.stringMatching(/^COORD_ERR_STORE_RESTORE shadow journal row \d+ is not JSON/),
      expect.stringMatching(/^COORD_ERR_STORE_RESTORE shadow journal rows from \d+ on were copied to table shadow_journal_damaged/),
    ]);
    // What was left out stays readable, whatever compaction does to the journal.
    const damaged = store.db.prepare('SELECT records FROM shadow_journal_damaged ORDER BY seq').all() as { records: string }[];
    expect(damaged.length).toBeGreaterThanOrEqual(2);
    expect(damaged.some((r) => r.records.includes('"t":"gap","n":"","v":3'))).toBe(true);
    expect(shadows.document({ thing: 'gap' })).toMatchObject({ state: { reported: { v: 1 } }, version: 1 });
    expect(shadows.document({ thing: 'whole' })).toEqual(expectedWhole);
    await expect(shadows.update({ thing: 'gap' }, { state: { reported: { v: 9 } } })).resolves.toMatchObject({ document: { version: 2 } });
  });

  it('a journal row that cannot be written fails its changes with 500; the shadow goes on from what is committed', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'coord-journal-'));
    const { store, shadows } = start(dir);
    await shadows.update({ thing: 'f' }, { state: { reported: { ok: 1 } } });
    store.db.exec('ALTER TABLE shadow_journal RENAME TO shadow_journal_away');
    const failed = [shadows.update({ thing: 'f' }, { state: { reported: { ok: 2 } } }), shadows.update({ thing: 'g' }, { state: { reported: { ok: 2 } } })];
    for (const f of failed) await expect(f).rejects.toMatchObject({ code: 500, message: 'Internal service failure' });
    store.db.exec('ALTER TABLE shadow_journal_away RENAME TO shadow_journal');
    expect(shadows.get({ thing: 'f' })).toMatchObject({ state: { reported: { ok: 1 } }, version: 1 });
    await expect(shadows.update({ thing: 'f' }, { state: { reported: { ok: 3 } } })).resolves.toMatchObject({ document: { version: 2 } });
    await expect(shadows.update({ thing: 'g' }, { state: { reported: { ok: 3 } } })).resolves.toMatchObject({ document: { version: 1 } });
  });

  it('a row that fails while the one before it is committed but not yet durable: the shadow goes on from the committed one', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'coord-journal-'));
    const { store, shadows } = start(dir);
    await shadows.update({ thing: 'p' }, { state: { reported: { n: 0 } } });
    const commits = store.writer.stats.commits;
    const b1 = shadows.update({ thing: 'p' }, { state: { reported: { n: 1 } } }); // version 2
    let b1Durable = false;
    void b1.then(() => (b1Durable = true));
    // Its row commits in the next turn and its sync starts; then the table goes away under the next row.
    await new Promise((resolve) => setImmediate(resolve));
    expect(store.writer.stats.commits).toBe(commits + 1);
    expect(b1Durable).toBe(false);
    store.db.exec('ALTER TABLE shadow_journal RENAME TO shadow_journal_away');
    const b2 = shadows.update({ thing: 'p' }, { state: { reported: { n: 2 } } }); // version 3, fails
    await expect(b2).rejects.toMatchObject({ code: 500 });
    await expect(b1).resolves.toMatchObject({ document: { version: 2 } });
    store.db.exec('ALTER TABLE shadow_journal_away RENAME TO shadow_journal');
    await expect(shadows.update({ thing: 'p' }, { state: { reported: { n: 3 } } })).resolves.toMatchObject({ document: { version: 3 } });
    stop({ store, shadows });
    expect(start(dir).shadows.document({ thing: 'p' })).toMatchObject({ state: { reported: { n: 3 } }, version: 3 });
  });

  it('refuses a number JSON cannot carry (it would come back as null), nothing stored', async () => {
    const { shadows } = start(mkdtempSync(join(tmpdir(), 'coord-journal-')));
    await shadows.update({ thing: 'n' }, { state: { reported: { a: 1 } } });
    for (const bad of [Infinity, -Infinity, NaN]) {
      expect(() => shadows.update({ thing: 'n' }, { state: { reported: { a: 2, deep: { list: [1, bad] } } } })).toThrow(
        expect.objectContaining({ code: 400, message: 'Invalid JSON' }) as Error,
      );
    }
    expect(shadows.get({ thing: 'n' })).toMatchObject({ state: { reported: { a: 1 } }, version: 1 });
    // Not counted in flight either: a 429 never follows from refused requests.
    for (let i = 0; i < 1100; i++) expect(() => shadows.update({ thing: 'n' }, { state: { reported: { x: Infinity } } })).toThrow('Invalid JSON');
    await expect(shadows.update({ thing: 'n' }, { state: { reported: { a: 3 } } })).resolves.toMatchObject({ document: { version: 2 } });
  });
});
