/** The device CA is parsed once and kept while its files stay the same; replaced files are read again. */
import { mkdtempSync, rmSync, unlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { initPki, loadDeviceCa } from '../../src/devices/pki.js';
import { pkiFiles } from '../../src/devices/pki-files.js';

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});
const fresh = (): ReturnType<typeof pkiFiles> => {
  const d = mkdtempSync(join(tmpdir(), 'coord-ca-'));
  dirs.push(d);
  return pkiFiles(d);
};
const init = (force = false) => ({ thingName: 'gw', hostnames: ['localhost'], ips: ['127.0.0.1'], days: 30, force });

describe('loadDeviceCa', () => {
  it('returns the loaded CA while the files are unchanged, and issues with it', async () => {
    const files = fresh();
    await initPki(files, init());
    const a = loadDeviceCa(files);
    const b = loadDeviceCa(files);
    expect(b).toBe(a);
    const issued = await (await b).issueDevice('dev-1', { days: 1 });
    expect(issued.certPem).toContain('BEGIN CERTIFICATE');
  });

  it('reads replaced files again (certs init --force)', async () => {
    const files = fresh();
    await initPki(files, init());
    const before = await loadDeviceCa(files);
    await initPki(files, init(true));
    const after = await loadDeviceCa(files);
    expect(after).not.toBe(before);
    expect(after.certPem).not.toBe(before.certPem);
  });

  it('another data directory gets its own CA', async () => {
    const one = fresh();
    const two = fresh();
    await initPki(one, init());
    await initPki(two, init());
    expect((await loadDeviceCa(one)).certPem).not.toBe((await loadDeviceCa(two)).certPem);
  });

  it('missing files fail with COORD_ERR_PKI_MISSING, and are looked for again next time', async () => {
    const files = fresh();
    await expect(loadDeviceCa(files)).rejects.toMatchObject({ code: 'COORD_ERR_PKI_MISSING' });
    await initPki(files, init());
    await expect(loadDeviceCa(files)).resolves.toBeTruthy();
    unlinkSync(files.caKey);
    await expect(loadDeviceCa(files)).rejects.toMatchObject({ code: 'COORD_ERR_PKI_MISSING' });
  });
});
