/**
 * A benign task next to hostile ones (DESIGN.md §6: "round-trip p99 ≤ 3× its solo figure; never BROKEN").
 *
 * Two coordinators in the same run, each with tasks/echo: the first with echo alone (the baseline), the
 * second with echo and a set of hostile neighbours, each invoked ten times a second by its own topic
 * while a device measures echo's round trip at 1k msg/s: eight tasks that time out (four spin, four never
 * settle), a timer flood, a task that tries to save 10 MB of state, one that returns 10 MB, and one that
 * kills its task host with a V8 fatal error on every call (charged, moved to the isolation host,
 * quarantined after three crashes). Reported: echo's p99 against its solo p99, whether echo stayed out of
 * BROKEN, and that the core process never restarted.
 */
import { mkdirSync, writeFileSync, cpSync } from 'node:fs';
import { join } from 'node:path';
import { adminGet, connectClient, endClients, makeTempDir, percentile, REPO_ROOT, resultRow, round, sleep, spawnCoordinator } from './lib.js';

const RATE = 1000; // echo messages per second
const WARMUP_S = 1;
const SECONDS = 10;
const HOSTILE_HZ = 10;
const TARGET_RATIO = 3;

const HOSTILE = {
  ...Object.fromEntries(Array.from({ length: 4 }, (_, i) => [`spin-${i}`, `export default { onEvent() { for (;;) {} } };`])),
  ...Object.fromEntries(Array.from({ length: 4 }, (_, i) => [`hang-${i}`, `export default { onEvent() { return new Promise(() => {}); } };`])),
  'timer-flood': `export default { onEvent() { for (let i = 0; i < 1e6; i++) setTimeout(() => {}, 1); } };`,
  'state-hog': `export default { async onEvent(e: unknown, ctx: any) { await ctx.state.set('big', 'x'.repeat(10 * 1024 * 1024)); } };`,
  'result-hog': `export default { onEvent() { return 'x'.repeat(10 * 1024 * 1024); } };`,
  crasher: `export default { onEvent() { 'x'.repeat(2 ** 28).split(''); } };`,
};

function tasksDir(withHostile) {
  const dir = makeTempDir('ec-bench-hostile-');
  cpSync(join(REPO_ROOT, 'tasks', 'echo'), join(dir, 'echo'), { recursive: true });
  if (!withHostile) return dir;
  for (const [name, code] of Object.entries(HOSTILE)) {
    mkdirSync(join(dir, name));
    writeFileSync(join(dir, name, 'index.ts'), `${code}\n`);
    const manifest = { name, version: '1.0.0', triggers: [{ topic: `hostile/${name}` }], limits: { memoryMb: 32, timeoutMs: 1000, concurrency: 1, queueDepth: 20 } };
    writeFileSync(join(dir, name, 'task.json'), `${JSON.stringify(manifest, null, 2)}\n`);
  }
  return dir;
}

/** echo's round trips at RATE for `seconds`, paced; lost messages count as infinitely late. */
async function measureEcho(url, seconds) {
  const pending = new Map();
  const latency = [];
  const client = await connectClient(url, {
    clientId: `bench-hostile-${process.pid}-${Date.now()}`,
    onMessage: (topic, payload) => {
      const seq = Number(JSON.parse(payload.toString()).seq);
      const t0 = pending.get(seq);
      if (t0 === undefined) return;
      pending.delete(seq);
      latency.push(performance.now() - t0);
    },
  });
  try {
    await client.subscribeAsync('echo/+/out', { qos: 0 });
    const total = Math.round(RATE * seconds);
    const start = performance.now();
    for (let seq = 0; seq < total; seq++) {
      const due = start + (seq * 1000) / RATE;
      const wait = due - performance.now();
      if (wait > 1) await sleep(wait);
      pending.set(seq, performance.now());
      client.publish(`echo/${seq % 100}/in`, JSON.stringify({ seq }), { qos: 0 });
    }
    await sleep(2000);
    const lost = pending.size;
    for (let i = 0; i < lost; i++) latency.push(Infinity);
    return { p50: percentile(latency, 50), p99: percentile(latency, 99), lost, count: latency.length };
  } finally {
    await endClients(client);
  }
}

async function run(withHostile, log) {
  // No health window: hostile tasks go BROKEN at once, which would roll the deployment back; here they
  // are meant to stay installed next to echo for the whole measurement.
  const config = join(makeTempDir('ec-bench-hostile-config-'), 'config.json');
  writeFileSync(config, JSON.stringify({ deployments: { healthWindowMs: 0 } }));
  const coord = await spawnCoordinator({ label: withHostile ? 'coordinator + hostile tasks' : 'coordinator, echo alone', extraArgs: ['--config', config, '--tasks-dir', tasksDir(withHostile)] });
  let driver;
  let timer;
  try {
    if (withHostile) {
      driver = await connectClient(coord.url, { clientId: `bench-hostile-driver-${process.pid}` });
      timer = setInterval(() => {
        for (const name of Object.keys(HOSTILE)) driver.publish(`hostile/${name}`, '{}', { qos: 0 });
      }, 1000 / HOSTILE_HZ);
    }
    await measureEcho(coord.url, WARMUP_S);
    log(`${withHostile ? 'with hostile neighbours' : 'echo alone'}: measuring ${SECONDS} s at ${RATE} msg/s`);
    const figures = await measureEcho(coord.url, SECONDS);
    const tasks = await adminGet(coord.socketPath, '/v1/tasks');
    const status = await adminGet(coord.socketPath, '/v1/status');
    const list = Array.isArray(tasks) ? tasks : (tasks.tasks ?? []);
    const echo = list.find((t) => t.name === 'echo');
    return { ...figures, echoState: echo?.state, echoFailed: echo?.failed, coreAlive: coord.proc.exited === false, host: status.tasks?.host, states: Object.fromEntries(list.map((t) => [t.name, t.state])) };
  } finally {
    clearInterval(timer);
    if (driver) await endClients(driver);
    await coord.stop();
  }
}

/** `npm run bench` entry: one row, echo's p99 next to hostile tasks as a ratio of its solo p99. */
export async function hostileNeighbours({ log }) {
  const solo = await run(false, log);
  const hostile = await run(true, log);
  const never = hostile.echoState !== 'BROKEN' && hostile.coreAlive;
  return [
    resultRow({
      name: 'benign task p99 next to hostile tasks',
      value: hostile.p99,
      unit: 'ms',
      baseline: 'the same echo task alone',
      baselineValue: solo.p99,
      target: { of: 'ratio', op: '<=', value: TARGET_RATIO, text: `ratio ≤ ${TARGET_RATIO}×; never BROKEN${never ? '' : ' (FAILED)'}` },
      details: {
        rate: RATE,
        seconds: SECONDS,
        hostileInvocationsPerSecondEach: HOSTILE_HZ,
        solo: { p50: round(solo.p50, 2), p99: round(solo.p99, 2), lost: solo.lost },
        withHostile: { p50: round(hostile.p50, 2), p99: round(hostile.p99, 2), lost: hostile.lost },
        echo: { state: hostile.echoState, failed: hostile.echoFailed },
        coreNeverRestarted: hostile.coreAlive,
        taskHosts: hostile.host,
        taskStates: hostile.states,
      },
    }),
  ].map((row) => (never ? row : { ...row, pass: false }));
}
