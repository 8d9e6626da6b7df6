/**
 * Crash safety of deployments (docs/deployments.md, "Crash safety"): the real coordinator is SIGKILLed
 * at distinct points of a deployment and restarted on the same data directory. After every restart the
 * gateway runs either the complete previous deployment or the complete new one — never a mix — the
 * deployment shadow's reported state says which and why, and the interrupted deployment converges:
 * resumed to SUCCEEDED, or abandoned after deployments.maxAttempts restarts (FAILED_ROLLED_BACK with
 * the previous set running).
 *
 * One gateway goes through a chain of deployments d1 … d11 (each kill point's "old" is the one running
 * before it). Every task of a deployment answers a probe message and an invoke with the deployment its
 * code comes from, so "complete" is checked three ways: the installed set (`tasks list`), one probe
 * message that every task triggers on (each task answers once, from the same deployment), and
 * `reported.running` / `reported.tasks`. Bundles come from a real HTTPS server (test CA as the only trust
 * root) that can hold a download; a pinned task whose onStart sleeps makes the load step long enough to
 * kill inside; the "cloud" is an MQTT client with a persistent session, so the reports a restarted
 * coordinator publishes before it reconnects still reach it.
 */
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { adminRequest } from '../../src/admin/client.js';
import type { TaskInfo } from '../../src/tasks/runtime.js';
import {
  childPids,
  CLOUD_CLIENT,
  connectCloud,
  debug,
  planDeployment,
  planSet,
  setOf,
  startBundleServer,
  survivors,
  type BundleServer,
  type Cloud,
  type Planned,
  type SeenReport,
  type TaskPlan,
} from '../helpers/crash-deploy.js';
import { runCli, startCoordinator, tempDir, type LogLine, type RunningCoordinator } from '../helpers/process.js';
import { createTestCa } from '../helpers/tls.js';

const THING = 'crash-gw';
/** How long a pinned task's onStart sleeps: the load step's length. */
const START_MS = 1200;
const HEALTH_MS = 1500;
const MAX_ATTEMPTS = 2;

interface Proc {
  readonly n: number;
  readonly c: RunningCoordinator;
  readonly cloud: Cloud;
}

interface Reported {
  id?: string | null;
  status?: string;
  reason?: string;
  running?: string | null;
  tasks?: { name: string; version: string; state: string }[];
}

