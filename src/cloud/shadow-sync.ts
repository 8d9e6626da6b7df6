/**
 * Shadow sync between the gateway and the cloud (issue 7): the coordinator's own `deployment` shadow
 * always, plus configured (thing, shadow) pairs, each with a direction.
 *
 * Which section flows where:
 * - `both` (the deployment shadow): desired both ways, reported gateway → cloud;
 * - `device-to-cloud`: desired and reported gateway → cloud;
 * - `cloud-to-device`: desired and reported cloud → gateway.
 *
 * Live, every accepted change on one side is sent to the other as the same patch. On every (re)connect
 * the pair is reconciled from the versions last seen in sync on each side (stored, so it survives
 * restarts): a side whose version moved has changed. Conflicts — both sides changed while apart — follow
 * two rules: **desired: the cloud wins; reported: the gateway wins**. Deletes travel like changes. The
 * sync's own writes carry a SYNC_TOKEN clientToken and are not sent back, and a section already equal on
 * both sides is not written at all, so with both sides idle versions stop moving.
 */
import type { MqttClient } from 'mqtt';
import type { Statement } from 'better-sqlite3';
import type { Logger } from '../log/logger.js';
import type { JsonObject } from '../shadow/document.js';
import type { ShadowId, ShadowService } from '../shadow/service.js';
import type { Store } from '../store/database.js';
import { CloudShadows, SYNC_TOKEN, type CloudDocument } from './cloud-shadows.js';
import { replacePatch } from './merge-patch.js';

/** How a synced shadow's sections flow. */
export type SyncDirection = 'both' | 'device-to-cloud' | 'cloud-to-device';

/** One synced shadow. */
export interface SyncedShadow {
  readonly thing: string;
  readonly name?: string | undefined;
  readonly direction: SyncDirection;
}

type Section = 'desired' | 'reported';

/** Whether `section` flows from the gateway to the cloud (up) or the other way (down) for `dir`. */
function flows(dir: SyncDirection, section: Section, way: 'up' | 'down'): boolean {
  if (dir === 'device-to-cloud') return way === 'up';
  if (dir === 'cloud-to-device') return way === 'down';
  return section === 'desired' || way === 'up';
}

const keyOf = (id: ShadowId): string => `${id.thing}\u0000${id.name ?? ''}`;

interface Versions {
  local: number;
  cloud: number;
}

/** Counters for `coordinator cloud status`. */
export interface SyncStats {
  up: number;
  down: number;
  reconciled: number;
  conflicts: number;
  errors: number;
}

/** The shadow sync of one cloud link. */
export class ShadowSync {
  readonly #shadows: ShadowService;
  readonly #cloud: CloudShadows;
  readonly #log: Logger;
  readonly #pairs = new Map<string, SyncedShadow>();
  readonly #versions = new Map<string, Versions>();
  readonly #sql: { load: Statement; save: Statement };
  readonly #store: Store;
  #client: MqttClient | undefined;
  /** One operation at a time per shadow, in order: a reconcile and live changes never interleave. */
  readonly #chains = new Map<string, Promise<void>>();
  readonly stats: SyncStats = { up: 0, down: 0, reconciled: 0, conflicts: 0, errors: 0 };
  readonly #onAccepted = (id: ShadowId, payload: Record<string, unknown>): void => this.#localChanged(id, payload);
  readonly #onDeleted = (id: ShadowId, payload: Record<string, unknown>): void => this.#localDeleted(id, payload);

