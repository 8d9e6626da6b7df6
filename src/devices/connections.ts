/**
 * Keeps the device registry in step with the broker: a device's connect and disconnect update its
 * presence (connected, last seen) as they happen, and a revocation closes the device's live connection
 * at once.
 */
import type { Aedes, Client } from 'aedes';
import { principalOf } from '../broker/auth.js';
import type { Logger } from '../log/logger.js';
import type { DeviceRegistry } from './registry.js';

/** What the broker lends to follow its clients. */
export interface BrokerHandle {
  readonly aedes: Aedes;
  /** The connected client with this id. */
  clientById(id: string): Client | undefined;
  /** Records why the broker is about to drop a client (presence disconnectReason). */
  markReason(client: Client, reason: 'AUTH_ERROR'): void;
}

/** Follows `broker`'s device connections into `registry`; returns a function that stops following. */
export function followDeviceConnections(broker: BrokerHandle, registry: DeviceRegistry, log: Logger): () => void {
  const record = (thing: string, connected: boolean): void => {
    registry.presence(thing, connected).catch((err: unknown) => log.error({ err, thing, code: 'COORD_ERR_STORE_WRITE' }, 'device presence not recorded'));
  };
  const drop = (client: Client, thing: string): void => {
    log.warn({ code: 'COORD_ERR_DEVICE_NOT_AUTHORIZED', clientId: client.id, thing, reason: 'device revoked' }, 'device revoked: closing its connection');
    broker.markReason(client, 'AUTH_ERROR');
    client.close();
  };

  const onClient = (client: Client): void => {
    const p = principalOf(client);
    if (p?.kind !== 'device') return;
    // A revocation that landed between the CONNECT check and this registration.
    if (registry.get(p.thing)?.revokedAt) return drop(client, p.thing);
    record(p.thing, true);
  };
  const onDisconnect = (client: Client): void => {
    const p = principalOf(client);
    if (p?.kind !== 'device') return;
    // A session taken over by a new connection of the same device: the device is still there.
    const current = broker.clientById(client.id);
    if (current && current !== client) return;
    record(p.thing, false);
  };
  const onRevoked = (thing: string): void => {
    const client = broker.clientById(thing);
    const p = client ? principalOf(client) : undefined;
    if (client && p?.kind === 'device' && p.thing === thing) drop(client, thing);
  };

  broker.aedes.on('client', onClient);
  broker.aedes.on('clientDisconnect', onDisconnect);
  registry.on('revoked', onRevoked);
  return () => {
    broker.aedes.off('client', onClient);
    broker.aedes.off('clientDisconnect', onDisconnect);
    registry.off('revoked', onRevoked);
  };
}
