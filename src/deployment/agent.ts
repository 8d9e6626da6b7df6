/**
 * The deployment agent (DESIGN.md §3, path 2): watches `desired` of the coordinator's `deployment`
 * shadow and converges the gateway to it — validate, fetch and verify bundles, load every new task
 * version, switch as one step, watch health, then report SUCCEEDED, or roll back and report
 * FAILED_ROLLED_BACK, or refuse with every reason (REJECTED). The same path serves the cloud (a synced
 * desired state) and the operator offline (`coordinator deploy` writes desired locally).
 *
 * Guarantees, and how:
 * - One deployment at a time; a newer desired document supersedes the one in progress (its fetches are
 *   aborted, its health window ends), so no deployment can hold the next one back. Every step has a time
 *   limit (fetch attempts, task loads, deployments.timeoutMs overall, the health window).
 * - Nothing changes before the switch: the task runtime loads the new set beside the old one and
 *   switches routes, triggers and the scheduler at once (TaskRuntime.install).
 * - Crash safety: the history row records the step reached, and the `active` pointer moves in the same
 *   transaction as the status that explains it. At start the agent reinstalls the active deployment
 *   (complete, from the content store), then resumes the desired one; one interrupted by
 *   deployments.maxAttempts restarts is abandoned, so a deployment that crashes the gateway cannot loop.
 */
import type { CoordinatorConfig } from '../config/schema.js';
import { CoordinatorError, isCoordinatorError } from '../errors.js';
import type { Logger } from '../log/logger.js';
import type { ShadowId, ShadowService } from '../shadow/service.js';
import type { JsonObject } from '../shadow/document.js';
import type { TaskRuntime } from '../tasks/runtime.js';
import type { TaskBundle } from '../tasks/spec.js';
import {
  claimedId,
  DEPLOYMENT_SHADOW,
  MAX_REPORTED_PROBLEMS,
  parseDeployment,
  type Deployment,
  type DeploymentReport,
  type DeploymentStatus,
  type Problem,
} from './document.js';
import { documentHash, type DeploymentRecord, type DeploymentRecords } from './records.js';
import { checkDeployment } from './validate.js';

/** Fetches and verifies one bundle (./bundles.ts); the agent does not care how. */
export type AcquireBundle = (ref: Deployment['tasks'][number]['bundle'], signal: AbortSignal) => Promise<{ code: string; sha256: string }>;

/** What the agent needs. */
export interface AgentDeps {
  readonly config: CoordinatorConfig;
  readonly log: Logger;
  readonly shadows: ShadowService;
  readonly tasks: TaskRuntime;
  readonly records: DeploymentRecords;
  readonly acquire: AcquireBundle;
  /** Bundles kept in the content store: those of the history (the rest may be pruned). */
  readonly pruneBundles?: (keep: ReadonlySet<string>) => void;
}

/** Error codes of bundle checks: the document is at fault, so the deployment is REJECTED. */
const REJECTING_CODES = new Set(['COORD_ERR_BUNDLE_DIGEST', 'COORD_ERR_BUNDLE_SIGNATURE', 'COORD_ERR_BUNDLE_TOO_LARGE']);

/** Ends a run early: superseded by a newer desired document, or the agent stopping. */
class Superseded extends Error {}

interface Run {
  readonly id: string;
  readonly hash: string;
  readonly abort: AbortController;
  done: Promise<void>;
}

const truncate = (s: string, n: number): string => (s.length > n ? `${s.slice(0, n - 1)}…` : s);

