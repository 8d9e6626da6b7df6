/**
 * What keeps the coordinator small with many devices (docs/devices.md, "Memory"): no TLS session
 * tickets unless configured, and a young generation that `coordinator start` pins unless told not to.
 */
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import { afterEach, describe, expect, it } from 'vitest';
import { addDevice, startTlsCoordinator, type Bundle, type TlsCoordinator } from '../helpers/devices.js';

/** One TLS handshake as `bundle`'s device, offering `session`; resolves with what the server did. */
function handshake(c: TlsCoordinator, bundle: Bundle, session?: Buffer): Promise<{ reused: boolean; session: Buffer | undefined }> {
  return new Promise((resolve, reject) => {
    let ticket: Buffer | undefined;
    const socket: TLSSocket = tlsConnect({ host: '127.0.0.1', port: c.tlsPort, ca: bundle.ca, cert: bundle.cert, key: bundle.key, servername: 'localhost', ...(session ? { session } : {}) });
    socket.on('session', (s: Buffer) => {
      ticket = s;
    });
    socket.once('error', reject);
    socket.once('secureConnect', () => {
      const reused = socket.isSessionReused();
      // TLS 1.3 tickets follow the handshake: give them a moment to arrive.
      setTimeout(() => {
        socket.destroy();
        resolve({ reused, session: ticket });
      }, 300);
    });
  });
}

describe('per-device memory settings', () => {
  let c: TlsCoordinator | undefined;
  afterEach(async () => {
    await c?.stop();
    c = undefined;
  });

  it('by default a returning device gets a full handshake (no stateless session tickets); the young generation is pinned', async () => {
    c = await startTlsCoordinator({ config: { logLevel: 'debug' } });
    const dev = await addDevice(c, 'mem-1');
    const first = await handshake(c, dev);
    expect(first.reused).toBe(false);
    const second = await handshake(c, dev, first.session);
    expect(second.reused).toBe(false);
    const young = await c.waitForLog((l) => l.msg === 'young generation');
    expect(young).toMatchObject({ youngGeneration: 'fixed', pinned: true });
  });

  it('listeners.mqtts.sessionTickets: true resumes sessions; memory.youngGeneration: adaptive leaves V8 alone', async () => {
    c = await startTlsCoordinator({ config: { logLevel: 'debug', listeners: { mqtts: { sessionTickets: true } }, memory: { youngGeneration: 'adaptive' } } });
    const dev = await addDevice(c, 'mem-2');
    const first = await handshake(c, dev);
    expect(first.session).toBeDefined();
    const second = await handshake(c, dev, first.session);
    expect(second.reused).toBe(true);
    const young = await c.waitForLog((l) => l.msg === 'young generation');
    expect(young).toMatchObject({ youngGeneration: 'adaptive', pinned: false });
  });
});
