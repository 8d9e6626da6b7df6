/**
 * `coordinator keys create` and `coordinator sign`: the publisher's side of bundle signatures, offline
 * and without a running coordinator. `keys create` makes the ed25519 key pair whose public half goes
 * into deployments.trustedKeys; `sign` prints a bundle's signature for its `bundle.signature` field.
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { createSigningKeyPair, signBundle } from '../deployment/signature.js';
import { CoordinatorError } from '../errors.js';

/** Flags of `keys create`. */
export interface KeysCreateFlags {
  out?: string;
}

/** Flags of `sign`. */
export interface SignFlags {
  key?: string;
}

/** File names `keys create` writes: fixed, so docs and scripts can name them. */
export const PRIVATE_KEY_FILE = 'signing-key.pem';
/** The public half, the one to distribute. */
export const PUBLIC_KEY_FILE = 'signing-key.pub.pem';

/** Creates a signing key pair in --out (default: the current directory); never overwrites a file. */
export function runKeysCreate(flags: KeysCreateFlags): void {
  const dir = resolve(flags.out ?? '.');
  const privatePath = join(dir, PRIVATE_KEY_FILE);
  const publicPath = join(dir, PUBLIC_KEY_FILE);
  // Both checked before either is written: a half-replaced pair would silently orphan deployed signatures.
  for (const p of [privatePath, publicPath]) {
    if (existsSync(p)) throw new CoordinatorError('COORD_ERR_CLI_USAGE', `${p} already exists; remove it or choose another --out directory`);
  }
  const { publicKeyPem, privateKeyPem } = createSigningKeyPair();
  try {
    mkdirSync(dir, { recursive: true });
    // 'wx' also closes the race with another writer; 0600 because the private key is the whole trust.
    writeFileSync(privatePath, privateKeyPem, { flag: 'wx', mode: 0o600 });
    writeFileSync(publicPath, publicKeyPem, { flag: 'wx', mode: 0o644 });
  } catch (err) {
    throw new CoordinatorError('COORD_ERR_CLI_USAGE', `cannot write the key files in ${dir}: ${(err as Error).message}`, { cause: err });
  }
  process.stdout.write(
    `private key: ${privatePath} (keep it secret; it signs bundles)\n` +
      `public key:  ${publicPath}\n` +
      `hint: add "${publicPath}" (or its PEM text) to deployments.trustedKeys in the coordinator config, and sign bundles with \`coordinator sign BUNDLE --key ${privatePath}\`\n`,
  );
}

/** Prints the base64 ed25519 signature of FILE by --key, and nothing else, so pipelines can capture it. */
export function runSign(file: string, flags: SignFlags): void {
  if (flags.key === undefined) throw new CoordinatorError('COORD_ERR_CLI_USAGE', 'give the private key with --key PRIVATE.pem (from `coordinator keys create`)');
  const read = (path: string, what: string): Buffer => {
    try {
      return readFileSync(path);
    } catch (err) {
      throw new CoordinatorError('COORD_ERR_CLI_USAGE', `cannot read ${what} ${path}: ${(err as Error).message}`, { cause: err });
    }
  };
  const bytes = read(file, 'the bundle');
  const key = read(flags.key, 'the key').toString('utf8');
  process.stdout.write(`${signBundle(bytes, key)}\n`);
}
