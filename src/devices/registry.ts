/**
 * The device registry (DESIGN.md §4.4): every thin device the gateway knows — thing name, profile,
 * attributes (what policies select on), the certificate it must present, its development password
 * hash, when it was created and last seen, whether it is connected, whether it was revoked.
 *
 * Reads come from memory (the broker asks on every CONNECT); every change is written through group
 * commit and resolves once durable, so a revocation the CLI was told about survives a crash.
 * Presence (connected, last seen) is written the same way when a device connects or goes away.
 */
import { EventEmitter } from 'node:events';
import type { Statement } from 'better-sqlite3';
import { CoordinatorError } from '../errors.js';
import type { Store } from '../store/database.js';

/** One registered device. */
export interface DeviceRecord {
  readonly thing: string;
  readonly profile: string | null;
  readonly attributes: Readonly<Record<string, string>>;
  /** sha256 of the DER certificate, lowercase hex; null: no certificate issued. */
  readonly certFingerprint: string | null;
  readonly certNotAfter: string | null;
  /** scrypt hash (see ./passwords.ts); null: no development password. */
  readonly passwordHash: string | null;
  readonly createdAt: string;
  readonly lastSeen: string | null;
  readonly connected: boolean;
  readonly revokedAt: string | null;
}

/** What registering a device takes. */
export interface NewDevice {
  readonly thing: string;
  readonly profile?: string | null;
  readonly attributes?: Readonly<Record<string, string>>;
  readonly certFingerprint?: string | null;
  readonly certNotAfter?: string | null;
  readonly passwordHash?: string | null;
}

interface Row {
  thing: string;
  profile: string | null;
  attributes: string;
  cert_fingerprint: string | null;
  cert_not_after: string | null;
  password_hash: string | null;
  created_at: string;
  last_seen: string | null;
  connected: number;
  revoked_at: string | null;
}

const toRecord = (r: Row): DeviceRecord => ({
  thing: r.thing,
  profile: r.profile,
  attributes: JSON.parse(r.attributes) as Record<string, string>,
  certFingerprint: r.cert_fingerprint,
  certNotAfter: r.cert_not_after,
  passwordHash: r.password_hash,
  createdAt: r.created_at,
  lastSeen: r.last_seen,
  connected: r.connected === 1,
  revokedAt: r.revoked_at,
});

/** Events of the registry. */
export interface RegistryEvents {
  /** A device was revoked: its live connection must go at once. */
  revoked: [thing: string];
}

/** The device registry. */
export class DeviceRegistry extends EventEmitter<RegistryEvents> {
  readonly #store: Store;
  readonly #devices = new Map<string, DeviceRecord>();
  readonly #byFingerprint = new Map<string, string>();
  readonly #sql: Record<'all' | 'insert' | 'update' | 'presence' | 'resetPresence', Statement>;

