/**
 * The cloud link's TLS files (cloud.caFile, cloud.certFile, cloud.keyFile), read and checked once when the
 * link is built: a missing or unreadable file, one without PEM in it, or a key that does not belong to the
 * certificate stops the coordinator at start-up with COORD_ERR_CLOUD_TLS naming the file — instead of
 * every connection attempt failing later with an OpenSSL message, or a timer throwing. Replaced files
 * take effect at the next start.
 */
import { createPrivateKey, X509Certificate, type KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { CoordinatorError } from '../errors.js';

/** The configured paths. */
export interface CloudTlsFiles {
  readonly caFile?: string | undefined;
  readonly certFile?: string | undefined;
  readonly keyFile?: string | undefined;
}

/** What MQTT.js gets: PEM contents. */
export interface CloudTlsMaterial {
  readonly ca?: Buffer;
  readonly cert?: Buffer;
  readonly key?: Buffer;
}

function fail(message: string, key: string, path: string, cause?: unknown): CoordinatorError {
  return new CoordinatorError('COORD_ERR_CLOUD_TLS', message, { cause, details: { key: `cloud.${key}`, path } });
}

function read(key: string, path: string): Buffer {
  try {
    return readFileSync(path);
  } catch (err) {
    throw fail(`cannot read cloud.${key} ${path}: ${(err as Error).message}`, key, path, err);
  }
}

/** The first certificate in `pem` (a CA bundle may hold several; one parseable is enough to know it is PEM). */
function certificate(pem: Buffer, key: string, path: string): X509Certificate {
  try {
    return new X509Certificate(pem);
  } catch (err) {
    throw fail(`cloud.${key} ${path} holds no PEM certificate: ${(err as Error).message}`, key, path, err);
  }
}

/** Reads and checks the configured files; throws COORD_ERR_CLOUD_TLS. */
export function loadCloudTls(files: CloudTlsFiles): CloudTlsMaterial {
  const out: { ca?: Buffer; cert?: Buffer; key?: Buffer } = {};
  if (files.caFile !== undefined) {
    out.ca = read('caFile', files.caFile);
    certificate(out.ca, 'caFile', files.caFile);
  }
  let cert: X509Certificate | undefined;
  if (files.certFile !== undefined) {
    out.cert = read('certFile', files.certFile);
    cert = certificate(out.cert, 'certFile', files.certFile);
  }
  let key: KeyObject | undefined;
  if (files.keyFile !== undefined) {
    out.key = read('keyFile', files.keyFile);
    try {
      key = createPrivateKey(out.key);
    } catch (err) {
      // No cloud.* passphrase exists: an encrypted key cannot be used unattended at boot anyway.
      throw fail(`cloud.keyFile ${files.keyFile} holds no unencrypted PEM private key: ${(err as Error).message}`, 'keyFile', files.keyFile, err);
    }
  }
  if (cert && key && !cert.checkPrivateKey(key)) {
    throw fail(`the key in cloud.keyFile ${files.keyFile ?? ''} does not belong to the certificate in cloud.certFile ${files.certFile ?? ''}`, 'keyFile', files.keyFile ?? '');
  }
  return out;
}
