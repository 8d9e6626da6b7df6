/** Device profiles: the shipped profiles load; templates fill as documented; bad profiles are refused with every problem. */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { loadProfiles, render } from '../../src/devices/profiles.js';

const SHIPPED = fileURLToPath(new URL('../../profiles', import.meta.url));

describe('device profiles', () => {
  it('ships at least three models with different interfaces', () => {
    const profiles = loadProfiles(SHIPPED);
    expect([...profiles.keys()]).toEqual(expect.arrayContaining(['smart-plug', 'relay-board', 'env-sensor']));
    expect(Object.keys(profiles.get('smart-plug')!.actions.turnOn!)).toEqual(['shadow']);
    expect(Object.keys(profiles.get('relay-board')!.actions.turnOn!)).toEqual(['publish']);
    expect(Object.keys(profiles.get('env-sensor')!.actions.read!)).toEqual(['request']);
  });

  it('fills templates: whole strings keep the parameter type, embedded ones become text', () => {
    const scope = { thingName: 'plug-1', requestId: 'r1', params: { channel: 3, on: true, nested: { a: [1] } } };
    expect(render({ topic: 'devices/${thingName}/x', channel: '${params.channel}', on: '${params.on}', label: 'ch${params.channel}', n: '${params.nested}', id: '${requestId}', keep: [1, null, 'z'] }, scope)).toEqual({
      topic: 'devices/plug-1/x',
      channel: 3,
      on: true,
      label: 'ch3',
      n: { a: [1] },
      id: 'r1',
      keep: [1, null, 'z'],
    });
    expect(() => render('${params.missing}', scope)).toThrow(expect.objectContaining({ code: 'COORD_ERR_DEVICE_ACTION' }) as Error);
    expect(() => render('${process.env}', scope)).toThrow(/unknown template variable/);
  });

  it('refuses invalid profiles, listing every problem', () => {
    const dir = mkdtempSync(join(tmpdir(), 'profiles-'));
    writeFileSync(join(dir, 'a.json'), JSON.stringify({ name: 'Bad Name', actions: {} }));
    writeFileSync(join(dir, 'b.json'), JSON.stringify({ name: 'b', actions: { go: { publish: { topic: 'devices/+/x' } } } }));
    writeFileSync(join(dir, 'c.json'), JSON.stringify({ name: 'c', actions: { go: { teleport: {} } } }));
    writeFileSync(join(dir, 'd.json'), '{ not json');
    let problems: string[] = [];
    try {
      loadProfiles(dir);
    } catch (err) {
      expect(err).toMatchObject({ code: 'COORD_ERR_DEVICE_PROFILE' });
      problems = (err as { details: { problems: string[] } }).details.problems;
    }
    expect(problems.some((p) => p.startsWith('a.json: name'))).toBe(true);
    expect(problems.some((p) => p.startsWith('b.json: actions.go: topic'))).toBe(true);
    expect(problems.some((p) => p.startsWith('c.json'))).toBe(true);
    expect(problems.some((p) => p.startsWith('d.json'))).toBe(true);
  });
});
