/**
 * Downloads one task bundle from the URL a deployment names: `https:`, `file:` (absolute) or `data:`.
 *
 * Why these limits: a gateway fetches code from a document that arrives over the network, so every
 * fetch is bounded — a time limit per attempt (connect to last byte, redirects included), a size limit
 * (checked on Content-Length and again while streaming, so a lying or missing header cannot exhaust
 * memory), at most 3 redirects and never a downgrade to plain http. Transient failures (network errors,
 * timeouts, 5xx, 429) are retried with exponential backoff and jitter, so a fleet does not hammer a
 * recovering server in step; permanent ones (4xx, too large, a certificate that does not verify) fail
 * at once, since asking again cannot change the answer. Integrity is not this file's business: the
 * caller checks the sha256 and signature (./bundles.ts).
 *
 * Error messages name the scheme, host and path only: a data: URL's content, credentials in the
 * userinfo and query strings (signed URLs) never reach logs or the reported shadow state.
 */
import { open } from 'node:fs/promises';
import { request, type RequestOptions } from 'node:https';
import type { ClientRequest, IncomingMessage } from 'node:http';
import { fileURLToPath } from 'node:url';
import { CoordinatorError, type ErrorCode } from '../errors.js';
import { VERSION } from '../version.js';

/** How to fetch a bundle (deployments.fetch in the config, plus the deployment's abort signal). */
export interface FetchOptions {
  /** Time limit of one attempt, connect to last byte (redirects included), ms. */
  readonly timeoutMs: number;
  /** Largest bundle accepted, bytes. */
  readonly maxBytes: number;
  /** Further attempts after a transient failure (https only). */
  readonly retries: number;
  /** Delay before the first retry, ms; doubles each time, with jitter. */
  readonly backoffMs: number;
  /** PEM trust roots for https; when given they replace the system roots. */
  readonly ca?: readonly string[];
  /** Aborts the fetch at once, also while waiting to retry. */
  readonly signal?: AbortSignal;
}

/** Redirects followed at most, per attempt. */
const MAX_REDIRECTS = 3;

/** Longest wait between attempts, whatever backoffMs and the attempt count say. */
const MAX_BACKOFF_MS = 300_000;

/** Redirect statuses that carry a Location to follow (RFC 9110 §15.4). */
const REDIRECTS = new Set([301, 302, 303, 307, 308]);

/**
 * OpenSSL / Node error codes of a certificate that does not verify: a configuration problem (wrong CA,
 * wrong host, expired certificate) that retrying cannot fix.
 */
const TLS_VERIFY = /CERT|SELF_SIGNED|UNABLE_TO_GET_ISSUER|UNABLE_TO_VERIFY|ALTNAME/;

/** Why one attempt failed, and whether another attempt may succeed. */
class AttemptFailure extends Error {
  constructor(
    message: string,
    readonly retryable: boolean,
    readonly code: ErrorCode = 'COORD_ERR_BUNDLE_FETCH',
    options?: { cause?: unknown; status?: number },
  ) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.status = options?.status;
  }
  readonly status: number | undefined;
}

/** The signal fired: the caller no longer wants this bundle. */
class Aborted extends Error {}

/** What error messages may say about a URL: never userinfo, query, fragment or data: content. */
export function describeUrl(url: URL): string {
  if (url.protocol === 'data:') return 'a data: URL';
  const path = url.pathname.length > 200 ? `${url.pathname.slice(0, 199)}…` : url.pathname;
  if (url.protocol === 'file:') return `file://${path}`;
  return `${url.protocol}//${url.host}${path}`;
}

