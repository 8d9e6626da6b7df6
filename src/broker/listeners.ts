/**
 * The broker's network listeners: plain MQTT over TCP and MQTT over TLS. Each tags its connections
 * with the listener they came through (the auth seam decides per listener) and tracks its sockets, so
 * closing a listener also ends connections that never sent CONNECT.
 */
import { readFileSync } from 'node:fs';
import { createServer as createTcpServer, isIP, type Server, type Socket, type AddressInfo } from 'node:net';
import type { TLSSocket } from 'node:tls';
import type { Aedes } from 'aedes';
import type { Logger } from '../log/logger.js';
import { CoordinatorError } from '../errors.js';
import { tagConnection, type ListenerInfo } from './auth.js';
import { uncachePacketNumbers } from './packet-writer.js';
import { gateConnection } from './puback-gate.js';

/** What a listener binds and how. */
export interface ListenerSpec {
  readonly name: 'mqtt' | 'mqtts';
  readonly host: string;
  readonly port: number;
  /**
   * TLS with client certificates required (mutual TLS): a client must present a certificate that chains
   * to `caFile`, is within its validity and is made for client authentication, or the handshake fails.
   */
  readonly tls?: { certFile: string; keyFile: string; caFile: string; passphrase?: string | undefined; sessionTickets?: boolean | undefined };
}

/** A bound listener. */
export interface Listener {
  readonly name: string;
  readonly protocol: 'mqtt' | 'mqtts';
  readonly host: string;
  readonly port: number;
  readonly url: string;
  readonly loopback: boolean;
  /** Stops accepting connections and destroys the ones still open. */
  close(): Promise<void>;
}

/** True when `host` names only the local machine. */
export function isLoopbackHost(host: string): boolean {
  if (host === 'localhost' || host === '::1') return true;
  return isIP(host) === 4 && host.startsWith('127.');
}

function readPem(path: string, what: string): Buffer {
  try {
    return readFileSync(path);
  } catch (err) {
    throw new CoordinatorError('COORD_ERR_BROKER_TLS', `cannot read TLS ${what} ${path}: ${(err as Error).message}`, { cause: err });
  }
}

async function makeServer(spec: ListenerSpec, accept: (socket: Socket) => void): Promise<Server> {
  if (!spec.tls) return createTcpServer({ noDelay: true }, accept);
  const { certFile, keyFile, caFile, passphrase, sessionTickets } = spec.tls;
  // node:tls (OpenSSL bindings) is loaded only when a TLS listener is configured: idle memory matters.
  const [{ createServer: createTlsServer }, { constants }] = await Promise.all([import('node:tls'), import('node:crypto')]);
  try {
    const server = createTlsServer(
      {
        cert: readPem(certFile, 'certificate'),
        key: readPem(keyFile, 'key'),
        ca: readPem(caFile, 'CA bundle'),
        ...(passphrase ? { passphrase } : {}),
        // A TLS 1.3 ticket is the whole session, the device's certificate included, encrypted: the two
        // sent after each handshake overflow node's first output buffer, and the 16 KiB one it adds
        // stays with the connection (~12 KiB of RSS per device, measured). SSL_OP_NO_TICKET makes
        // OpenSSL send session-id tickets instead, which node never stores: no resumption, which
        // long-lived device connections hardly use, and node's ticket keys die with the process anyway.
        ...(sessionTickets ? {} : { secureOptions: constants.SSL_OP_NO_TICKET }),
        minVersion: 'TLSv1.2',
        // Devices authenticate in the handshake: no certificate, another CA, expired or not a client
        // certificate ends the connection before a byte of MQTT is read.
        requestCert: true,
        rejectUnauthorized: true,
      },
      (socket: TLSSocket) => accept(socket),
    );
    return server;
  } catch (err) {
    if (err instanceof CoordinatorError) throw err;
    throw new CoordinatorError('COORD_ERR_BROKER_TLS', `TLS listener cannot use its certificate/key: ${(err as Error).message}`, { cause: err });
  }
}

/**
 * Why a TLS handshake failed, e.g. CERT_HAS_EXPIRED. node:tls records the certificate verification
 * error on the socket (authorizationError) before it drops the connection; failures inside OpenSSL
 * (no certificate at all, protocol errors) carry their reason on the error.
 */
function handshakeReason(err: NodeJS.ErrnoException & { reason?: string }, socket: TLSSocket): string {
  const verify = (socket as TLSSocket & { authorizationError?: Error | string }).authorizationError;
  if (verify) return `client certificate refused: ${String(verify)}`;
  return err.reason ?? err.code ?? err.message;
}

/** Binds one listener and hands its connections to `broker`. */
export async function startListener(spec: ListenerSpec, broker: Aedes, log: Logger): Promise<Listener> {
  uncachePacketNumbers();
  const info: ListenerInfo = { name: spec.name, tls: Boolean(spec.tls), loopback: isLoopbackHost(spec.host) };
  const sockets = new Set<Socket>();
  const server = await makeServer(spec, (socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
    socket.setNoDelay(true);
    tagConnection(socket, info);
    gateConnection(socket);
    broker.handle(socket);
  });
  server.on('tlsClientError', (err: NodeJS.ErrnoException, socket: TLSSocket) => {
    const reason = handshakeReason(err, socket);
    log.warn(
      { code: 'COORD_ERR_DEVICE_CERT_REFUSED', listener: spec.name, ip: socket.remoteAddress?.replace(/^::ffff:/, ''), reason },
      `TLS connection refused in the handshake: ${reason}`,
    );
  });

  await new Promise<void>((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException): void => {
      reject(
        new CoordinatorError('COORD_ERR_BROKER_LISTEN', `${spec.name} listener cannot bind ${spec.host}:${spec.port}: ${err.code ?? err.message}`, {
          cause: err,
        }),
      );
    };
    server.once('error', onError);
    server.listen({ host: spec.host, port: spec.port }, () => {
      server.off('error', onError);
      resolve();
    });
  });
  server.on('error', (err) => log.error({ err, listener: spec.name, code: 'COORD_ERR_BROKER_LISTEN' }, 'listener error'));

  const address = server.address() as AddressInfo;
  const protocol = spec.tls ? 'mqtts' : 'mqtt';
  const hostForUrl = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  return {
    name: spec.name,
    protocol,
    host: address.address,
    port: address.port,
    url: `${protocol}://${hostForUrl}:${address.port}`,
    loopback: info.loopback,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const socket of sockets) socket.destroy();
      }),
  };
}