  constructor(deps: { shadows: ShadowService; cloud: CloudShadows; store: Store; log: Logger; pairs: readonly SyncedShadow[] }) {
    this.#shadows = deps.shadows;
    this.#cloud = deps.cloud;
    this.#log = deps.log;
    this.#store = deps.store;
    for (const p of deps.pairs) this.#pairs.set(keyOf(p), p);
    this.#sql = {
      load: deps.store.db.prepare('SELECT thing, name, local_version, cloud_version FROM cloud_sync'),
      save: deps.store.db.prepare(
        'INSERT INTO cloud_sync (thing, name, local_version, cloud_version) VALUES (?, ?, ?, ?) ON CONFLICT (thing, name) DO UPDATE SET local_version = excluded.local_version, cloud_version = excluded.cloud_version',
      ),
    };
    for (const r of this.#sql.load.all() as { thing: string; name: string; local_version: number; cloud_version: number }[]) {
      this.#versions.set(keyOf({ thing: r.thing, name: r.name || undefined }), { local: r.local_version, cloud: r.cloud_version });
    }
    deps.cloud.on('documents', (id, payload) => this.#cloudChanged(id, payload));
    deps.cloud.on('deleted', (id, payload) => this.#cloudDeleted(id, payload));
  }

  /** The synced shadows. */
  get pairs(): SyncedShadow[] {
    return [...this.#pairs.values()];
  }

  /** The topics to subscribe to upstream. */
  topics(): string[] {
    return this.pairs.flatMap((p) => CloudShadows.topicsFor(p));
  }

  start(): void {
    this.#shadows.on('accepted', this.#onAccepted);
    this.#shadows.on('deleted', this.#onDeleted);
  }

  stop(): void {
    this.#shadows.off('accepted', this.#onAccepted);
    this.#shadows.off('deleted', this.#onDeleted);
    this.#client = undefined;
  }

  /** The link is up: reconcile every pair, then follow live changes. */
  async connected(client: MqttClient): Promise<void> {
    this.#client = client;
    await Promise.all(this.pairs.map((p) => this.#serial(p, () => this.#reconcile(p))));
  }

  /** The link is down: live changes wait for the reconcile of the next connection. */
  disconnected(): void {
    this.#client = undefined;
  }

  #serial(id: ShadowId, fn: () => Promise<void>): Promise<void> {
    const k = keyOf(id);
    const run = (this.#chains.get(k) ?? Promise.resolve()).then(fn).catch((err: unknown) => {
      this.stats.errors++;
      // The next reconnect reconciles from the stored versions: nothing is lost by giving up here.
      this.#log.warn({ err, code: (err as { code?: string }).code ?? 'COORD_ERR_CLOUD_SYNC', thing: id.thing, shadow: id.name }, 'shadow sync step failed; the next reconcile catches up');
    });
    this.#chains.set(k, run);
    return run;
  }

  async #saveVersions(id: ShadowId, v: Versions): Promise<void> {
    this.#versions.set(keyOf(id), v);
    await this.#store.writer.write(() => void this.#sql.save.run(id.thing, id.name ?? '', v.local, v.cloud));
  }

  #localVersion(id: ShadowId): number {
    return this.#shadows.document(id)?.version ?? 0;
  }

