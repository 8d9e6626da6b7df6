/**
 * Semantic rules of a deployment document, checked after the schema and before anything changes: every
 * problem is collected (path + message) so one REJECTED report lists them all, not the first only.
 */
import type { CoordinatorConfig } from '../config/schema.js';
import { isCoordinatorError } from '../errors.js';
import { THING_NAME_PATTERN } from '../config/schema.js';
import type * as Triggers from '../tasks/triggers.js';
import { isReserved, reservedInTask, reservedMessage, routeReachesTask } from '../router/reserved.js';
import { outsideGrants } from './grants.js';
import type { Deployment, Problem } from './document.js';

/** URL schemes a bundle may be fetched from. */
const SCHEMES = new Set(['https:', 'file:', 'data:']);

/** Memory a task may take at most: one isolate per concurrent invocation, one for a pinned task. */
export function memoryOf(task: Deployment['tasks'][number]): number {
  return task.lifecycle === 'pinned' ? task.limits.memoryMb : task.limits.memoryMb * task.limits.concurrency;
}

/** Every semantic problem of `doc` under `config` (empty: valid). */
export async function checkDeployment(doc: Deployment, config: CoordinatorConfig): Promise<Problem[]> {
  const problems: Problem[] = [];
  const add = (path: string, message: string): void => void problems.push({ path, message });
  const d = config.deployments;

  const names = new Map<string, number>();
  doc.tasks.forEach((t, i) => {
    const first = names.get(t.name);
    if (first !== undefined) add(`tasks.${i}.name`, `task ${t.name} is also tasks.${first}; names must be unique`);
    else names.set(t.name, i);
  });

  let cron: typeof Triggers | undefined;
  for (const [i, t] of doc.tasks.entries()) {
    const at = `tasks.${i}`;
    let scheme: string | undefined;
    try {
      scheme = new URL(t.bundle.url).protocol;
    } catch {
      add(`${at}.bundle.url`, 'is not a URL');
    }
    if (scheme !== undefined && !SCHEMES.has(scheme)) add(`${at}.bundle.url`, `scheme ${scheme} is not allowed (https:, file: or data:)`);
    if (d.requireSignatures && t.bundle.signature === undefined) add(`${at}.bundle.signature`, 'is required: this coordinator accepts signed bundles only');

    for (const [j, tr] of t.triggers.entries()) {
      if ('cron' in tr) {
        // node-cron is loaded only when a document schedules something.
        cron ??= await import('../tasks/triggers.js');
        try {
          cron.validateCron(t.name, tr.cron, tr.timezone);
        } catch (err) {
          add(`${at}.triggers.${j}`, isCoordinatorError(err) ? err.message : String(err));
        }
      }
      if ('shadowDelta' in tr && !THING_NAME_PATTERN.test(tr.shadowDelta.thing)) add(`${at}.triggers.${j}.shadowDelta.thing`, 'is not a valid thing name');
      if ('topic' in tr && tr.source !== undefined) checkSource(tr.source, names, `${at}.triggers.${j}.source`, add);
    }
    for (const [j, r] of t.routes.entries()) checkRoute(r, names, `${at}.routes.${j}`, add);

    for (const r of reservedInTask(t)) add(`${at}.${r.path}`, `COORD_ERR_DEPLOY_RESERVED_TOPIC: ${reservedMessage(r.filter)}`);
    for (const kind of ['publish', 'subscribe', 'shadows', 'devices'] as const) {
      for (const f of outsideGrants(d.maxGrants[kind], t.permissions[kind].filter((w) => !isReserved(w)))) {
        add(`${at}.permissions.${kind}`, `${f} is outside what this coordinator grants (deployments.maxGrants.${kind}: ${d.maxGrants[kind].join(', ') || 'nothing'})`);
      }
    }
  }
  for (const [j, r] of doc.routes.entries()) {
    checkRoute(r, names, `routes.${j}`, add);
    if (routeReachesTask(r)) add(`routes.${j}.filter`, `COORD_ERR_DEPLOY_RESERVED_TOPIC: ${reservedMessage(r.filter)}`);
  }

  const memory = doc.tasks.reduce((sum, t) => sum + memoryOf(t), 0);
  if (memory > d.memoryBudgetMb) add('tasks', `the tasks may use ${memory} MB together (memoryMb × concurrency; pinned: memoryMb), over the budget of ${d.memoryBudgetMb} MB (deployments.memoryBudgetMb)`);
  return problems;
}

function checkSource(source: string, names: ReadonlyMap<string, number>, path: string, add: (path: string, message: string) => void): void {
  const task = /^task:(.+)$/.exec(source)?.[1];
  if (task !== undefined && task !== '*' && !names.has(task)) add(path, `source task ${task} is not in this deployment`);
}

function checkRoute(r: { source: string; target: string }, names: ReadonlyMap<string, number>, path: string, add: (path: string, message: string) => void): void {
  checkSource(r.source, names, `${path}.source`, add);
  const target = /^task:(.+)$/.exec(r.target)?.[1];
  if (target !== undefined && !names.has(target)) add(`${path}.target`, `target task ${target} is not in this deployment`);
}
