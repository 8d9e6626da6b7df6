/**
 * Every place the broker reaches into the internals of aedes, mqtt-packet or aedes-persistence, each with
 * a check that it took effect; the broker refuses to start with COORD_ERR_BROKER_PATCH_FAILED, naming the
 * patch, when one does not hold (issue 14, docs/broker.md "Patched dependencies").
 *
 * Several durability guarantees rest on these touches: the PUBACK gate (./puback-gate.ts) exists only as
 * a replacement of mqtt-packet's writeToStream, so an upgrade that made the replacement not stick would
 * silently send PUBACKs before messages are durable, and every test that does not crash the process would
 * still pass. The three packages are therefore pinned to exact versions in package.json, and start-up
 * checks (before any listener binds) that the versions loaded are those, that each patch is in place
 * (identity checks where a value can be compared) and, for touches that only exist on a connected
 * client, that aedes' source still has the shape they rely on.
 *
 * The touches, and where they are made:
 * - mqtt-packet.writeToStream: ./packet-writer.ts (one buffer per PUBLISH/PUBACK), ./puback-gate.ts,
 *   ./write-batching.ts replace the writer of the mqtt-packet instance aedes loaded.
 * - mqtt-packet.cacheNumbers: ./packet-writer.ts turns off the writer's number cache.
 * - aedes-persistence.asyncPersistence: ./persistence.ts subclasses MemoryPersistence and calls the
 *   methods it overrides on it (no private fields); its SQL mirrors MemoryPersistence#outgoingUpdate.
 * - aedes client._will (./auth.ts), client._disconnected (./presence.ts), client.deliverQoS (./broker.ts,
 *   ResumeGuard): per-connection fields, checked in aedes' source.
 * - aedes.mq._matcher, aedes.counter (with aedes-packet's brokerCounter), aedes.clients, aedes.publish
 *   (./broker.ts): checked on the broker instance, by verifyBrokerInstance.
 * aedes-packet and mqemitter are aedes' own dependencies (not pinned by us): what we rely on of them is
 * checked by behaviour (aedes.counter, aedes.mq._matcher).
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import type { Aedes } from 'aedes';
import { CoordinatorError } from '../errors.js';
import { AEDES_ENTRY, packageOf, requireFromAedes, resolveFromAedes } from './aedes-modules.js';
import { packetWriterState, uncachePacketNumbers } from './packet-writer.js';
import { DurablePersistence } from './persistence.js';
import { installPubackGate } from './puback-gate.js';
import { installWriteBatching } from './write-batching.js';

/** One internal touch: its name (the refusal names it) and a check that returns what does not hold. */
export interface PatchCheck {
  readonly name: string;
  readonly check: () => string | undefined;
}

/** The coordinator's own resolution (./persistence.ts imports aedes-persistence this way). */
const ownRequire = createRequire(import.meta.url);
/** Same directory in src/ and dist/: package.json is two levels up from both. */
const PACKAGE_JSON = new URL('../../package.json', import.meta.url);

/** The versions our package.json pins, read once. */
let pinned: Record<string, string> | undefined;
function pinnedVersion(name: string): string | undefined {
  pinned ??= (JSON.parse(readFileSync(PACKAGE_JSON, 'utf8')) as { dependencies?: Record<string, string> }).dependencies ?? {};
  return pinned[name];
}

/**
 * The package as loaded must be the exact version package.json pins: every patch here was written
 * against that version's internals, and the checks below cannot see everything (e.g. the order of
 * aedes' CONNECT steps), so any other version is refused rather than trusted.
 */
function versionCheck(name: string, entry: () => string): PatchCheck {
  return {
    name: `${name} version`,
    check() {
      const want = pinnedVersion(name);
      if (want === undefined || !/^\d+\.\d+\.\d+$/.test(want)) return `package.json must pin an exact version (found ${want ?? 'none'})`;
      const { version, root } = packageOf(name, entry());
      return version === want ? undefined : `${version ?? 'no version'} is installed (${root}), package.json pins ${want}: the patches were written for that version`;
    },
  };
}

/** The text of a file of aedes as loaded. */
function aedesSource(file: string): string {
  return readFileSync(join(packageOf('aedes', AEDES_ENTRY).root, file), 'utf8');
}

/**
 * For touches only a connected client has: the assignment they rely on is still in aedes' source. Cheap
 * (a few small files, read once per process) and, with the version check, enough to catch a change.
 */
function sourceHas(file: string, pattern: RegExp, what: string): string | undefined {
  return pattern.test(aedesSource(file)) ? undefined : `aedes ${file} no longer ${what}`;
}

