/** ed25519 bundle signatures: signing, verification rules, trusted key parsing. */
import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { createSigningKeyPair, parseTrustedKeys, signBundle, verifyBundleSignature } from '../../src/deployment/signature.js';
import type { CoordinatorError } from '../../src/errors.js';

function failure(fn: () => unknown): CoordinatorError | undefined {
  try {
    fn();
  } catch (err) {
    return err as CoordinatorError;
  }
  return undefined;
}

const dir = mkdtempSync(join(tmpdir(), 'coord-sig-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('bundle signatures', () => {
  const bundle = Buffer.from('export default async (event) => event.payload;\n');
  const pair = createSigningKeyPair();
  const other = createSigningKeyPair();
  const [trusted] = parseTrustedKeys([pair.publicKeyPem]) as [KeyObject];
  const [untrusted] = parseTrustedKeys([other.publicKeyPem]) as [KeyObject];

  it('signs and verifies, with one or several trusted keys', () => {
    const sig = signBundle(bundle, pair.privateKeyPem);
    expect(Buffer.from(sig, 'base64')).toHaveLength(64);
    expect(signBundle(bundle, pair.privateKeyPem)).toBe(sig); // ed25519 is deterministic
    expect(() => verifyBundleSignature(bundle, sig, [trusted], true)).not.toThrow();
    expect(() => verifyBundleSignature(bundle, sig, [untrusted, trusted], false)).not.toThrow();
  });

  it('refuses tampered bytes and a signature by an untrusted key', () => {
    const sig = signBundle(bundle, pair.privateKeyPem);
    const tampered = Buffer.from(bundle);
    tampered[0] = tampered[0]! ^ 1;
    const e1 = failure(() => verifyBundleSignature(tampered, sig, [trusted], true));
    expect(e1?.code).toBe('COORD_ERR_BUNDLE_SIGNATURE');
    expect(e1?.message).toContain('not made by any of the 1 trusted key');
    const e2 = failure(() => verifyBundleSignature(bundle, signBundle(bundle, other.privateKeyPem), [trusted], true));
    expect(e2?.code).toBe('COORD_ERR_BUNDLE_SIGNATURE');
    expect(e2?.details).toMatchObject({ reason: 'untrusted' });
  });

  it('refuses a missing signature only when signatures are required', () => {
    const e = failure(() => verifyBundleSignature(bundle, undefined, [trusted], true));
    expect(e?.code).toBe('COORD_ERR_BUNDLE_SIGNATURE');
    expect(e?.message).toContain('no signature');
    expect(() => verifyBundleSignature(bundle, undefined, [trusted], false)).not.toThrow();
    expect(() => verifyBundleSignature(bundle, undefined, [], false)).not.toThrow();
    expect(failure(() => verifyBundleSignature(bundle, undefined, [], true))?.code).toBe('COORD_ERR_BUNDLE_SIGNATURE');
  });

  it('checks a present signature whenever keys are configured, even when not required', () => {
    const bad = signBundle(Buffer.from('something else'), pair.privateKeyPem);
    expect(failure(() => verifyBundleSignature(bundle, bad, [trusted], false))?.details).toMatchObject({ reason: 'untrusted' });
    // Without keys there is nothing to verify against: a signature is ignored (documented).
    expect(() => verifyBundleSignature(bundle, bad, [], false)).not.toThrow();
    expect(() => verifyBundleSignature(bundle, 'garbage!', [], false)).not.toThrow();
    // ...unless signatures are required, which cannot be met without keys.
    expect(failure(() => verifyBundleSignature(bundle, bad, [], true))?.details).toMatchObject({ reason: 'no-keys' });
  });

  it('refuses malformed signatures: bad base64, wrong length', () => {
    for (const sig of ['not base64!', 'QUJD', '', Buffer.alloc(63).toString('base64'), Buffer.alloc(65).toString('base64')]) {
      const e = failure(() => verifyBundleSignature(bundle, sig, [trusted], false));
      expect(e?.code, sig).toBe('COORD_ERR_BUNDLE_SIGNATURE');
      expect(e?.details, sig).toMatchObject({ reason: 'malformed' });
    }
  });

  it('parses trusted keys from PEM text and from files', () => {
    const file = join(dir, 'trusted.pub.pem');
    writeFileSync(file, pair.publicKeyPem);
    const keys = parseTrustedKeys([file, other.publicKeyPem]);
    expect(keys.map((k) => k.asymmetricKeyType)).toEqual(['ed25519', 'ed25519']);
    expect(() => verifyBundleSignature(bundle, signBundle(bundle, pair.privateKeyPem), keys, true)).not.toThrow();
  });

  it('refuses trusted keys that are not ed25519 public keys', () => {
    const rsa = generateKeyPairSync('rsa', { modulusLength: 1024, publicKeyEncoding: { type: 'spki', format: 'pem' }, privateKeyEncoding: { type: 'pkcs8', format: 'pem' } });
    const cases: [string, string][] = [
      [rsa.publicKey, 'only ed25519'],
      [pair.privateKeyPem, 'is a private key'],
      ['-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n', 'not a PEM public key'],
      [join(dir, 'missing.pem'), 'cannot read the key file'],
    ];
    for (const [entry, message] of cases) {
      const e = failure(() => parseTrustedKeys([pair.publicKeyPem, entry]));
      expect(e?.code).toBe('COORD_ERR_TRUSTED_KEY_INVALID');
      expect(e?.message).toContain('trustedKeys[1]');
      expect(e?.message).toContain(message);
    }
    // A private key in the config must not be echoed into a log line.
    expect(failure(() => parseTrustedKeys([pair.privateKeyPem]))?.message).not.toContain('PRIVATE KEY');
  });

  it('refuses to sign with a key that is not an ed25519 private key', () => {
    expect(failure(() => signBundle(bundle, pair.publicKeyPem))?.code).toBe('COORD_ERR_TRUSTED_KEY_INVALID');
    const ec = generateKeyPairSync('ec', { namedCurve: 'P-256', privateKeyEncoding: { type: 'pkcs8', format: 'pem' }, publicKeyEncoding: { type: 'spki', format: 'pem' } });
    expect(failure(() => signBundle(bundle, ec.privateKey))?.message).toContain('ec key');
  });
});
