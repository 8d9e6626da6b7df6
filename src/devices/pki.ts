/**
 * The gateway's own PKI: a device CA, the TLS listener's server certificate, and the client
 * certificates of devices. ECDSA P-256 keys from node:crypto; certificates built and signed by
 * @peculiar/x509 (no hand-rolled ASN.1, no openssl binary). Loaded only by `coordinator certs init`
 * and when a device is added: the broker itself needs none of it (node:tls verifies client certificates).
 */
// tsyringe, which @peculiar/x509 uses internally, needs the Reflect metadata API: load it first.
import 'reflect-metadata';
import { createHash, createPrivateKey, generateKeyPair, randomBytes, webcrypto, X509Certificate as NodeCertificate, type KeyObject } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { isIP } from 'node:net';
import * as x509 from '@peculiar/x509';
import { CoordinatorError } from '../errors.js';
import type { PkiFiles } from './pki-files.js';

x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

const EC = { name: 'ECDSA', namedCurve: 'P-256' } as const;
const SIGNING = { name: 'ECDSA', hash: 'SHA-256' } as const;
const DAY_MS = 86_400_000;
/** The CA outlives the certificates it issues by a wide margin; re-keying a fleet is a project. */
const CA_DAYS = 3650;
/** Backdating absorbs small clock differences between the gateway and devices. */
const BACKDATE_MS = 5 * 60_000;

/** sha256 of a certificate's DER encoding, lowercase hex: how the registry names a certificate (AWS: certificate id). */
export function certificateFingerprint(pem: string): string {
  return createHash('sha256').update(new NodeCertificate(pem).raw).digest('hex');
}

function newKeyPair(): Promise<{ publicKey: KeyObject; privateKey: KeyObject }> {
  return new Promise((resolve, reject) =>
    generateKeyPair('ec', { namedCurve: 'P-256' }, (err, publicKey, privateKey) => (err ? reject(err) : resolve({ publicKey, privateKey }))),
  );
}

type SigningKey = webcrypto.CryptoKey;

function toSigningKey(privateKey: KeyObject): Promise<SigningKey> {
  return webcrypto.subtle.importKey('pkcs8', privateKey.export({ type: 'pkcs8', format: 'der' }), EC, false, ['sign']);
}

function spki(publicKey: KeyObject): Buffer {
  return publicKey.export({ type: 'spki', format: 'der' });
}

/** A positive 128-bit serial number ([RFC 5280 4.1.2.2]: at most 20 octets, non-negative). */
function serialNumber(): string {
  const bytes = randomBytes(16);
  bytes[0] = bytes[0]! & 0x7f;
  return bytes.toString('hex');
}

function writeFile(path: string, text: string, mode: number): void {
  // Written beside and renamed: a crash never leaves half a key where the listener expects one.
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, text, { mode });
  chmodSync(tmp, mode);
  renameSync(tmp, path);
}

/** What `coordinator certs init` takes. */
export interface PkiInitOptions {
  /** Used in the CA's name. */
  readonly thingName: string;
  /** DNS names and IP addresses the server certificate is valid for. */
  readonly hostnames: readonly string[];
  readonly ips: readonly string[];
  /** Validity of the server certificate in days. */
  readonly days: number;
  /** Replace existing files (every device certificate issued so far stops working). */
  readonly force: boolean;
}

/** What `certs init` wrote. */
export interface PkiInitResult {
  readonly files: PkiFiles;
  readonly caFingerprint: string;
  readonly serverNotAfter: string;
}

/** Creates the device CA and a server certificate in `files.dir`; refuses to overwrite without `force`. */
export async function initPki(files: PkiFiles, options: PkiInitOptions): Promise<PkiInitResult> {
  const all = [files.caCert, files.caKey, files.serverCert, files.serverKey];
  const existing = all.filter((f) => existsSync(f));
  if (existing.length > 0 && !options.force) {
    throw new CoordinatorError(
      'COORD_ERR_PKI_EXISTS',
      `${existing.join(', ')} already exist; \`coordinator certs init --force\` replaces them, and every device certificate issued by the old CA stops working`,
    );
  }
  for (const ip of options.ips) if (isIP(ip) === 0) throw new CoordinatorError('COORD_ERR_CLI_USAGE', `--ip ${ip} is not an IP address`);
  const now = Date.now();
  const caKeys = await newKeyPair();
  const caSigningKey = await toSigningKey(caKeys.privateKey);
  const ca = await x509.X509CertificateGenerator.create({
    serialNumber: serialNumber(),
    subject: `CN=${options.thingName} device CA, O=edge coordinator`,
    issuer: `CN=${options.thingName} device CA, O=edge coordinator`,
    notBefore: new Date(now - BACKDATE_MS),
    notAfter: new Date(now + CA_DAYS * DAY_MS),
    signingAlgorithm: SIGNING,
    publicKey: spki(caKeys.publicKey),
    signingKey: caSigningKey,
    extensions: [
      // pathLen 0: the CA signs end-entity certificates only.
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(spki(caKeys.publicKey)),
    ],
  });
  const serverKeys = await newKeyPair();
  const names = [...options.hostnames.map((value) => ({ type: 'dns' as const, value })), ...options.ips.map((value) => ({ type: 'ip' as const, value }))];
  const serverNotAfter = new Date(Math.min(now + options.days * DAY_MS, ca.notAfter.getTime()));
  const server = await x509.X509CertificateGenerator.create({
    serialNumber: serialNumber(),
    subject: `CN=${options.hostnames[0] ?? options.ips[0] ?? 'localhost'}`,
    issuer: ca.subject,
    notBefore: new Date(now - BACKDATE_MS),
    notAfter: serverNotAfter,
    signingAlgorithm: SIGNING,
    publicKey: spki(serverKeys.publicKey),
    signingKey: caSigningKey,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
      new x509.SubjectAlternativeNameExtension(names),
      await x509.AuthorityKeyIdentifierExtension.create(spki(caKeys.publicKey)),
    ],
  });
  mkdirSync(files.dir, { recursive: true, mode: 0o700 });
  // Keys before certificates: a certificate on disk always has its key.
  writeFile(files.caKey, caKeys.privateKey.export({ type: 'pkcs8', format: 'pem' }) as string, 0o600);
  writeFile(files.serverKey, serverKeys.privateKey.export({ type: 'pkcs8', format: 'pem' }) as string, 0o600);
  writeFile(files.caCert, ca.toString('pem') + '\n', 0o644);
  writeFile(files.serverCert, server.toString('pem') + '\n', 0o644);
  return { files, caFingerprint: certificateFingerprint(ca.toString('pem')), serverNotAfter: serverNotAfter.toISOString() };
}

