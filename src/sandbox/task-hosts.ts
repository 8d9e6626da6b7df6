/**
 * The task host processes and which task runs in which (the core's side). Every task starts in the
 * shared host. When a host dies, the crash is charged to the task whose code entered an isolate
 * last (crash-marks.ts): it is moved to a second process, the isolation host, made only when first
 * needed, so that what they do next can no longer touch the other tasks; the others' invocations that
 * were in the dying host run again (task-host.ts) and are never counted against them. A task charged with
 * QUARANTINE_AFTER_CRASHES crashes is not loaded again until it is redeployed (COORD_ERR_TASK_QUARANTINED).
 *
 * Why two processes and not one per task: each task host is a whole Node.js process with isolated-vm
 * loaded (the isolation host measured 66 MB RSS holding three hostile tasks, `node bench/run.js --only
 * hostile`), against a budget of 3 MB per warm task on a 1 GB gateway. Keeping suspect tasks apart from
 * the rest costs one such process, and only after a crash. Not yet measured: an idle host's RSS on Node 24.
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
   * Called while `host` is down, before it is started again: charges the crash, moves the culprit out of
   * the shared host, quarantines a repeat offender.
   */
  #onCrash(host: TaskHost, name: 'shared' | 'isolation', crash: HostCrash): void {
    const key = crash.culprit;
    const task = key === undefined ? undefined : host.task(key);
    if (this.#closing || key === undefined || !task) return;
    const n = (this.#crashes.get(key) ?? 0) + 1;
    this.#crashes.set(key, n);
    const how = crash.signal ?? `exit code ${crash.code}`;
    this.#opts.onFailed(key, new CoordinatorError('COORD_ERR_TASK_HOST_CRASHED', `task ${task.name}@${task.version} crashed the ${name} task host (${how}); crash ${n} of ${QUARANTINE_AFTER_CRASHES} before it is quarantined`));
    if (n >= QUARANTINE_AFTER_CRASHES) {
      host.forget(key);
      this.#where.delete(key);
      const q = new CoordinatorError('COORD_ERR_TASK_QUARANTINED', `task ${task.name}@${task.version} crashed its task host ${n} times; it is stopped until it is deployed again`);
      this.#quarantined.set(key, q);
      this.emit('quarantined', key, q);
      return;
    }
    if (name !== 'shared') return;
    host.forget(key);
    const isolation = (this.#isolation ??= this.#make('isolation'));
    this.#where.set(key, isolation);
    isolation.load(task).catch((err: unknown) => {
      this.#opts.onFailed(key, err instanceof CoordinatorError ? err : new CoordinatorError('COORD_ERR_TASK_LOAD', String(err)));
    });
  }

  /** Process id of the shared host (undefined while it restarts). */
  get pid(): number | undefined {
    return this.#shared.pid;
  }

  /** Restarts of every host. */
  get restarts(): number {
    return this.#shared.restarts + (this.#isolation?.restarts ?? 0);
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
