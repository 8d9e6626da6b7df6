/** The sync's merge patches: applying replacePatch(a, b) to a with the shadow's merge rules gives b. */
import { describe, expect, it } from 'vitest';
import { jsonEqual, replacePatch } from '../../src/cloud/merge-patch.js';
import { applyUpdate } from '../../src/shadow/document.js';

/** What a shadow's section becomes after `patch` (the real merge of the shadow service). */
function applied(section: Record<string, unknown> | undefined, patch: unknown): unknown {
  const start = section === undefined ? undefined : applyUpdate(undefined, 0, { state: { desired: section as never } }, 1).document;
  return applyUpdate(start, start?.version ?? 0, { state: { desired: patch as never } }, 2).document.state.desired;
}

describe('replacePatch', () => {
  it.each([
    [{ a: 1, b: { c: 2, d: 3 } }, { a: 1, b: { c: 2 } }],
    [{ a: 1 }, { a: 1, b: [1, 2], c: { d: { e: 'x' } } }],
    [{ a: [1, 2, 3] }, { a: [3] }],
    [{ a: { b: 1 } }, { a: 'scalar now' }],
    [{ a: 'scalar' }, { a: { nested: true } }],
    [{ a: 1, b: 2 }, { c: 3 }],
  ])('turns %j into %j under the shadow merge rules', (from, to) => {
    const patch = replacePatch(from, to);
    expect(patch).not.toBeUndefined();
    expect(applied(from, patch)).toEqual(to);
  });

  it('is undefined when nothing changes (so idle sides write nothing), and null to remove a section', () => {
    expect(replacePatch({ a: { b: [1, { c: 2 }] } }, { a: { b: [1, { c: 2 }] } })).toBeUndefined();
    expect(replacePatch(undefined, undefined)).toBeUndefined();
    expect(replacePatch({ a: 1 }, undefined)).toBeNull();
    expect(jsonEqual({ x: 1, y: [2] }, { y: [2], x: 1 })).toBe(true);
    expect(jsonEqual([1, 2], [2, 1])).toBe(false);
  });
});