/** A device's key and certificate, PEM. */
export interface IssuedCertificate {
  readonly certPem: string;
  readonly keyPem: string;
  readonly fingerprint: string;
  readonly notAfter: string;
}

/** The loaded device CA. */
export interface DeviceCa {
  readonly certPem: string;
  /**
   * Issues a client certificate for `thing` (CN = thing name, client-auth only) with a new key.
   * `notBefore`/`notAfter` override the validity window (tests make expired certificates this way).
   */
  issueDevice(thing: string, validity: { days: number } | { notBefore: Date; notAfter: Date }): Promise<IssuedCertificate>;
}

/** The CA last loaded, and which files (and versions of them) it came from. */
let loaded: { readonly paths: string; readonly stamp: string; readonly ca: Promise<DeviceCa> } | undefined;

/** Identifies the current contents of the CA files: `certs init --force` renames new files into place. */
function stampOf(files: PkiFiles): string | undefined {
  try {
    return [files.caCert, files.caKey].map((f) => {
      const st = statSync(f);
      return `${st.dev}:${st.ino}:${st.size}:${st.mtimeMs}:${st.ctimeMs}`;
    }).join('|');
  } catch {
    return undefined; // missing: loading says so with the right error
  }
}

/**
 * Loads the device CA of `files`; COORD_ERR_PKI_MISSING when `certs init` has not run. Reading the
 * files, parsing the certificate and importing the key were over a third of the time of adding a
 * device (11 → 7 ms measured), so the CA is kept while its files stay the same (a stat of each per
 * call); replaced files are loaded again.
 */
export function loadDeviceCa(files: PkiFiles): Promise<DeviceCa> {
  const paths = `${files.caCert}\u0000${files.caKey}`;
  const stamp = stampOf(files);
  if (stamp !== undefined && loaded?.paths === paths && loaded.stamp === stamp) return loaded.ca;
  const ca = readDeviceCa(files);
  if (stamp !== undefined) {
    const entry = { paths, stamp, ca };
    loaded = entry;
    // A failed load is not kept: the next call tries again.
    ca.catch(() => {
      if (loaded === entry) loaded = undefined;
    });
  }
  return ca;
}

async function readDeviceCa(files: PkiFiles): Promise<DeviceCa> {
  let certPem: string;
  let keyPem: string;
  try {
    certPem = readFileSync(files.caCert, 'utf8');
    keyPem = readFileSync(files.caKey, 'utf8');
  } catch (err) {
    throw new CoordinatorError('COORD_ERR_PKI_MISSING', `the gateway has no device CA (${files.caCert}, ${files.caKey}): run \`coordinator certs init\` with the same data directory first`, {
      cause: err,
    });
  }
  const ca = new x509.X509Certificate(certPem);
  const signingKey = await toSigningKey(createPrivateKey(keyPem));
  const caPublic = ca.publicKey.rawData;
  return {
    certPem,
    async issueDevice(thing, validity) {
      const now = Date.now();
      const notBefore = 'notBefore' in validity ? validity.notBefore : new Date(now - BACKDATE_MS);
      // Never past the CA: a chain with an expired CA fails whatever the leaf says.
      const notAfter = 'notAfter' in validity ? validity.notAfter : new Date(Math.min(now + validity.days * DAY_MS, ca.notAfter.getTime()));
      const keys = await newKeyPair();
      const cert = await x509.X509CertificateGenerator.create({
        serialNumber: serialNumber(),
        subject: new x509.Name([{ CN: [thing] }]),
        issuer: ca.subjectName,
        notBefore,
        notAfter,
        signingAlgorithm: SIGNING,
        publicKey: spki(keys.publicKey),
        signingKey,
        extensions: [
          new x509.BasicConstraintsExtension(false, undefined, true),
          new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
          // Client authentication only: a device certificate cannot serve as the gateway.
          new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.clientAuth]),
          await x509.SubjectKeyIdentifierExtension.create(spki(keys.publicKey)),
          await x509.AuthorityKeyIdentifierExtension.create(caPublic),
        ],
      });
      const pem = cert.toString('pem') + '\n';
      return {
        certPem: pem,
        keyPem: keys.privateKey.export({ type: 'pkcs8', format: 'pem' }) as string,
        fingerprint: certificateFingerprint(pem),
        notAfter: notAfter.toISOString(),
      };
    },
  };
}
