/** `coordinator keys create` and `coordinator sign`, through the built CLI; signatures checked with node:crypto. */
import { createPublicKey, verify } from 'node:crypto';
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { runCli, tempDir } from '../helpers/process.js';

describe('coordinator keys create / sign', () => {
  it('creates a key pair, refuses to overwrite it, and signs a bundle for a pipeline', async () => {
    const dir = join(tempDir(), 'keys');
    const created = await runCli(['keys', 'create', '--out', dir]);
    expect(created.code, created.stderr).toBe(0);
    const privatePath = join(dir, 'signing-key.pem');
    const publicPath = join(dir, 'signing-key.pub.pem');
    expect(statSync(privatePath).mode & 0o777).toBe(0o600);
    expect(created.stdout).toContain(publicPath);
    expect(created.stdout).toContain('deployments.trustedKeys');
    expect(created.stdout).not.toContain('BEGIN');
    const publicPem = readFileSync(publicPath, 'utf8');
    expect(createPublicKey(publicPem).asymmetricKeyType).toBe('ed25519');

    const again = await runCli(['keys', 'create', '--out', dir]);
    expect(again.code).toBe(64);
    expect(again.stderr).toContain('COORD_ERR_CLI_USAGE');
    expect(again.stderr).toContain('already exists');
    expect(readFileSync(publicPath, 'utf8')).toBe(publicPem);

    const bundle = join(dir, 'bundle.js');
    const bytes = Buffer.from('export default async () => "signed";\n');
    writeFileSync(bundle, bytes);
    const signed = await runCli(['sign', bundle, '--key', privatePath]);
    expect(signed.code, signed.stderr).toBe(0);
    expect(signed.stderr).toBe('');
    expect(signed.stdout).toMatch(/^[A-Za-z0-9+/]{86}==\n$/);
    const signature = Buffer.from(signed.stdout.trim(), 'base64');
    expect(verify(null, bytes, createPublicKey(publicPem), signature)).toBe(true);
    expect(verify(null, Buffer.concat([bytes, Buffer.from(' ')]), createPublicKey(publicPem), signature)).toBe(false);
  });

  it('reports usage and key errors with their codes', async () => {
    const dir = tempDir();
    const bundle = join(dir, 'bundle.js');
    writeFileSync(bundle, 'export default 1;\n');
    const noKey = await runCli(['sign', bundle]);
    expect(noKey.code).toBe(64);
    expect(noKey.stderr).toContain('--key');
    expect(noKey.stdout).toBe('');

    expect((await runCli(['keys', 'create', '--out', dir])).code).toBe(0);
    const publicAsKey = await runCli(['sign', bundle, '--key', join(dir, 'signing-key.pub.pem')]);
    expect(publicAsKey.code).toBe(1);
    expect(publicAsKey.stderr).toContain('COORD_ERR_TRUSTED_KEY_INVALID');
    expect(publicAsKey.stdout).toBe('');

    const missing = await runCli(['sign', join(dir, 'missing.js'), '--key', join(dir, 'signing-key.pem')]);
    expect(missing.code).toBe(64);
    expect(missing.stderr).toContain('cannot read the bundle');
  });
});
