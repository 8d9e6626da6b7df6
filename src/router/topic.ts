/**
 * MQTT topic names and filters ([MQTT-4.7]): validation and matching, shared by routes, triggers and
 * task permissions.
 */

/** Why `filter` is not a valid MQTT topic filter, or undefined when it is. */
export function validateFilter(filter: string): string | undefined {
  // [MQTT-4.7.3-1] at least one character; [MQTT-4.7.3-2] no NUL; 65535 bytes at most (UTF-8 string).
  if (filter.length === 0) return 'must not be empty';
  if (filter.includes('\u0000')) return 'must not contain NUL';
  if (Buffer.byteLength(filter) > 65535) return 'must be at most 65535 bytes';
  const levels = filter.split('/');
  for (let i = 0; i < levels.length; i++) {
    const level = levels[i]!;
    // [MQTT-4.7.1-2] '#' alone in the last level; [MQTT-4.7.1-3] '+' alone in its level.
    if (level.includes('#') && (level !== '#' || i !== levels.length - 1)) return "'#' must be the whole last level";
    if (level.includes('+') && level !== '+') return "'+' must be a whole level";
  }
  return undefined;
}

/** Why `topic` is not a valid topic name for a PUBLISH, or undefined when it is. */
export function validateTopic(topic: string): string | undefined {
  if (topic.length === 0) return 'must not be empty';
  if (topic.includes('\u0000')) return 'must not contain NUL';
  // [MQTT-3.3.2-2] no wildcards in a topic name.
  if (topic.includes('+') || topic.includes('#')) return 'must not contain + or #';
  if (Buffer.byteLength(topic) > 65535) return 'must be at most 65535 bytes';
  return undefined;
}

/**
 * Whether `topic` matches `filter`. Walks both strings level by level without splitting them: it runs
 * for every route and permission check of every message.
 */
export function topicMatches(filter: string, topic: string): boolean {
  // [MQTT-4.7.2-1] a filter starting with a wildcard does not match topics starting with '$'.
  if (topic.charCodeAt(0) === 36 && (filter.charCodeAt(0) === 43 || filter.charCodeAt(0) === 35)) return false;
  let f = 0; // start of the current filter level
  let t = 0; // start of the current topic level; topic.length + 1 once the topic has no level left
  for (;;) {
    let fEnd = filter.indexOf('/', f);
    if (fEnd < 0) fEnd = filter.length;
    // [MQTT-4.7.1-2] '#' also matches the parent level: "sport/#" matches "sport".
    if (fEnd - f === 1 && filter.charCodeAt(f) === 35) return true;
    if (t > topic.length) return false;
    let tEnd = topic.indexOf('/', t);
    if (tEnd < 0) tEnd = topic.length;
    const plus = fEnd - f === 1 && filter.charCodeAt(f) === 43;
    if (!plus && (fEnd - f !== tEnd - t || !filter.startsWith(topic.slice(t, tEnd), f))) return false;
    const fLast = fEnd === filter.length;
    const tLast = tEnd === topic.length;
    if (fLast) return tLast;
    f = fEnd + 1;
    t = tLast ? topic.length + 1 : tEnd + 1;
  }
}

/** True when any of `filters` matches `topic`. */
export function anyMatches(filters: readonly string[], topic: string): boolean {
  for (const f of filters) if (topicMatches(f, topic)) return true;
  return false;
}
