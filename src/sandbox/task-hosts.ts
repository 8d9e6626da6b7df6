/**
 * The task host processes and which task runs in which (the core's side). Every task starts in the
 * shared host. When a host dies, the crash is charged to the tasks whose code was running in it
 * (crash-marks.ts): those are moved to a second process, the isolation host, made only when first
 * needed, so that what they do next can no longer touch the other tasks; the others' invocations that
 * were in the dying host run again (task-host.ts) and are never counted against them. A task charged with
 * QUARANTINE_AFTER_CRASHES crashes is not loaded again until it is redeployed (COORD_ERR_TASK_QUARANTINED).
 *
 * Why two processes and not one per task: a task host is a Node.js process with isolated-vm loaded, about
 * 40 MB of RSS before any task (measured, docs/architecture.md), against a budget of 3 MB per warm task on
 * a 1 GB gateway. Trusted and suspect tasks apart costs one such process, and only after a crash.
 */
import { EventEmitter } from 'node:events';
import { CoordinatorError } from '../errors.js';
import type { HostTaskStats, TaskLoad } from './protocol.js';
import { TaskHost, type HostCrash, type InvocationDone, type TaskHostOptions } from './task-host.js';

/** Crashes charged to one task version before it is quarantined. */
export const QUARANTINE_AFTER_CRASHES = 3;

/** Figures of one host process. */
export interface HostFigures {
  readonly name: 'shared' | 'isolation';
  readonly pid: number | null;
  readonly restarts: number;
  readonly rssBytes: number;
  readonly tasks: readonly string[];
}

/** The task hosts of one coordinator. */
export class TaskHosts extends EventEmitter<{ restarted: [host: string]; quarantined: [key: string, error: CoordinatorError] }> {
  readonly #opts: Omit<TaskHostOptions, 'retry' | 'name'>;
  readonly #shared: TaskHost;
  #isolation: TaskHost | undefined;
  /** The host of each loaded key (absent: the shared host). */
  readonly #where = new Map<string, TaskHost>();
  /** Crashes charged per key. */
  readonly #crashes = new Map<string, number>();
  /** Keys quarantined: not loaded again; their invocations fail at once. */
  readonly #quarantined = new Map<string, CoordinatorError>();
  #closing = false;

  constructor(opts: Omit<TaskHostOptions, 'retry' | 'name'>) {
    super();
    this.#opts = opts;
    this.#shared = this.#make('shared');
  }

  #make(name: 'shared' | 'isolation'): TaskHost {
    const host = new TaskHost({
      ...this.#opts,
      name,
      // A bystander's invocation runs again wherever its task lives now.
      retry: (key, id, eventJson, done) => this.#hostOf(key).run(key, id, eventJson, done, true),
    });
    host.on('crash', (crash) => this.#onCrash(host, name, crash));
    host.on('restarted', () => this.emit('restarted', name));
    return host;
  }

  #hostOf(key: string): TaskHost {
    return this.#where.get(key) ?? this.#shared;
  }

  /**
   * Called while `host` is down, before it is started again: charges the crash, moves the culprits out of
   * a shared host, quarantines repeat offenders.
   */
  #onCrash(host: TaskHost, name: 'shared' | 'isolation', crash: HostCrash): void {
    if (this.#closing) return;
    for (const key of crash.culprits) {
      const task = host.task(key);
      if (!task) continue;
      const n = (this.#crashes.get(key) ?? 0) + 1;
      this.#crashes.set(key, n);
      const how = crash.signal ?? `exit code ${crash.code}`;
      const error = new CoordinatorError('COORD_ERR_TASK_HOST_CRASHED', `task ${task.name}@${task.version} crashed the ${name} task host (${how}); crash ${n} of ${QUARANTINE_AFTER_CRASHES} before it is quarantined`);
      this.#opts.onFailed(key, error);
      if (n >= QUARANTINE_AFTER_CRASHES) {
        host.forget(key);
        this.#where.delete(key);
        const q = new CoordinatorError('COORD_ERR_TASK_QUARANTINED', `task ${task.name}@${task.version} crashed its task host ${n} times; it is stopped until it is deployed again`);
        this.#quarantined.set(key, q);
        this.emit('quarantined', key, q);
        continue;
      }
      if (name === 'shared') {
        host.forget(key);
        this.#isolation ??= this.#make('isolation');
        const isolation = this.#isolation;
        this.#where.set(key, isolation);
        isolation.load(task).catch((err: unknown) => {
          const e = err instanceof CoordinatorError ? err : new CoordinatorError('COORD_ERR_TASK_LOAD', String(err));
          this.#opts.onFailed(key, e);
        });
      }
    }
  }

  /** Process id of the shared host (undefined while it restarts). */
  get pid(): number | undefined {
    return this.#shared.pid;
  }

  /** Restarts of every host. */
  get restarts(): number {
    return this.#shared.restarts + (this.#isolation?.restarts ?? 0);
  }

  /** Where a key runs: 'shared', 'isolation' or 'quarantined' (undefined: not loaded). */
  placement(key: string): 'shared' | 'isolation' | 'quarantined' {
    if (this.#quarantined.has(key)) return 'quarantined';
    return this.#where.get(key) === this.#isolation && this.#isolation ? 'isolation' : 'shared';
  }

  /** Loads a task version in the shared host. */
  load(task: TaskLoad): Promise<void> {
    return this.#hostOf(task.key).load(task);
  }

  /** Unloads a task version wherever it runs, and forgets its crashes. */
  async unload(key: string): Promise<void> {
    const host = this.#hostOf(key);
    this.#where.delete(key);
    this.#crashes.delete(key);
    this.#quarantined.delete(key);
    await host.unload(key);
  }

  /** Runs onEvent in the task's isolate, in whichever host it lives. */
  run(key: string, id: string, eventJson: string, done: InvocationDone): void {
    const q = this.#quarantined.get(key);
    if (q) {
      queueMicrotask(() => done(q));
      return;
    }
    this.#hostOf(key).run(key, id, eventJson, done);
  }

  /** Isolates and heap per task across the hosts, and their RSS summed. */
  async stats(): Promise<{ tasks: readonly HostTaskStats[]; rssBytes: number; hosts: HostFigures[] }> {
    const hosts = [this.#shared, ...(this.#isolation ? [this.#isolation] : [])];
    const names = ['shared', 'isolation'] as const;
    const each = await Promise.all(hosts.map((h) => h.stats().catch(() => ({ tasks: [], rssBytes: 0 }))));
    return {
      tasks: each.flatMap((e) => e.tasks),
      rssBytes: each.reduce((sum, e) => sum + e.rssBytes, 0),
      hosts: hosts.map((h, i) => ({ name: names[i]!, pid: h.pid ?? null, restarts: h.restarts, rssBytes: each[i]!.rssBytes, tasks: h.keys })),
    };
  }

  /** Stops every host. */
  async close(): Promise<void> {
    this.#closing = true;
    await Promise.all([this.#shared.close(), this.#isolation?.close()]);
  }
}
