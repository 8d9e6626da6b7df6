/**
 * Reserved topics: every topic whose first character is '$' ([MQTT-4.7.2-1]: "$SYS/..." and the like are
 * the server's own). On this gateway they carry the AWS shadow protocol (`$aws/things/...`), presence
 * (`$aws/events/...`) and broker information (`$SYS/...`): messages devices trust because only the
 * coordinator writes them. No task permission, trigger, route or maximum grant may name one: tasks reach
 * shadows through ctx.shadow, which the core authorizes, never through the topics.
 */

/** True when `topicOrFilter` is a reserved ('$') topic or a filter that can only match reserved topics. */
export function isReserved(topicOrFilter: string): boolean {
  return topicOrFilter.charCodeAt(0) === 36;
}

/** The task-facing topic filters of a manifest, with where they are, that name a reserved topic. */
export function reservedInTask(spec: {
  readonly permissions: { readonly publish: readonly string[]; readonly subscribe: readonly string[] };
  readonly triggers: readonly ({ readonly topic: string } | object)[];
  readonly routes: readonly RouteLike[];
}): { path: string; filter: string }[] {
  const found: { path: string; filter: string }[] = [];
  for (const kind of ['publish', 'subscribe'] as const) {
    spec.permissions[kind].forEach((f, i) => {
      if (isReserved(f)) found.push({ path: `permissions.${kind}.${i}`, filter: f });
    });
  }
  spec.triggers.forEach((t, i) => {
    if ('topic' in t && typeof t.topic === 'string' && isReserved(t.topic)) found.push({ path: `triggers.${i}.topic`, filter: t.topic });
  });
  spec.routes.forEach((r, i) => {
    if (routeReachesTask(r)) found.push({ path: `routes.${i}.filter`, filter: r.filter });
  });
  return found;
}

/** A route as manifests and deployment documents write it. */
export interface RouteLike {
  readonly source: string;
  readonly filter: string;
  readonly target: string;
}

/**
 * True when a route would carry reserved topics to or from a task. Routes between devices, the shadow
 * service and the cloud may (a deployment forwarding presence events upstream); tasks may not.
 */
export function routeReachesTask(r: RouteLike): boolean {
  return isReserved(r.filter) && (r.source.startsWith('task:') || r.target.startsWith('task:'));
}

/** The sentence every refusal of a reserved filter uses. */
export function reservedMessage(filter: string): string {
  return `${filter} names a reserved $ topic: no task may publish to, subscribe to or route $ topics (shadows are reached through ctx.shadow)`;
}