/** Fetches the bytes at `url` (https:, absolute file: or data:) within the limits of `options`. */
export async function fetchBundle(url: string, options: FetchOptions): Promise<Buffer> {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch (err) {
    throw new CoordinatorError('COORD_ERR_BUNDLE_FETCH', 'the bundle URL is not an absolute URL; use https:, file: or data:', { cause: err, details: { reason: 'url' } });
  }
  const where = describeUrl(parsed);
  const aborted = (): CoordinatorError =>
    new CoordinatorError('COORD_ERR_BUNDLE_FETCH', `fetching the bundle from ${where} was aborted`, { details: { url: where, aborted: true } });
  if (options.signal?.aborted) throw aborted();

  switch (parsed.protocol) {
    case 'https:':
      return fetchHttps(parsed, where, options, aborted);
    case 'file:':
      return once(() => readFileUrl(parsed, options.maxBytes), where, options, aborted);
    case 'data:':
      // The parsed form: surrounding spaces and tabs/newlines are gone, and a fragment is not data.
      return once(() => Promise.resolve(decodeDataUrl(parsed.href.split('#')[0]!, options.maxBytes)), where, options, aborted);
    case 'http:':
      throw new CoordinatorError('COORD_ERR_BUNDLE_FETCH', `refusing ${where}: plain http: is not allowed for bundles; serve them over https:`, {
        details: { url: where, reason: 'scheme' },
      });
    default:
      throw new CoordinatorError('COORD_ERR_BUNDLE_FETCH', `refusing the ${parsed.protocol} URL scheme for bundles; use https:, file: or data:`, {
        details: { scheme: parsed.protocol, reason: 'scheme' },
      });
  }
}

/** Runs a local (file:, data:) read once: nothing there is transient, so no retries. */
async function once(read: () => Promise<Buffer>, where: string, options: FetchOptions, aborted: () => CoordinatorError): Promise<Buffer> {
  try {
    const bytes = await read();
    if (options.signal?.aborted) throw aborted();
    return bytes;
  } catch (err) {
    if (err instanceof CoordinatorError) throw err;
    const failure = err instanceof AttemptFailure ? err : new AttemptFailure((err as Error).message, false, 'COORD_ERR_BUNDLE_FETCH', { cause: err });
    throw finalError(failure, where, 0, options.maxBytes);
  }
}

/** The coded error for the last failed attempt (`attempts` 0: a local read, where attempts mean nothing). */
function finalError(last: AttemptFailure, where: string, attempts: number, maxBytes: number): CoordinatorError {
  const details = { url: where, ...(attempts > 0 ? { attempts } : {}), ...(last.status === undefined ? {} : { status: last.status }) };
  if (last.code === 'COORD_ERR_BUNDLE_TOO_LARGE') {
    return new CoordinatorError('COORD_ERR_BUNDLE_TOO_LARGE', `the bundle at ${where} is larger than deployments.fetch.maxBytes (${maxBytes} bytes): ${last.message}`, {
      cause: last,
      details: { ...details, maxBytes },
    });
  }
  const tries = attempts === 0 ? '' : attempts === 1 ? ' (1 attempt)' : ` (${attempts} attempts)`;
  return new CoordinatorError('COORD_ERR_BUNDLE_FETCH', `cannot fetch the bundle from ${where}${tries}: ${last.message}`, { cause: last, details });
}

/** Reads an absolute file: URL, refusing a file larger than maxBytes before reading it. */
async function readFileUrl(url: URL, maxBytes: number): Promise<Buffer> {
  let path: string;
  try {
    path = fileURLToPath(url);
  } catch (err) {
    throw new AttemptFailure(`not a local absolute file URL: ${(err as Error).message}`, false, 'COORD_ERR_BUNDLE_FETCH', { cause: err });
  }
  let handle;
  try {
    handle = await open(path, 'r');
  } catch (err) {
    throw new AttemptFailure(`cannot open the file: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, false, 'COORD_ERR_BUNDLE_FETCH', { cause: err });
  }
  try {
    const st = await handle.stat();
    if (!st.isFile()) throw new AttemptFailure('not a regular file', false);
    if (st.size > maxBytes) throw new AttemptFailure(`the file is ${st.size} bytes`, false, 'COORD_ERR_BUNDLE_TOO_LARGE');
    // Read one byte more than allowed: a file that grew after the stat is caught, not truncated.
    const buffer = Buffer.alloc(Math.min(st.size, maxBytes) + 1);
    let length = 0;
    for (;;) {
      const { bytesRead } = await handle.read(buffer, length, buffer.length - length, length);
      if (bytesRead === 0) break;
      length += bytesRead;
      if (length > maxBytes) throw new AttemptFailure(`the file grew past ${maxBytes} bytes while it was read`, false, 'COORD_ERR_BUNDLE_TOO_LARGE');
      if (length === buffer.length) break;
    }
    return buffer.subarray(0, length);
  } catch (err) {
    if (err instanceof AttemptFailure) throw err;
    throw new AttemptFailure(`cannot read the file: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, false, 'COORD_ERR_BUNDLE_FETCH', { cause: err });
  } finally {
    await handle.close();
  }
}

