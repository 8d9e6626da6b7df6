/**
 * Time- and shadow-based triggers of the installed tasks: cron schedules (node-cron: optional seconds
 * field, time zones) and shadow deltas of a named thing/shadow. MQTT topic triggers are routes (see
 * ../router). Validated before anything is installed; started and stopped as one set.
 */
import cron, { type ScheduledTask } from 'node-cron';
import { CoordinatorError } from '../errors.js';
import type { CronEvent } from './api.js';
import type { TaskSpec } from './spec.js';

/** Throws COORD_ERR_ROUTE_INVALID for a bad cron expression or time zone. */
export function validateCron(task: string, schedule: string, timezone?: string): void {
  const detail = cron.validateDetailed(schedule);
  if (!detail.valid) {
    const why = detail.errors.map((e) => `${e.field}: ${e.message}`).join('; ');
    throw new CoordinatorError('COORD_ERR_ROUTE_INVALID', `task ${task}: cron expression ${JSON.stringify(schedule)} is invalid (${why})`);
  }
  if (timezone !== undefined) {
    try {
      new Intl.DateTimeFormat('en-US', { timeZone: timezone });
    } catch {
      throw new CoordinatorError('COORD_ERR_ROUTE_INVALID', `task ${task}: unknown time zone ${JSON.stringify(timezone)} (use an IANA name such as Europe/Paris)`);
    }
  }
}

/** Running cron jobs of a task set. */
export class CronTriggers {
  readonly #jobs: ScheduledTask[] = [];

  /** Schedules every cron trigger of `specs`; `fire` receives each firing. */
  constructor(specs: readonly TaskSpec[], fire: (task: string, event: CronEvent) => void) {
    for (const spec of specs) {
      for (const t of spec.triggers) {
        if (!('cron' in t)) continue;
        validateCron(spec.name, t.cron, t.timezone);
        const job = cron.createTask(t.cron, (c) => fire(spec.name, { type: 'cron', schedule: t.cron, firedAt: c.date.toISOString() }), {
          timezone: t.timezone,
          name: `${spec.name}:${t.cron}`,
          // Overlap is the scheduler's business (concurrency, queue depth), not the cron library's.
          noOverlap: false,
        });
        this.#jobs.push(job);
      }
    }
  }

  /** Starts every job. */
  start(): void {
    for (const j of this.#jobs) void j.start();
  }

  /** Stops and forgets every job. */
  stop(): void {
    for (const j of this.#jobs.splice(0)) void j.destroy();
  }
}