interface HistoryRow {
  seq: number;
  id: string;
  status: string;
  step: string;
  attempts: number;
  reason: string;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const msgOf = (l: LogLine): string => (typeof l.msg === 'string' ? l.msg : '');
const stepLine = (id: string, step: string) => (l: LogLine) => l.deployment === id && l.step === step;
const statusLine = (id: string) => (l: LogLine) => l.deployment === id && typeof l.status === 'string';

describe('deployment crash safety: SIGKILL at every step, restart, old-or-new complete', () => {
  const base = tempDir('coord-deploy-crash-');
  const dataDir = join(base, 'data');
  const configFile = join(base, 'config.json');
  const caFile = join(base, 'ca.pem');
  const socket = join(dataDir, 'coordinator.sock');
  const reports: SeenReport[] = [];
  const plans = new Map<string, Planned>();
  let server: BundleServer;
  let proc: Proc | undefined;
  let starts = 0;

  const writeConfig = ({ healthWindowMs = HEALTH_MS, historySize = 20 } = {}): void =>
    writeFileSync(
      configFile,
      JSON.stringify({
        thingName: THING,
        shadows: { controlClients: [CLOUD_CLIENT] },
        deployments: {
          healthWindowMs,
          historySize,
          maxAttempts: MAX_ATTEMPTS,
          drainMs: 500,
          timeoutMs: 60_000,
          fetch: { trustRoots: [caFile], timeoutMs: 15_000, retries: 2, backoffMs: 100 },
        },
      }),
    );

  beforeAll(async () => {
    const ca = await createTestCa();
    writeFileSync(caFile, ca.certPem);
    server = await startBundleServer(await ca.issueServerCert());
    writeConfig();
  });

  // A failure prints what the coordinator processes of that test logged last.
  const seenProcs: Proc[] = [];
  afterEach((ctx) => {
    if (ctx.task.result?.state !== 'fail') return;
    for (const p of seenProcs.slice(-3)) {
      const tail = p.c.logs.slice(-40).map((l) => JSON.stringify(l));
      process.stderr.write(`--- start ${p.n}, last log lines:\n${tail.join('\n')}\n`);
    }
    process.stderr.write(`--- last reports:\n${reports.slice(-6).map((r) => JSON.stringify(r)).join('\n')}\n`);
  });

  afterAll(async () => {
    await proc?.cloud.end();
    await proc?.c.kill();
    await server?.close();
  });

  const plan = (id: string, tasks: TaskPlan[]): Planned => {
    const p = planDeployment(server, id, tasks, START_MS);
    plans.set(id, p);
    return p;
  };
  const planned = (id: string): Planned => plans.get(id)!;

  /**
   * Starts the coordinator on the data directory; checks which deployment it restored before "ready"
   * (`restored`: its id, null for none, undefined: not checked here).
   */
  async function boot(restored: string | null | undefined): Promise<Proc> {
    const c = await startCoordinator({ dataDir, args: ['--config', configFile] });
    const n = ++starts;
    if (restored !== undefined) {
      expect(c.logs.filter((l) => msgOf(l).includes('could not be restored')), 'the active deployment restores').toEqual([]);
      const restoredIds = c.logs.filter((l) => / restored$/.test(msgOf(l))).map((l) => l.deployment);
      expect(restoredIds, `start ${n}: the deployment the active pointer names is reinstalled before "coordinator ready"`).toEqual(restored === null ? [] : [restored]);
    }
    const cloud = await connectCloud(c.url, THING, n, reports);
    proc = { n, c, cloud };
    seenProcs.push(proc);
    debug(`start ${n} ready (pid ${c.proc.pid}), restored ${String(restored)}`);
    return proc;
  }

  /** SIGKILL; the task host must not outlive its coordinator. */
  async function crash(p: Proc): Promise<void> {
    const children = childPids(p.c.proc.pid!);
    await p.c.kill();
    debug(`start ${p.n} killed; last line: ${JSON.stringify(p.c.logs[p.c.logs.length - 1])}`);
    proc = undefined;
    await p.cloud.end();
    const left = await survivors(children, 5000);
    expect(left, 'child processes (the task host) still running after their coordinator was SIGKILLed').toEqual([]);
  }

  const installed = async (): Promise<string[]> => setOf((await adminRequest<{ tasks: TaskInfo[] }>(socket, 'GET', '/v1/tasks')).tasks);
  const status = (): Promise<{ reported: Reported | null; active: { id: string } | null }> => adminRequest(socket, 'GET', '/v1/deployment');
  const history = async (id: string): Promise<HistoryRow[]> =>
    (await adminRequest<{ deployments: HistoryRow[] }>(socket, 'GET', '/v1/deployments?limit=100')).deployments.filter((d) => d.id === id);

  /**
   * Old-or-new complete, now: the installed set is exactly one candidate's, and one probe message makes
   * every task of it answer from that deployment's code (and no other). A probe that straddles a switch
   * (the set before and after differ) is not judged; it is taken again.
   */
  async function assertOneComplete(p: Proc, candidates: Planned[], label: string): Promise<Planned> {
    for (let i = 0; i < 5; i++) {
      const before = await installed();
      const answers = await p.cloud.probe(before.length);
      const after = await installed();
      if (before.join() !== after.join()) continue;
      const match = candidates.find((c) => planSet(c).join() === before.join());
      expect(match, `${label}: the gateway runs [${before.join(', ')}], which is none of: ${candidates.map((c) => `${c.id} [${planSet(c).join(', ')}]`).join('; ')}`).toBeDefined();
      const want = Object.fromEntries([...match!.tasks].map(([name, t]) => [name, [t.tag]]));
      expect(Object.fromEntries(answers), `${label}: every task of ${match!.id} answers the probe, with ${match!.id}'s code only`).toEqual(want);
      return match!;
    }
    throw new Error(`${label}: the installed set kept changing`);
  }

  /** Waits until reported says deployment `id` has `wanted` status. */
  async function settled(id: string, wanted: string, timeoutMs = 25_000): Promise<Reported> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const r = (await status()).reported;
      if (r?.id === id && r.status === wanted) return r;
      if (Date.now() > deadline) throw new Error(`deployment ${id} was not reported ${wanted} within ${timeoutMs} ms; reported: ${JSON.stringify(r)}`);
      await sleep(50);
    }
  }

