/**
 * Malformed shadow requests over MQTT: each is rejected on /rejected with AWS's code, nothing is stored
 * and the coordinator keeps serving.
 */
import { describe, expect, it } from 'vitest';
import { connect, inbox } from '../helpers/mqtt.js';
import { runCli, startCoordinator } from '../helpers/process.js';

const deep = (levels: number): unknown => (levels === 0 ? 1 : { n: deep(levels - 1) });

/** [name, topic suffix after $aws/things/, payload, expected code] */
const CASES: [string, string, string | Buffer, number][] = [
  ['binary garbage', 'dev/shadow/update', Buffer.from([0x00, 0xff, 0xfe, 0x80, 0x81]), 415],
  ['truncated JSON', 'dev/shadow/update', '{"state":{"reported":', 400],
  ['empty payload on update', 'dev/shadow/update', '', 400],
  ['JSON string', 'dev/shadow/update', '"state"', 400],
  ['JSON number', 'dev/shadow/update', '42', 400],
  ['JSON array', 'dev/shadow/update', '[{"state":{}}]', 400],
  ['missing state', 'dev/shadow/update', '{"desired":{"a":1}}', 400],
  ['state null', 'dev/shadow/update', '{"state":null}', 400],
  ['state array', 'dev/shadow/update', '{"state":[]}', 400],
  ['state string', 'dev/shadow/update', '{"state":"on"}', 400],
  ['desired string', 'dev/shadow/update', '{"state":{"desired":"on"}}', 400],
  ['reported array', 'dev/shadow/update', '{"state":{"reported":[1,2]}}', 400],
  ['unknown state node', 'dev/shadow/update', '{"state":{"delta":{"a":1}}}', 400],
  ['7 levels deep', 'dev/shadow/update', JSON.stringify({ state: { reported: deep(7) } }), 400],
  ['version string', 'dev/shadow/update', '{"state":{"reported":{"a":1}},"version":"1"}', 400],
  ['version negative', 'dev/shadow/update', '{"state":{"reported":{"a":1}},"version":-4}', 400],
  ['version fractional', 'dev/shadow/update', '{"state":{"reported":{"a":1}},"version":0.5}', 400],
  ['clientToken 65 bytes', 'dev/shadow/update', JSON.stringify({ state: { reported: { a: 1 } }, clientToken: 't'.repeat(65) }), 400],
  ['clientToken object', 'dev/shadow/update', '{"state":{"reported":{"a":1}},"clientToken":{}}', 400],
  ['state over 8 KB', 'dev/shadow/update', JSON.stringify({ state: { reported: { blob: 'x'.repeat(9000) } } }), 413],
  ['payload of 100 KB', 'dev/shadow/update', Buffer.alloc(100 * 1024, 0x7b), 413],
  ['stale version on a new shadow', 'dev/shadow/update', '{"state":{"reported":{"a":1}},"version":3}', 409],
  ['thing name with $', 'bad$thing/shadow/update', '{"state":{"reported":{"a":1}}}', 400],
  ['thing name of 129 bytes', `${'t'.repeat(129)}/shadow/update`, '{"state":{"reported":{"a":1}}}', 400],
  ['shadow name of 65 bytes', `dev/shadow/name/${'s'.repeat(65)}/update`, '{"state":{"reported":{"a":1}}}', 400],
  ['shadow name with a dot', 'dev/shadow/name/my.shadow/update', '{"state":{"reported":{"a":1}}}', 400],
  ['get with garbage', 'dev/shadow/get', 'not json', 400],
  ['get of a missing shadow', 'dev/shadow/get', '{}', 404],
  ['get of a missing named shadow', 'dev/shadow/name/cfg/get', '', 404],
  ['delete of a missing shadow', 'dev/shadow/delete', '', 404],
  ['delete with a bad clientToken', 'dev/shadow/delete', JSON.stringify({ clientToken: 'x'.repeat(80) }), 400],
];

describe('shadow bad input', () => {
  it(`rejects ${CASES.length} malformed requests with the right code, stores nothing, stays up`, async () => {
    const c = await startCoordinator();
    const client = await connect(c.url, { clientId: 'fuzzer' });
    const box = inbox(client);
    await client.subscribeAsync('$aws/things/+/shadow/+/rejected', { qos: 1 });
    await client.subscribeAsync('$aws/things/+/shadow/name/+/+/rejected', { qos: 1 });
    await client.subscribeAsync('$aws/things/+/shadow/+/accepted', { qos: 1 });
    for (const [name, suffix, payload, code] of CASES) {
      const topic = `$aws/things/${suffix}`;
      await client.publishAsync(topic, payload, { qos: 1 });
      const answer = await box.next((t) => t === `${topic}/rejected` || t === `${topic}/accepted`);
      expect(answer.topic, name).toBe(`${topic}/rejected`);
      expect((JSON.parse(answer.payload.toString()) as { code: number }).code, name).toBe(code);
    }
    // Nothing was stored, and the process still serves a valid request.
    const list = await runCli(['shadow', 'list', '--data-dir', c.dataDir]);
    expect(list.stdout).toBe('');
    await client.publishAsync('$aws/things/dev/shadow/update', '{"state":{"reported":{"ok":true}}}', { qos: 1 });
    await box.next((t) => t === '$aws/things/dev/shadow/update/accepted');
    expect(c.proc.exitCode).toBeNull();
    await c.stop();
  });
});
