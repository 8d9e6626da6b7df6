/**
 * Shadow document rules, built from the AWS IoT developer guide's own examples (device-shadow-document,
 * device-shadow-data-flow, device-shadow-error-messages).
 */
import { describe, expect, it } from 'vitest';
import { acceptedJson, applyUpdate, computeDelta, getResponse, ShadowRequestError, type ShadowDocument, type UpdateRequest } from '../../src/shadow/document.js';
import { AWS_SHADOW_LIMITS, checkNames, parseSimpleRequest, parseUpdateRequest } from '../../src/shadow/request.js';

const T1 = 1700000001;
const T2 = 1700000002;
const T3 = 1700000003;

function update(current: ShadowDocument | undefined, request: UpdateRequest, now = T1, lastVersion = 0) {
  return applyUpdate(current, lastVersion, request, now);
}

describe('the data-flow example: a lightbulb that is red, asked to be green', () => {
  it('reported red → desired green → delta {color: green} → reported green → no delta', () => {
    const r1 = update(undefined, { state: { reported: { color: 'red' } } }, T1);
    expect(r1.document).toEqual({
      state: { reported: { color: 'red' } },
      metadata: { reported: { color: { timestamp: T1 } } },
      version: 1,
      timestamp: T1,
    });
    expect(r1.delta).toBeUndefined();
    expect(r1.documents).toEqual({ current: { state: { reported: { color: 'red' } }, metadata: { reported: { color: { timestamp: T1 } } }, version: 1 }, timestamp: T1 });

    const r2 = update(r1.document, { state: { desired: { color: 'green' } }, clientToken: 'app-1' }, T2);
    expect(r2.accepted).toEqual({
      state: { desired: { color: 'green' } },
      metadata: { desired: { color: { timestamp: T2 } } },
      version: 2,
      timestamp: T2,
      clientToken: 'app-1',
    });
    expect(r2.delta).toEqual({ state: { color: 'green' }, metadata: { color: { timestamp: T2 } }, version: 2, timestamp: T2, clientToken: 'app-1' });
    expect(r2.documents).toMatchObject({ previous: { version: 1 }, current: { version: 2 }, clientToken: 'app-1' });

    const r3 = update(r2.document, { state: { reported: { color: 'green' } } }, T3);
    expect(r3.document.state).toEqual({ desired: { color: 'green' }, reported: { color: 'green' } });
    expect(r3.document.version).toBe(3);
    expect(r3.delta).toBeUndefined();
    expect(getResponse(r3.document, T3)).not.toHaveProperty('state.delta');
  });
});

describe('delta', () => {
  it('keeps the full nested path of what differs, and only that (AWS document example)', () => {
    const desired = { lights: { color: 'RED' }, engine: 'ON' };
    const reported = { lights: { color: 'GREEN' }, engine: 'ON' };
    expect(computeDelta(desired, reported)).toEqual({ lights: { color: 'RED' } });
  });

  it('includes desired keys missing from reported, and nothing from reported alone', () => {
    expect(computeDelta({ a: 1, b: { c: 2 } }, { x: 9 })).toEqual({ a: 1, b: { c: 2 } });
    expect(computeDelta(undefined, { x: 9 })).toBeUndefined();
  });

  it('compares and copies arrays whole', () => {
    expect(computeDelta({ colors: ['RED', 'GREEN'] }, { colors: ['RED', 'GREEN'] })).toBeUndefined();
    expect(computeDelta({ colors: ['RED', 'GREEN'] }, { colors: ['GREEN', 'RED'] })).toEqual({ colors: ['RED', 'GREEN'] });
    expect(computeDelta({ grid: [[1, 2], [3]] }, { grid: [[1, 2], [3, 4]] })).toEqual({ grid: [[1, 2], [3]] });
  });

  it('treats a type change as a difference (object vs value)', () => {
    expect(computeDelta({ mode: { eco: true } }, { mode: 'eco' })).toEqual({ mode: { eco: true } });
  });

  it('is published only for updates that touch desired', () => {
    const start = update(undefined, { state: { desired: { target: 21 } } }, T1);
    expect(start.delta?.state).toEqual({ target: 21 });
    const report = update(start.document, { state: { reported: { temp: 19 } } }, T2);
    expect(report.delta).toBeUndefined();
  });
});