  /**
   * The end state: `target` reported with `wanted` status and `reason`, `runs` running (reported.running,
   * reported.tasks, the active pointer, `coordinator tasks list --json`) and answering.
   */
  async function assertConverged(p: Proc, target: string, wanted: string, reason: RegExp, runs: string, label: string): Promise<Reported> {
    const r = await settled(target, wanted);
    expect(r.reason, `${label}: reported.reason`).toMatch(reason);
    expect(r.running, `${label}: reported.running`).toBe(runs);
    expect(setOf(r.tasks ?? []), `${label}: reported.tasks`).toEqual(planSet(planned(runs)));
    expect((await status()).active?.id, `${label}: the active pointer`).toBe(runs);
    const list = await runCli(['tasks', 'list', '--json', '--data-dir', dataDir]);
    expect(list.code, list.stderr).toBe(0);
    expect(setOf(JSON.parse(list.stdout) as TaskInfo[]), `${label}: coordinator tasks list`).toEqual(planSet(planned(runs)));
    expect((await assertOneComplete(p, [planned(runs)], `${label} (converged)`)).id).toBe(runs);
    return r;
  }

  /** A report `p` published about `id` whose reason matches. */
  const reportOf = (p: Proc, id: string, reason: RegExp): Promise<SeenReport> =>
    p.cloud.report((r) => r.proc === p.n && r.reported.id === id && reason.test(r.reported.reason ?? ''), 10_000);

  const invokeFails = async (name: string, times: number): Promise<void> => {
    for (let i = 0; i < times; i++) {
      await expect(adminRequest(socket, 'POST', '/v1/task/invoke', { name, payload: null }), `invocation ${i + 1} of ${name} fails`).rejects.toThrow(/broken on purpose/);
    }
  };

  it('baseline: d1 deploys from the HTTPS server and runs', { timeout: 40_000 }, async () => {
    const p = await boot(null);
    const d1 = plan('d1', [
      { name: 'alpha', tag: 'd1' },
      { name: 'beta', tag: 'd1', pinned: true },
    ]);
    await p.cloud.requestDeployment(d1.doc);
    await assertConverged(p, 'd1', 'SUCCEEDED', /^running since /, 'd1', 'baseline');
  });

  it('kill point 1: right after the desired document is accepted (/update/accepted)', { timeout: 60_000 }, async () => {
    const p = proc!;
    const d2 = plan('d2', [
      { name: 'alpha', tag: 'd2' },
      { name: 'beta', tag: 'd2', pinned: true },
      { name: 'gamma', tag: 'd2' },
    ]);
    const token = await p.cloud.requestDeployment(d2.doc);
    await p.cloud.accepted(token);
    await crash(p);
    expect(p.c.logs.filter(stepLine('d2', 'health')), 'killed before the switch').toEqual([]);

    // Desired was durable when accepted; nothing had switched: d1 comes back, then d2 deploys.
    const q = await boot('d1');
    expect((await assertOneComplete(q, [planned('d1'), d2], 'restart after kill point 1')).id).toBeDefined();
    await assertConverged(q, 'd2', 'SUCCEEDED', /^running since /, 'd2', 'kill point 1');
    const rows = await history('d2');
    expect(rows, 'one history row for d2').toHaveLength(1);
    if (rows[0]!.attempts === 2) {
      // The row existed before the kill: the deployment resumed and says so.
      await reportOf(q, 'd2', /^resumed after a coordinator restart during step (fetch|load) \(attempt 2\)$/);
    } else {
      // Killed before the agent took it up: after the restart it starts like any new document.
      expect(rows[0]!.attempts).toBe(1);
      await reportOf(q, 'd2', /^validated; fetching bundles$/);
    }
  });

