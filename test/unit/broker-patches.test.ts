/**
 * The start-time check of the broker's patches (src/broker/patches.ts): every patch holds on the
 * installed, pinned modules, and a broker instance whose internals do not have the expected shape is
 * refused with COORD_ERR_BROKER_PATCH_FAILED naming the patch. The refusal of the real CLI with a
 * module double is test/e2e/broker-patches.test.ts.
 */
import { createRequire } from 'node:module';
import { Aedes } from 'aedes';
import { describe, expect, it } from 'vitest';
import { applyBrokerPatches, instancePatches, patchProblems, STATIC_PATCHES, verifyBrokerInstance } from '../../src/broker/patches.js';
import { CoordinatorError } from '../../src/errors.js';

const fromAedes = createRequire(createRequire(import.meta.url).resolve('aedes'));

function refusal(fn: () => void): CoordinatorError {
  try {
    fn();
  } catch (err) {
    return err as CoordinatorError;
  }
  throw new Error('no refusal');
}

describe('broker patches', () => {
  it('apply and pass every static check on the installed modules', () => {
    expect(() => applyBrokerPatches()).not.toThrow();
    expect(patchProblems(STATIC_PATCHES)).toEqual([]);
    expect(STATIC_PATCHES.map((p) => p.name)).toEqual([
      'aedes version',
      'mqtt-packet version',
      'aedes-persistence version',
      'mqtt-packet.writeToStream',
      'mqtt-packet.cacheNumbers',
      'aedes-persistence.asyncPersistence',
      'aedes client._will',
      'aedes client._disconnected',
      'aedes client.deliverQoS',
    ]);
    expect((fromAedes('mqtt-packet/writeToStream.js') as { cacheNumbers: boolean }).cacheNumbers).toBe(false);
  });

  it('a writer replaced behind the check is reported, naming the patch', () => {
    applyBrokerPatches();
    const mqttPacket = fromAedes('mqtt-packet') as { writeToStream: unknown };
    const ours = mqttPacket.writeToStream;
    mqttPacket.writeToStream = fromAedes('mqtt-packet/writeToStream.js');
    try {
      expect(patchProblems(STATIC_PATCHES)).toEqual([expect.stringMatching(/^mqtt-packet\.writeToStream: aedes' mqtt-packet\.writeToStream is not the coordinator's writer/)]);
    } finally {
      mqttPacket.writeToStream = ours;
    }
  });

  it('a check that throws counts as failed, with its error', () => {
    expect(patchProblems([{ name: 'x', check: () => { throw new Error('boom'); } }])).toEqual(['x: boom']);
  });

  it('pass on a real aedes whose publish the broker replaced', async () => {
    const broker = new Aedes();
    const publish = (): void => undefined;
    (broker as unknown as { publish: unknown }).publish = publish;
    expect(patchProblems(instancePatches(broker, publish))).toEqual([]);
    expect(() => verifyBrokerInstance(broker, publish)).not.toThrow();
    await new Promise((resolve) => setImmediate(resolve)); // the probe's unsubscribe lands
    expect((broker as unknown as { mq: { _matcher: { match(t: string): unknown[] } } }).mq._matcher.match('$coordinator/patch-check')).toEqual([]);
  });

  it('refuse an instance without the internals, naming each patch', () => {
    const broker = new Aedes();
    const internals = broker as unknown as Record<string, unknown>;
    internals.mq = {};
    internals.counter = undefined;
    const err = refusal(() => verifyBrokerInstance(broker, () => undefined));
    expect(err).toBeInstanceOf(CoordinatorError);
    expect(err.code).toBe('COORD_ERR_BROKER_PATCH_FAILED');
    expect(err.message).toContain('aedes.mq._matcher: aedes.mq._matcher.match is not a function');
    expect(err.message).toContain('aedes.counter: aedes.counter is not a number');
    expect(err.message).toContain("aedes.publish: aedes.publish is not the coordinator's wrapper");
    expect(err.message).not.toContain('aedes.clients');
  });

  it('refuse a matcher that does not see subscriptions', () => {
    const broker = new Aedes();
    // mqemitter still keeps its handlers in this trie, but match no longer reports them.
    const mq = (broker as unknown as { mq: { _matcher: object } }).mq;
    mq._matcher = Object.assign(Object.create(mq._matcher) as object, { match: () => [] });
    expect(patchProblems(instancePatches(broker, (broker as unknown as { publish: unknown }).publish))).toEqual(['aedes.mq._matcher: aedes.mq._matcher.match does not return the handlers aedes.subscribe added']);
  });
});
