/**
 * `npm run bench`: runs every benchmark in BENCHMARKS in order, prints one table and writes
 * bench/results.json.
 *
 *   node bench/run.js                  every benchmark
 *   node bench/run.js --only broker    benchmarks whose name contains "broker" (repeatable, or a,b)
 *   node bench/run.js --list           names only
 *   node bench/run.js --strict         exit 1 when a target is missed (errors always exit 1)
 *
 * Adding a benchmark: write bench/<name>.js exporting `async function (ctx) => rows`, where rows come
 * from lib.js resultRow(), and add one line to BENCHMARKS below. ctx.log(msg) reports progress on
 * stderr. Start processes only through lib.js (spawnCoordinator, spawnBareAedes, makeTempDir): they
 * are stopped and removed after each benchmark even if it throws.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { brokerThroughput } from './broker-throughput.js';
import { cloud } from './cloud.js';
import { deployment } from './deployment.js';
import { devices } from './devices.js';
import { hostileNeighbours } from './hostile-neighbours.js';
import { idleRss } from './idle-rss.js';
import { shadowUpdates } from './shadow-updates.js';
import { taskRuntime } from './task-runtime.js';
import { BENCH_DIR, cleanup, cleanupSync, formatTable } from './lib.js';

/** Every benchmark, in the order they run. */
const BENCHMARKS = [
  { name: 'broker-throughput', run: brokerThroughput },
  { name: 'idle-rss', run: idleRss },
  { name: 'shadow-updates', run: shadowUpdates },
  { name: 'task-runtime', run: taskRuntime },
  { name: 'hostile-neighbours', run: hostileNeighbours },
  { name: 'deployment', run: deployment },
  { name: 'cloud', run: cloud },
  { name: 'devices', run: devices },
];

const RESULTS_FILE = join(BENCH_DIR, 'results.json');

function parseArgs(argv) {
  const opts = { only: [], list: false, strict: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--only') opts.only.push(...(argv[++i] ?? '').split(','));
    else if (a.startsWith('--only=')) opts.only.push(...a.slice('--only='.length).split(','));
    else if (a === '--list') opts.list = true;
    else if (a === '--strict') opts.strict = true;
    else if (a === '--help' || a === '-h') {
      process.stdout.write('usage: node bench/run.js [--only <name>[,<name>...]] [--list] [--strict]\n');
      process.exit(0);
    } else {
      process.stderr.write(`bench: unknown argument ${a}\n`);
      process.exit(64);
    }
  }
  opts.only = opts.only.map((s) => s.trim()).filter(Boolean);
  return opts;
}

// Whatever happens, leave no coordinator or broker running and no temp directory behind.
process.on('exit', cleanupSync);
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.once(signal, () => {
    process.stderr.write(`\nbench: ${signal}, stopping child processes\n`);
    cleanup().finally(() => process.exit(130));
  });
}

const opts = parseArgs(process.argv.slice(2));
const selected = opts.only.length === 0 ? BENCHMARKS : BENCHMARKS.filter((b) => opts.only.some((o) => b.name.includes(o)));
if (opts.list) {
  for (const b of BENCHMARKS) process.stdout.write(`${b.name}\n`);
  process.exit(0);
}
if (selected.length === 0) {
  process.stderr.write(`bench: no benchmark matches ${opts.only.join(', ')}; have ${BENCHMARKS.map((b) => b.name).join(', ')}\n`);
  process.exit(64);
}

const rows = [];
let errors = 0;
const t0 = performance.now();
for (const bench of selected) {
  const log = (msg) => process.stderr.write(`[${bench.name}] ${msg}\n`);
  const started = performance.now();
  log('start');
  try {
    const got = await bench.run({ log });
    for (const row of got) rows.push({ ...row, benchmark: bench.name });
    log(`done in ${((performance.now() - started) / 1000).toFixed(1)} s`);
  } catch (err) {
    errors++;
    log(`FAILED: ${err?.stack ?? err}`);
    rows.push({
      name: bench.name,
      benchmark: bench.name,
      value: null,
      unit: null,
      baseline: null,
      baselineValue: null,
      ratio: null,
      target: 'error',
      pass: false,
      details: { error: String(err?.message ?? err) },
    });
  } finally {
    await cleanup();
  }
}

writeFileSync(RESULTS_FILE, `${JSON.stringify(rows, null, 2)}\n`);
process.stdout.write(`\n${formatTable(rows)}\n\n`);
process.stdout.write(`${rows.length} figures in ${((performance.now() - t0) / 1000).toFixed(1)} s; written to ${RESULTS_FILE}\n`);

const missed = rows.filter((r) => r.pass === false).length;
if (missed > 0) process.stdout.write(`${missed} figure(s) missed their target${errors ? ` (${errors} benchmark(s) failed with an error)` : ''}\n`);
process.exitCode = errors > 0 || (opts.strict && missed > 0) ? 1 : 0;