  it('kill point 2: during the fetch step (a bundle download held mid-body)', { timeout: 60_000 }, async () => {
    const p = proc!;
    const d3 = plan('d3', [
      { name: 'alpha', tag: 'd3' },
      { name: 'beta', tag: 'd3', pinned: true },
      { name: 'gamma', tag: 'd3' },
    ]);
    const gamma = d3.tasks.get('gamma')!;
    const held = server.hold(gamma.path);
    await p.cloud.requestDeployment(d3.doc);
    await held;
    // The other two bundles are fetched and verified meanwhile: wait until both are in the content store.
    const others = [d3.tasks.get('alpha')!, d3.tasks.get('beta')!];
    for (let i = 0; i < 200 && !others.every((t) => existsSync(join(dataDir, 'bundles', t.sha256))); i++) await sleep(25);
    expect(others.every((t) => existsSync(join(dataDir, 'bundles', t.sha256))), 'alpha and beta of d3 were stored').toBe(true);
    await crash(p);
    server.release();
    expect(p.c.logs.some(stepLine('d3', 'fetch'))).toBe(true);
    expect(p.c.logs.filter(stepLine('d3', 'load')), 'killed inside the fetch step').toEqual([]);
    expect(existsSync(join(dataDir, 'bundles', gamma.sha256)), 'the held bundle never reached the content store').toBe(false);

    const q = await boot('d2');
    await assertOneComplete(q, [planned('d2'), d3], 'restart after kill point 2');
    await reportOf(q, 'd3', /^resumed after a coordinator restart during step fetch \(attempt 2\)$/);
    await assertConverged(q, 'd3', 'SUCCEEDED', /^running since /, 'd3', 'kill point 2');
    // Bundles fetched before the kill came from the content store; only the held one was fetched again.
    expect(others.map((t) => server.requests(t.path))).toEqual([1, 1]);
    expect(server.requests(gamma.path)).toBe(2);
    expect((await history('d3')).map((r) => [r.status, r.attempts])).toEqual([['SUCCEEDED', 2]]);
  });

  it('kill point 3: during the load step (a pinned onStart still sleeping)', { timeout: 60_000 }, async () => {
    const p = proc!;
    // gamma is dropped: the new set differs from the old one in membership, not only in versions.
    const d4 = plan('d4', [
      { name: 'alpha', tag: 'd4' },
      { name: 'beta', tag: 'd4', pinned: true },
    ]);
    await p.cloud.requestDeployment(d4.doc);
    await p.c.waitForLog(stepLine('d4', 'load'), 20_000);
    await crash(p);
    expect(p.c.logs.filter(stepLine('d4', 'health')), 'killed inside the load step').toEqual([]);

    const q = await boot('d3');
    await assertOneComplete(q, [planned('d3'), d4], 'restart after kill point 3');
    await reportOf(q, 'd4', /^resumed after a coordinator restart during step load \(attempt 2\)$/);
    await assertConverged(q, 'd4', 'SUCCEEDED', /^running since /, 'd4', 'kill point 3');
    expect((await history('d4')).map((r) => [r.status, r.attempts])).toEqual([['SUCCEEDED', 2]]);
  });

  it('kill point 4: just after the switch, inside the health window', { timeout: 60_000 }, async () => {
    const p = proc!;
    const d5 = plan('d5', [
      { name: 'alpha', tag: 'd5' },
      { name: 'beta', tag: 'd5', pinned: true },
      { name: 'gamma', tag: 'd5' },
    ]);
    await p.cloud.requestDeployment(d5.doc);
    await p.c.waitForLog(stepLine('d5', 'health'), 20_000);
    await crash(p);
    expect(p.c.logs.filter(statusLine('d5')), 'killed before the health window ended').toEqual([]);

    // The pointer moved with the switch: d5 is what comes back, complete, and its health window restarts.
    const q = await boot('d5');
    expect((await assertOneComplete(q, [planned('d4'), d5], 'restart after kill point 4')).id).toBe('d5');
    const resumed = await reportOf(q, 'd5', /^resumed after a coordinator restart \(attempt 2\); health window restarted$/);
    expect(resumed.reported.status).toBe('IN_PROGRESS');
    expect(resumed.reported.running).toBe('d5');
    await assertConverged(q, 'd5', 'SUCCEEDED', /^running since /, 'd5', 'kill point 4');
    expect((await history('d5')).map((r) => [r.status, r.attempts])).toEqual([['SUCCEEDED', 2]]);
  });

