/**
 * Fetching bundles (https against a real node:https server on 127.0.0.1 with a test CA, file:, data:)
 * and acquiring them (digest, signature, cache) — real components, no mocks.
 */
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer as createHttpServer, type Server as HttpServer } from 'node:http';
import { createServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { acquireBundle, type AcquireDeps } from '../../src/deployment/bundles.js';
import { ContentStore } from '../../src/deployment/content-store.js';
import { fetchBundle, type FetchOptions } from '../../src/deployment/fetch.js';
import { createSigningKeyPair, parseTrustedKeys, signBundle } from '../../src/deployment/signature.js';
import type { CoordinatorError } from '../../src/errors.js';
import { createTestCa } from '../helpers/tls.js';

const BODY = Buffer.from('export default async (event) => ({ ok: true, event });\n');
const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

async function failure(p: Promise<unknown>): Promise<CoordinatorError> {
  try {
    await p;
  } catch (err) {
    return err as CoordinatorError;
  }
  throw new Error('expected the promise to reject');
}

const listen = async <S extends Server | HttpServer>(server: S): Promise<number> => {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return (server.address() as AddressInfo).port;
};
const close = async (server: Server | HttpServer): Promise<void> => {
  server.closeAllConnections();
  await new Promise<void>((resolve) => server.close(() => resolve()));
};

let server: Server;
let rogue: Server;
let plain: HttpServer;
let base: string;
let rogueBase: string;
let plainBase: string;
let caPem: string;
let rogueConnections = 0;
let plainHits = 0;
const hits = new Map<string, number>();
const work = mkdtempSync(join(tmpdir(), 'coord-fetch-'));

beforeAll(async () => {
  const ca = await createTestCa();
  caPem = ca.certPem;
  const cert = await ca.issueServerCert();
  server = createServer({ cert: cert.certPem, key: cert.keyPem }, (req, res) => {
    const path = new URL(req.url ?? '/', 'https://x').pathname;
    const n = (hits.get(path) ?? 0) + 1;
    hits.set(path, n);
    switch (path) {
      case '/ok':
        res.writeHead(200, { 'content-type': 'text/javascript', 'content-length': BODY.length }).end(BODY);
        return;
      case '/big-declared':
        res.writeHead(200, { 'content-length': 5000 }).end(Buffer.alloc(5000, 0x61));
        return;
      case '/big-chunked':
        // No Content-Length: the limit can only be enforced while streaming.
        res.writeHead(200);
        for (let i = 0; i < 10; i++) res.write(Buffer.alloc(600, 0x62));
        res.end();
        return;
      case '/stall':
        res.writeHead(200, { 'content-length': 1000 });
        res.write('export default'); // ...and the rest never comes
        return;
      case '/flaky':
        if (n <= 2) res.writeHead(503).end('busy');
        else res.writeHead(200).end(BODY);
        return;
      case '/busy':
        res.writeHead(503).end();
        return;
      case '/to-ok':
        res.writeHead(302, { location: '/ok' }).end();
        return;
      case '/to-http':
        res.writeHead(301, { location: `${plainBase}/ok` }).end();
        return;
      case '/loop':
        res.writeHead(307, { location: '/loop' }).end();
        return;
      default:
        res.writeHead(404).end('not found');
    }
  });
  base = `https://127.0.0.1:${await listen(server)}`;

  // The same name and address, but a certificate from an authority the client was not told to trust.
  const otherCa = await createTestCa('CN=some other CA');
  const rogueCert = await otherCa.issueServerCert();
  rogue = createServer({ cert: rogueCert.certPem, key: rogueCert.keyPem }, (_req, res) => res.end(BODY));
  rogue.on('connection', () => rogueConnections++);
  rogueBase = `https://127.0.0.1:${await listen(rogue)}`;

  plain = createHttpServer((_req, res) => {
    plainHits++;
    res.end(BODY);
  });
  plainBase = `http://127.0.0.1:${await listen(plain)}`;
});

afterAll(async () => {
  await Promise.all([close(server), close(rogue), close(plain)]);
  rmSync(work, { recursive: true, force: true });
});

beforeEach(() => hits.clear());

const options = (o: Partial<FetchOptions> = {}): FetchOptions => ({ timeoutMs: 2000, maxBytes: 1024, retries: 0, backoffMs: 10, ca: [caPem], ...o });

describe('fetchBundle over https', () => {
  it('fetches a bundle from a server whose certificate chains to the configured CA', async () => {
    expect((await fetchBundle(`${base}/ok`, options())).equals(BODY)).toBe(true);
  });

  it('refuses a server certificate not signed by the configured CA, without retrying', async () => {
    const e = await failure(fetchBundle(`${rogueBase}/ok`, options({ retries: 3 })));
    expect(e.code).toBe('COORD_ERR_BUNDLE_FETCH');
    expect(e.message).toMatch(/TLS certificate verification failed/);
    expect(e.details).toMatchObject({ attempts: 1 });
    expect(rogueConnections).toBe(1);
  });

  it('refuses a bundle larger than maxBytes by its Content-Length, without retrying', async () => {
    const e = await failure(fetchBundle(`${base}/big-declared`, options({ retries: 2 })));
    expect(e.code).toBe('COORD_ERR_BUNDLE_TOO_LARGE');
    expect(e.message).toContain('Content-Length is 5000 bytes');
    expect(hits.get('/big-declared')).toBe(1);
  });

  it('refuses a chunked bundle once the streamed bytes pass maxBytes', async () => {
    const e = await failure(fetchBundle(`${base}/big-chunked`, options({ retries: 2 })));
    expect(e.code).toBe('COORD_ERR_BUNDLE_TOO_LARGE');
    expect(e.message).toContain('while streaming');
    expect(hits.get('/big-chunked')).toBe(1);
  });

  it('gives up on a stalling server after timeoutMs (connect to last byte)', async () => {
    const started = Date.now();
    const e = await failure(fetchBundle(`${base}/stall`, options({ timeoutMs: 300 })));
    expect(e.code).toBe('COORD_ERR_BUNDLE_FETCH');
    expect(e.message).toContain('no complete response within 300 ms');
    expect(Date.now() - started).toBeLessThan(2000);
  });

  it('retries 5xx with backoff until the server answers', async () => {
    expect((await fetchBundle(`${base}/flaky`, options({ retries: 3 }))).equals(BODY)).toBe(true);
    expect(hits.get('/flaky')).toBe(3);
  });

  it('reports the last cause and the attempts when retries run out', async () => {
    const e = await failure(fetchBundle(`${base}/busy`, options({ retries: 2 })));
    expect(e.code).toBe('COORD_ERR_BUNDLE_FETCH');
    expect(e.message).toContain('(3 attempts): HTTP 503');
    expect(e.details).toMatchObject({ attempts: 3, status: 503 });
    expect(hits.get('/busy')).toBe(3);
  });

  it('does not retry a 404, and never prints credentials or the query', async () => {
    const url = new URL(`${base}/missing?token=t0ps3cret`);
    url.username = 'deployer';
    url.password = 's3cretpw';
    const e = await failure(fetchBundle(url.href, options({ retries: 3 })));
    expect(e.code).toBe('COORD_ERR_BUNDLE_FETCH');
    expect(e.message).toContain(`${base}/missing (1 attempt): HTTP 404`);
    expect(JSON.stringify({ m: e.message, d: e.details })).not.toMatch(/t0ps3cret|s3cretpw|deployer/);
    expect(hits.get('/missing')).toBe(1);
  });

  it('follows an https redirect, refuses one to http, and stops after 3', async () => {
    expect((await fetchBundle(`${base}/to-ok`, options())).equals(BODY)).toBe(true);
    expect(hits.get('/ok')).toBe(1);

    const down = await failure(fetchBundle(`${base}/to-http`, options({ retries: 2 })));
    expect(down.code).toBe('COORD_ERR_BUNDLE_FETCH');
    expect(down.message).toContain('redirects to a http: URL');
    expect(plainHits).toBe(0);

    const loop = await failure(fetchBundle(`${base}/loop`, options({ retries: 2 })));
    expect(loop.message).toContain('more than 3 redirects');
    expect(hits.get('/loop')).toBe(4);
  });

  it('aborts at once on the signal while the server stalls', async () => {
    const ac = new AbortController();
    const started = Date.now();
    setTimeout(() => ac.abort(), 100);
    const e = await failure(fetchBundle(`${base}/stall`, options({ timeoutMs: 10_000, signal: ac.signal })));
    expect(e.code).toBe('COORD_ERR_BUNDLE_FETCH');
    expect(e.details).toMatchObject({ aborted: true });
    expect(Date.now() - started).toBeLessThan(1000);
  });

  it('aborts at once on the signal while waiting to retry', async () => {
    const ac = new AbortController();
    const started = Date.now();
    setTimeout(() => ac.abort(), 200);
    const e = await failure(fetchBundle(`${base}/busy`, options({ retries: 5, backoffMs: 10_000, signal: ac.signal })));
    expect(e.details).toMatchObject({ aborted: true });
    expect(Date.now() - started).toBeLessThan(1000);
    expect(hits.get('/busy')).toBe(1);
    // An already aborted signal does not even start.
    expect((await failure(fetchBundle(`${base}/ok`, options({ signal: AbortSignal.abort() })))).details).toMatchObject({ aborted: true });
    expect(hits.get('/ok')).toBeUndefined();
  });
});

describe('fetchBundle from file: and data: URLs', () => {
  it('reads an absolute file: URL and checks its size first', async () => {
    const file = join(work, 'bundle.js');
    writeFileSync(file, BODY);
    expect((await fetchBundle(pathToFileURL(file).href, options())).equals(BODY)).toBe(true);
    const big = join(work, 'big.js');
    writeFileSync(big, Buffer.alloc(2000));
    expect((await failure(fetchBundle(pathToFileURL(big).href, options()))).code).toBe('COORD_ERR_BUNDLE_TOO_LARGE');
    const missing = await failure(fetchBundle(pathToFileURL(join(work, 'missing.js')).href, options()));
    expect(missing.code).toBe('COORD_ERR_BUNDLE_FETCH');
    expect(missing.message).toContain('ENOENT');
    expect((await failure(fetchBundle(pathToFileURL(work).href, options()))).message).toContain('not a regular file');
  });

  it('decodes base64 and percent-encoded data: URLs', async () => {
    expect((await fetchBundle(`data:text/javascript;base64,${BODY.toString('base64')}`, options())).equals(BODY)).toBe(true);
    expect((await fetchBundle(`data:;base64,${BODY.toString('base64').replace(/=+$/, '')}`, options())).equals(BODY)).toBe(true);
    expect((await fetchBundle(`data:text/javascript,${encodeURIComponent(BODY.toString())}`, options())).equals(BODY)).toBe(true);
    expect((await fetchBundle('data:,export%20default%20%22%C3%A9%22;', options())).toString()).toBe('export default "é";');
    expect((await fetchBundle('data:,', options())).length).toBe(0);
  });

  it('never quotes a data: URL payload in an error', async () => {
    const cases = ['data:;base64,SECRETPAYLOAD@@@', `data:,SECRETPAYLOAD${'x'.repeat(2000)}`, 'data:SECRETPAYLOAD'];
    for (const url of cases) {
      const e = await failure(fetchBundle(url, options()));
      expect(['COORD_ERR_BUNDLE_FETCH', 'COORD_ERR_BUNDLE_TOO_LARGE']).toContain(e.code);
      expect(e.message).toContain('data: URL');
      expect(JSON.stringify({ m: e.message, d: e.details })).not.toContain('SECRETPAYLOAD');
    }
  });

  it('refuses other schemes and relative URLs', async () => {
    const http = await failure(fetchBundle(`${plainBase}/ok`, options()));
    expect(http.message).toContain('plain http: is not allowed');
    expect(plainHits).toBe(0);
    for (const url of ['ftp://127.0.0.1/bundle.js', 'javascript:alert(1)', 'bundles/task.js', '/abs/path.js', '']) {
      const e = await failure(fetchBundle(url, options()));
      expect(e.code, url).toBe('COORD_ERR_BUNDLE_FETCH');
      expect(e.message, url).toMatch(/use https:, file: or data:/);
    }
  });
});

describe('acquireBundle', () => {
  const pair = createSigningKeyPair();
  const keys = parseTrustedKeys([pair.publicKeyPem]);
  let store: ContentStore;
  let deps: AcquireDeps;
  beforeEach(() => {
    store = new ContentStore(mkdtempSync(join(work, 'store-')));
    deps = { store, fetch: options(), trustedKeys: keys, requireSignatures: true };
  });

  it('fetches, verifies and stores a bundle, then serves it from the cache', async () => {
    const ref = { url: `${base}/ok`, sha256: sha(BODY), signature: signBundle(BODY, pair.privateKeyPem) };
    expect(await acquireBundle(ref, deps)).toEqual({ code: BODY.toString(), sha256: ref.sha256, fromCache: false });
    expect(store.has(ref.sha256)).toBe(true);
    expect(await acquireBundle(ref, deps)).toEqual({ code: BODY.toString(), sha256: ref.sha256, fromCache: true });
    expect(hits.get('/ok')).toBe(1);
    // The signature is checked on a cache hit too: a bad one is refused without a fetch.
    const forged = { ...ref, signature: signBundle(Buffer.from('other'), pair.privateKeyPem) };
    expect((await failure(acquireBundle(forged, deps))).code).toBe('COORD_ERR_BUNDLE_SIGNATURE');
    expect(hits.get('/ok')).toBe(1);
  });

  it('fetches again when the cached copy is corrupt', async () => {
    const ref = { url: `${base}/ok`, sha256: sha(BODY), signature: signBundle(BODY, pair.privateKeyPem) };
    await acquireBundle(ref, deps);
    writeFileSync(store.path(ref.sha256), 'bit rot');
    expect(await acquireBundle(ref, deps)).toMatchObject({ fromCache: false });
    expect(hits.get('/ok')).toBe(2);
    expect(store.read(ref.sha256).equals(BODY)).toBe(true);
  });

  it('stores nothing when the digest does not match', async () => {
    const wrong = sha(Buffer.from('what the document promised'));
    const e = await failure(acquireBundle({ url: `${base}/ok`, sha256: wrong }, { ...deps, requireSignatures: false }));
    expect(e.code).toBe('COORD_ERR_BUNDLE_DIGEST');
    expect(e.message).toContain(`expected sha256 ${wrong}, got ${sha(BODY)}`);
    expect(store.list()).toEqual([]);
  });

  it('stores nothing when the signature is missing, wrong, or the bytes are not UTF-8', async () => {
    const data = `data:;base64,${BODY.toString('base64')}`;
    expect((await failure(acquireBundle({ url: data, sha256: sha(BODY) }, deps))).message).toContain('no signature');
    const other = createSigningKeyPair();
    expect((await failure(acquireBundle({ url: data, sha256: sha(BODY), signature: signBundle(BODY, other.privateKeyPem) }, deps))).code).toBe('COORD_ERR_BUNDLE_SIGNATURE');
    const binary = Buffer.from([0x65, 0x78, 0xff, 0xfe, 0x00]);
    const e = await failure(acquireBundle({ url: `data:;base64,${binary.toString('base64')}`, sha256: sha(binary), signature: signBundle(binary, pair.privateKeyPem) }, deps));
    expect(e.code).toBe('COORD_ERR_BUNDLE_FETCH');
    expect(e.message).toContain('not UTF-8 text');
    expect(store.list()).toEqual([]);
  });

  it('accepts an unsigned bundle when signatures are not required', async () => {
    const got = await acquireBundle({ url: `data:,${encodeURIComponent(BODY.toString())}`, sha256: sha(BODY) }, { ...deps, requireSignatures: false });
    expect(got).toEqual({ code: BODY.toString(), sha256: sha(BODY), fromCache: false });
  });
});
