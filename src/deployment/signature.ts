/**
 * Bundle signatures: ed25519 over the exact bundle bytes, base64 in the deployment document
 * (`bundle.signature`), verified against the public keys of deployments.trustedKeys.
 *
 * Why ed25519: small keys and signatures (64 bytes, fits a shadow document easily), deterministic, no
 * parameters to get wrong, and in node:crypto, so no dependency. The digest in the document says which
 * bytes; the signature says who vouched for them, so a compromised document channel alone cannot make
 * the gateway run code.
 *
 * Rules (docs: deployments.trustedKeys / requireSignatures):
 * - No trusted keys and not required: a signature is ignored (there is nothing to check it against).
 * - Trusted keys configured: a signature that is present must verify, even when not required — a bad
 *   signature is evidence of tampering, never a reason to fall back to "unsigned".
 * - Required: a bundle without a signature is refused.
 */
import { createPrivateKey, createPublicKey, generateKeyPairSync, sign, verify, type KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { CoordinatorError } from '../errors.js';

/** Length of an ed25519 signature, bytes (RFC 8032 §5.1.6). */
const SIGNATURE_BYTES = 64;

/** Standard base64 with padding, as signBundle prints it. */
const BASE64 = /^[A-Za-z0-9+/]+={0,2}$/;

/** A new ed25519 key pair: SPKI public key and PKCS#8 private key, PEM. */
export function createSigningKeyPair(): { publicKeyPem: string; privateKeyPem: string } {
  const { publicKey, privateKey } = generateKeyPairSync('ed25519', {
    publicKeyEncoding: { type: 'spki', format: 'pem' },
    privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
  });
  return { publicKeyPem: publicKey, privateKeyPem: privateKey };
}

/** The base64 ed25519 signature of `bytes` by the PEM private key `privateKeyPem`. */
export function signBundle(bytes: Buffer, privateKeyPem: string): string {
  let key: KeyObject;
  try {
    key = createPrivateKey(privateKeyPem);
  } catch (err) {
    throw new CoordinatorError('COORD_ERR_TRUSTED_KEY_INVALID', `the signing key is not a PEM private key: ${(err as Error).message}`, { cause: err });
  }
  if (key.asymmetricKeyType !== 'ed25519') {
    throw new CoordinatorError('COORD_ERR_TRUSTED_KEY_INVALID', `the signing key is a ${key.asymmetricKeyType ?? 'unknown'} key; bundles are signed with ed25519 (coordinator keys create)`);
  }
  // ed25519 hashes internally: the algorithm argument must be null.
  return sign(null, bytes, key).toString('base64');
}

/**
 * The public keys of deployments.trustedKeys: each entry is PEM text or the path of a PEM file, and
 * must be an ed25519 public key. A private key is refused rather than reduced to its public half: it
 * does not belong in a gateway's configuration.
 */
export function parseTrustedKeys(entries: readonly string[]): KeyObject[] {
  return entries.map((entry, index) => {
    const isPem = entry.trimStart().startsWith('-----BEGIN');
    const where = isPem ? `trustedKeys[${index}] (PEM text)` : `trustedKeys[${index}] (${entry})`;
    const invalid = (why: string, cause?: unknown): CoordinatorError =>
      new CoordinatorError('COORD_ERR_TRUSTED_KEY_INVALID', `${where}: ${why}`, { cause, details: { index, ...(isPem ? {} : { path: entry }) } });
    let pem = entry;
    if (!isPem) {
      try {
        pem = readFileSync(entry, 'utf8');
      } catch (err) {
        throw invalid(`cannot read the key file: ${(err as Error).message}`, err);
      }
    }
    if (/-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(pem)) throw invalid('is a private key; give the public key (signing-key.pub.pem)');
    let key: KeyObject;
    try {
      key = createPublicKey(pem);
    } catch (err) {
      throw invalid(`not a PEM public key: ${(err as Error).message}`, err);
    }
    if (key.asymmetricKeyType !== 'ed25519') throw invalid(`is a ${key.asymmetricKeyType ?? 'unknown'} key; only ed25519 keys are accepted`);
    return key;
  });
}

/**
 * Checks the signature of a bundle (rules in the header); throws COORD_ERR_BUNDLE_SIGNATURE saying
 * why: missing while required, malformed, or made by none of the trusted keys.
 */
export function verifyBundleSignature(bytes: Buffer, signatureB64: string | undefined, keys: readonly KeyObject[], required: boolean): void {
  const refused = (reason: string, message: string): CoordinatorError => new CoordinatorError('COORD_ERR_BUNDLE_SIGNATURE', message, { details: { reason } });
  if (signatureB64 === undefined) {
    if (required) throw refused('missing', 'the bundle has no signature, and deployments.requireSignatures is set');
    return;
  }
  if (keys.length === 0) {
    if (required) throw refused('no-keys', 'deployments.requireSignatures is set but deployments.trustedKeys is empty, so no signature can be verified');
    return;
  }
  const sig = BASE64.test(signatureB64) && signatureB64.length % 4 === 0 ? Buffer.from(signatureB64, 'base64') : undefined;
  if (sig === undefined) throw refused('malformed', 'the bundle signature is not valid base64');
  if (sig.length !== SIGNATURE_BYTES) throw refused('malformed', `the bundle signature is ${sig.length} bytes; an ed25519 signature is ${SIGNATURE_BYTES}`);
  if (keys.some((key) => verify(null, bytes, key, sig))) return;
  throw refused('untrusted', `the bundle signature was not made by any of the ${keys.length} trusted key(s) (or the bundle was altered)`);
}
