/**
 * The compiled device policy keeps one small object per connected device and matches the default grant
 * without its filter strings: it must decide exactly what the spelt-out filters decide.
 */
import { describe, expect, it } from 'vitest';
import { compilePolicy, filterCovers, type PolicyGroup } from '../../src/devices/policy.js';
import { topicMatches } from '../../src/router/topic.js';

/** The default grant written out as filters, as the policy was compiled before it was made compact. */
function spelt(thing: string): { publish: string[]; subscribe: string[]; receive: string[] } {
  const base = `$aws/things/${thing}/shadow`;
  const ops = ['get', 'update', 'delete'];
  return {
    publish: [...ops.map((op) => `${base}/${op}`), ...ops.map((op) => `${base}/name/+/${op}`), `devices/${thing}/#`],
    subscribe: [`${base}/#`, `devices/${thing}/#`],
    receive: [...ops.map((op) => `${base}/${op}/+`), ...ops.map((op) => `${base}/name/+/${op}/+`), `devices/${thing}/#`],
  };
}

/** Topics and filters around a thing's own prefixes: exact, parent, deeper, near misses, wildcards. */
function candidates(thing: string, other: string): string[] {
  const levels = ['', 'get', 'update', 'delete', 'accepted', 'delta', 'name', 'cfg', '+', '#', 'x'];
  const heads = [`$aws/things/${thing}/shadow`, `$aws/things/${other}/shadow`, `$aws/things/${thing}`, `$aws/things/${thing}/shadowx`, `devices/${thing}`, `devices/${other}`, `devices/${thing}x`, 'devices', '$aws/things/+/shadow', 'devices/+'];
  const out = new Set<string>(['#', '+', '+/#', '$aws/#', 'devices/#', '', 'devices/', `${thing}`]);
  for (const h of heads) {
    out.add(h);
    out.add(`${h}/`);
    for (const a of levels) {
      out.add(`${h}/${a}`);
      for (const b of levels) {
        out.add(`${h}/${a}/${b}`);
        for (const c of ['get', 'update', 'accepted', '+', '#']) out.add(`${h}/${a}/${b}/${c}`);
      }
    }
  }
  return [...out];
}

describe('compact device policy', () => {
  const groups: PolicyGroup[] = [
    { name: 'extra', match: { thing: 'plug-*' }, allow: { publish: ['telemetry/${thingName}/#', 'devices/${thingName}/#'], subscribe: ['broadcast/#'], receive: ['broadcast/+'] } },
  ];

  for (const [thing, policyGroups] of [
    ['plug-1', []],
    ['plug-1', groups],
    ['a:b_c-9', []],
  ] as const) {
    it(`decides as the spelt-out filters for ${thing}${policyGroups.length ? ' with a group' : ''}`, () => {
      const p = compilePolicy(policyGroups, { thing, attributes: {} });
      const ref = spelt(thing);
      const extra = policyGroups.length ? { publish: ['telemetry/plug-1/#'], subscribe: ['broadcast/#'], receive: ['broadcast/+'] } : { publish: [], subscribe: [], receive: [] };
      const all = { publish: [...ref.publish, ...extra.publish], subscribe: [...ref.subscribe, ...extra.subscribe], receive: [...ref.receive, ...extra.receive] };
      // The listing (`devices show`) is unchanged, duplicates of the default grant dropped as before.
      expect(p.publish).toEqual(all.publish);
      expect(p.subscribe).toEqual(all.subscribe);
      expect(p.receive).toEqual(all.receive);
      let checked = 0;
      for (const t of candidates(thing, 'plug-2')) {
        expect(p.mayPublish(t), `publish ${t}`).toBe(all.publish.some((f) => topicMatches(f, t)));
        expect(p.mayReceive(t), `receive ${t}`).toBe(all.receive.some((f) => topicMatches(f, t)));
        expect(p.maySubscribe(t), `subscribe ${t}`).toBe(all.subscribe.some((g) => filterCovers(g, t)));
        checked++;
      }
      expect(checked).toBeGreaterThan(1000);
    });
  }

  it('a thing name that is not a plain topic level falls back to the spelt-out filters', () => {
    // Registered names never look like this (THING_NAME_PATTERN), but the policy must not widen if one did.
    const p = compilePolicy([], { thing: 'odd+name', attributes: {} });
    const ref = spelt('odd+name');
    for (const t of [...candidates('odd+name', 'x'), ...candidates('oddxname', 'x')]) {
      expect(p.mayPublish(t), t).toBe(ref.publish.some((f) => topicMatches(f, t)));
      expect(p.maySubscribe(t), t).toBe(ref.subscribe.some((g) => filterCovers(g, t)));
    }
  });

  it('shares what every device has: no per-device group list or filter arrays when no group applies', () => {
    const a = compilePolicy(groups, { thing: 'lamp-1', attributes: {} });
    const b = compilePolicy(groups, { thing: 'lamp-2', attributes: {} });
    expect(a.groups).toBe(b.groups);
    expect(Object.keys(a)).toEqual(['connect', 'groups']);
  });
});