/** The deployment agent of one coordinator. */
export class DeploymentAgent {
  readonly #deps: AgentDeps;
  readonly #shadow: ShadowId;
  #run: Run | undefined;
  /** Serializes reactions to desired changes (each may wait for the previous run to wind down). */
  #queue: Promise<void> = Promise.resolve();
  #stopped = false;
  #lastReport: DeploymentReport | undefined;
  #stateTimer: NodeJS.Timeout | undefined;
  readonly #onAccepted = (id: ShadowId, payload: Record<string, unknown>): void => {
    // Every accepted update that touched desired, whoever made it (MQTT, the CLI, the cloud link); the
    // agent's own reports touch reported only.
    if (id.thing !== this.#shadow.thing || id.name !== DEPLOYMENT_SHADOW) return;
    const state = payload.state as { desired?: unknown } | undefined;
    if (state?.desired !== undefined) this.#enqueue(false);
  };
  readonly #onTaskState = (): void => {
    // Task states travel in reported; coalesced so a flapping task costs one shadow write a second.
    this.#stateTimer ??= setTimeout(() => {
      this.#stateTimer = undefined;
      if (this.#lastReport && !this.#stopped) void this.#report({ ...this.#lastReport, tasks: this.#taskStates(), updatedAt: new Date().toISOString() });
    }, 1000);
    this.#stateTimer.unref();
  };

  constructor(deps: AgentDeps) {
    this.#deps = deps;
    this.#shadow = { thing: deps.config.thingName, name: DEPLOYMENT_SHADOW };
  }

  /** The coordinator's deployment shadow. */
  get shadowId(): ShadowId {
    return this.#shadow;
  }

  /**
   * Reinstalls the active deployment, then starts watching desired (and acts on it at once: a change
   * made while the coordinator was down, or a deployment a crash interrupted).
   */
  async start(): Promise<void> {
    const active = this.#deps.records.active();
    if (active) {
      try {
        await this.#install(active.document, new AbortController().signal);
        this.#deps.log.info({ deployment: active.id }, `deployment ${active.id} restored`);
      } catch (err) {
        // The history said this set ran; if it no longer loads (its bundles vanished from the data
        // directory) the gateway runs without tasks and says so.
        this.#deps.log.error({ err, code: (err as CoordinatorError).code, deployment: active.id }, `deployment ${active.id} could not be restored`);
      }
    }
    this.#settleOrphans();
    this.#deps.shadows.on('accepted', this.#onAccepted);
    this.#deps.tasks.on('state', this.#onTaskState);
    this.#enqueue(true);
    await this.#queue;
  }

  /**
   * Rows left IN_PROGRESS by a crash whose document is no longer the desired one: desired changed while
   * the coordinator was down (e.g. through the cloud), so they are superseded, not resumed.
   */
  #settleOrphans(): void {
    const desired = this.#deps.shadows.document(this.#shadow)?.state.desired;
    const hash = desired === undefined ? undefined : documentHash(desired);
    for (const r of this.#deps.records.history(this.#deps.config.deployments.historySize)) {
      if (r.status === 'IN_PROGRESS' && r.hash !== hash) void this.#deps.records.update(r.seq, { status: 'SUPERSEDED', reason: 'superseded while the coordinator was down', step: 'done' });
    }
  }

  /** Stops watching; a run in progress is abandoned where it is (a restart resumes it). */
  async stop(): Promise<void> {
    this.#stopped = true;
    this.#deps.shadows.off('accepted', this.#onAccepted);
    this.#deps.tasks.off('state', this.#onTaskState);
    clearTimeout(this.#stateTimer);
    this.#run?.abort.abort();
    await this.#run?.done.catch(() => undefined);
  }

  /** The desired document, the report, the running deployment. */
  status(): { desired: unknown; reported: unknown; active: DeploymentRecord | undefined; inProgress: string | null } {
    const doc = this.#deps.shadows.document(this.#shadow);
    return { desired: doc?.state.desired ?? null, reported: doc?.state.reported ?? null, active: this.#deps.records.active(), inProgress: this.#run?.id ?? null };
  }

  /** Writes `document` as the desired deployment (what `coordinator deploy` and rollback do). */
  async request(document: Record<string, unknown>): Promise<void> {
    // A copy: the shadow service keeps what it is given as part of its document.
    await this.#deps.shadows.update(this.#shadow, { state: { desired: structuredClone(document) as JsonObject } });
  }

  /**
   * Asks for the deployment that ran before the active one, under a new id: it goes through the same
   * path as any deployment (validated, verified, health-checked).
   */
  async rollback(): Promise<string> {
    const active = this.#deps.records.active();
    const previous = this.#deps.records
      .history(this.#deps.config.deployments.historySize)
      .find((r) => r.status === 'SUCCEEDED' && r.seq !== active?.seq && (active === undefined || r.seq < active.seq));
    if (!previous) throw new CoordinatorError('COORD_ERR_DEPLOY_NO_PREVIOUS', 'no earlier successful deployment is in the history');
    const parsed = parseDeployment(previous.document);
    if (!parsed.ok) throw new CoordinatorError('COORD_ERR_DEPLOY_NO_PREVIOUS', `deployment ${previous.id} in the history no longer validates`);
    const id = truncate(`rollback-${Date.now().toString(36)}-${previous.id}`, 64);
    await this.request({ ...(previous.document as JsonObject), id });
    return id;
  }

  /**
   * Resolves once deployment `id` runs (switched in, health window possibly still open) or has ended
   * without running; undefined after `timeoutMs`. For start-up with tasks.dir, which should not announce
   * "ready" before its tasks answer.
   */
  async switched(id: string, timeoutMs: number): Promise<DeploymentRecord | undefined> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      await this.#queue;
      const latest = this.#deps.records.history(5).find((r) => r.id === id);
      if (latest && (this.#deps.records.active()?.seq === latest.seq || (latest.status !== 'IN_PROGRESS' && latest.status !== 'SUPERSEDED'))) return latest;
      if (Date.now() >= deadline || this.#stopped) return undefined;
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  #enqueue(boot: boolean): void {
    this.#queue = this.#queue.then(() => this.#react(boot)).catch((err: unknown) => this.#deps.log.error({ err }, 'deployment agent failed'));
  }

  /** Compares desired with what runs and what was tried, and starts a run when they differ. */
  async #react(boot: boolean): Promise<void> {
    if (this.#stopped) return;
    const desired = this.#deps.shadows.document(this.#shadow)?.state.desired;
    // No desired document: nobody asked for anything (a deployment of no tasks is `tasks: []`).
    if (desired === undefined) return;
    const hash = documentHash(desired);
    const id = claimedId(desired) ?? '(no id)';
    if (this.#run && this.#run.hash === hash && this.#run.id === id) return;
    const record = this.#deps.records.find(id, hash);
    const active = this.#deps.records.active();
    // A document already tried stays settled: the same content gets the same outcome (write a new id to
    // try again). One that succeeded but no longer runs (desired went back to it) is deployed again.
    const settled = record !== undefined && (record.status === 'REJECTED' || record.status === 'FAILED_ROLLED_BACK' || (record.status === 'SUCCEEDED' && record.seq === active?.seq));
    if (this.#run) {
      const old = this.#run;
      this.#deps.log.info({ deployment: old.id, by: id }, `deployment ${old.id} superseded by ${id}`);
      old.abort.abort();
      await old.done.catch(() => undefined);
    }
    if (this.#stopped) return;
    if (settled) {
      await this.#reportRecord(record);
      return;
    }
    const run: Run = { id, hash, abort: new AbortController(), done: Promise.resolve() };
    this.#run = run;
    run.done = this.#deploy(run, desired, record?.status === 'IN_PROGRESS' && boot ? record : undefined).finally(() => {
      if (this.#run === run) this.#run = undefined;
    });
    // Not awaited: the queue must stay free to hear a superseding document.
    run.done.catch((err: unknown) => this.#deps.log.error({ err, deployment: id }, 'deployment run failed'));
  }

  /** Runs a deployment; `interrupted` is its row when a restart cut it short (it resumes there). */
  async #deploy(run: Run, desired: unknown, interrupted: DeploymentRecord | undefined): Promise<void> {
    const { records, config, log } = this.#deps;
    if (interrupted) {
      const r = interrupted;
      if (r.attempts >= config.deployments.maxAttempts) {
        await this.#abandon(r, `abandoned: interrupted by ${r.attempts} coordinator restarts (deployments.maxAttempts)`);
        return;
      }
      if (r.step === 'rollback' && records.active()?.seq === r.seq) {
        // Judged unhealthy before the restart: finish the rollback it had started.
        await records.update(r.seq, { attempts: r.attempts + 1 });
        await this.#rollBack(run, r.seq, `${r.reason} (rollback resumed after a coordinator restart)`, this.#previousOf(r.seq));
        return;
      }
      if (r.step === 'health' && records.active()?.seq === r.seq) {
        // It was switched in before the restart: the gateway runs it; watch its health again.
        await records.update(r.seq, { attempts: r.attempts + 1 });
        try {
          await this.#health(run, r.seq, `resumed after a coordinator restart (attempt ${r.attempts + 1}); health window restarted`);
        } catch (err) {
          if (!(err instanceof Superseded)) throw err;
          if (!this.#stopped) await records.update(r.seq, { status: 'SUPERSEDED', reason: 'superseded by a newer desired deployment' });
        }
        return;
      }
      const why = `resumed after a coordinator restart during step ${r.step} (attempt ${r.attempts + 1})`;
      await records.update(r.seq, { reason: why, attempts: r.attempts + 1 });
      await this.#execute(run, desired, r.seq, why);
      return;
    }
    // A new document, or one tried before that is wanted again: a new row.
    const parsed = parseDeployment(desired);
    if (!parsed.ok) {
      await this.#reject(run, desired, parsed.problems);
      return;
    }
    const problems = await checkDeployment(parsed.deployment, config);
    if (problems.length > 0) {
      await this.#reject(run, desired, problems);
      return;
    }
    const seq = await records.create({ id: run.id, hash: run.hash, document: desired, status: 'IN_PROGRESS', reason: 'validated; fetching bundles', step: 'fetch' });
    log.info({ deployment: run.id }, `deployment ${run.id} started`);
    await this.#execute(run, desired, seq, 'validated; fetching bundles');
  }

  /** Fetch, load, switch, health: the steps after validation. */
  async #execute(run: Run, desired: unknown, seq: number, reason: string): Promise<void> {
    const { records, config } = this.#deps;
    const previous = records.active();
    try {
      await this.#report({ id: run.id, status: 'IN_PROGRESS', reason, problems: null, running: previous?.id ?? null, tasks: this.#taskStates(), updatedAt: new Date().toISOString() });
      const deadline = AbortSignal.any([run.abort.signal, AbortSignal.timeout(config.deployments.timeoutMs)]);
      await records.update(seq, { step: 'fetch' });
      // One line per step: what an operator reads, and what the crash tests aim their SIGKILLs at.
      this.#deps.log.info({ deployment: run.id, step: 'fetch' }, `deployment ${run.id}: fetching bundles`);
      const parsed = parseDeployment(desired);
      if (!parsed.ok) throw new Error('a validated document failed validation');
      let bundles: TaskBundle[];
      try {
        bundles = await this.#bundles(parsed.deployment, deadline);
      } catch (err) {
        if (run.abort.signal.aborted) throw new Superseded();
        if (isCoordinatorError(err) && REJECTING_CODES.has(err.code)) {
          const path = (err.details as { path?: string } | undefined)?.path ?? 'tasks';
          await this.#finish(run, seq, 'REJECTED', `${err.code}: ${err.message}`, [{ path, message: `${err.code}: ${err.message}` }], undefined);
          return;
        }
        if (deadline.aborted) throw new CoordinatorError('COORD_ERR_DEPLOY_TIMEOUT', `fetching bundles took longer than deployments.timeoutMs (${config.deployments.timeoutMs} ms)`, { cause: err });
        throw err;
      }
      if (run.abort.signal.aborted) throw new Superseded();
      await records.update(seq, { step: 'load', reason: 'bundles verified; loading tasks' });
      this.#deps.log.info({ deployment: run.id, step: 'load' }, `deployment ${run.id}: loading tasks`);
      const before = new Set(this.#deps.tasks.keys().values());
      await this.#installDocument(parsed.deployment, bundles, deadline);
      // Only what this switch loaded is on trial: a task it kept as it was is not its doing.
      const added = new Set([...this.#deps.tasks.keys().values()].filter((k) => !before.has(k)));
      // Switched: the new set runs. The pointer moves with the step, in one durable transaction.
      await records.update(seq, { step: 'health', reason: 'switched; health window running' }, seq, previous?.seq ?? 0);
      this.#deps.log.info({ deployment: run.id, step: 'health' }, `deployment ${run.id}: switched; health window running`);
      await this.#health(run, seq, `switched; watching health for ${config.deployments.healthWindowMs} ms`, added, previous);
    } catch (err) {
      if (err instanceof Superseded || run.abort.signal.aborted) {
        // Stopping is not superseding: the row stays IN_PROGRESS and the next start resumes it.
        if (!this.#stopped) await records.update(seq, { status: 'SUPERSEDED', reason: 'superseded by a newer desired deployment' });
        return;
      }
      const e = isCoordinatorError(err) ? err : new CoordinatorError('COORD_ERR_DEPLOY_FAILED', (err as Error).message, { cause: err });
      // Nothing was switched (install() changes nothing when it fails): the previous set still runs.
      await this.#finish(run, seq, 'FAILED_ROLLED_BACK', `${e.code}: ${e.message}; ${previous ? `deployment ${previous.id} keeps running` : 'no tasks run'}`, null, previous?.seq ?? 0);
    }
  }

  /**
   * Watches the task versions `keys` (those the switch loaded; after a restart, every installed one) for
   * the health window; rolls back to `previous` if one breaks.
   */
  async #health(run: Run, seq: number, reason: string, keys: ReadonlySet<string> = new Set(this.#deps.tasks.keys().values()), previous = this.#previousOf(seq)): Promise<void> {
    const { tasks, config } = this.#deps;
    await this.#report({ id: run.id, status: 'IN_PROGRESS', reason, problems: null, running: run.id, tasks: this.#taskStates(), updatedAt: new Date().toISOString() });
    const failure = await new Promise<string | undefined>((resolve) => {
      const timer = setTimeout(() => finish(undefined), config.deployments.healthWindowMs);
      const onState = (task: string, state: string, key: string, error?: CoordinatorError): void => {
        if (state === 'BROKEN' && keys.has(key)) finish(`task ${task} went BROKEN during the health window${error ? ` (${error.code}: ${error.message})` : ''}`);
      };
      const onFailed = (task: string, key: string, error: CoordinatorError): void => {
        if (error.code === 'COORD_ERR_TASK_LOAD' && keys.has(key)) finish(`pinned task ${task} failed to start (${error.message})`);
      };
      const onAbort = (): void => finish('superseded');
      function finish(result: string | undefined): void {
        clearTimeout(timer);
        tasks.off('state', onState);
        tasks.off('failed', onFailed);
        run.abort.signal.removeEventListener('abort', onAbort);
        resolve(result);
      }
      tasks.on('state', onState);
      tasks.on('failed', onFailed);
      run.abort.signal.addEventListener('abort', onAbort);
      if (run.abort.signal.aborted) finish('superseded');
    });
    if (failure === 'superseded') throw new Superseded();
    if (failure === undefined) {
      await this.#finish(run, seq, 'SUCCEEDED', `running since ${new Date().toISOString()}`, null, seq);
      return;
    }
    // Recorded first: killed during the rollback, the next start finishes it instead of trying the set again.
    await this.#deps.records.update(seq, { step: 'rollback', reason: failure });
    // Logged once durable: whoever reads this line (an operator, the crash test) may rely on it.
    this.#deps.log.warn({ deployment: run.id, reason: failure, code: 'COORD_ERR_DEPLOY_UNHEALTHY' }, `deployment ${run.id} is unhealthy; rolling back`);
    await this.#rollBack(run, seq, failure, previous);
  }

  /** Reinstalls `previous` (or no tasks) in place of the unhealthy deployment `seq`, and reports it. */
  async #rollBack(run: Run, seq: number, failure: string, previous: DeploymentRecord | undefined): Promise<void> {
    const { tasks } = this.#deps;
    let restored = previous?.id ?? null;
    try {
      if (previous) await this.#install(previous.document, new AbortController().signal);
      else await tasks.install([]);
    } catch (err) {
      // The previous set was verified and ran before; if it cannot load now, run nothing rather than
      // the broken set.
      await tasks.install([]).catch(() => undefined);
      restored = null;
      this.#deps.log.error({ err, deployment: previous?.id }, 'rolling back failed; no tasks run');
    }
    const back = restored ? `rolled back to ${restored}` : 'rolled back: no tasks run';
    await this.#finish(run, seq, 'FAILED_ROLLED_BACK', `COORD_ERR_DEPLOY_UNHEALTHY: ${failure}; ${back}`, null, restored ? previous!.seq : 0);
  }

  /**
   * The deployment that ran before `seq` (for a health window or rollback resumed after a restart): the
   * `previous` pointer saved at its switch; for rows from before that pointer existed, the newest
   * earlier success in the history.
   */
  #previousOf(seq: number): DeploymentRecord | undefined {
    const { records } = this.#deps;
    if (records.active()?.seq === seq) {
      const p = records.previous();
      if (p) return p;
    }
    return records.history(this.#deps.config.deployments.historySize).find((r) => r.seq < seq && r.status === 'SUCCEEDED');
  }

  /** Fetches and verifies every bundle of `doc` (at most 4 at once). */
  async #bundles(doc: Deployment, signal: AbortSignal): Promise<TaskBundle[]> {
    const out: TaskBundle[] = new Array<TaskBundle>(doc.tasks.length);
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < doc.tasks.length) {
        const i = next++;
        const t = doc.tasks[i]!;
        try {
          const { code, sha256 } = await this.#deps.acquire(t.bundle, signal);
          const spec = { ...t, entry: 'bundle' } as Partial<typeof t> & TaskBundle['spec'];
          delete spec.bundle;
          out[i] = { spec, code, sha256 };
        } catch (err) {
          if (isCoordinatorError(err)) throw new CoordinatorError(err.code, `task ${t.name}: ${err.message}`, { cause: err, details: { ...(err.details as object | undefined), path: `tasks.${i}.bundle` } });
          throw err;
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(4, doc.tasks.length) }, worker));
    return out;
  }

  /** Installs a stored document's tasks (restore at start, rollback). */
  async #install(document: unknown, signal: AbortSignal): Promise<void> {
    const parsed = parseDeployment(document);
    if (!parsed.ok) throw new CoordinatorError('COORD_ERR_DEPLOY_FAILED', 'a stored deployment no longer validates');
    await this.#installDocument(parsed.deployment, await this.#bundles(parsed.deployment, signal), signal);
  }

  async #installDocument(doc: Deployment, bundles: TaskBundle[], signal: AbortSignal): Promise<void> {
    if (signal.aborted) throw new Superseded();
    await this.#deps.tasks.install(bundles, { routes: doc.routes });
  }

  async #reject(run: Run, desired: unknown, problems: readonly Problem[]): Promise<void> {
    const reason = `${problems.length} problem${problems.length === 1 ? '' : 's'}: ${problems.map((p) => `${p.path}: ${p.message}`).join('; ')}`;
    const seq = await this.#deps.records.create({ id: run.id, hash: run.hash, document: desired, status: 'REJECTED', reason, problems, step: 'done' });
    this.#deps.log.warn({ deployment: run.id, code: 'COORD_ERR_DEPLOY_REJECTED', problems }, `deployment ${run.id} rejected`);
    await this.#reportRecord(this.#deps.records.get(seq)!);
  }

  async #abandon(record: DeploymentRecord, reason: string): Promise<void> {
    const active = this.#deps.records.active();
    // If the abandoned deployment had been switched in, put back the one before it.
    if (active?.seq === record.seq) {
      const previous = this.#previousOf(record.seq);
      if (previous) await this.#install(previous.document, new AbortController().signal).catch(() => this.#deps.tasks.install([]));
      else await this.#deps.tasks.install([]);
      await this.#deps.records.update(record.seq, { status: 'FAILED_ROLLED_BACK', reason, step: 'done' }, previous?.seq ?? 0);
    } else {
      await this.#deps.records.update(record.seq, { status: 'FAILED_ROLLED_BACK', reason, step: 'done' });
    }
    this.#deps.log.error({ deployment: record.id, code: 'COORD_ERR_DEPLOY_FAILED' }, reason);
    await this.#reportRecord(this.#deps.records.get(record.seq)!);
  }

  /** Records the outcome (and where `active` points now), then reports it. */
  async #finish(run: Run, seq: number, status: DeploymentStatus, reason: string, problems: readonly Problem[] | null, active: number | undefined): Promise<void> {
    const { records, config, log } = this.#deps;
    await records.update(seq, { status, reason, problems, step: 'done' }, active);
    const level = status === 'SUCCEEDED' ? 'info' : 'warn';
    log[level]({ deployment: run.id, status, code: status === 'SUCCEEDED' ? undefined : status === 'REJECTED' ? 'COORD_ERR_DEPLOY_REJECTED' : 'COORD_ERR_DEPLOY_FAILED' }, `deployment ${run.id}: ${status}: ${reason}`);
    await this.#reportRecord(records.get(seq)!);
    await records.prune(config.deployments.historySize);
    this.#pruneBundles();
  }

  #pruneBundles(): void {
    if (!this.#deps.pruneBundles) return;
    const { records } = this.#deps;
    // The history's bundles, and always the running set's (a rollback or a restart needs no network) and
    // the desired one's (it may be tried again).
    const documents = records.history(this.#deps.config.deployments.historySize).map((r) => r.document);
    for (const r of [records.active(), records.previous()]) if (r) documents.push(r.document);
    const desired = this.#deps.shadows.document(this.#shadow)?.state.desired;
    if (desired !== undefined) documents.push(desired);
    const keep = new Set<string>();
    for (const doc of documents) {
      const parsed = parseDeployment(doc);
      if (parsed.ok) for (const t of parsed.deployment.tasks) keep.add(t.bundle.sha256);
    }
    this.#deps.pruneBundles(keep);
  }


  async #reportRecord(r: DeploymentRecord): Promise<void> {
    const status: DeploymentStatus = r.status === 'SUPERSEDED' ? 'IN_PROGRESS' : r.status;
    await this.#report({
      id: r.id === '(no id)' ? null : r.id,
      status,
      reason: r.reason,
      problems: r.problems,
      running: this.#deps.records.active()?.id ?? null,
      tasks: this.#taskStates(),
      updatedAt: new Date().toISOString(),
    });
  }

  #taskStates(): DeploymentReport['tasks'] {
    return this.#deps.tasks.list().map((t) => ({ name: t.name, version: t.version, state: t.state }));
  }

  /** Writes `report` to reported, bounded to fit in a shadow (problems capped, texts shortened). */
  async #report(report: DeploymentReport): Promise<void> {
    this.#lastReport = report;
    const problems = report.problems?.slice(0, MAX_REPORTED_PROBLEMS).map((p) => ({ path: truncate(p.path, 80), message: truncate(p.message, 160) }));
    const reported: JsonObject = {
      id: report.id,
      status: report.status,
      reason: truncate(report.reason, 500),
      // null removes the key (shadow merge): absent when there is nothing to say.
      problems: problems && problems.length > 0 ? problems : null,
      problemCount: report.problems && report.problems.length > 0 ? report.problems.length : null,
      running: report.running,
      tasks: report.tasks.map((t) => ({ ...t })),
      updatedAt: report.updatedAt,
    };
    try {
      await this.#deps.shadows.update(this.#shadow, { state: { reported } });
    } catch (err) {
      // Reporting must not stop a deployment: the history has the truth, the next report catches up.
      this.#deps.log.warn({ err, deployment: report.id }, 'could not write the deployment report');
    }
  }
}