  it('kill point 5: right after SUCCEEDED is reported', { timeout: 60_000 }, async () => {
    const p = proc!;
    // beta is unchanged (same bundle, same manifest): it keeps running untouched, only alpha loads.
    const d6 = plan('d6', [
      { name: 'alpha', tag: 'd6' },
      { name: 'beta', tag: 'd5', pinned: true },
    ]);
    await p.cloud.requestDeployment(d6.doc);
    const done = await p.cloud.report((r) => r.proc === p.n && r.reported.id === 'd6' && r.reported.status === 'SUCCEEDED');
    await crash(p);
    const install = p.c.logs.find((l) => l.msg === 'tasks installed' && Array.isArray(l.tasks) && (l.tasks as string[]).includes('alpha@1.6.0'));
    expect(install?.loaded, 'only the changed task was loaded').toBe(1);

    const q = await boot('d6');
    expect((await assertOneComplete(q, [planned('d5'), d6], 'restart after kill point 5')).id).toBe('d6');
    // Settled: reported again as it was (same reason), not deployed again.
    const again = await q.cloud.report((r) => r.proc === q.n && r.reported.id === 'd6');
    expect(again.reported.status).toBe('SUCCEEDED');
    expect(again.reported.reason).toBe(done.reported.reason);
    await assertConverged(q, 'd6', 'SUCCEEDED', new RegExp(`^${done.reported.reason!.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$`), 'd6', 'kill point 5');
    expect(q.c.logs.filter((l) => l.deployment === 'd6' && (l.step !== undefined || / started$/.test(msgOf(l)))), 'd6 is not deployed again').toEqual([]);
    expect((await history('d6')).map((r) => [r.status, r.attempts])).toEqual([['SUCCEEDED', 1]]);
  });

  it(`kill point 6: killed in its load step on every start, a deployment is abandoned after ${MAX_ATTEMPTS} restarts`, { timeout: 60_000 }, async () => {
    const p = proc!;
    const d7 = plan('d7', [
      { name: 'alpha', tag: 'd7' },
      { name: 'beta', tag: 'd7', pinned: true },
    ]);
    await p.cloud.requestDeployment(d7.doc);
    await p.c.waitForLog(stepLine('d7', 'load'), 20_000);
    await crash(p);

    // Restart 1: d6 runs, d7 resumes (attempt 2) — and is killed in its load step again.
    const q = await boot('d6');
    await assertOneComplete(q, [planned('d6'), d7], 'restart 1 of kill point 6');
    await reportOf(q, 'd7', /^resumed after a coordinator restart during step load \(attempt 2\)$/);
    await q.c.waitForLog(stepLine('d7', 'load'), 20_000);
    await crash(q);
    expect(q.c.logs.filter(stepLine('d7', 'health')), 'killed inside the load step again').toEqual([]);

    // Restart 2: d7 has been through maxAttempts restarts: abandoned, d6 keeps running. (The next
    // kill point needs a longer health window; this start runs no health window of its own.)
    writeConfig({ healthWindowMs: 5000 });
    const r = await boot('d6');
    expect((await assertOneComplete(r, [planned('d6'), d7], 'restart 2 of kill point 6')).id).toBe('d6');
    await assertConverged(r, 'd7', 'FAILED_ROLLED_BACK', /^abandoned: interrupted by 2 coordinator restarts \(deployments\.maxAttempts\)$/, 'd6', 'kill point 6');
    expect(r.c.logs.filter((l) => l.deployment === 'd7' && l.step !== undefined), 'an abandoned deployment is not tried again').toEqual([]);
    expect((await history('d7')).map((h) => [h.status, h.attempts])).toEqual([['FAILED_ROLLED_BACK', 2]]);
  });

