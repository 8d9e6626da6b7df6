/** MQTT filter rules ([MQTT-4.7]) and the route table, scanned (small) and as a trie (large), alike. */
import { describe, expect, it } from 'vitest';
import { RouteTable, type MessageSource, type Route } from '../../src/router/router.js';
import { topicMatches, validateFilter, validateTopic } from '../../src/router/topic.js';

describe('topic filters', () => {
  it('match as MQTT says', () => {
    expect(topicMatches('sport/tennis/+', 'sport/tennis/player1')).toBe(true);
    expect(topicMatches('sport/tennis/+', 'sport/tennis/player1/ranking')).toBe(false);
    expect(topicMatches('sport/#', 'sport')).toBe(true); // [MQTT-4.7.1-2] '#' includes the parent level
    expect(topicMatches('sport/+', 'sport/')).toBe(true);
    expect(topicMatches('+/+', '/finance')).toBe(true);
    expect(topicMatches('#', '$SYS/x')).toBe(false); // [MQTT-4.7.2-1]
    expect(topicMatches('+/monitor', '$SYS/monitor')).toBe(false);
    expect(topicMatches('$SYS/#', '$SYS/monitor')).toBe(true);
  });

  it('are validated', () => {
    expect(validateFilter('a/#')).toBeUndefined();
    expect(validateFilter('a/#/b')).toMatch(/#/);
    expect(validateFilter('a+/b')).toMatch(/\+/);
    expect(validateFilter('')).toBeDefined();
    expect(validateTopic('a/+/b')).toBeDefined();
    expect(validateTopic('a/b')).toBeUndefined();
  });
});

describe('RouteTable', () => {
  const device: MessageSource = { kind: 'device', id: 'sensor-1' };
  const task: MessageSource = { kind: 'task', id: 'thermostat' };
  const core: Route[] = [
    { source: 'device:*', filter: 'sensors/+/temperature', task: 'thermostat' },
    { source: 'device:sensor-2', filter: 'sensors/#', task: 'audit' },
    { source: 'task:thermostat', filter: 'devices/+/heater/set', task: undefined },
    { source: 'shadow', filter: '$aws/things/+/shadow/update/delta', task: 'plug' },
    { source: '*', filter: '#', task: 'everything' },
  ];
  const padding: Route[] = Array.from({ length: 40 }, (_, i) => ({ source: '*', filter: `pad/${i}/#`, task: 'pad' }));

  for (const [label, routes] of [['scanned', core], ['trie', [...core, ...padding]]] as const) {
    it(`matches by source and filter (${label})`, () => {
      const table = new RouteTable(routes);
      const names = (s: MessageSource, t: string): (string | undefined)[] => table.match(s, t).map((r) => r.task).sort();
      expect(names(device, 'sensors/lobby/temperature')).toEqual(['everything', 'thermostat']);
      expect(names({ kind: 'device', id: 'sensor-2' }, 'sensors/lobby/temperature')).toEqual(['audit', 'everything', 'thermostat']);
      expect(names(task, 'devices/lobby/heater/set')).toEqual(['everything', undefined]);
      expect(names(device, 'devices/lobby/heater/set')).toEqual(['everything']);
      expect(names({ kind: 'shadow' }, '$aws/things/plug-1/shadow/update/delta')).toEqual(['plug']); // '#' never matches '$'
      expect(names(device, 'pad/3/x')).toEqual(label === 'trie' ? ['everything', 'pad'] : ['everything']);
    });
  }

  it('refuses an invalid filter with COORD_ERR_ROUTE_INVALID', () => {
    expect(() => new RouteTable([{ source: '*', filter: 'a/#/b', task: 'x' }])).toThrow(expect.objectContaining({ code: 'COORD_ERR_ROUTE_INVALID' }) as Error);
  });
});