/** Replaces %XX escapes by their byte; other characters stay as their UTF-8 bytes (WHATWG percent-decode). */
function percentDecode(text: string): Buffer {
  const input = Buffer.from(text, 'utf8');
  const out = Buffer.alloc(input.length);
  let n = 0;
  const hex = (b: number | undefined): number => {
    if (b === undefined) return -1;
    if (b >= 0x30 && b <= 0x39) return b - 0x30;
    const lower = b | 0x20;
    return lower >= 0x61 && lower <= 0x66 ? lower - 0x61 + 10 : -1;
  };
  for (let i = 0; i < input.length; i++) {
    const b = input[i]!;
    const hi = b === 0x25 ? hex(input[i + 1]) : -1;
    const lo = b === 0x25 ? hex(input[i + 2]) : -1;
    if (hi >= 0 && lo >= 0) {
      out[n++] = (hi << 4) | lo;
      i += 2;
    } else {
      out[n++] = b;
    }
  }
  return out.subarray(0, n);
}

/**
 * Decodes `data:[<mediatype>][;base64],<data>` (RFC 2397, as the WHATWG fetch standard reads it: the
 * data is percent-decoded first, then base64-decoded when `;base64` ends the media type). The media
 * type is not checked: the bundle is JavaScript whatever it claims. Messages never quote the content.
 */
function decodeDataUrl(url: string, maxBytes: number): Buffer {
  const comma = url.indexOf(',');
  if (comma < 0) throw new AttemptFailure('malformed data: URL (no "," before the data)', false);
  const meta = url.slice('data:'.length, comma).trim();
  const body = percentDecode(url.slice(comma + 1));
  const isBase64 = /;\s*base64$/i.test(meta);
  if (!isBase64) {
    if (body.length > maxBytes) throw new AttemptFailure(`the data: URL holds ${body.length} bytes`, false, 'COORD_ERR_BUNDLE_TOO_LARGE');
    return body;
  }
  // Forgiving base64 (WHATWG infra): ASCII whitespace is ignored, padding is optional but must be right.
  const text = body.toString('latin1').replace(/[\t\n\f\r ]/g, '');
  const unpadded = text.replace(/={1,2}$/, '');
  if (!/^[A-Za-z0-9+/]*$/.test(unpadded) || unpadded.length % 4 === 1 || (text.length !== unpadded.length && text.length % 4 !== 0)) {
    throw new AttemptFailure('malformed data: URL (the data is not valid base64)', false);
  }
  const size = Math.floor((unpadded.length * 3) / 4);
  if (size > maxBytes) throw new AttemptFailure(`the data: URL holds ${size} bytes`, false, 'COORD_ERR_BUNDLE_TOO_LARGE');
  return Buffer.from(unpadded, 'base64');
}

/** Waits `ms`, or rejects with Aborted as soon as `signal` fires. */
function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(new Aborted());
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/** Delay before attempt `attempt + 1`: backoffMs doubling per attempt, scaled by a random 50–100 %. */
function backoff(base: number, attempt: number): number {
  const exp = Math.min(base * 2 ** (attempt - 1), Math.max(base, MAX_BACKOFF_MS));
  return Math.round(exp * (0.5 + Math.random() * 0.5));
}

/** https with retries: transient failures are tried again up to `retries` times. */
async function fetchHttps(url: URL, where: string, options: FetchOptions, aborted: () => CoordinatorError): Promise<Buffer> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await httpsAttempt(url, options);
    } catch (err) {
      if (err instanceof Aborted || options.signal?.aborted) throw aborted();
      const failure = err as AttemptFailure;
      if (!failure.retryable || attempt > options.retries) throw finalError(failure, where, attempt, options.maxBytes);
      try {
        await sleep(backoff(options.backoffMs, attempt), options.signal);
      } catch {
        throw aborted();
      }
    }
  }
}

/** Turns a socket / TLS error into an attempt failure: certificate problems are not retried. */
function networkFailure(err: NodeJS.ErrnoException): AttemptFailure {
  const code = err.code ?? '';
  if (TLS_VERIFY.test(code)) return new AttemptFailure(`TLS certificate verification failed (${code}): ${err.message}`, false, 'COORD_ERR_BUNDLE_FETCH', { cause: err });
  const message = code && !err.message.includes(code) ? `${code}: ${err.message}` : err.message;
  return new AttemptFailure(message, true, 'COORD_ERR_BUNDLE_FETCH', { cause: err });
}

