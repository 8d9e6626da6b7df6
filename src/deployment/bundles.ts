/**
 * Acquiring one task bundle for a deployment: from the content store when it holds the digest,
 * otherwise fetched, then checked — sha256, signature, UTF-8 — and only then stored.
 *
 * Why this order: nothing unverified is ever stored, so the cache holds only bundles some deployment
 * vouched for, and a failed check leaves no trace to be picked up later. The signature is checked on
 * cache hits too, because the trusted keys may have changed since the bundle was stored (a key was
 * revoked, or signatures became required): the cache saves a download, never a decision.
 */
import type { KeyObject } from 'node:crypto';
import { CoordinatorError, isCoordinatorError } from '../errors.js';
import { sha256Hex, type ContentStore } from './content-store.js';
import { fetchBundle, type FetchOptions } from './fetch.js';
import { verifyBundleSignature } from './signature.js';

/** Where a bundle comes from and what it must be (a deployment's `bundle` field). */
export interface BundleRef {
  readonly url: string;
  /** sha256 of the bundle bytes, 64 lowercase hex digits. */
  readonly sha256: string;
  /** base64 ed25519 signature of the bundle bytes. */
  readonly signature?: string;
}

/** What acquiring a bundle needs. */
export interface AcquireDeps {
  readonly store: ContentStore;
  readonly fetch: FetchOptions;
  readonly trustedKeys: readonly KeyObject[];
  readonly requireSignatures: boolean;
}

/** A verified bundle: its source text, digest and whether the store already had it. */
export interface AcquiredBundle {
  readonly code: string;
  readonly sha256: string;
  readonly fromCache: boolean;
}

/** Fatal decoding: a bundle with invalid UTF-8 is refused rather than run with U+FFFD in it. */
const utf8 = new TextDecoder('utf-8', { fatal: true });

/** The bundle's bytes as source text, or COORD_ERR_BUNDLE_FETCH when they are not UTF-8. */
function decode(bytes: Buffer, sha256: string): string {
  try {
    return utf8.decode(bytes);
  } catch (err) {
    throw new CoordinatorError('COORD_ERR_BUNDLE_FETCH', `the bundle ${sha256} is not UTF-8 text (a bundle is one JavaScript module)`, { cause: err, details: { sha256, reason: 'utf8' } });
  }
}

/** The bytes of `sha256` from the store, or undefined when it is missing or was corrupt (and deleted). */
function fromStore(store: ContentStore, sha256: string): Buffer | undefined {
  if (!store.has(sha256)) return undefined;
  try {
    return store.read(sha256);
  } catch (err) {
    if (isCoordinatorError(err, 'COORD_ERR_BUNDLE_DIGEST')) return undefined;
    throw err;
  }
}

/** Returns the verified source of the bundle `ref` names, fetching and storing it when not cached. */
export async function acquireBundle(ref: BundleRef, deps: AcquireDeps): Promise<AcquiredBundle> {
  const expected = ref.sha256;
  // has() checks the digest's format before it names a file.
  const cached = fromStore(deps.store, expected);
  if (cached) {
    verifyBundleSignature(cached, ref.signature, deps.trustedKeys, deps.requireSignatures);
    return { code: decode(cached, expected), sha256: expected, fromCache: true };
  }
  const bytes = await fetchBundle(ref.url, deps.fetch);
  const actual = sha256Hex(bytes);
  if (actual !== expected) {
    throw new CoordinatorError('COORD_ERR_BUNDLE_DIGEST', `bundle digest mismatch: expected sha256 ${expected}, got ${actual} (${bytes.length} bytes)`, {
      details: { expected, actual, bytes: bytes.length },
    });
  }
  verifyBundleSignature(bytes, ref.signature, deps.trustedKeys, deps.requireSignatures);
  const code = decode(bytes, expected);
  deps.store.put(bytes, expected);
  return { code, sha256: expected, fromCache: false };
}
