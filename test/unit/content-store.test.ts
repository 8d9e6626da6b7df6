/** The content-addressed bundle cache: real files in a temp directory. */
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ContentStore } from '../../src/deployment/content-store.js';
import { CoordinatorError } from '../../src/errors.js';

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (err) {
    return (err as CoordinatorError).code;
  }
  return undefined;
}

describe('ContentStore', () => {
  let root: string;
  let dir: string;
  let store: ContentStore;
  beforeEach(() => {
    root = mkdtempSync(join(tmpdir(), 'coord-cs-'));
    dir = join(root, 'bundles');
    store = new ContentStore(dir);
  });
  afterEach(() => rmSync(root, { recursive: true, force: true }));

  it('stores bytes under their sha256 and reads them back', () => {
    const bytes = Buffer.from('export default () => 42;\n');
    const digest = store.put(bytes);
    expect(digest).toBe(sha(bytes));
    expect(store.has(digest)).toBe(true);
    expect(store.path(digest)).toBe(join(dir, digest));
    expect(store.read(digest).equals(bytes)).toBe(true);
    expect(statSync(store.path(digest)).mode & 0o777).toBe(0o600);
    expect(store.list()).toEqual([{ sha256: digest, bytes: bytes.length, mtime: expect.any(Date) as Date }]);
    // Putting the same bytes again (with the right expectation) is harmless.
    expect(store.put(bytes, digest)).toBe(digest);
    expect(readdirSync(dir)).toEqual([digest]);
  });

  it('stores nothing when the bytes do not match the expected digest', () => {
    const bytes = Buffer.from('the real bundle');
    const other = sha(Buffer.from('another bundle'));
    let err: unknown;
    try {
      store.put(bytes, other);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(CoordinatorError);
    expect((err as CoordinatorError).code).toBe('COORD_ERR_BUNDLE_DIGEST');
    expect((err as CoordinatorError).message).toContain(other);
    expect((err as CoordinatorError).message).toContain(sha(bytes));
    expect(readdirSync(dir)).toEqual([]);
    expect(store.has(other)).toBe(false);
  });

  it('detects a corrupt or truncated file on read, deletes it and reports it missing', () => {
    const bytes = Buffer.from('x'.repeat(1000));
    const digest = store.put(bytes);
    writeFileSync(store.path(digest), bytes.subarray(0, 500)); // truncated, as a full disk would leave it
    let err: CoordinatorError | undefined;
    try {
      store.read(digest);
    } catch (e) {
      err = e as CoordinatorError;
    }
    expect(err?.code).toBe('COORD_ERR_BUNDLE_DIGEST');
    expect(err?.details).toMatchObject({ sha256: digest, missing: true, corrupt: true });
    expect(store.has(digest)).toBe(false);

    const again = store.put(bytes);
    writeFileSync(store.path(again), Buffer.from('y'.repeat(1000))); // same size, flipped content
    expect(codeOf(() => store.read(again))).toBe('COORD_ERR_BUNDLE_DIGEST');
    expect(store.has(again)).toBe(false);
  });

  it('reports a bundle that was never stored as missing', () => {
    const digest = sha(Buffer.from('never stored'));
    expect(store.has(digest)).toBe(false);
    let err: CoordinatorError | undefined;
    try {
      store.read(digest);
    } catch (e) {
      err = e as CoordinatorError;
    }
    expect(err?.code).toBe('COORD_ERR_BUNDLE_DIGEST');
    expect(err?.details).toMatchObject({ missing: true });
  });

  it('prune keeps only the given digests and removes temp files and strays', () => {
    const a = store.put(Buffer.from('a'));
    const b = store.put(Buffer.from('b'));
    const c = store.put(Buffer.from('c'));
    writeFileSync(join(dir, '.tmp-123-deadbeef'), 'half a bundle from a crash');
    writeFileSync(join(dir, 'notes.txt'), 'stray');
    mkdirSync(join(dir, 'sub'));
    expect(store.prune(new Set([a, c]))).toBe(3);
    expect(readdirSync(dir).sort()).toEqual([a, c, 'sub'].sort());
    expect(store.has(b)).toBe(false);
    expect(store.list().map((e) => e.sha256).sort()).toEqual([a, c].sort());
    expect(store.prune(new Set())).toBe(2);
    expect(store.list()).toEqual([]);
  });

  it('refuses anything but 64 lowercase hex digits before touching a path', () => {
    const outside = join(root, 'secret');
    writeFileSync(outside, 'not a bundle');
    const bad = ['../secret', '..', '/etc/passwd', '', 'A'.repeat(64), `${'a'.repeat(63)}/`, `${'a'.repeat(64)}\n`, 'a'.repeat(65), `../${'a'.repeat(61)}`];
    for (const digest of bad) {
      expect(codeOf(() => store.has(digest)), digest).toBe('COORD_ERR_BUNDLE_DIGEST');
      expect(codeOf(() => store.path(digest)), digest).toBe('COORD_ERR_BUNDLE_DIGEST');
      expect(codeOf(() => store.read(digest)), digest).toBe('COORD_ERR_BUNDLE_DIGEST');
      expect(codeOf(() => store.put(Buffer.from('x'), digest)), digest).toBe('COORD_ERR_BUNDLE_DIGEST');
    }
    expect(readFileSync(outside, 'utf8')).toBe('not a bundle');
    expect(readdirSync(dir)).toEqual([]);
  });
});
