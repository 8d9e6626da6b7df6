/**
 * The bundle cache: task bundles on disk, named by the sha256 of their bytes (`<dataDir>/bundles`).
 *
 * Why content-addressed: a deployment names each bundle by digest, so a name is a promise about the
 * content. The store keeps that promise across crashes and disk faults:
 * - a bundle appears under its name only complete: it is written to a temp file in the same directory,
 *   fsynced, renamed over the name, and the directory is fsynced, so after a power cut the name holds
 *   either nothing or the whole bundle;
 * - every read re-hashes what it read; a file that no longer matches its name (bit rot, truncation by
 *   a full disk) is deleted and reported missing, so the caller fetches it again rather than running it.
 *
 * The digest argument is checked (64 lowercase hex digits) before it becomes part of a path, so no
 * caller can reach outside the directory with `..` or `/`. Operations are synchronous: bundles are a
 * few megabytes at most, deployments are rare, and one coordinator owns the data directory, so a put
 * can never interleave with a prune.
 */
import { createHash, randomBytes } from 'node:crypto';
import { closeSync, fsyncSync, mkdirSync, openSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { CoordinatorError } from '../errors.js';

/** A sha256 digest as the store names files: 64 lowercase hex digits. */
const SHA256 = /^[0-9a-f]{64}$/;

/** Prefix of files being written; anything with it is a leftover of an interrupted put. */
const TEMP_PREFIX = '.tmp-';

/** One bundle in the store. */
export interface StoredBundle {
  readonly sha256: string;
  readonly bytes: number;
  readonly mtime: Date;
}

/** Lowercase hex sha256 of `bytes`. */
export function sha256Hex(bytes: Buffer): string {
  return createHash('sha256').update(bytes).digest('hex');
}

/** Throws unless `sha256` is 64 lowercase hex digits (the only form that may become a file name). */
function checkDigest(sha256: string): void {
  if (typeof sha256 !== 'string' || !SHA256.test(sha256)) {
    throw new CoordinatorError('COORD_ERR_BUNDLE_DIGEST', `not a sha256 digest (64 lowercase hex digits): ${JSON.stringify(String(sha256).slice(0, 80))}`, {
      details: { reason: 'format' },
    });
  }
}

const isErrno = (err: unknown, code: string): boolean => (err as NodeJS.ErrnoException | undefined)?.code === code;

/** A content-addressed bundle cache in one directory. */
export class ContentStore {
  readonly #dir: string;

  /** Opens (creating if needed) the store in `dir`. */
  constructor(dir: string) {
    this.#dir = dir;
    try {
      mkdirSync(dir, { recursive: true, mode: 0o700 });
    } catch (err) {
      throw new CoordinatorError('COORD_ERR_DATA_DIR', `cannot create the bundle cache ${dir}: ${(err as Error).message}`, { cause: err });
    }
  }

  /** The directory of the store. */
  get dir(): string {
    return this.#dir;
  }

  /** Whether a bundle with this digest is stored (not re-verified: read() does that). */
  has(sha256: string): boolean {
    checkDigest(sha256);
    try {
      return statSync(join(this.#dir, sha256)).isFile();
    } catch {
      return false;
    }
  }

  /** Where the bundle with this digest is (or would be) stored. */
  path(sha256: string): string {
    checkDigest(sha256);
    return join(this.#dir, sha256);
  }

  /**
   * The bytes of a stored bundle, re-verified. A missing bundle, or one whose bytes no longer hash to
   * its name (the file is then deleted), throws COORD_ERR_BUNDLE_DIGEST with `details.missing: true`.
   */
  read(sha256: string): Buffer {
    const file = this.path(sha256);
    let bytes: Buffer;
    try {
      bytes = readFileSync(file);
    } catch (err) {
      if (!isErrno(err, 'ENOENT')) throw err;
      throw new CoordinatorError('COORD_ERR_BUNDLE_DIGEST', `bundle ${sha256} is not in the cache`, { cause: err, details: { sha256, missing: true } });
    }
    const actual = sha256Hex(bytes);
    if (actual !== sha256) {
      // A corrupt entry must never be served again; deleting it turns the next acquire into a fetch.
      rmSync(file, { force: true });
      throw new CoordinatorError('COORD_ERR_BUNDLE_DIGEST', `cached bundle ${sha256} was corrupt (${bytes.length} bytes hashing to ${actual}); it was deleted`, {
        details: { sha256, actual, missing: true, corrupt: true },
      });
    }
    return bytes;
  }

  /**
   * Stores `bytes` durably and returns their sha256. With `expectedSha256`, bytes that hash otherwise
   * throw COORD_ERR_BUNDLE_DIGEST and nothing is stored.
   */
  put(bytes: Buffer, expectedSha256?: string): string {
    if (expectedSha256 !== undefined) checkDigest(expectedSha256);
    const sha256 = sha256Hex(bytes);
    if (expectedSha256 !== undefined && sha256 !== expectedSha256) {
      throw new CoordinatorError('COORD_ERR_BUNDLE_DIGEST', `bundle digest mismatch: expected sha256 ${expectedSha256}, got ${sha256}`, {
        details: { expected: expectedSha256, actual: sha256 },
      });
    }
    const temp = join(this.#dir, `${TEMP_PREFIX}${process.pid}-${randomBytes(6).toString('hex')}`);
    try {
      const fd = openSync(temp, 'wx', 0o600);
      try {
        for (let off = 0; off < bytes.length; ) off += writeSync(fd, bytes, off, bytes.length - off);
        fsyncSync(fd);
      } finally {
        closeSync(fd);
      }
      renameSync(temp, join(this.#dir, sha256));
      // The rename is durable only once the directory entry is on disk.
      const dirFd = openSync(this.#dir, 'r');
      try {
        fsyncSync(dirFd);
      } finally {
        closeSync(dirFd);
      }
    } catch (err) {
      rmSync(temp, { force: true });
      throw new CoordinatorError('COORD_ERR_STORE_WRITE', `cannot store bundle ${sha256} in ${this.#dir}: ${(err as Error).message}`, { cause: err });
    }
    return sha256;
  }

  /** The stored bundles (not re-verified), in no particular order. */
  list(): StoredBundle[] {
    const out: StoredBundle[] = [];
    for (const name of readdirSync(this.#dir)) {
      if (!SHA256.test(name)) continue;
      try {
        const st = statSync(join(this.#dir, name));
        if (st.isFile()) out.push({ sha256: name, bytes: st.size, mtime: st.mtime });
      } catch {
        // Removed between readdir and stat: not stored any more.
      }
    }
    return out;
  }

  /**
   * Removes every file but the bundles in `keep`, including temp files left by an interrupted put and
   * files that are not bundles at all; returns how many files were removed. Subdirectories are left alone.
   */
  prune(keep: ReadonlySet<string>): number {
    let removed = 0;
    for (const entry of readdirSync(this.#dir, { withFileTypes: true })) {
      if (entry.isDirectory()) continue;
      if (SHA256.test(entry.name) && keep.has(entry.name)) continue;
      rmSync(join(this.#dir, entry.name), { force: true });
      removed++;
    }
    return removed;
  }
}
