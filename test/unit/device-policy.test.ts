/** Device policies: the default grant, groups selected by thing and attributes, variables, filter coverage. */
import { describe, expect, it } from 'vitest';
import { compilePolicy, filterCovers, globMatches, policyFilterProblem, substitute, type PolicyGroup } from '../../src/devices/policy.js';
import { hashPassword, verifyPassword, generatePassword } from '../../src/devices/passwords.js';

const plug = { thing: 'plug-1', attributes: { building: 'b7', floor: '2' } };

describe('default grant', () => {
  const p = compilePolicy([], plug);

  it('publishes its own shadow requests (classic and named) and devices/<thing>/#, nothing else', () => {
    for (const t of ['$aws/things/plug-1/shadow/update', '$aws/things/plug-1/shadow/get', '$aws/things/plug-1/shadow/name/cfg/delete', 'devices/plug-1/state', 'devices/plug-1']) {
      expect(p.mayPublish(t), t).toBe(true);
    }
    for (const t of ['$aws/things/plug-2/shadow/update', '$aws/things/plug-1/shadow/update/accepted', 'devices/plug-2/state', 'sensors/x', 'devices']) {
      expect(p.mayPublish(t), t).toBe(false);
    }
    expect(p.connect).toBe(true);
    expect(p.groups).toEqual([]);
  });

  it('subscribes within its shadow tree and devices/<thing>/#', () => {
    for (const f of ['$aws/things/plug-1/shadow/#', '$aws/things/plug-1/shadow/get/+', '$aws/things/plug-1/shadow/name/+/update/delta', 'devices/plug-1/+/set']) {
      expect(p.maySubscribe(f), f).toBe(true);
    }
    for (const f of ['#', '+/plug-1/#', '$aws/things/+/shadow/#', '$aws/things/plug-2/shadow/#', 'devices/+/state', '$aws/events/presence/#']) {
      expect(p.maySubscribe(f), f).toBe(false);
    }
  });

  it('receives its shadow responses, not the requests on its own shadow, not others', () => {
    for (const t of ['$aws/things/plug-1/shadow/update/delta', '$aws/things/plug-1/shadow/get/accepted', '$aws/things/plug-1/shadow/name/cfg/update/documents', 'devices/plug-1/x']) {
      expect(p.mayReceive(t), t).toBe(true);
    }
    for (const t of ['$aws/things/plug-1/shadow/update', '$aws/things/plug-2/shadow/update/delta', 'other/topic']) {
      expect(p.mayReceive(t), t).toBe(false);
    }
  });
});

