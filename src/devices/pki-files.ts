/**
 * Where the gateway's PKI lives (`<dataDir>/pki/`), and which certificate, key and device CA the TLS
 * listener uses. Kept apart from ./pki.ts so starting the broker does not load the X.509 library.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { CoordinatorConfig } from '../config/schema.js';
import { CoordinatorError } from '../errors.js';

/** The PKI files of a data directory. */
export interface PkiFiles {
  readonly dir: string;
  /** The device CA certificate: what devices trust for the server, and what client certificates must chain to. */
  readonly caCert: string;
  /** The CA's private key (0600): signs device and server certificates. */
  readonly caKey: string;
  readonly serverCert: string;
  readonly serverKey: string;
}

/** The PKI file paths of `dataDir`. */
export function pkiFiles(dataDir: string): PkiFiles {
  const dir = join(dataDir, 'pki');
  return {
    dir,
    caCert: join(dir, 'ca.pem'),
    caKey: join(dir, 'ca.key.pem'),
    serverCert: join(dir, 'server.pem'),
    serverKey: join(dir, 'server.key.pem'),
  };
}

/** The files the TLS listener uses (configured ones, else the gateway PKI's), and its session-ticket setting. */
export interface ListenerTlsFiles {
  readonly certFile: string;
  readonly keyFile: string;
  /** Client certificates must chain to this CA bundle. */
  readonly caFile: string;
  /** listeners.mqtts.sessionTickets. */
  readonly sessionTickets: boolean;
}

/**
 * Resolves listeners.mqtts' files: certFile/keyFile/caFile when configured, the PKI of the data
 * directory (`coordinator certs init`) for those that are not. Throws COORD_ERR_CONFIG_INVALID naming
 * the missing file and the command that creates it.
 */
export function listenerTlsFiles(config: CoordinatorConfig): ListenerTlsFiles {
  const { certFile, keyFile, caFile, sessionTickets } = config.listeners.mqtts;
  const pki = pkiFiles(config.dataDir);
  const chosen = { certFile: certFile ?? pki.serverCert, keyFile: keyFile ?? pki.serverKey, caFile: caFile ?? pki.caCert };
  const defaulted: [string, string][] = [];
  if (certFile === undefined) defaulted.push(['certFile', chosen.certFile]);
  if (keyFile === undefined) defaulted.push(['keyFile', chosen.keyFile]);
  if (caFile === undefined) defaulted.push(['caFile', chosen.caFile]);
  const missing = defaulted.filter(([, path]) => !existsSync(path));
  if (missing.length > 0) {
    throw new CoordinatorError(
      'COORD_ERR_CONFIG_INVALID',
      `listeners.mqtts is enabled, ${missing.map(([k]) => `listeners.mqtts.${k}`).join(', ')} not set, and the gateway PKI has no ${missing.map(([, p]) => p).join(', ')}: ` +
        `run \`coordinator certs init --data-dir ${config.dataDir}\` first (or set the files in the configuration)`,
      { details: { missing: missing.map(([k, p]) => ({ key: `listeners.mqtts.${k}`, path: p })) } },
    );
  }
  return { ...chosen, sessionTickets };
}
