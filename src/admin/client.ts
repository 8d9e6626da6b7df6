/** The CLI side of the admin channel: one JSON request over the coordinator's Unix socket. */
import { request } from 'node:http';
import { CoordinatorError, type ErrorCode } from '../errors.js';

/** Sends a request to the running coordinator and returns its JSON answer. */
export function adminRequest<T>(socketPath: string, method: string, path: string, body?: unknown, timeoutMs = 5000): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const req = request(
      {
        socketPath,
        method,
        path,
        timeout: timeoutMs,
        headers: payload ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) } : {},
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          let parsed: { code?: ErrorCode; message?: string } & Record<string, unknown>;
          try {
            parsed = JSON.parse(Buffer.concat(chunks).toString('utf8')) as typeof parsed;
          } catch {
            reject(new CoordinatorError('COORD_ERR_ADMIN_REQUEST', `admin endpoint answered ${res.statusCode ?? '?'} with a non-JSON body`));
            return;
          }
          if ((res.statusCode ?? 500) >= 400) {
            reject(new CoordinatorError(parsed.code ?? 'COORD_ERR_ADMIN_REQUEST', parsed.message ?? `admin request failed (${res.statusCode ?? '?'})`));
          } else {
            resolve(parsed as T);
          }
        });
      },
    );
    req.on('timeout', () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.on('error', (err: NodeJS.ErrnoException) => {
      reject(
        new CoordinatorError(
          'COORD_ERR_ADMIN_UNREACHABLE',
          `no coordinator answers on ${socketPath} (${err.code ?? err.message}); is it running with this data directory?`,
          { cause: err },
        ),
      );
    });
    req.end(payload);
  });
}