describe('groups', () => {
  const groups: PolicyGroup[] = [
    { name: 'plugs', match: { thing: 'plug-*' }, allow: { publish: ['telemetry/${thingName}/#'], subscribe: ['broadcast/#'], receive: ['broadcast/#'] } },
    { name: 'b7', match: { attributes: { building: 'b7' } }, allow: { publish: ['buildings/${attributes.building}/floor/${attributes.floor}/#'] } },
    { name: 'wings', match: { thing: '*' }, allow: { publish: ['wings/${attributes.wing}/#'] } },
    { name: 'blocked', match: { thing: 'plug-9*' }, allow: { connect: false } },
  ];

  it('applies every matching group, substituting variables per device', () => {
    const p = compilePolicy(groups, plug);
    expect(p.groups).toEqual(['plugs', 'b7', 'wings']);
    expect(p.mayPublish('telemetry/plug-1/power')).toBe(true);
    expect(p.mayPublish('telemetry/plug-2/power')).toBe(false);
    expect(p.mayPublish('buildings/b7/floor/2/temp')).toBe(true);
    expect(p.mayPublish('buildings/b7/floor/3/temp')).toBe(false);
    expect(p.maySubscribe('broadcast/+')).toBe(true);
    expect(p.mayReceive('broadcast/all')).toBe(true);
  });

  it('a variable without a value grants nothing (no wing attribute: no wings/... filter)', () => {
    const p = compilePolicy(groups, plug);
    expect(p.publish.some((f) => f.startsWith('wings/'))).toBe(false);
    expect(p.mayPublish('wings//x')).toBe(false);
  });

  it('an attribute value cannot widen a filter', () => {
    const sneaky = compilePolicy(groups, { thing: 'plug-2', attributes: { building: 'b7', floor: '#' } });
    expect(sneaky.publish.some((f) => f.startsWith('buildings/'))).toBe(false);
    expect(substitute('a/${attributes.x}', { thing: 't', attributes: { x: 'b/c' } })).toBeUndefined();
    expect(substitute('a/${attributes.x}', { thing: 't', attributes: { x: '+' } })).toBeUndefined();
    expect(substitute('a/${attributes.x}/${thingName}', { thing: 't', attributes: { x: 'y' } })).toBe('a/y/t');
  });

  it('connect: false refuses matching devices only', () => {
    expect(compilePolicy(groups, { thing: 'plug-99', attributes: {} }).connect).toBe(false);
    expect(compilePolicy(groups, plug).connect).toBe(true);
  });

  it('attribute conditions are globs and all must hold', () => {
    const g: PolicyGroup[] = [{ name: 'g', match: { thing: 'sensor-*', attributes: { building: 'b*', floor: '2' } }, allow: { publish: ['x'] } }];
    expect(compilePolicy(g, { thing: 'sensor-1', attributes: { building: 'b9', floor: '2' } }).groups).toEqual(['g']);
    expect(compilePolicy(g, { thing: 'sensor-1', attributes: { building: 'b9' } }).groups).toEqual([]);
    expect(compilePolicy(g, { thing: 'plug-1', attributes: { building: 'b9', floor: '2' } }).groups).toEqual([]);
  });
});

describe('helpers', () => {
  it('globMatches: * is any run, everything else literal', () => {
    expect(globMatches('plug-*', 'plug-12')).toBe(true);
    expect(globMatches('plug-*', 'xplug-12')).toBe(false);
    expect(globMatches('a.b', 'axb')).toBe(false);
    expect(globMatches('*', '')).toBe(true);
  });

  it('filterCovers: level by level, # covers the parent, wildcards never cover $ topics', () => {
    expect(filterCovers('a/#', 'a')).toBe(true);
    expect(filterCovers('a/#', 'a/+/c')).toBe(true);
    expect(filterCovers('a/+', 'a/#')).toBe(false);
    expect(filterCovers('a/b', 'a/+')).toBe(false);
    expect(filterCovers('#', '$aws/things/x/shadow/get/+')).toBe(false);
    expect(filterCovers('+/things/#', '$aws/things/x')).toBe(false);
    expect(filterCovers('$aws/things/x/shadow/#', '$aws/things/x/shadow/get/+')).toBe(true);
  });

  it('policyFilterProblem: known variables, valid filters', () => {
    expect(policyFilterProblem('devices/${thingName}/#')).toBeUndefined();
    expect(policyFilterProblem('b/${attributes.building}/+')).toBeUndefined();
    expect(policyFilterProblem('b/${thing}/x')).toMatch(/unknown variable/);
    expect(policyFilterProblem('a/#/b')).toMatch(/#/);
  });
});

describe('development passwords', () => {
  it('hash with a per-password salt; verify right, refuse wrong and malformed', async () => {
    const pw = generatePassword();
    expect(pw).toMatch(/^[A-Za-z0-9_-]{24}$/);
    const [h1, h2] = await Promise.all([hashPassword(pw), hashPassword(pw)]);
    expect(h1).not.toBe(h2);
    expect(h1.startsWith('scrypt$16384$8$1$')).toBe(true);
    expect(h1).not.toContain(pw);
    expect(await verifyPassword(pw, h1)).toBe(true);
    expect(await verifyPassword(pw, h2)).toBe(true);
    expect(await verifyPassword(`${pw}x`, h1)).toBe(false);
    expect(await verifyPassword(pw, 'plain')).toBe(false);
    expect(await verifyPassword(pw, 'scrypt$1$1$1$AA$AA')).toBe(false);
  });
});
