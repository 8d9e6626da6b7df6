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

/** Whether `topic` matches `filter`. */
export function topicMatches(filter: string, topic: string): boolean {
  // [MQTT-4.7.2-1] a filter starting with a wildcard does not match topics starting with '$'.
  if (topic.startsWith('$') && (filter.startsWith('+') || filter.startsWith('#'))) return false;
  const f = filter.split('/');
  const t = topic.split('/');
  for (let i = 0; i < f.length; i++) {
    const level = f[i]!;
    // [MQTT-4.7.1-2] '#' also matches the parent level: "sport/#" matches "sport".
    if (level === '#') return true;
    if (i >= t.length) return false;
    if (level !== '+' && level !== t[i]) return false;
  }
  return f.length === t.length;
}

/** True when any of `filters` matches `topic`. */
export function anyMatches(filters: readonly string[], topic: string): boolean {
  for (const f of filters) if (topicMatches(f, topic)) return true;
  return false;
}