  it('kill point 7: during a rollback (a task went BROKEN in the health window)', { timeout: 60_000 }, async () => {
    const p = proc!;
    const d8 = plan('d8', [
      { name: 'alpha', tag: 'd8', failOnInvoke: true },
      { name: 'beta', tag: 'd8', pinned: true },
    ]);
    await p.cloud.requestDeployment(d8.doc);
    await p.c.waitForLog(stepLine('d8', 'health'), 20_000);
    await invokeFails('alpha', 3);
    // Rolling back reinstalls d6, whose beta is pinned: its onStart sleeps, and the kill lands there.
    await p.c.waitForLog((l) => l.deployment === 'd8' && l.code === 'COORD_ERR_DEPLOY_UNHEALTHY', 10_000);
    await crash(p);
    expect(p.c.logs.filter(statusLine('d8')), 'killed before the rollback finished').toEqual([]);

    // The pointer still names d8 (the rollback never finished), so d8 comes back complete; its row says
    // it was judged unhealthy (step rollback), so the restart finishes the rollback at once rather than
    // giving d8 a new health window it could pass with no traffic.
    const q = await boot('d8');
    expect((await assertOneComplete(q, [planned('d6'), d8], 'restart after kill point 7')).id).toMatch(/^d[68]$/);
    await assertConverged(
      q,
      'd8',
      'FAILED_ROLLED_BACK',
      /^COORD_ERR_DEPLOY_UNHEALTHY: task alpha went BROKEN during the health window.*\(rollback resumed after a coordinator restart\); rolled back to d6$/,
      'd6',
      'kill point 7',
    );
    expect((await history('d8')).map((h) => [h.status, h.attempts])).toEqual([['FAILED_ROLLED_BACK', 2]]);
    // The restored d6 answers invokes through the CLI, each task with its own deployment's code.
    const answers = await Promise.all(['alpha', 'beta'].map((name) => runCli(['invoke', name, '--data-dir', dataDir])));
    expect(answers.map((a) => (a.code === 0 ? (JSON.parse(a.stdout) as unknown) : a.stderr))).toEqual([
      { task: 'alpha', tag: 'd6' },
      { task: 'beta', tag: 'd5' },
    ]);
  });

  it(`kill point 6b: killed in its health window on every start, a switched-in deployment is abandoned and the previous one put back`, { timeout: 60_000 }, async () => {
    const p = proc!;
    const d9 = plan('d9', [
      { name: 'alpha', tag: 'd9' },
      { name: 'beta', tag: 'd9', pinned: true },
      { name: 'gamma', tag: 'd9' },
    ]);
    await p.cloud.requestDeployment(d9.doc);
    await p.c.waitForLog(stepLine('d9', 'health'), 20_000);
    await crash(p);

    // Restart 1: d9 was switched in, so d9 runs; its health window restarts — and is cut by a kill again.
    const q = await boot('d9');
    expect((await assertOneComplete(q, [planned('d6'), d9], 'restart 1 of kill point 6b')).id).toBe('d9');
    await reportOf(q, 'd9', /^resumed after a coordinator restart \(attempt 2\); health window restarted$/);
    await crash(q);
    expect(q.c.logs.filter(statusLine('d9')), 'killed inside the restarted health window').toEqual([]);

    // Restart 2: d9 comes back (the pointer names it), is abandoned, and d6 is reinstalled from the
    // content store; at every moment one of the two runs complete.
    const r = await boot('d9');
    await assertOneComplete(r, [planned('d6'), d9], 'restart 2 of kill point 6b');
    await assertConverged(r, 'd9', 'FAILED_ROLLED_BACK', /^abandoned: interrupted by 2 coordinator restarts \(deployments\.maxAttempts\)$/, 'd6', 'kill point 6b');
    expect((await history('d9')).map((h) => [h.status, h.attempts])).toEqual([['FAILED_ROLLED_BACK', 2]]);
  });

