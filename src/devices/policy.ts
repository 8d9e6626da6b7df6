/**
 * Device policies (DESIGN.md §4.4): groups of devices chosen by thing name and attributes, each granting
 * connect / publish / subscribe / receive on MQTT topic filters with `${thingName}` and
 * `${attributes.NAME}` variables, plus the default grant every device has (its own shadow topics and
 * `devices/<thing>/#`). A device's policy is compiled once at CONNECT — variables substituted, groups
 * selected — so the per-message checks only match topics against a short list of filters.
 */
import { topicMatches, validateFilter } from '../router/topic.js';

/** Which devices a group applies to: every condition given must hold. */
export interface PolicyMatch {
  /** Thing-name glob; `*` matches any run of characters. */
  readonly thing?: string | undefined;
  /** Attribute values the device must have, each a glob like `thing`. */
  readonly attributes?: Readonly<Record<string, string>> | undefined;
}

/** What a group grants (topic filters may use `${thingName}` and `${attributes.NAME}`). */
export interface PolicyAllow {
  /** false refuses matching devices at CONNECT, whatever other groups say. */
  readonly connect?: boolean | undefined;
  readonly publish?: readonly string[] | undefined;
  readonly subscribe?: readonly string[] | undefined;
  readonly receive?: readonly string[] | undefined;
}

/** One policy group (config `devices.policies[]`). */
export interface PolicyGroup {
  readonly name: string;
  readonly match?: PolicyMatch | undefined;
  readonly allow?: PolicyAllow | undefined;
}

/** What a policy is compiled for. */
export interface DeviceIdentity {
  readonly thing: string;
  readonly attributes: Readonly<Record<string, string>>;
}

/** A device's effective policy. */
export interface CompiledPolicy {
  /** False when a matching group says `connect: false`. */
  readonly connect: boolean;
  /** Names of the groups that matched, for logs and `devices show`. */
  readonly groups: readonly string[];
  /** The effective filters after substitution (default grant first). */
  readonly publish: readonly string[];
  readonly subscribe: readonly string[];
  readonly receive: readonly string[];
  /** Whether the device may PUBLISH on `topic` (a topic name). */
  mayPublish(topic: string): boolean;
  /** Whether the device may SUBSCRIBE to `filter`: some granted filter covers every topic it matches. */
  maySubscribe(filter: string): boolean;
  /** Whether a message on `topic` may be delivered to the device. */
  mayReceive(topic: string): boolean;
}

const VARIABLE = /\$\{([^}]*)\}/g;
const ATTRIBUTE_VARIABLE = /^attributes\.([A-Za-z0-9_.-]+)$/;

/** Why `filter` cannot be a policy filter (bad variable or invalid MQTT filter), or undefined. */
export function policyFilterProblem(filter: string): string | undefined {
  for (const [, name] of filter.matchAll(VARIABLE)) {
    if (name !== 'thingName' && !ATTRIBUTE_VARIABLE.test(name!)) return `unknown variable \${${name}}; use \${thingName} or \${attributes.NAME}`;
  }
  // A variable stands for one whole or partial level: check the filter with a neutral value in its place.
  return validateFilter(filter.replace(VARIABLE, 'x'));
}

/**
 * Substitutes the variables of `filter` for `device`; undefined when a variable has no value, or a
 * value that would change the filter's shape (`/`, `+`, `#`, NUL): such a filter grants nothing, so a
 * device cannot widen its own grant through an attribute.
 */