describe('partial updates, deletion and metadata', () => {
  const base = update(undefined, { state: { reported: { color: 'red', lamp: { brightness: 80, mode: 'warm' }, colors: ['RED', 'GREEN', 'BLUE'] } } }, T1).document;

  it('merges objects key by key and stamps only the leaves written', () => {
    const r = update(base, { state: { reported: { lamp: { brightness: 40 } } } }, T2);
    expect(r.document.state.reported).toEqual({ color: 'red', lamp: { brightness: 40, mode: 'warm' }, colors: ['RED', 'GREEN', 'BLUE'] });
    expect(r.document.metadata.reported).toEqual({
      color: { timestamp: T1 },
      lamp: { brightness: { timestamp: T2 }, mode: { timestamp: T1 } },
      colors: [{ timestamp: T1 }, { timestamp: T1 }, { timestamp: T1 }],
    });
  });

  it('replaces arrays whole (AWS: colors [RED, GREEN, BLUE] updated with [RED] becomes [RED])', () => {
    const r = update(base, { state: { reported: { colors: ['RED'] } } }, T2);
    expect(r.document.state.reported?.colors).toEqual(['RED']);
    expect(r.document.metadata.reported?.colors).toEqual([{ timestamp: T2 }]);
  });

  it('deletes a key with null, and drops objects left empty', () => {
    const r = update(base, { state: { reported: { color: null, lamp: { brightness: null, mode: null } } } }, T2);
    expect(r.document.state.reported).toEqual({ colors: ['RED', 'GREEN', 'BLUE'] });
    expect(r.document.metadata.reported).toEqual({ colors: [{ timestamp: T1 }, { timestamp: T1 }, { timestamp: T1 }] });
    expect(r.accepted).toMatchObject({ state: { reported: { color: null } }, metadata: { reported: { color: { timestamp: T2 } } } });
  });

  it('removes a whole section with desired: null / reported: null', () => {
    const withDesired = update(base, { state: { desired: { color: 'blue' } } }, T2).document;
    const r = update(withDesired, { state: { desired: null } }, T3);
    expect(r.document.state).toEqual({ reported: base.state.reported });
    expect(r.document.metadata).not.toHaveProperty('desired');
    const gone = update(r.document, { state: { reported: null } }, T3);
    expect(gone.document.state).toEqual({});
    expect(gone.document.version).toBe(base.version + 3);
  });

  it('an object value replaces a primitive and vice versa', () => {
    const r = update(base, { state: { reported: { color: { r: 255, g: 0, b: 0 } } } }, T2);
    expect(r.document.state.reported?.color).toEqual({ r: 255, g: 0, b: 0 });
    expect(r.document.metadata.reported?.color).toEqual({ r: { timestamp: T2 }, g: { timestamp: T2 }, b: { timestamp: T2 } });
  });

  it('keeps the metadata of a state key named "timestamp" when its object is merged into', () => {
    const first = update(undefined, { state: { reported: { sensor: { timestamp: 5 } } } }, T1).document;
    const r = update(first, { state: { reported: { sensor: { value: 7 } } } }, T2, 1);
    expect(r.document.state.reported).toEqual({ sensor: { timestamp: 5, value: 7 } });
    expect(r.document.metadata.reported).toEqual({ sensor: { timestamp: { timestamp: T1 }, value: { timestamp: T2 } } });
    const wanted = update(undefined, { state: { desired: { sensor: { timestamp: 5, value: 7 } }, reported: { sensor: { timestamp: 5 } } } }, T1);
    expect(wanted.delta).toMatchObject({ state: { sensor: { value: 7 } }, metadata: { sensor: { value: { timestamp: T1 } } } });
    expect((wanted.delta!.metadata as { sensor: object }).sensor).not.toHaveProperty('timestamp');
  });

  it('does not modify the document it was given', () => {
    const before = structuredClone(base);
    update(base, { state: { reported: { color: null, lamp: { mode: 'cold' } } } }, T2);
    expect(base).toEqual(before);
  });

  it('shares what an update did not touch with the previous document, and copies what it did', () => {
    const first = update(undefined, { state: { reported: { lamp: { mode: 'warm', lux: 300 }, room: { name: 'hall' } } } }).document;
    const before = structuredClone(first);
    const second = update(first, { state: { reported: { lamp: { lux: 500 } } } }, T2, 1);
    expect(first).toEqual(before);
    expect(second.document.state.reported).toEqual({ lamp: { mode: 'warm', lux: 500 }, room: { name: 'hall' } });
    expect(second.document.state.reported!.room).toBe(first.state.reported!.room);
    expect(second.document.metadata.reported!.room).toBe(first.metadata.reported!.room);
    expect(second.document.state.reported!.lamp).not.toBe(first.state.reported!.lamp);
    expect(second.documents).toMatchObject({ previous: { state: before.state, version: 1 }, current: { version: 2 } });
  });
});

describe('versions', () => {
  it('increments by one on every accepted update and rejects a stale version with 409', () => {
    const v1 = update(undefined, { state: { reported: { a: 1 } } }).document;
    const v2 = update(v1, { state: { reported: { a: 2 } }, version: 1 }).document;
    expect(v2.version).toBe(2);
    expect(() => update(v2, { state: { reported: { a: 3 } }, version: 1 })).toThrow(new ShadowRequestError(409, 'Version conflict'));
    try {
      update(v2, { state: { reported: { a: 3 } }, version: 5 });
    } catch (err) {
      expect(err).toMatchObject({ code: 409, message: 'Version conflict' });
    }
  });

  it('continues after a delete: the recreated shadow gets the next version', () => {
    const recreated = update(undefined, { state: { reported: { a: 1 } } }, T2, 7);
    expect(recreated.document.version).toBe(8);
    expect(recreated.documents).not.toHaveProperty('previous');
    expect(() => update(undefined, { state: { reported: { a: 1 } }, version: 0 }, T2, 7)).toThrow('Version conflict');
  });
});

