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

const SHADOW_OPS = ['get', 'update', 'delete'] as const;
// The default grant below `$aws/things/<thing>/shadow/`, shared by every device.
const SHADOW_PUBLISH = [...SHADOW_OPS, ...SHADOW_OPS.map((op) => `name/+/${op}`)];
// get/+ : accepted, rejected; update/+ : accepted, rejected, delta, documents; delete/+ : accepted, rejected.
const SHADOW_RECEIVE = [...SHADOW_OPS.map((op) => `${op}/+`), ...SHADOW_OPS.map((op) => `name/+/${op}/+`)];

/** AWS shadow topics of `thing` (classic and named): requests a device publishes, responses it reads. */
function defaultGrant(thing: string): { publish: string[]; subscribe: string[]; receive: string[] } {
  const base = `$aws/things/${thing}/shadow`;
  return {
    publish: [...SHADOW_PUBLISH.map((f) => `${base}/${f}`), `devices/${thing}/#`],
    // Subscribing to the whole shadow tree is allowed (SDKs and tutorials do it); what is delivered is
    // limited to the responses by `receive`.
    subscribe: [`${base}/#`, `devices/${thing}/#`],
    receive: [...SHADOW_RECEIVE.map((f) => `${base}/${f}`), `devices/${thing}/#`],
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

const NONE: readonly string[] = Object.freeze([]);

/** Compiles the policy of `device` from the configured groups (in order) and the default grant. */
export function compilePolicy(groups: readonly PolicyGroup[], device: DeviceIdentity): CompiledPolicy {
  const grant = defaultGrant(device.thing);
  const defaults = { publish: grant.publish.length, subscribe: grant.subscribe.length, receive: grant.receive.length };
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
  const extra = (kind: keyof typeof defaults): readonly string[] => (grant[kind].length > defaults[kind] ? grant[kind].slice(defaults[kind]) : NONE);
  return new DevicePolicy(device.thing, connect, matched.length > 0 ? matched : NONE, extra('publish'), extra('subscribe'), extra('receive'));
}

/**
 * A thing name the default grant can be checked against without its filters: a literal topic level.
 * Registered names always are (THING_NAME_PATTERN); anything else gets the filters spelt out.
 */
const isPlainLevel = (thing: string): boolean => thing.length > 0 && !/[/+#]/.test(thing) && !thing.includes('\u0000');

/**
 * One per connected device, for as long as it stays connected: kept small. The default grant is the
 * same for every device but its thing name, so it is matched through shared filters relative to the
 * device's own prefixes rather than sixteen filter strings per device; only what policy groups add
 * is stored. The filter lists are built when asked for (`devices show`).
 */
class DevicePolicy implements CompiledPolicy {
  readonly #thing: string;
  readonly connect: boolean;
  readonly groups: readonly string[];
  readonly #publish: readonly string[];
  readonly #subscribe: readonly string[];
  readonly #receive: readonly string[];
  /** The default grant as filters, only for a thing name that is not a plain topic level. */
  readonly #spelt: { publish: string[]; subscribe: string[]; receive: string[] } | undefined;

  constructor(thing: string, connect: boolean, groups: readonly string[], publish: readonly string[], subscribe: readonly string[], receive: readonly string[]) {
    this.#thing = thing;
    this.connect = connect;
    this.groups = groups;
    this.#publish = publish;
    this.#subscribe = subscribe;
    this.#receive = receive;
    this.#spelt = isPlainLevel(thing) ? undefined : defaultGrant(thing);
  }

  get publish(): readonly string[] {
    return [...defaultGrant(this.#thing).publish, ...this.#publish];
  }

  get subscribe(): readonly string[] {
    return [...defaultGrant(this.#thing).subscribe, ...this.#subscribe];
  }

  get receive(): readonly string[] {
    return [...defaultGrant(this.#thing).receive, ...this.#receive];
  }

  mayPublish(topic: string): boolean {
    const byDefault = this.#spelt ? anyMatch(this.#spelt.publish, topic) : this.#ownDevicesTopic(topic) || this.#ownShadowTopic(SHADOW_PUBLISH, topic);
    return byDefault || anyMatch(this.#publish, topic);
  }

  maySubscribe(filter: string): boolean {
    // `<prefix>/#` covers exactly the filters that spell out its literal levels: the prefix itself and below.
    const byDefault = this.#spelt ? this.#spelt.subscribe.some((g) => filterCovers(g, filter)) : underLevels(filter, 'devices/', this.#thing, '') || underLevels(filter, '$aws/things/', this.#thing, '/shadow');
    if (byDefault) return true;
    for (const g of this.#subscribe) if (filterCovers(g, filter)) return true;
    return false;
  }

  mayReceive(topic: string): boolean {
    const byDefault = this.#spelt ? anyMatch(this.#spelt.receive, topic) : this.#ownDevicesTopic(topic) || this.#ownShadowTopic(SHADOW_RECEIVE, topic);
    return byDefault || anyMatch(this.#receive, topic);
  }

  /** `devices/<thing>/#`, which also matches its parent level `devices/<thing>` [MQTT-4.7.1-2]. */
  #ownDevicesTopic(topic: string): boolean {
    return underLevels(topic, 'devices/', this.#thing, '');
  }

  /** `$aws/things/<thing>/shadow/<f>` for one of `relative`: the literal prefix, then `f` on the rest. */
  #ownShadowTopic(relative: readonly string[], topic: string): boolean {
    const prefix = 12 + this.#thing.length + 8; // '$aws/things/' + thing + '/shadow/'
    if (topic.length <= prefix || !topic.startsWith('$aws/things/') || !topic.startsWith(this.#thing, 12) || !topic.startsWith('/shadow/', prefix - 8)) return false;
    const rest = topic.slice(prefix);
    return anyMatch(relative, rest);
  }
}

/** Whether `text` is `<head><thing><tail>` or lies below it (`<head><thing><tail>/...`). */
function underLevels(text: string, head: string, thing: string, tail: string): boolean {
  const end = head.length + thing.length + tail.length;
  if (text.length < end || !text.startsWith(head) || !text.startsWith(thing, head.length) || !text.startsWith(tail, head.length + thing.length)) return false;
  return text.length === end || text.charCodeAt(end) === 47; // '/'
}

function anyMatch(filters: readonly string[], topic: string): boolean {
  for (const f of filters) if (topicMatches(f, topic)) return true;
  return false;
}
