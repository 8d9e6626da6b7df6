/** The auth seam's decisions for listeners the end-to-end tests cannot bind (non-loopback). */
import { PassThrough } from 'node:stream';
import type { AuthenticateError, Client } from 'aedes';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { createAuthorizer, tagConnection } from '../../src/broker/auth.js';

const log = pino({ level: 'silent' });

function client(listener: { loopback: boolean; tls?: boolean }, id = 'dev-1'): Client {
  const conn = new PassThrough();
  tagConnection(conn, { name: listener.tls ? 'mqtts' : 'mqtt', tls: listener.tls ?? false, loopback: listener.loopback });
  return { id, clean: true, conn } as unknown as Client;
}

function authenticate(mode: 'loopback' | 'never' | 'always', c: Client, username?: string): Promise<{ err: AuthenticateError | null; ok: boolean | null }> {
  const auth = createAuthorizer({ anonymous: mode, maxClientIdBytes: 128, maxPayloadBytes: 131072, coordinatorThing: 'gw', log });
  return new Promise((resolve) => {
    auth.preConnect(c, { cmd: 'connect', clientId: c.id, clean: true, protocolId: 'MQTT', protocolVersion: 4, keepalive: 30 } as never, () => {
      auth.authenticate(c, username, undefined, (err, ok) => resolve({ err, ok }));
    });
  });
}

describe('anonymous access', () => {
  it('loopback mode: accepted on a loopback listener, refused (0x05) on any other', async () => {
    expect(await authenticate('loopback', client({ loopback: true }))).toEqual({ err: null, ok: true });
    const refused = await authenticate('loopback', client({ loopback: false }));
    expect(refused.ok).toBe(false);
    expect(refused.err?.returnCode).toBe(5);
  });

  it('a username without a credential store is answered 0x04 off loopback', async () => {
    const r = await authenticate('loopback', client({ loopback: false, tls: true }), 'someone');
    expect(r.err?.returnCode).toBe(4);
  });

  it('never mode refuses even on loopback; always mode accepts everywhere', async () => {
    expect((await authenticate('never', client({ loopback: true }))).err?.returnCode).toBe(5);
    expect(await authenticate('always', client({ loopback: false }))).toEqual({ err: null, ok: true });
  });
});

describe('shadow access', () => {
  it('401 without an authenticated principal; 403 for changes to the coordinator\'s own shadows', async () => {
    const auth = createAuthorizer({ anonymous: 'loopback', maxClientIdBytes: 128, maxPayloadBytes: 131072, coordinatorThing: 'gw', log });
    const stranger = client({ loopback: true }, 'stranger');
    expect(auth.shadowAccess(undefined, 'lamp', 'get')).toBe(401);
    expect(auth.shadowAccess(stranger, 'lamp', 'update')).toBe(401); // never authenticated
    const c = client({ loopback: true }, 'dev-2');
    await new Promise<void>((resolve) => auth.authenticate(c, undefined, undefined, () => resolve()));
    expect(auth.shadowAccess(c, 'lamp', 'update')).toBeNull();
    expect(auth.shadowAccess(c, 'gw', 'get')).toBeNull();
    expect(auth.shadowAccess(c, 'gw', 'update')).toBe(403);
    expect(auth.shadowAccess(c, 'gw', 'delete')).toBe(403);
  });
});