describe('request validation (AWS codes and messages)', () => {
  const bad: [string, string | Buffer, number, string][] = [
    ['binary garbage', Buffer.from([0xff, 0xfe, 0x00, 0x80]), 415, 'Unsupported documented encoding; supported encoding is UTF-8'],
    ['not JSON', '{"state": ', 400, 'Invalid JSON'],
    ['JSON but not an object', '[1,2]', 400, 'Invalid JSON'],
    ['no state', '{"clientToken":"x"}', 400, 'Missing required node: state'],
    ['state is a string', '{"state":"on"}', 400, 'State node must be an object'],
    ['state is null', '{"state":null}', 400, 'State node must be an object'],
    ['desired is an array', '{"state":{"desired":[1]}}', 400, 'Desired node must be an object'],
    ['reported is a number', '{"state":{"reported":5}}', 400, 'Reported node must be an object'],
    ['unknown node in state', '{"state":{"delta":{"a":1}}}', 400, 'State contains an invalid node'],
    ['7 levels of nesting', JSON.stringify({ state: { desired: { a: { b: { c: { d: { e: { f: { g: 1 } } } } } } } } }), 400, 'JSON contains too many levels of nesting; maximum is 6'],
    ['version is a string', '{"state":{"reported":{"a":1}},"version":"3"}', 400, 'Invalid version'],
    ['version is fractional', '{"state":{"reported":{"a":1}},"version":1.5}', 400, 'Invalid version'],
    ['version is negative', '{"state":{"reported":{"a":1}},"version":-1}', 400, 'Invalid version'],
    ['clientToken over 64 bytes', JSON.stringify({ state: { reported: { a: 1 } }, clientToken: 'x'.repeat(65) }), 400, 'Invalid clientToken'],
    ['clientToken is a number', '{"state":{"reported":{"a":1}},"clientToken":7}', 400, 'Invalid clientToken'],
    ['state over 8 KB', JSON.stringify({ state: { reported: { blob: 'x'.repeat(8200) } } }), 413, 'The payload exceeds the maximum size allowed'],
    ['huge payload', Buffer.alloc(1024 * 1024, 0x20), 413, 'The payload exceeds the maximum size allowed'],
  ];
  for (const [name, payload, code, message] of bad) {
    it(`${name} → ${code} ${message}`, () => {
      const buf = typeof payload === 'string' ? Buffer.from(payload) : payload;
      expect(() => parseUpdateRequest(buf, AWS_SHADOW_LIMITS)).toThrow(expect.objectContaining({ code, message }) as Error);
    });
  }

  it('accepts exactly 6 levels, a 64-byte clientToken and version 0', () => {
    const ok = parseUpdateRequest(
      Buffer.from(JSON.stringify({ state: { desired: { a: { b: { c: { d: { e: { f: 1 } } } } } } }, clientToken: 'x'.repeat(64), version: 0 })),
      AWS_SHADOW_LIMITS,
    );
    expect(ok.version).toBe(0);
    expect(ok.clientToken).toHaveLength(64);
  });

  it('get/delete accept an empty payload or an object with a clientToken', () => {
    expect(parseSimpleRequest(Buffer.alloc(0), AWS_SHADOW_LIMITS)).toEqual({});
    expect(parseSimpleRequest(Buffer.from('{"clientToken":"t1"}'), AWS_SHADOW_LIMITS)).toEqual({ clientToken: 't1' });
    expect(() => parseSimpleRequest(Buffer.from('nope'), AWS_SHADOW_LIMITS)).toThrow('Invalid JSON');
  });

  it('checks thing (≤ 128 bytes) and shadow (≤ 64 bytes) names with AWS characters', () => {
    expect(() => checkNames('thermostat-1:floor_2')).not.toThrow();
    expect(() => checkNames('t'.repeat(128), 's'.repeat(64))).not.toThrow();
    expect(() => checkNames('t'.repeat(129))).toThrow('Invalid thing name');
    expect(() => checkNames('has space')).toThrow('Invalid thing name');
    expect(() => checkNames('ok', 's'.repeat(65))).toThrow('Invalid shadow name');
    expect(() => checkNames('ok', 'bad/name')).toThrow('Invalid shadow name');
  });
});

describe('acceptedJson', () => {
  it('is the text JSON.stringify gives the /update/accepted payload', () => {
    const current = applyUpdate(undefined, 0, { state: { desired: { a: 1 }, reported: { a: 0, deep: { x: [1, { y: 2 }] } } } }, T1).document;
    const requests: UpdateRequest[] = [
      { state: { reported: { a: 1 } } },
      { state: { reported: { a: 1, deep: { x: null } } }, clientToken: 'tok-"quoted"-ü' },
      { state: { desired: null, reported: { n: 1.5, s: 'é', list: [1, [2], { k: null }] } }, version: 1, clientToken: '' },
      { state: { desired: { a: null } } },
    ];
    for (const request of requests) {
      const result = applyUpdate(current, current.version, request, T2);
      expect(acceptedJson(result, JSON.stringify(request.state))).toBe(JSON.stringify(result.accepted));
    }
  });
});