  /** Applies `state` locally as the sync (its token keeps it from being sent back); returns the new version. */
  async #applyLocal(id: ShadowId, state: { desired?: unknown; reported?: unknown }): Promise<number> {
    const result = await this.#shadows.update(id, { state: state as { desired?: JsonObject | null; reported?: JsonObject | null }, clientToken: `${SYNC_TOKEN}local` });
    return result.document.version;
  }

  async #reconcile(p: SyncedShadow): Promise<void> {
    const client = this.#client;
    if (!client) return;
    const last = this.#versions.get(keyOf(p)) ?? { local: 0, cloud: 0 };
    const local = this.#shadows.document(p);
    const cloud = await this.#cloud.get(client, p);
    const localVersion = local?.version ?? this.#localVersion(p);
    const cloudVersion = cloud?.version ?? last.cloud;
    const localChanged = localVersion !== last.local;
    const cloudChanged = cloud === undefined ? last.cloud !== 0 : cloud.version !== last.cloud;
    if (localChanged && cloudChanged) this.stats.conflicts++;

    const up: Record<string, unknown> = {};
    const down: Record<string, unknown> = {};
    for (const section of ['desired', 'reported'] as const) {
      const l = local?.state[section];
      const c = cloud?.state[section];
      // Who wins a section both sides changed: the cloud for desired, the gateway for reported.
      const preferUp = section === 'reported' ? localChanged : localChanged && !cloudChanged;
      const preferDown = section === 'desired' ? cloudChanged : cloudChanged && !localChanged;
      if (preferUp && flows(p.direction, section, 'up')) {
        const patch = replacePatch(c, l);
        if (patch !== undefined) up[section] = patch;
      } else if (preferDown && flows(p.direction, section, 'down')) {
        const patch = replacePatch(l, c);
        if (patch !== undefined) down[section] = patch;
      }
    }
    let lv = localVersion;
    let cv = cloud?.version ?? 0;
    if (Object.keys(down).length > 0) {
      lv = await this.#applyLocal(p, down);
      this.stats.down++;
    }
    if (Object.keys(up).length > 0) {
      const accepted = await this.#cloud.update(client, p, up);
      cv = Number(accepted.version);
      this.stats.up++;
    }
    this.stats.reconciled++;
    if (Object.keys(up).length + Object.keys(down).length > 0) {
      this.#log.info({ thing: p.thing, shadow: p.name, up: Object.keys(up), down: Object.keys(down), localChanged, cloudChanged }, 'shadow reconciled with the cloud');
    }
    await this.#saveVersions(p, { local: lv, cloud: cv || cloudVersion });
  }

  #localChanged(id: ShadowId, payload: Record<string, unknown>): void {
    const p = this.#pairs.get(keyOf(id));
    if (!p || !this.#client) return;
    if (typeof payload.clientToken === 'string' && payload.clientToken.startsWith(SYNC_TOKEN)) return;
    const state = (payload.state ?? {}) as Record<Section, unknown>;
    const version = Number(payload.version);
    void this.#serial(p, async () => {
      const client = this.#client;
      if (!client) return;
      const up: Record<string, unknown> = {};
      for (const section of ['desired', 'reported'] as const) if (state[section] !== undefined && flows(p.direction, section, 'up')) up[section] = state[section];
      const last = this.#versions.get(keyOf(p)) ?? { local: 0, cloud: 0 };
      if (Object.keys(up).length === 0) {
        await this.#saveVersions(p, { ...last, local: version });
        return;
      }
      const accepted = await this.#cloud.update(client, p, up);
      this.stats.up++;
      await this.#saveVersions(p, { local: version, cloud: Number(accepted.version) });
    });
  }

  #localDeleted(id: ShadowId, payload: Record<string, unknown>): void {
    const p = this.#pairs.get(keyOf(id));
    if (!p || !this.#client || p.direction === 'cloud-to-device') return;
    if (typeof payload.clientToken === 'string' && payload.clientToken.startsWith(SYNC_TOKEN)) return;
    void this.#serial(p, async () => {
      const client = this.#client;
      if (!client) return;
      const accepted = await this.#cloud.delete(client, p).catch((err: { details?: { status?: number } }) => {
        if (err.details?.status === 404) return { version: 0 };
        throw err;
      });
      this.stats.up++;
      await this.#saveVersions(p, { local: Number(payload.version), cloud: Number(accepted.version) });
    });
  }

  #cloudChanged(id: ShadowId, payload: { previous?: CloudDocument; current?: CloudDocument; clientToken?: string }): void {
    const p = this.#pairs.get(keyOf(id));
    if (!p || !payload.current) return;
    const current = payload.current;
    if (typeof payload.clientToken === 'string' && payload.clientToken.startsWith(SYNC_TOKEN)) return;
    void this.#serial(p, async () => {
      const down: Record<string, unknown> = {};
      const local = this.#shadows.document(p);
      for (const section of ['desired', 'reported'] as const) {
        if (!flows(p.direction, section, 'down')) continue;
        const patch = replacePatch(local?.state[section], current.state[section]);
        if (patch !== undefined) down[section] = patch;
      }
      const last = this.#versions.get(keyOf(p)) ?? { local: 0, cloud: 0 };
      // Local changes not yet sent (made while apart) keep the old mark, so the reconcile still sends them.
      const dirty = this.#localVersion(p) !== last.local;
      let lv = last.local;
      if (Object.keys(down).length > 0) {
        lv = await this.#applyLocal(p, down);
        this.stats.down++;
      }
      await this.#saveVersions(p, { local: dirty ? last.local : lv, cloud: current.version });
    });
  }

  #cloudDeleted(id: ShadowId, payload: { version?: number; clientToken?: string }): void {
    const p = this.#pairs.get(keyOf(id));
    if (!p || p.direction === 'device-to-cloud') return;
    if (typeof payload.clientToken === 'string' && payload.clientToken.startsWith(SYNC_TOKEN)) return;
    void this.#serial(p, async () => {
      if (this.#shadows.document(p)) {
        await this.#shadows.delete(p, `${SYNC_TOKEN}local`);
        this.stats.down++;
      }
      await this.#saveVersions(p, { local: this.#localVersion(p), cloud: Number(payload.version ?? 0) });
    });
  }
}
