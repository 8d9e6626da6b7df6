/**
 * The task runtime: the task registry (what is installed), the route table, the triggers, the scheduler
 * and the task host, wired to the broker and the shadow service. DESIGN.md §3, path 1: a device's
 * PUBLISH → routes → scheduler → warm isolate → the task's calls come back here, are authorized, and go
 * out through the broker.
 *
 * `install()` replaces the whole task set as one switch: every new task version is loaded (isolates
 * warm, pinned onStart done) before routes, triggers and the scheduler change; if any fails to load,
 * nothing changes. Deployments (issue 5) will call the same `install()`.
 */
import { isUtf8 } from 'node:buffer';
import { EventEmitter } from 'node:events';
import { cpus } from 'node:os';
import type { Aedes } from 'aedes';
import type { CoordinatorConfig } from '../config/schema.js';
import { CoordinatorError, isCoordinatorError } from '../errors.js';
import type { Logger } from '../log/logger.js';
import { parseTarget, RouteTable, type MessageSource, type Route } from '../router/router.js';
import { reservedInTask, reservedMessage, routeReachesTask } from '../router/reserved.js';
import { anyMatches } from '../router/topic.js';
import { TaskHosts } from '../sandbox/task-hosts.js';
import type { LogLevel, TaskLoad } from '../sandbox/protocol.js';
import { Scheduler, type Invocation, type InvocationCaller, type TaskStats } from '../scheduler/scheduler.js';
import type { DeviceActions } from '../devices/actions.js';
import { SHADOW_ENVELOPE_BYTES, type ShadowLimits } from '../shadow/request.js';
import type { ShadowId, ShadowService } from '../shadow/service.js';
import type { Store } from '../store/database.js';
import type { MessageEvent, TaskEvent } from './api.js';
import { HostApi, type Caller } from './host-api.js';
import type { RouteSpec, TaskBundle, TaskSpec } from './spec.js';
import { TaskStateStore } from './state-store.js';
import { TaskLog, type TaskLogLine } from './task-log.js';
import type { CronTriggers } from './triggers.js';

/** An installed task version. */
interface Installed {
  readonly spec: TaskSpec;
  readonly key: string;
  readonly sha256: string;
  readonly installedAt: string;
  /** Topics routes may deliver to the task: permissions.subscribe plus its own topic triggers. */
  readonly mayReceive: readonly string[];
  /** Invocations executing now: a replaced version is unloaded once its are done. */
  executing: number;
}

/** A task as `coordinator tasks list` shows it. */
export interface TaskInfo extends TaskStats {
  name: string;
  version: string;
  lifecycle: TaskSpec['lifecycle'];
  sha256: string;
  installedAt: string;
}

/** What the runtime needs from the coordinator. */
export interface TaskRuntimeDeps {
  readonly config: CoordinatorConfig;
  readonly log: Logger;
  readonly store: Store;
  readonly aedes: Aedes;
  readonly shadows: ShadowService;
  readonly shadowLimits: ShadowLimits;
  /** Device actions through profiles (ctx.devices.invoke). */
  readonly devices?: DeviceActions;
  /**
   * Puts a cloud-bound message in the durable spool (routes with target `cloud`); settles once it is
   * durable (or refused and logged): a device's PUBACK waits for it.
   */
  readonly toCloud?: (topic: string, payload: Buffer, qos: 0 | 1) => Promise<void>;
}

const shadowPrefix = (id: ShadowId): string => `$aws/things/${id.thing}/shadow${id.name === undefined ? '' : `/name/${id.name}`}`;

/** Routes implied by a task's manifest: its topic triggers (from any device, or the named source) and its own routes. */
function routesOf(spec: TaskSpec): Route[] {
  const routes: Route[] = [];
  for (const t of spec.triggers) if ('topic' in t) routes.push({ source: t.source ?? 'device:*', filter: t.topic, task: spec.name });
  for (const r of spec.routes) routes.push({ source: r.source, filter: r.filter, ...parseTarget(r.target) });
  return routes;
}

/** What the runtime tells its watchers (the deployment agent's health window). */
export interface TaskRuntimeEvents {
  /** A task's state changed (INSTALLED, RUNNING, ERRORED, BROKEN); `key` names the task version. */
  state: [task: string, state: string, key: string, error?: CoordinatorError];
  /** A pinned task failed outside an invocation (onStart after a restart, a timer, its isolate died). */
  failed: [task: string, key: string, error: CoordinatorError];
}