/** One attempt: GET, following redirects, all within timeoutMs; rejects with AttemptFailure or Aborted. */
function httpsAttempt(start: URL, options: FetchOptions): Promise<Buffer> {
  return new Promise<Buffer>((resolve, reject) => {
    let current: ClientRequest | undefined;
    let settled = false;
    const finish = (err: Error | undefined, body?: Buffer): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      options.signal?.removeEventListener('abort', onAbort);
      // agent: false below, so destroying the request closes its connection and nothing lingers.
      current?.destroy();
      if (err) reject(err);
      else resolve(body!);
    };
    const timer = setTimeout(() => finish(new AttemptFailure(`no complete response within ${options.timeoutMs} ms`, true)), options.timeoutMs);
    const onAbort = (): void => finish(new Aborted());
    options.signal?.addEventListener('abort', onAbort, { once: true });

    const get = (url: URL, redirects: number): void => {
      const requestOptions: RequestOptions = {
        method: 'GET',
        // A fresh connection per bundle: no pooled socket outlives the fetch, and trust roots never mix.
        agent: false,
        headers: { accept: '*/*', 'accept-encoding': 'identity', 'user-agent': `edge-coordinator/${VERSION}` },
        ...(options.ca ? { ca: [...options.ca] } : {}),
      };
      let req: ClientRequest;
      try {
        req = request(url, requestOptions);
      } catch (err) {
        finish(new AttemptFailure((err as Error).message, false, 'COORD_ERR_BUNDLE_FETCH', { cause: err }));
        return;
      }
      current = req;
      req.on('error', (err) => {
        if (req === current) finish(networkFailure(err));
      });
      req.on('response', (res) => {
        if (req !== current) return void res.destroy();
        onResponse(url, redirects, res);
      });
      req.end();
    };

    const onResponse = (url: URL, redirects: number, res: IncomingMessage): void => {
      const status = res.statusCode ?? 0;
      if (REDIRECTS.has(status) && res.headers.location !== undefined) {
        res.resume();
        let next: URL;
        try {
          next = new URL(res.headers.location, url);
        } catch (err) {
          return finish(new AttemptFailure(`HTTP ${status} with an invalid Location header`, false, 'COORD_ERR_BUNDLE_FETCH', { cause: err, status }));
        }
        if (next.protocol !== 'https:') return finish(new AttemptFailure(`HTTP ${status} redirects to a ${next.protocol} URL; only https: redirects are followed`, false, 'COORD_ERR_BUNDLE_FETCH', { status }));
        if (redirects >= MAX_REDIRECTS) return finish(new AttemptFailure(`more than ${MAX_REDIRECTS} redirects`, false, 'COORD_ERR_BUNDLE_FETCH', { status }));
        current?.destroy();
        return get(next, redirects + 1);
      }
      if (status < 200 || status > 299) {
        res.resume();
        // 5xx and 429 say "not now"; any other status is the server's considered answer.
        const retryable = status >= 500 || status === 429;
        return finish(new AttemptFailure(`HTTP ${status}${res.statusMessage ? ` ${res.statusMessage}` : ''}`, retryable, 'COORD_ERR_BUNDLE_FETCH', { status }));
      }
      const declared = Number(res.headers['content-length']);
      if (Number.isFinite(declared) && declared > options.maxBytes) {
        return finish(new AttemptFailure(`Content-Length is ${declared} bytes`, false, 'COORD_ERR_BUNDLE_TOO_LARGE', { status }));
      }
      const chunks: Buffer[] = [];
      let length = 0;
      res.on('data', (chunk: Buffer) => {
        length += chunk.length;
        if (length > options.maxBytes) return finish(new AttemptFailure(`the body passed ${options.maxBytes} bytes while streaming`, false, 'COORD_ERR_BUNDLE_TOO_LARGE', { status }));
        chunks.push(chunk);
      });
      res.on('end', () => {
        if (res.complete) finish(undefined, Buffer.concat(chunks, length));
        else finish(new AttemptFailure('the connection closed before the body was complete', true, 'COORD_ERR_BUNDLE_FETCH', { status }));
      });
      res.on('error', (err) => finish(networkFailure(err)));
      res.on('close', () => {
        if (!res.complete) finish(new AttemptFailure('the connection closed before the body was complete', true, 'COORD_ERR_BUNDLE_FETCH', { status }));
      });
    };

    get(start, 0);
  });
}
