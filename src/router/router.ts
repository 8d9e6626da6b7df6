/**
 * The route table: (source, topic filter) → target, where a source is a device (by client id, or any),
 * a task, or the shadow service, and a target is a task or the broker. A message matching no route
 * reaches no task. A small table (the usual gateway) is scanned; a large one is matched with qlobber (the
 * trie aedes itself matches subscriptions with), so the cost per message does not grow with the number of
 * routes. qlobber is required only then: a gateway with a few routes does not pay its memory.
 */
import { createRequire } from 'node:module';
import type { Qlobber } from 'qlobber';
import { CoordinatorError } from '../errors.js';
import { topicMatches, validateFilter } from './topic.js';

/** Above this many routes the table is matched with a trie instead of a scan. */
const SCAN_LIMIT = 32;

/** Where a message came from. */
export type MessageSource = { kind: 'device'; id: string } | { kind: 'task'; id: string } | { kind: 'shadow' } | { kind: 'cloud' };

/** A compiled route. */
export interface Route {
  readonly source: string;
  readonly filter: string;
  /** A task name, or undefined for the broker (or the cloud). */
  readonly task?: string | undefined;
  /** The target is the cloud: the message goes to the durable spool and upstream. */
  readonly cloud?: boolean | undefined;
}

function sourceMatches(pattern: string, source: MessageSource): boolean {
  if (pattern === '*') return true;
  if (source.kind === 'shadow') return pattern === 'shadow';
  if (source.kind === 'cloud') return pattern === 'cloud';
  const [kind, id] = [pattern.slice(0, pattern.indexOf(':')), pattern.slice(pattern.indexOf(':') + 1)];
  return kind === source.kind && (id === '*' || id === source.id);
}

/** Parses `task:<name>` / `broker` / `cloud` into a route's target fields; throws COORD_ERR_ROUTE_INVALID. */
export function parseTarget(target: string): Pick<Route, 'task' | 'cloud'> {
  if (target === 'broker') return {};
  if (target === 'cloud') return { cloud: true };
  if (target.startsWith('task:') && target.length > 5) return { task: target.slice(5) };
  throw new CoordinatorError('COORD_ERR_ROUTE_INVALID', `route target ${JSON.stringify(target)} must be broker, cloud or task:<name>`);
}

/** An immutable route table. */
export class RouteTable {
  readonly routes: readonly Route[];
  readonly #trie: Qlobber | undefined;

  constructor(routes: readonly Route[]) {
    for (const r of routes) {
      const problem = validateFilter(r.filter);
      if (problem) throw new CoordinatorError('COORD_ERR_ROUTE_INVALID', `route filter ${JSON.stringify(r.filter)} ${problem}`);
    }
    this.routes = routes;
    if (routes.length > SCAN_LIMIT) {
      const { Qlobber: Trie } = createRequire(import.meta.url)('qlobber') as { Qlobber: typeof Qlobber };
      // [MQTT-4.7] semantics: '+' one level, '#' any remaining levels including none.
      this.#trie = new Trie({ separator: '/', wildcard_one: '+', wildcard_some: '#', match_empty_levels: true });
      for (const r of routes) this.#trie.add(r.filter, r);
    }
  }

  /** The routes a message from `source` on `topic` follows (each route at most once). */
  match(source: MessageSource, topic: string): Route[] {
    const hits = this.#trie ? (this.#trie.match(topic) as Route[]) : this.routes.filter((r) => topicMatches(r.filter, topic));
    const out: Route[] = [];
    for (const r of hits) {
      // [MQTT-4.7.2-1] wildcard-first filters do not match '$' topics.
      if (topic.startsWith('$') && (r.filter.startsWith('+') || r.filter.startsWith('#'))) continue;
      if (sourceMatches(r.source, source) && !out.includes(r)) out.push(r);
    }
    return out;
  }
}