/** Options of one install. */
export interface InstallOptions {
  /** Routes besides those the tasks declare (a deployment's route table). */
  readonly routes?: readonly RouteSpec[];
}

/** The task runtime of one coordinator. */
export class TaskRuntime extends EventEmitter<TaskRuntimeEvents> {
  readonly #deps: TaskRuntimeDeps;
  readonly #host: TaskHosts;
  readonly #scheduler: Scheduler;
  readonly #api: HostApi;
  readonly #logs: TaskLog;
  #installed = new Map<string, Installed>();
  /** Every loaded key, current or draining, to find the spec a host call comes from. */
  readonly #byKey = new Map<string, Installed>();
  readonly #callers = new Map<string, Caller>();
  #routes = new RouteTable([]);
  #cron: CronTriggers | undefined;
  #generation = 0;
  #installing: Promise<unknown> = Promise.resolve();
  /** Messages from tasks that matched no route. */
  unrouted = 0;
  /** Set by stop(): device messages no longer follow routes. */
  #stopped = false;
  readonly #onDelta = (id: ShadowId, payload: Record<string, unknown>): void => this.#shadowDelta(id, payload);
  /**
   * Hears how invocations nobody waits for end (routed messages, triggers): one object for all of them.
   * Refusals are counted by the scheduler; failures are in the task's log already.
   */
  readonly #quiet: InvocationCaller = {
    resolve: () => undefined,
    reject: (e) => this.#deps.log.debug({ code: e.code }, `invocation not completed: ${e.message}`),
  };

  constructor(deps: TaskRuntimeDeps) {
    super();
    this.#deps = deps;
    const t = deps.config.tasks;
    this.#logs = new TaskLog(t.logRing);
    this.#api = new HostApi({
      log: deps.log,
      shadows: deps.shadows,
      shadowLimits: deps.shadowLimits,
      state: new TaskStateStore(deps.store, { maxBytesPerTask: t.stateMaxBytes, maxValueBytes: t.maxStateValueBytes, maxKeyBytes: 256 }),
      coordinatorThing: deps.config.thingName,
      limits: { maxPayloadBytes: deps.config.broker.maxPayloadBytes, maxPublishesPerInvocation: t.maxPublishesPerInvocation, maxPublishesPerSecond: t.maxPublishesPerSecond },
      publish: (task, topic, payload, qos) => this.#routeOnly({ kind: 'task', id: task }, topic, payload, qos),
      ...(deps.devices ? { devices: deps.devices } : {}),
    });
    this.#host = new TaskHosts({
      log: deps.log,
      restartDelayMs: t.hostRestartDelayMs,
      onCall: (key, invocationId, method, argsJson) => this.#call(key, invocationId, method, argsJson),
      onPublish: (key, invocationId, topic, payload, qos) => {
        const caller = this.#caller(key, invocationId);
        if (caller) this.#api.publishOneWay(caller, topic, payload, qos);
      },
      onLog: (key, invocationId, level, text) => this.#taskLog(this.#byKey.get(key)?.spec.name ?? key, invocationId, level, text),
      onFailed: (key, error) => {
        const name = this.#byKey.get(key)?.spec.name ?? key;
        this.#taskLog(name, 'background', 'error', `${error.code}: ${error.message}`);
        this.emit('failed', name, key, error);
      },
      // Only for the version installed now: a draining one's name belongs to its successor.
      onPipeline: (key, depth) => {
        const installed = this.#byKey.get(key);
        if (installed && this.#installed.get(installed.spec.name) === installed) this.#scheduler.pipeline(installed.spec.name, depth);
      },
    });
    this.#host.on('restarted', (host) => deps.log.warn({ code: 'COORD_ERR_TASK_HOST_CRASHED', host, restarts: this.#host.restarts }, 'task host restarted; tasks reloaded'));
    // A task that crashed its host again and again: BROKEN, with the reason, until it is redeployed.
    this.#host.on('quarantined', (key, error) => {
      const installed = this.#byKey.get(key);
      if (!installed || this.#installed.get(installed.spec.name) !== installed) return;
      deps.log.error({ code: error.code, task: installed.spec.name }, error.message);
      this.#scheduler.quarantine(installed.spec.name, error);
    });
    this.#scheduler = new Scheduler({
      slots: t.slots ?? Math.max(1, cpus().length),
      execute: (inv, done) => this.#execute(inv, done),
      onStateChange: (task, state, error) => {
        const level = state === 'BROKEN' ? 'error' : state === 'ERRORED' ? 'warn' : 'info';
        deps.log[level]({ task, state, code: error?.code }, `task ${task} is ${state}`);
        if (error) this.#taskLog(task, 'scheduler', state === 'BROKEN' ? 'error' : 'warn', `${state}: ${error.code}: ${error.message}`);
        const key = this.#installed.get(task)?.key;
        if (key !== undefined) this.emit('state', task, state, key, error);
      },
    });
  }

  /**
   * Listens to the broker and the shadow service. The task host process starts with the first task
   * installed: a gateway without tasks does not pay for it.
   */
  start(): void {
    this.#deps.shadows.on('delta', this.#onDelta);
  }

  /** Process id of the task host (for status and tests). */
  get hostPid(): number | undefined {
    return this.#host.pid;
  }

  /** Checks a task set as install() would, without changing anything; rejects with a coded error. */
  async validate(bundles: readonly TaskBundle[], options: InstallOptions = {}): Promise<RouteTable> {
    const names = new Set<string>();
    for (const b of bundles) {
      if (names.has(b.spec.name)) throw new CoordinatorError('COORD_ERR_TASK_MANIFEST', `two tasks are named ${b.spec.name}`);
      names.add(b.spec.name);
    }
    for (const b of bundles) {
      const [reserved] = reservedInTask(b.spec);
      if (reserved) throw new CoordinatorError('COORD_ERR_DEPLOY_RESERVED_TOPIC', `task ${b.spec.name}: ${reserved.path}: ${reservedMessage(reserved.filter)}`);
    }
    const routes = bundles.flatMap((b) => routesOf(b.spec));
    for (const r of options.routes ?? []) {
      if (routeReachesTask(r)) throw new CoordinatorError('COORD_ERR_DEPLOY_RESERVED_TOPIC', `route ${r.source} -> ${r.target}: ${reservedMessage(r.filter)}`);
      routes.push({ source: r.source, filter: r.filter, ...parseTarget(r.target) });
    }
    for (const r of routes) {
      if (r.task !== undefined && !names.has(r.task)) throw new CoordinatorError('COORD_ERR_ROUTE_INVALID', `a route targets task ${r.task}, which is not installed`);
      const src = /^task:(.+)$/.exec(r.source)?.[1];
      if (src !== undefined && src !== '*' && !names.has(src)) throw new CoordinatorError('COORD_ERR_ROUTE_INVALID', `a route's source is task ${src}, which is not installed`);
    }
    if (bundles.some((b) => b.spec.triggers.some((t) => 'cron' in t))) {
      // node-cron is loaded only by gateways that schedule something.
      const { validateCron } = await import('./triggers.js');
      for (const b of bundles) for (const t of b.spec.triggers) if ('cron' in t) validateCron(b.spec.name, t.cron, t.timezone);
    }
    return new RouteTable(routes);
  }

  /**
   * Replaces the installed task set with `bundles`. Unchanged tasks (same manifest and code) keep
   * running untouched; new versions are loaded first; then routes, triggers and the scheduler switch at
   * once; then the replaced versions are unloaded. Rejects with a coded error and changes nothing if a
   * task is invalid or fails to load.
   */
  install(bundles: readonly TaskBundle[], options: InstallOptions = {}): Promise<void> {
    // One install at a time: each compares against what the previous one left installed.
    const run = this.#installing.then(() => this.#install(bundles, options));
    this.#installing = run.catch(() => undefined);
    return run;
  }

  async #install(bundles: readonly TaskBundle[], options: InstallOptions): Promise<void> {
    const routes = await this.validate(bundles, options);
    const specs = bundles.map((b) => b.spec);
    const cron = specs.some((sp) => sp.triggers.some((t) => 'cron' in t))
      ? new (await import('./triggers.js')).CronTriggers(specs, (task, event) => this.#submit(task, event))
      : undefined;
    const gen = ++this.#generation;
    const next = new Map<string, Installed>();
    const toLoad: TaskLoad[] = [];
    const t = this.#deps.config.tasks;
    for (const b of bundles) {
      const current = this.#installed.get(b.spec.name);
      if (current && current.sha256 === b.sha256 && JSON.stringify(current.spec) === JSON.stringify(b.spec)) {
        next.set(b.spec.name, current);
        continue;
      }
      const key = `${b.spec.name}@${b.spec.version}#${gen}`;
      const topics = b.spec.triggers.flatMap((tr) => ('topic' in tr ? [tr.topic] : []));
      next.set(b.spec.name, { spec: b.spec, key, sha256: b.sha256, installedAt: new Date().toISOString(), mayReceive: [...b.spec.permissions.subscribe, ...topics], executing: 0 });
      toLoad.push({
        key,
        name: b.spec.name,
        version: b.spec.version,
        code: b.code,
        lifecycle: b.spec.lifecycle,
        memoryMb: b.spec.limits.memoryMb,
        timeoutMs: b.spec.limits.timeoutMs,
        minWarm: t.minWarm,
        concurrency: b.spec.limits.concurrency,
        idleMs: t.idleMs,
        configJson: JSON.stringify(b.spec.config),
        maxResultBytes: t.maxResultBytes,
        maxStateValueBytes: t.maxStateValueBytes,
        maxShadowRequestBytes: this.#deps.shadowLimits.maxStateBytes + SHADOW_ENVELOPE_BYTES,
        maxTimers: t.maxTimers,
        maxLogLines: t.maxLogLines,
        maxPublishesPerInvocation: t.maxPublishesPerInvocation,
        publishFilters: b.spec.permissions.publish,
        maxPayloadBytes: this.#deps.config.broker.maxPayloadBytes,
      });
    }
    for (const l of toLoad) this.#byKey.set(l.key, next.get(l.name)!);
    const loaded = await Promise.allSettled(toLoad.map((l) => this.#host.load(l)));
    const failed = loaded.findIndex((r) => r.status === 'rejected');
    if (failed >= 0) {
      cron?.stop();
      await Promise.all(toLoad.map((l) => this.#host.unload(l.key)));
      for (const l of toLoad) this.#byKey.delete(l.key);
      const reason = (loaded[failed] as PromiseRejectedResult).reason as Error;
      throw isCoordinatorError(reason) ? reason : new CoordinatorError('COORD_ERR_TASK_LOAD', reason.message, { cause: reason });
    }

    // The switch: nothing below can fail on the new set (it was validated above).
    const previous = this.#installed;
    this.#cron?.stop();
    this.#installed = next;
    this.#routes = routes;
    this.#scheduler.setTasks(
      [...next.values()].map(({ spec }) => ({
        name: spec.name,
        priority: spec.priority,
        concurrency: spec.limits.concurrency,
        queueDepth: spec.limits.queueDepth,
        timeoutMs: spec.limits.timeoutMs,
        retries: spec.retries,
        // A new version is a redeploy: the scheduler resets counters and BROKEN when this changes.
        key: next.get(spec.name)!.key,
      })),
    );
    this.#cron = cron;
    this.#cron?.start();
    for (const old of previous.values()) {
      if (next.get(old.spec.name)?.key === old.key) continue;
      void this.#drain(old.key)
        .then(() => this.#host.unload(old.key))
        .then(() => this.#byKey.delete(old.key));
    }
    this.#deps.log.info({ tasks: [...next.values()].map((i) => `${i.spec.name}@${i.spec.version}`), loaded: toLoad.length, routes: routes.routes.length }, 'tasks installed');
  }

  /**
   * Resolves when the replaced version `key` has no invocation executing, or after the drain grace
   * period (deployments.drainMs): unloading then fails what is left with COORD_ERR_TASK_CANCELLED.
   */
  async #drain(key: string): Promise<void> {
    const deadline = Date.now() + this.#deps.config.deployments.drainMs;
    while ((this.#byKey.get(key)?.executing ?? 0) > 0 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  /** The installed task versions, name → key (a key changes with every new version or manifest). */
  keys(): Map<string, string> {
    return new Map([...this.#installed].map(([name, i]) => [name, i.key]));
  }

  /**
   * A device's PUBLISH, accepted by the broker (its authorization passed), follows the routes whose
   * source matches the device. Returns the durable spool writes of its cloud routes, if any: the broker
   * holds the device's PUBACK until they settle, so a message the device was told is safe is on disk
   * in the spool too, not only in the broker's queues (DESIGN.md §2).
   */
  fromDevice(clientId: string, topic: string, payload: Buffer, qos: 0 | 1): Promise<unknown> | undefined {
    // No routes, no work per message.
    if (this.#stopped || this.#routes.routes.length === 0) return undefined;
    return this.#route({ kind: 'device', id: clientId }, topic, payload, qos);
  }

  /** A message from the cloud (the link's subscriptions) follows the routes whose source is `cloud`. */
  fromCloud(topic: string, payload: Buffer, qos: 0 | 1): void {
    this.#routeOnly({ kind: 'cloud' }, topic, payload, qos);
  }

  /** Queues an invocation of `task`; resolves with its result. */
  invoke(task: string, event: TaskEvent): Promise<unknown> {
    return this.#scheduler.submit(task, event);
  }

  /** Queues an invocation nobody waits for; `event` may be its JSON already (see messageEventJson). */
  #submit(task: string, event: TaskEvent | string): void {
    this.#scheduler.submitTo(task, event, this.#quiet);
  }

  #execute(inv: Invocation, done: (err: unknown, value?: unknown) => void): void {
    const installed = this.#installed.get(inv.task);
    if (!installed) {
      const err = new CoordinatorError('COORD_ERR_TASK_CANCELLED', `task ${inv.task} is no longer installed`);
      queueMicrotask(() => done(err));
      return;
    }
    this.#callers.set(inv.id, { spec: installed.spec, invocationId: inv.id, publishes: 0, background: false });
    installed.executing++;
    const eventJson = typeof inv.event === 'string' ? inv.event : JSON.stringify(inv.event);
    this.#host.run(installed.key, inv.id, eventJson, (err, json) => {
      this.#callers.delete(inv.id);
      installed.executing--;
      if (err) {
        this.#taskLog(inv.task, inv.id, 'error', `${err.code}: ${err.message}`);
        done(err);
        return;
      }
      let value: unknown = null;
      try {
        if (json !== 'null') value = JSON.parse(json!);
      } catch (e) {
        done(e);
        return;
      }
      done(undefined, value);
    });
  }

  /** Who a host call comes from: its running invocation, or (a pinned task's timer, onStart) the task in the background. */
  #caller(key: string, invocationId: string): Caller | undefined {
    const installed = this.#byKey.get(key);
    if (!installed) return undefined;
    const caller = this.#callers.get(invocationId);
    return caller?.spec.name === installed.spec.name ? caller : { spec: installed.spec, invocationId, publishes: 0, background: true };
  }

  #call(key: string, invocationId: string, method: string, argsJson: string): Promise<string | undefined> {
    const caller = this.#caller(key, invocationId);
    if (!caller) return Promise.reject(new CoordinatorError('COORD_ERR_TASK_CANCELLED', 'the task was unloaded'));
    return this.#api.call(caller, method, argsJson);
  }

  #taskLog(task: string, invocationId: string, level: LogLevel, text: string): void {
    const line = this.#logs.append(task, invocationId, level, text);
    this.#deps.log[level]({ task, invocationId, taskLog: true }, line.text);
  }

  /** #route for a source with no acknowledgement to hold: a failed spool write was logged by toCloud. */
  #routeOnly(source: MessageSource, topic: string, payload: Buffer, qos: 0 | 1): void {
    this.#route(source, topic, payload, qos)?.catch(() => undefined);
  }

  /**
   * Sends a message along the routes its source and topic match. Returns the spool writes of its cloud
   * routes (undefined when it has none).
   */
  #route(source: MessageSource, topic: string, payload: Buffer, qos: 0 | 1): Promise<unknown> | undefined {
    const hits = this.#routes.match(source, topic);
    if (hits.length === 0) {
      if (source.kind === 'task') {
        this.unrouted++;
        this.#deps.log.debug({ task: source.id, topic }, 'task message matched no route; delivered nowhere');
      }
      return undefined;
    }
    let eventJson: string | undefined;
    let spooled: Promise<unknown> | undefined;
    for (const r of hits) {
      if (r.cloud) {
        // Durable first, then upstream when the link can: the spool orders, bounds and survives restarts.
        // One append per message, however many cloud routes it matches.
        if (this.#deps.toCloud) spooled ??= this.#deps.toCloud(topic, payload, qos);
        else this.#deps.log.warn({ code: 'COORD_ERR_CLOUD_OFFLINE', topic }, 'a route targets the cloud but no cloud spool is configured; message dropped');
        continue;
      }
      if (r.task === undefined) {
        // To the broker, for devices: only messages the broker has not already carried (a device's own
        // PUBLISH went through it).
        if (source.kind !== 'device') this.#deps.aedes.publish({ cmd: 'publish', topic, payload, qos, retain: false, dup: false }, () => undefined);
        continue;
      }
      const target = this.#installed.get(r.task);
      if (!target) continue;
      if (!anyMatches(target.mayReceive, topic)) {
        this.#deps.log.warn({ code: 'COORD_ERR_TASK_DENIED', task: r.task, topic }, `route to task ${r.task} dropped: ${topic} is outside its permissions.subscribe`);
        continue;
      }
      eventJson ??= messageEventJson(source, topic, payload, qos);
      this.#submit(r.task, eventJson);
    }
    return spooled;
  }

  #shadowDelta(id: ShadowId, payload: Record<string, unknown>): void {
    for (const i of this.#installed.values()) {
      for (const t of i.spec.triggers) {
        if ('shadowDelta' in t && t.shadowDelta.thing === id.thing && t.shadowDelta.name === id.name) {
          this.#submit(i.spec.name, {
            type: 'shadowDelta',
            thing: id.thing,
            ...(id.name === undefined ? {} : { shadow: id.name }),
            state: payload.state as MessageEvent['payload'] & Record<string, never>,
            version: payload.version as number,
          });
        }
      }
    }
    if (this.#routes.routes.some((r) => r.source === 'shadow' || r.source === '*')) {
      this.#routeOnly({ kind: 'shadow' }, `${shadowPrefix(id)}/update/delta`, Buffer.from(JSON.stringify(payload)), 0);
    }
  }

  /** Every installed task with its state and counters. */
  list(): TaskInfo[] {
    return [...this.#installed.values()].map((i) => ({
      name: i.spec.name,
      version: i.spec.version,
      lifecycle: i.spec.lifecycle,
      sha256: i.sha256,
      installedAt: i.installedAt,
      ...this.#scheduler.stats(i.spec.name)!,
    }));
  }

  /** One task: what list() shows, its manifest, and its isolates. */
  async show(name: string): Promise<Record<string, unknown>> {
    const i = this.#installed.get(name);
    if (!i) throw new CoordinatorError('COORD_ERR_TASK_UNKNOWN', `no task named ${name} is installed`);
    const host = await this.#host.stats();
    return { ...this.list().find((t) => t.name === name), spec: i.spec, isolates: host.tasks.find((t) => t.key === i.key) ?? null };
  }

  /** Log lines of a task after sequence number `after`. */
  logs(name: string, after?: number): TaskLogLine[] {
    if (!this.#installed.has(name)) throw new CoordinatorError('COORD_ERR_TASK_UNKNOWN', `no task named ${name} is installed`);
    return this.#logs.since(name, after);
  }

  /** Totals for `coordinator status`. */
  async status(): Promise<Record<string, unknown>> {
    const host = await this.#host.stats().catch(() => ({ tasks: [], rssBytes: 0, hosts: [] }));
    return {
      installed: this.#installed.size,
      queued: this.#scheduler.queued,
      running: this.#scheduler.running,
      unrouted: this.unrouted,
      host: { pid: this.#host.pid ?? null, restarts: this.#host.restarts, rssBytes: host.rssBytes, processes: host.hosts },
    };
  }

  /** Stops triggers, cancels queued invocations, stops pinned tasks and the task host. */
  async stop(): Promise<void> {
    this.#stopped = true;
    this.#deps.shadows.off('delta', this.#onDelta);
    this.#cron?.stop();
    await Promise.race([this.#scheduler.close(), new Promise((r) => setTimeout(r, 1000).unref())]);
    await this.#host.close();
  }
}

/**
 * The event a task receives for an MQTT message, as the JSON the task host takes. A text payload goes as
 * its text alone, without `payload`: the sandbox parses it into `payload` (bootstrap.ts, eventOf, the one
 * place that rule lives), so the core neither parses it nor serializes it again, and keeps one string per
 * queued invocation instead of its objects. A binary payload goes as base64 with empty text.
 */
export function messageEventJson(source: MessageSource, topic: string, payload: Buffer, qos: 0 | 1): string {
  if (!isUtf8(payload)) {
    const binary: MessageEvent = { type: 'message', topic, payload: '', text: '', payloadBase64: payload.toString('base64'), qos, source };
    return JSON.stringify(binary);
  }
  return `{"type":"message","topic":${JSON.stringify(topic)},"text":${JSON.stringify(payload.toString('utf8'))},"qos":${qos},"source":${JSON.stringify(source)}}`;
}