/** Methods of DurablePersistence that are its own, not overrides of MemoryPersistence's. */
const PERSISTENCE_EXTENSIONS = new Set(['constructor', 'droppedMessages', 'takeOrphanedWills', 'forgetOrphanedWill']);

/** Checks that need no broker instance: run by applyBrokerPatches once the patches are applied. */
export const STATIC_PATCHES: readonly PatchCheck[] = [
  versionCheck('aedes', () => AEDES_ENTRY),
  versionCheck('mqtt-packet', () => resolveFromAedes('mqtt-packet')),
  versionCheck('aedes-persistence', () => ownRequire.resolve('aedes-persistence/asyncPersistence.js')),
  {
    // The PUBACK gate's durability and write batching exist only through this replacement.
    name: 'mqtt-packet.writeToStream',
    check() {
      const { outermost } = packetWriterState();
      if (outermost === undefined) return 'the coordinator writer was never installed';
      // Identity: the module object aedes imports must hold our outermost layer now (a read-only or
      // accessor property could have swallowed the assignment).
      if (requireFromAedes<{ writeToStream: unknown }>('mqtt-packet').writeToStream !== outermost) {
        return "aedes' mqtt-packet.writeToStream is not the coordinator's writer (the replacement did not take effect): PUBACKs would leave before their message is durable";
      }
      // And aedes must look it up on that object at every write: a binding imported by name would keep
      // mqtt-packet's own writer whatever the object holds.
      const write = aedesSource('lib/write.js');
      const imported = /import\s+(\w+)\s+from\s+['"]mqtt-packet['"]/.exec(write)?.[1];
      if (imported === undefined || !write.includes(`${imported}.writeToStream(`)) {
        return "aedes lib/write.js no longer calls writeToStream on mqtt-packet's module object";
      }
      return undefined;
    },
  },
  {
    // 6–7 MiB of heap per process otherwise (./packet-writer.ts uncachePacketNumbers).
    name: 'mqtt-packet.cacheNumbers',
    check() {
      const writer = requireFromAedes<{ cacheNumbers?: unknown }>('mqtt-packet/writeToStream.js');
      if (writer.cacheNumbers !== false) return `mqtt-packet/writeToStream.js has cacheNumbers ${String(writer.cacheNumbers)}, not false`;
      // The module whose cache is off must be the writer aedes' mqtt-packet actually ends in.
      if (packetWriterState().underlying !== writer) return "mqtt-packet/writeToStream.js is not the writer aedes' mqtt-packet exports";
      return undefined;
    },
  },
  {
    // Everything durable goes through DurablePersistence's overrides, each of which calls MemoryPersistence's.
    name: 'aedes-persistence.asyncPersistence',
    check() {
      const base = ownRequire('aedes-persistence/asyncPersistence.js') as { prototype?: Record<string, unknown> };
      if (Object.getPrototypeOf(DurablePersistence) !== base) return 'DurablePersistence does not extend the aedes-persistence/asyncPersistence.js that is installed';
      const overrides = Object.getOwnPropertyNames(DurablePersistence.prototype).filter((m) => !PERSISTENCE_EXTENSIONS.has(m));
      const missing = overrides.filter((m) => typeof base.prototype?.[m] !== 'function');
      return missing.length === 0 ? undefined : `MemoryPersistence no longer has ${missing.join(', ')}, which DurablePersistence overrides and calls`;
    },
  },
  {
    // ./auth.ts reads the will at authenticate to refuse a will topic or payload the client may not publish.
    name: 'aedes client._will',
    check: () => sourceHas('lib/handlers/connect.js', /\bclient\._will\s*=\s*packet\.will\b/, 'sets client._will from the CONNECT packet'),
  },
  {
    // ./presence.ts tells a DISCONNECT from a lost connection by it.
    name: 'aedes client._disconnected',
    check: () => sourceHas('lib/handlers/index.js', /\bclient\._disconnected\s*=\s*true\b/, 'sets client._disconnected on DISCONNECT'),
  },
  {
    // ./broker.ts ResumeGuard replaces a client's deliverQoS at authenticate, before its subscriptions
    // are restored: it must be a per-client property that subscriptions read when they are made.
    name: 'aedes client.deliverQoS',
    check: () =>
      sourceHas('lib/client.js', /\bthis\.deliverQoS\s*=\s*function\b/, 'gives each client its own deliverQoS') ??
      sourceHas('lib/handlers/subscribe.js', /\bclient\.deliverQoS\b/, 'delivers subscriptions through client.deliverQoS'),
  },
];

/** Runs `checks`; a check that throws counts as failed, with its error. */
export function patchProblems(checks: readonly PatchCheck[]): string[] {
  const problems: string[] = [];
  for (const { name, check } of checks) {
    try {
      const problem = check();
      if (problem !== undefined) problems.push(`${name}: ${problem}`);
    } catch (err) {
      problems.push(`${name}: ${(err as Error).message}`);
    }
  }
  return problems;
}

function refuse(problems: readonly string[]): void {
  if (problems.length === 0) return;
  throw new CoordinatorError(
    'COORD_ERR_BROKER_PATCH_FAILED',
    `refusing to start: ${problems.join('; ')} (install the exact versions package.json pins: npm install)`,
  );
}

let staticChecksPassed = false;

/**
 * Applies the patches that need no broker instance (mqtt-packet's writer and number cache) and checks
 * every static patch; throws COORD_ERR_BROKER_PATCH_FAILED naming each one that does not hold. Called
 * by startBroker before anything else starts. Once passed, later brokers of the process skip the checks.
 */
export function applyBrokerPatches(): void {
  const problems: string[] = [];
  const failed = new Set<string>();
  const attempt = (name: string, apply: () => void): void => {
    try {
      apply();
    } catch (err) {
      // e.g. a read-only property: strict-mode assignment throws rather than being ignored.
      problems.push(`${name}: could not be applied: ${(err as Error).message}`);
      failed.add(name);
    }
  };
  attempt('mqtt-packet.writeToStream', () => {
    installPubackGate();
    // One socket write per connection per event-loop turn (./write-batching.ts).
    installWriteBatching();
  });
  attempt('mqtt-packet.cacheNumbers', uncachePacketNumbers);
  if (staticChecksPassed && problems.length === 0) return;
  problems.push(...patchProblems(STATIC_PATCHES.filter((p) => !failed.has(p.name))));
  refuse(problems);
  staticChecksPassed = true;
}

type PacketCtor = new (packet: { cmd: string; topic: string }, broker: { id: string; counter: number }) => { brokerCounter: number };

/** Checks on the broker instance, made by startBroker before persistence is set up or a listener binds. */
export function instancePatches(aedes: Aedes, publish: unknown): PatchCheck[] {
  const internals = aedes as unknown as { mq?: { _matcher?: { match?: unknown } }; counter?: unknown; clients?: unknown; publish?: unknown };
  return [
    {
      // hasSubscribers asks it before building a payload: a matcher that stopped seeing subscriptions
      // would make publishers skip messages someone is waiting for.
      name: 'aedes.mq._matcher',
      check() {
        const matcher = internals.mq?._matcher;
        if (typeof matcher?.match !== 'function') return 'aedes.mq._matcher.match is not a function';
        const topic = '$coordinator/patch-check';
        const handler = (_packet: unknown, cb: () => void): void => cb();
        aedes.subscribe(topic, handler, () => undefined);
        try {
          const found = (matcher.match as (topic: string) => unknown).call(matcher, topic);
          if (!Array.isArray(found) || !found.includes(handler)) return 'aedes.mq._matcher.match does not return the handlers aedes.subscribe added';
        } finally {
          aedes.unsubscribe(topic, handler, () => undefined);
        }
        return undefined;
      },
    },
    {
      // ./broker.ts tells whether aedes accepted a publish by the broker counter aedes-packet stamps
      // synchronously (++broker.counter): its PUBACK bookkeeping is keyed by it.
      name: 'aedes.counter',
      check() {
        if (typeof internals.counter !== 'number') return 'aedes.counter is not a number';
        const Packet = requireFromAedes<PacketCtor>('aedes-packet');
        const broker = { id: 'patch-check', counter: 41 };
        const packet = new Packet({ cmd: 'publish', topic: 'patch-check' }, broker);
        return packet.brokerCounter === 42 && broker.counter === 42 ? undefined : 'aedes-packet no longer stamps a packet with ++broker.counter';
      },
    },
    {
      // Takeovers, shadow access and status read connected clients from it.
      name: 'aedes.clients',
      check: () => (typeof internals.clients === 'object' && internals.clients !== null ? undefined : 'aedes.clients is not an object'),
    },
    {
      // The durable-acknowledgement bookkeeping of every publish (./broker.ts).
      name: 'aedes.publish',
      check: () => (internals.publish === publish ? undefined : "aedes.publish is not the coordinator's wrapper"),
    },
  ];
}

/** Throws COORD_ERR_BROKER_PATCH_FAILED naming every instance patch of `aedes` that does not hold. */
export function verifyBrokerInstance(aedes: Aedes, publish: unknown): void {
  refuse(patchProblems(instancePatches(aedes, publish)));
}
