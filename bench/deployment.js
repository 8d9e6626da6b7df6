/**
 * Deployment latency (issue 5, acceptance 7): from writing a desired deployment document to the first
 * invocation answered by the new task version, for a bundle already in the local content store (what
 * `coordinator deploy` produces). Target ≤ 100 ms.
 *
 * Baseline, in the same run and the same embedded coordinator: installing the same kind of bundle
 * directly through the task runtime (TaskRuntime.install, then the first invocation) — the load and
 * switch every deployment needs. The ratio is what the deployment path adds on top: the durable shadow
 * write, validation, digest checks from the content store, the history rows and the report.
 *
 * The coordinator is embedded (dist/), so both paths are timed with the same clock and no MQTT client
 * in between; its task host is a real child process with real isolates. Stopped in `finally`.
 */
import { createHash } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { makeTempDir, median, percentile, resultRow, round } from './lib.js';

const ROUNDS = 15;
const TARGET_MS = 100;

const codeOf = (tag) => `export default { onEvent() { return ${JSON.stringify(tag)}; } }\n`;
const sha256 = (code) => createHash('sha256').update(code).digest('hex');

/** Invokes `task` until it answers `tag`; resolves with the time of that answer. */
async function firstAnswer(c, task, tag, deadlineMs = 10_000) {
  const until = performance.now() + deadlineMs;
  for (;;) {
    const got = await c.tasks.invoke(task, { type: 'invoke', payload: null }).catch(() => undefined);
    if (got === tag) return performance.now();
    if (performance.now() > until) throw new Error(`${task} never answered ${tag} (last: ${String(got)})`);
    await new Promise((r) => setImmediate(r));
  }
}

export async function deployment({ log }) {
  const { compileCoordinatorOptions } = await import('../dist/config/load.js');
  const { Coordinator } = await import('../dist/coordinator.js');
  const { createLogger } = await import('../dist/log/logger.js');
  const { taskSpecSchema } = await import('../dist/tasks/spec.js');
  const { ContentStore } = await import('../dist/deployment/content-store.js');
  const dataDir = makeTempDir('ec-bench-deploy-');
  const config = compileCoordinatorOptions({
    env: {},
    overrides: [
      { path: 'dataDir', value: dataDir, source: 'bench' },
      { path: 'listeners.mqtt.port', value: 0, source: 'bench' },
      { path: 'logLevel', value: 'warn', source: 'bench' },
      // Each round waits for SUCCEEDED before the next; the window itself is not what is measured.
      { path: 'deployments.healthWindowMs', value: 0, source: 'bench' },
    ],
  });
  const c = await Coordinator.start(config, createLogger({ level: 'warn', pretty: false }));
  // The coordinator's own content store directory: what `coordinator deploy` uploads into.
  const store = new ContentStore(join(dataDir, 'bundles'));
  try {
    const deployed = [];
    const direct = [];
    const reported = (id) => {
      const r = c.deployments.status().reported;
      return r && r.id === id && r.status !== 'IN_PROGRESS' ? r.status : undefined;
    };
    // Round 0 is the gateway's first deployment: it also starts the task host process. Reported apart.
    for (let i = 0; i <= ROUNDS; i++) {
      // Through the deployment agent: bundle in the content store, desired written, first answer.
      const tag = `deployed-${i}`;
      const code = codeOf(tag);
      const digest = store.put(Buffer.from(code, 'utf8'));
      const url = pathToFileURL(store.path(digest)).href;
      const id = `bench-${i}`;
      const t0 = performance.now();
      await c.deployments.request({ schema: 1, id, tasks: [{ name: 'probe', version: `1.0.${i}`, bundle: { url, sha256: digest } }], routes: [] });
      deployed.push((await firstAnswer(c, 'probe', tag)) - t0);
      while (reported(id) === undefined) await new Promise((r) => setTimeout(r, 5));
      if (reported(id) !== 'SUCCEEDED') throw new Error(`deployment ${id} ended ${reported(id)}`);

      // Baseline: the same kind of bundle installed directly, then its first answer.
      const btag = `direct-${i}`;
      const bcode = codeOf(btag);
      const t1 = performance.now();
      await c.tasks.install([{ spec: taskSpecSchema.parse({ name: 'probe', version: `2.0.${i}` }), code: bcode, sha256: sha256(bcode) }]);
      direct.push((await firstAnswer(c, 'probe', btag)) - t1);
    }
    const first = deployed.shift();
    direct.shift();
    log(`first deployment (starts the task host): ${first.toFixed(1)} ms`);
    log(`deploy → first answer: ${deployed.map((x) => x.toFixed(1)).join(' ')} ms`);
    log(`direct install → first answer: ${direct.map((x) => x.toFixed(1)).join(' ')} ms`);
    const p50 = median(deployed);
    return [
      resultRow({
        name: 'deploy → first invocation of the new version (local bundle), p50',
        value: p50,
        unit: 'ms',
        baseline: 'TaskRuntime.install + first invocation',
        baselineValue: median(direct),
        target: { of: 'value', op: '<=', value: TARGET_MS },
        details: {
          rounds: ROUNDS,
          firstDeploymentMs: round(first, 1),
          firstDeploymentNote: 'the first deployment of a gateway also starts the task host process; not in p50',
          p90Ms: round(percentile(deployed, 90), 2),
          maxMs: round(Math.max(...deployed), 2),
          baselineP90Ms: round(percentile(direct, 90), 2),
          note: 'embedded coordinator; desired written through the in-process shadow API (durable), bundle already in the content store',
        },
      }),
    ];
  } finally {
    await c.stop();
  }
}
