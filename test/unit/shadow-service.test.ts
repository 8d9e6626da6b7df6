/** The in-process shadow service on a real database: durability, ordering, group commit, versions, limits. */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { ShadowService } from '../../src/shadow/service.js';
import { Store } from '../../src/store/database.js';

const stores: Store[] = [];
afterEach(() => {
  for (const s of stores.splice(0)) s.close();
});

function open(dir = mkdtempSync(join(tmpdir(), 'coord-shadow-')), maxInFlightPerShadow = 1000): { dir: string; store: Store; shadows: ShadowService } {
  const store = Store.open(dir, () => undefined);
  stores.push(store);
  return { dir, store, shadows: new ShadowService(store, { maxInFlightPerShadow, now: () => 1700000000 }) };
}

describe('ShadowService', () => {
  it('keeps classic and named shadows apart, and answers 404 for one that does not exist', async () => {
    const { shadows } = open();
    await shadows.update({ thing: 'lamp' }, { state: { reported: { on: true } } });
    await shadows.update({ thing: 'lamp', name: 'config' }, { state: { desired: { dim: 40 } } });
    expect(shadows.get({ thing: 'lamp' })).toMatchObject({ state: { reported: { on: true } }, version: 1 });
    expect(shadows.get({ thing: 'lamp', name: 'config' }, 'tok')).toMatchObject({ state: { desired: { dim: 40 }, delta: { dim: 40 } }, clientToken: 'tok' });
    expect(() => shadows.get({ thing: 'lamp', name: 'nope' })).toThrow(expect.objectContaining({ code: 404, message: "No shadow exists with name: 'nope'" }) as Error);
    expect(shadows.list('lamp')).toEqual([{ thing: 'lamp' }, { thing: 'lamp', name: 'config' }]);
  });

  it('what an update resolved with is on disk: a fresh process sees it', async () => {
    const { dir, store, shadows } = open();
    await shadows.update({ thing: 'meter-9' }, { state: { reported: { kwh: 12.5 } } });
    store.close();
    stores.splice(stores.indexOf(store), 1);
    const again = open(dir).shadows;
    expect(again.get({ thing: 'meter-9' })).toMatchObject({ state: { reported: { kwh: 12.5 } }, version: 1 });
  });

  it('applies concurrent updates of one shadow in arrival order, sharing group commits', async () => {
    const { store, shadows } = open();
    const commitsBefore = store.writer.stats.commits;
    const rowWritesBefore = store.writer.stats.writes;
    const results = await Promise.all(
      Array.from({ length: 500 }, (_, i) => shadows.update({ thing: 'counter' }, { state: { reported: { n: i } }, clientToken: `t${i}` })),
    );
    expect(results.map((r) => r.document.version)).toEqual(Array.from({ length: 500 }, (_, i) => i + 1));
    expect(shadows.document({ thing: 'counter' })).toMatchObject({ state: { reported: { n: 499 } }, version: 500 });
    expect(store.writer.stats.commits - commitsBefore).toBeLessThan(10);
    // Updates waiting for the same commit share one journal row.
    expect(store.writer.stats.writes - rowWritesBefore).toBeLessThan(10);
  });

  it('checks optimistic versions against the newest accepted update', async () => {
    const { shadows } = open();
    await shadows.update({ thing: 'valve' }, { state: { desired: { open: false } } });
    const a = shadows.update({ thing: 'valve' }, { state: { desired: { open: true } }, version: 1 });
    expect(() => shadows.update({ thing: 'valve' }, { state: { desired: { open: false } }, version: 1 })).toThrow('Version conflict');
    await a;
  });

  it('continues versions across a delete, also after a restart', async () => {
    const { dir, store, shadows } = open();
    for (let i = 0; i < 3; i++) await shadows.update({ thing: 'pump' }, { state: { reported: { rpm: i } } });
    expect(await shadows.delete({ thing: 'pump' }, 'del-1')).toEqual({ version: 3, timestamp: 1700000000, clientToken: 'del-1' });
    expect(() => shadows.get({ thing: 'pump' })).toThrow(expect.objectContaining({ code: 404 }) as Error);
    await expect(shadows.delete({ thing: 'pump' })).rejects.toMatchObject({ code: 404 });
    store.close();
    stores.splice(stores.indexOf(store), 1);
    const again = open(dir).shadows;
    const recreated = await again.update({ thing: 'pump' }, { state: { reported: { rpm: 9 } } });
    expect(recreated.document.version).toBe(4);
    expect(recreated.document.state).toEqual({ reported: { rpm: 9 } });
  });

  it('refuses more than maxInFlightPerShadow pending requests with 429', async () => {
    const { shadows } = open(undefined, 3);
    const pending = [1, 2, 3].map((n) => shadows.update({ thing: 'busy' }, { state: { reported: { n } } }));
    expect(() => shadows.update({ thing: 'busy' }, { state: { reported: { n: 4 } } })).toThrow(expect.objectContaining({ code: 429 }) as Error);
    await Promise.all(pending);
    await shadows.update({ thing: 'busy' }, { state: { reported: { n: 5 } } });
  });

  it('a version conflict does not count as in flight: conflicts never lead to 429', async () => {
    const { shadows } = open(undefined, 2);
    await shadows.update({ thing: 'guarded' }, { state: { reported: { n: 0 } } });
    for (let i = 0; i < 5; i++) {
      expect(() => shadows.update({ thing: 'guarded' }, { state: { reported: { n: i } }, version: 99 })).toThrow(expect.objectContaining({ code: 409 }) as Error);
    }
    await expect(shadows.update({ thing: 'guarded' }, { state: { reported: { n: 9 } }, version: 1 })).resolves.toMatchObject({ document: { version: 2 } });
  });

  it('answers updates of many shadows sharing a commit in arrival order, each once, after the events', async () => {
    const { store, shadows } = open();
    const order: string[] = [];
    shadows.on('accepted', (id, payload) => order.push(`accepted ${id.thing} ${String(payload.version)}`));
    const done = new Promise<void>((resolve, reject) => {
      let left = 6;
      for (let i = 0; i < 6; i++) {
        const thing = `m${i % 3}`;
        shadows.submitUpdate({ thing }, { state: { reported: { i } } }, (err, result) => {
          if (err) return reject(err);
          order.push(`done ${thing} ${String(result!.document.version)}`);
          if (--left === 0) resolve();
        });
      }
    });
    await done;
    expect(order).toEqual([
      'accepted m0 1', 'done m0 1', 'accepted m1 1', 'done m1 1', 'accepted m2 1', 'done m2 1',
      'accepted m0 2', 'done m0 2', 'accepted m1 2', 'done m1 2', 'accepted m2 2', 'done m2 2',
    ]);
    // One journal row for all six changes: they waited for the same commit.
    expect(store.writer.stats).toMatchObject({ writes: 1 });
  });

  it('emits delta and documents events after the commit', async () => {
    const { shadows } = open();
    const seen: string[] = [];
    shadows.on('delta', (id, payload) => seen.push(`delta ${id.thing} ${JSON.stringify(payload.state)}`));
    shadows.on('documents', (id, payload) => seen.push(`documents ${id.thing} ${String((payload.current as { version: number }).version)}`));
    await shadows.update({ thing: 'heater' }, { state: { desired: { target: 21 } } });
    await shadows.update({ thing: 'heater' }, { state: { reported: { target: 21 } } });
    expect(seen).toEqual(['delta heater {"target":21}', 'documents heater 1', 'documents heater 2']);
  });

  it('a failed write answers 500 and leaves the committed state as it was', async () => {
    const { store, shadows } = open();
    await shadows.update({ thing: 'fragile' }, { state: { reported: { ok: 1 } } });
    store.writer.close();
    await expect(shadows.update({ thing: 'fragile' }, { state: { reported: { ok: 2 } } })).rejects.toMatchObject({ code: 500, message: 'Internal service failure' });
    expect(shadows.get({ thing: 'fragile' })).toMatchObject({ state: { reported: { ok: 1 } }, version: 1 });
  });

  it('refuses bad thing and shadow names before anything is stored', () => {
    const { shadows } = open();
    expect(() => shadows.update({ thing: 'bad name' }, { state: { reported: { a: 1 } } })).toThrow('Invalid thing name');
    expect(() => shadows.update({ thing: 'ok', name: 'x'.repeat(65) }, { state: { reported: { a: 1 } } })).toThrow('Invalid shadow name');
    expect(shadows.size).toBe(0);
  });
});
