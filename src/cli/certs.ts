/**
 * `coordinator certs init`: creates the gateway's device CA and the TLS listener's server certificate
 * in `<dataDir>/pki/`. Works with the coordinator stopped: it only writes files in the data directory
 * named by the usual --data-dir / --config flags.
 */
import { hostname } from 'node:os';
import { CoordinatorError } from '../errors.js';
import { pkiFiles } from '../devices/pki-files.js';
import { configFromFlags, type ConfigFlags } from './common.js';

/** Flags of `certs init`. */
export type CertsInitFlags = ConfigFlags & { hostname?: string[]; ip?: string[]; days?: string; force?: boolean };

/** Names every server certificate covers, so local tools and the gateway's own name always work. */
function defaultNames(): { hostnames: string[]; ips: string[] } {
  return { hostnames: ['localhost', hostname()], ips: ['127.0.0.1', '::1'] };
}

/** Creates the CA and the server certificate; refuses to overwrite existing files without --force. */
export async function runCertsInit(flags: CertsInitFlags): Promise<void> {
  const config = configFromFlags(flags);
  const days = flags.days === undefined ? 825 : Number(flags.days);
  if (!Number.isInteger(days) || days < 1 || days > 3650) throw new CoordinatorError('COORD_ERR_CLI_USAGE', '--days must be an integer from 1 to 3650');
  const defaults = defaultNames();
  const hostnames = [...new Set([...defaults.hostnames, ...(flags.hostname ?? [])])];
  const ips = [...new Set([...defaults.ips, ...(flags.ip ?? [])])];
  // Loaded here only: the X.509 library is not part of the long-running process's footprint.
  const { initPki } = await import('../devices/pki.js');
  const result = await initPki(pkiFiles(config.dataDir), { thingName: config.thingName, hostnames, ips, days, force: flags.force === true });
  const f = result.files;
  process.stdout.write(
    `device CA:          ${f.caCert} (key ${f.caKey}, 0600)\n` +
      `CA fingerprint:     sha256 ${result.caFingerprint}\n` +
      `server certificate: ${f.serverCert} (key ${f.serverKey}, 0600), valid until ${result.serverNotAfter}\n` +
      `  for ${[...hostnames, ...ips].join(', ')}\n` +
      `next: enable the TLS listener (listeners.mqtts.enabled: true; it uses these files), restart the coordinator, then \`coordinator devices add THING\`\n`,
  );
}
