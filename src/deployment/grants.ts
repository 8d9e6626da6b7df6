/**
 * Maximum grants: the coordinator's config bounds what any deployed task may be permitted
 * (deployments.maxGrants). A task's permission is a topic filter; it lies inside a grant when every topic
 * it matches is also matched by the grant, decided level by level ([MQTT-4.7] wildcard rules).
 */

/** Whether every topic `filter` matches is also matched by `grant`. */
export function filterCovers(grant: string, filter: string): boolean {
  // [MQTT-4.7.2-1] a filter that starts with a wildcard does not match topics starting with '$': neither
  // does a grant. (Reserved filters are refused before grants are consulted; this keeps the rule true.)
  if (filter.charCodeAt(0) === 36 && (grant.charCodeAt(0) === 35 || grant.charCodeAt(0) === 43)) return false;
  const g = grant.split('/');
  const f = filter.split('/');
  for (let i = 0; i < g.length; i++) {
    const level = g[i]!;
    // '#' matches the parent level and everything below it: whatever the filter has left is inside.
    if (level === '#') return true;
    if (i >= f.length) return false;
    const mine = f[i]!;
    // The filter's '#' reaches any depth; only a grant '#' (handled above) covers it.
    if (mine === '#') return false;
    if (level === '+') continue;
    // A literal grant level covers only the same literal: a filter '+' there would reach other topics.
    if (mine !== level) return false;
  }
  return f.length === g.length;
}

/** The filters of `wanted` that no grant covers. */
export function outsideGrants(grants: readonly string[], wanted: readonly string[]): string[] {
  return wanted.filter((w) => !grants.some((g) => filterCovers(g, w)));
}