  it('every final report named the set that was running', () => {
    const finals = reports.filter((r) => r.reported.status !== 'IN_PROGRESS' && typeof r.reported.running === 'string');
    expect(finals.length).toBeGreaterThan(5);
    for (const r of finals) {
      const runs = planned(r.reported.running!);
      expect(setOf(r.reported.tasks ?? []), `report ${JSON.stringify(r.reported)} (start ${r.proc})`).toEqual(planSet(runs));
    }
  });

  /** What kill point 9 saw; judged by the test after it. */
  const lateRollback: { reason?: string; running?: string | null; installed?: string[] } = {};

  it('kill point 8: a restart while the bundle server is unreachable, after a failed deployment pushed the running one out of the history', { timeout: 60_000 }, async () => {
    // Keep a short history (the smallest allowed): one failed deployment pushes the running one, d6,
    // out of the newest rows. A restart applies the configuration; it is also a kill at a quiet moment.
    writeConfig({ historySize: 2 });
    await crash(proc!);
    const p = await boot('d6');
    await assertOneComplete(p, [planned('d6')], 'restart before kill point 8');
    const d10 = plan('d10', [{ name: 'alpha', tag: 'd10' }]);
    server.drop(d10.tasks.get('alpha')!.path);
    await p.cloud.requestDeployment(d10.doc);
    await assertConverged(p, 'd10', 'FAILED_ROLLED_BACK', /^COORD_ERR_BUNDLE_FETCH: .*; deployment d6 keeps running$/, 'd6', 'kill point 8');
    const d6 = planned('d6');
    expect(
      [...d6.tasks.values()].map((t) => existsSync(join(dataDir, 'bundles', t.sha256))),
      "the running deployment's bundles stay in the content store, however old its history row",
    ).toEqual([true, true]);

    // Power cut while the cloud is out of reach: what runs must come from the data directory alone.
    await crash(p);
    server.setOffline(true);
    const q = await boot('d6');
    expect((await assertOneComplete(q, [d6], 'restart after kill point 8, offline')).id).toBe('d6');
    const again = await q.cloud.report((r) => r.proc === q.n && r.reported.id === 'd10');
    expect(again.reported.running).toBe('d6');
    expect(setOf(again.reported.tasks ?? []), 'reported.tasks lists what runs').toEqual(planSet(d6));
    server.setOffline(false);
  });

  it('kill point 9 (setup): killed in the health window of a deployment that then breaks, with d6 out of the history window', { timeout: 60_000 }, async () => {
    const p = proc!;
    const d11 = plan('d11', [{ name: 'alpha', tag: 'd11', failOnInvoke: true }]);
    await p.cloud.requestDeployment(d11.doc);
    await p.c.waitForLog(stepLine('d11', 'health'), 20_000);
    await crash(p);
    const q = await boot('d11');
    expect((await assertOneComplete(q, [planned('d6'), d11], 'restart after kill point 9')).id).toBe('d11');
    await reportOf(q, 'd11', /^resumed after a coordinator restart \(attempt 2\); health window restarted$/);
    await invokeFails('alpha', 3);
    const r = await settled('d11', 'FAILED_ROLLED_BACK');
    Object.assign(lateRollback, { reason: r.reason, running: r.running, installed: await installed() });
    debug(`kill point 9 saw: ${JSON.stringify(lateRollback)}`);
    expect(r.reason).toMatch(/^COORD_ERR_DEPLOY_UNHEALTHY: task alpha went BROKEN during the health window/);
  });

  /*
   * The deployment a rollback restores is remembered durably at the switch (the `previous` pointer, set in
   * the same transaction as `active`), so it does not depend on how much history is kept.
   */
  it('kill point 9: after a restart in its health window, a broken deployment still rolls back to d6, although d6 is out of the history window', () => {
    expect(lateRollback.reason).toMatch(/; rolled back to d6$/);
    expect(lateRollback.running).toBe('d6');
    expect(lateRollback.installed).toEqual(planSet(planned('d6')));
  });
});