export function substitute(filter: string, device: DeviceIdentity): string | undefined {
  let ok = true;
  const out = filter.replace(VARIABLE, (_m, name: string) => {
    const value = name === 'thingName' ? device.thing : Object.hasOwn(device.attributes, name.slice(11)) ? device.attributes[name.slice(11)] : undefined;
    if (value === undefined || value === '' || /[/+#]/.test(value) || value.includes('\u0000')) ok = false;
    return value ?? '';
  });
  return ok ? out : undefined;
}

/** Whether `text` matches the glob `pattern` (`*` = any run of characters, everything else literal). */
export function globMatches(pattern: string, text: string): boolean {
  if (!pattern.includes('*')) return pattern === text;
  const re = new RegExp(`^${pattern.split('*').map((p) => p.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')).join('.*')}$`, 's');
  return re.test(text);
}

/**
 * Whether every topic `filter` matches is also matched by `grant`, level by level ([MQTT-4.7]); as in
 * topicMatches, a grant starting with a wildcard covers nothing under a `$` topic [MQTT-4.7.2-1].
 */
export function filterCovers(grant: string, filter: string): boolean {
  if (filter.charCodeAt(0) === 36 && (grant.charCodeAt(0) === 43 || grant.charCodeAt(0) === 35)) return false;
  const g = grant.split('/');
  const f = filter.split('/');
  for (let i = 0; i < g.length; i++) {
    const level = g[i]!;
    if (level === '#') return true; // also the parent level: 'a/#' covers 'a'
    if (i >= f.length) return false;
    const mine = f[i]!;
    if (mine === '#') return false;
    if (level === '+') continue;
    if (mine !== level) return false; // a filter '+' under a literal grant level reaches other topics
  }
  return f.length === g.length;
}

/** AWS shadow topics of `thing` (classic and named): requests a device publishes, responses it reads. */
function defaultGrant(thing: string): { publish: string[]; subscribe: string[]; receive: string[] } {
  const base = `$aws/things/${thing}/shadow`;
  const ops = ['get', 'update', 'delete'];
  return {
    publish: [...ops.map((op) => `${base}/${op}`), ...ops.map((op) => `${base}/name/+/${op}`), `devices/${thing}/#`],
    // Subscribing to the whole shadow tree is allowed (SDKs and tutorials do it); what is delivered is
    // limited to the responses by `receive`.
    subscribe: [`${base}/#`, `devices/${thing}/#`],
    // get/+ : accepted, rejected; update/+ : accepted, rejected, delta, documents; delete/+ : accepted, rejected.
    receive: [...ops.map((op) => `${base}/${op}/+`), ...ops.map((op) => `${base}/name/+/${op}/+`), `devices/${thing}/#`],
  };
}

/** Whether `group` applies to `device`. */
export function groupMatches(group: PolicyGroup, device: DeviceIdentity): boolean {
  const m = group.match ?? {};
  if (m.thing !== undefined && !globMatches(m.thing, device.thing)) return false;
  for (const [name, pattern] of Object.entries(m.attributes ?? {})) {
    const value = Object.hasOwn(device.attributes, name) ? device.attributes[name] : undefined;
    if (value === undefined || !globMatches(pattern, value)) return false;
  }
  return true;
}

/** Compiles the policy of `device` from the configured groups (in order) and the default grant. */
export function compilePolicy(groups: readonly PolicyGroup[], device: DeviceIdentity): CompiledPolicy {
  const grant = defaultGrant(device.thing);
  const matched: string[] = [];
  let connect = true;
  for (const group of groups) {
    if (!groupMatches(group, device)) continue;
    matched.push(group.name);
    const allow = group.allow ?? {};
    if (allow.connect === false) connect = false;
    for (const kind of ['publish', 'subscribe', 'receive'] as const) {
      for (const filter of allow[kind] ?? []) {
        const concrete = substitute(filter, device);
        if (concrete !== undefined && !grant[kind].includes(concrete)) grant[kind].push(concrete);
      }
    }
  }
  const { publish, subscribe, receive } = grant;
  return {
    connect,
    groups: matched,
    publish,
    subscribe,
    receive,
    mayPublish: (topic) => anyMatch(publish, topic),
    maySubscribe: (filter) => {
      for (const g of subscribe) if (filterCovers(g, filter)) return true;
      return false;
    },
    mayReceive: (topic) => anyMatch(receive, topic),
  };
}

function anyMatch(filters: readonly string[], topic: string): boolean {
  for (const f of filters) if (topicMatches(f, topic)) return true;
  return false;
}