  constructor(store: Store) {
    super();
    this.#store = store;
    const db = store.db;
    this.#sql = {
      all: db.prepare('SELECT * FROM devices'),
      insert: db.prepare(
        'INSERT INTO devices (thing, profile, attributes, cert_fingerprint, cert_not_after, password_hash, created_at, last_seen, connected, revoked_at) VALUES (?, ?, ?, ?, ?, ?, ?, NULL, 0, NULL)',
      ),
      update: db.prepare('UPDATE devices SET profile = ?, attributes = ?, cert_fingerprint = ?, cert_not_after = ?, password_hash = ?, revoked_at = ? WHERE thing = ?'),
      presence: db.prepare('UPDATE devices SET connected = ?, last_seen = ? WHERE thing = ?'),
      resetPresence: db.prepare('UPDATE devices SET connected = 0 WHERE connected = 1'),
    };
    for (const row of this.#sql.all.all() as Row[]) this.#remember(toRecord(row));
    // Nobody is connected to a broker that just started; last_seen keeps when they were.
    if ([...this.#devices.values()].some((d) => d.connected)) {
      this.#sql.resetPresence.run();
      for (const d of this.#devices.values()) if (d.connected) this.#remember({ ...d, connected: false });
    }
  }

  #remember(d: DeviceRecord): void {
    const old = this.#devices.get(d.thing);
    if (old?.certFingerprint) this.#byFingerprint.delete(old.certFingerprint);
    this.#devices.set(d.thing, d);
    if (d.certFingerprint) this.#byFingerprint.set(d.certFingerprint, d.thing);
  }

  get size(): number {
    return this.#devices.size;
  }

  get(thing: string): DeviceRecord | undefined {
    return this.#devices.get(thing);
  }

  /** The device whose certificate has this fingerprint. */
  byFingerprint(fingerprint: string): DeviceRecord | undefined {
    const thing = this.#byFingerprint.get(fingerprint);
    return thing === undefined ? undefined : this.#devices.get(thing);
  }

  list(): DeviceRecord[] {
    return [...this.#devices.values()].sort((a, b) => (a.thing < b.thing ? -1 : a.thing > b.thing ? 1 : 0));
  }

  /** Registers a device; resolves once durable. Throws COORD_ERR_DEVICE_EXISTS for a known thing name. */
  async add(d: NewDevice): Promise<DeviceRecord> {
    if (this.#devices.has(d.thing)) throw new CoordinatorError('COORD_ERR_DEVICE_EXISTS', `device ${d.thing} is already registered`);
    const record: DeviceRecord = {
      thing: d.thing,
      profile: d.profile ?? null,
      attributes: { ...(d.attributes ?? {}) },
      certFingerprint: d.certFingerprint ?? null,
      certNotAfter: d.certNotAfter ?? null,
      passwordHash: d.passwordHash ?? null,
      createdAt: new Date().toISOString(),
      lastSeen: null,
      connected: false,
      revokedAt: null,
    };
    this.#remember(record);
    try {
      await this.#store.writer.write(() => {
        this.#sql.insert.run(record.thing, record.profile, JSON.stringify(record.attributes), record.certFingerprint, record.certNotAfter, record.passwordHash, record.createdAt);
      });
    } catch (err) {
      this.#devices.delete(record.thing);
      if (record.certFingerprint) this.#byFingerprint.delete(record.certFingerprint);
      throw err;
    }
    return record;
  }

  /** Changes a device's profile, attributes, certificate or password; resolves once durable. */
  async update(thing: string, patch: Partial<Pick<DeviceRecord, 'profile' | 'attributes' | 'certFingerprint' | 'certNotAfter' | 'passwordHash'>>): Promise<DeviceRecord> {
    const cur = this.#require(thing);
    const next: DeviceRecord = { ...cur, ...patch };
    await this.#write(next);
    return next;
  }

  /** Revokes a device: its certificate and password are refused from now on; resolves once durable. */
  async revoke(thing: string): Promise<DeviceRecord> {
    const cur = this.#require(thing);
    if (cur.revokedAt) return cur;
    const next: DeviceRecord = { ...cur, revokedAt: new Date().toISOString() };
    await this.#write(next);
    this.emit('revoked', thing);
    return next;
  }

  /** Records a connect or disconnect of a registered device (unknown things are ignored). */
  async presence(thing: string, connected: boolean): Promise<void> {
    const cur = this.#devices.get(thing);
    if (!cur) return;
    const next: DeviceRecord = { ...cur, connected, lastSeen: new Date().toISOString() };
    this.#remember(next);
    await this.#store.writer.write(() => void this.#sql.presence.run(connected ? 1 : 0, next.lastSeen, thing));
  }

  #require(thing: string): DeviceRecord {
    const cur = this.#devices.get(thing);
    if (!cur) throw new CoordinatorError('COORD_ERR_DEVICE_UNKNOWN', `no device named ${thing} is registered`);
    return cur;
  }

  async #write(next: DeviceRecord): Promise<void> {
    const prev = this.#devices.get(next.thing)!;
    this.#remember(next);
    try {
      await this.#store.writer.write(() => {
        this.#sql.update.run(next.profile, JSON.stringify(next.attributes), next.certFingerprint, next.certNotAfter, next.passwordHash, next.revokedAt, next.thing);
      });
    } catch (err) {
      this.#remember(prev);
      throw err;
    }
  }
}
