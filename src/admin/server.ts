/**
 * The admin channel: HTTP/1.1 over a Unix socket in the data directory, readable and writable by the
 * coordinator's user only (mode 0600). No TCP port, no token to leak: file permissions are the access
 * control. The CLI is its client.
 */
import { chmodSync, unlinkSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Logger } from '../log/logger.js';
import { CoordinatorError, isCoordinatorError } from '../errors.js';
import { bindSocketPath } from './socket.js';

/** A route handler: returns (or resolves to) the JSON body to send, or throws a CoordinatorError. */
export type AdminHandler = (request: { query: URLSearchParams; body: unknown }) => unknown;

/** Routes keyed by `METHOD /path`. */
export type AdminRoutes = Record<string, AdminHandler>;

// Large enough for a task bundle uploaded by `coordinator deploy` (the socket is local and owner-only).
const MAX_BODY_BYTES = 16 * 1024 * 1024;

function send(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

async function readBody(req: IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_BODY_BYTES) throw new CoordinatorError('COORD_ERR_ADMIN_REQUEST', 'request body too large');
    chunks.push(chunk);
  }
  if (size === 0) return undefined;
  try {
    return JSON.parse(Buffer.concat(chunks).toString('utf8')) as unknown;
  } catch {
    throw new CoordinatorError('COORD_ERR_ADMIN_REQUEST', 'request body is not valid JSON');
  }
}

/** A listening admin server. */
export interface AdminServer {
  readonly socketPath: string;
  close(): Promise<void>;
}

/**
 * Starts the admin server on `socketPath`, claiming the data directory (see ./socket.ts). Routes are
 * looked up per request, so they can be added once the components behind them have started.
 */
export async function startAdminServer(socketPath: string, routes: AdminRoutes, log: Logger): Promise<AdminServer> {
  const server: Server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://coordinator');
    const handler = routes[`${req.method ?? 'GET'} ${url.pathname}`];
    if (!handler) {
      send(res, 404, { code: 'COORD_ERR_ADMIN_REQUEST', message: `no admin route ${req.method ?? ''} ${url.pathname} (or the coordinator is still starting)` });
      return;
    }
    readBody(req)
      .then(async (body) => send(res, 200, await handler({ query: url.searchParams, body })))
      .catch((err: unknown) => {
        if (isCoordinatorError(err)) {
          send(res, 400, { code: err.code, message: err.message, details: err.details });
        } else {
          log.error({ err, code: 'COORD_ERR_INTERNAL', route: url.pathname }, 'admin request failed');
          send(res, 500, { code: 'COORD_ERR_INTERNAL', message: (err as Error).message });
        }
      });
  });
  const listen = (): Promise<void> =>
    new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(socketPath, () => {
        server.off('error', reject);
        resolve();
      });
    });
  await bindSocketPath(socketPath, listen);
  // The process umask (0077 under `coordinator start`) already created it 0600; embedders get the same.
  chmodSync(socketPath, 0o600);
  return {
    socketPath,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => {
          try {
            unlinkSync(socketPath);
          } catch {
            // already gone
          }
          resolve();
        });
        server.closeAllConnections();
      }),
  };
}
