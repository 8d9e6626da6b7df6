/**
 * Durable shadow updates (DESIGN.md §6: "durable shadow updates ≥ 5k/s with group commit; ≥ 0.8× a raw
 * batched-fsync append in the same run"; issue 3, acceptance 6).
 *
 * Through MQTT, against a real coordinator process (127.0.0.1, port 0, fresh data directory, default
 * settings): one MQTT.js client, clean session, subscribed at QoS 1 to update/accepted and
 * update/rejected, publishes QoS 1 updates `{"state":{"reported":{...}},"clientToken":"<unique>"}` to
 * `$aws/things/bench-<i>/shadow/update` with at most WINDOW updates published but not yet answered.
 * WINDOW equals the default `shadows.maxInFlightPerShadow` (100), so even with every update on one
 * shadow none is refused with 429; a /rejected answer would still be counted (details.rejected) and
 * left out of updates/s. An update counts when its /update/accepted arrives, which the coordinator
 * sends only after the update is committed and the WAL fdatasynced (group commit). Latency is
 * publish() → /accepted received, per clientToken. Two cases with the same count and window: every
 * update on bench-0 (1 shadow), and round-robin over bench-0..bench-99 (100 shadows). ROUNDS rounds,
 * the case order flipping each round; the figures are medians of the rounds.
 *
 * Baseline, in the same run, driven by the same client code with the same payloads and window: a bare
 * aedes broker (bench/bare-aedes.js --append-echo) that parses each update request, appends it to a
 * file in a temp directory next to the coordinator's data directory (same file system; checked and
 * reported) and answers /update/accepted once an fdatasync that began after the append has returned —
 * the same pipelined group commit as the coordinator's store. It is the least any durable shadow
 * service over aedes must do, so the ratio is what the coordinator's shadow rules, database, auth seam,
 * PUBACK gate and responses cost on top. Rounds alternate coordinator and baseline per case.
 *
 * Why not a raw append loop at the coordinator's batch size (the first version of this benchmark): it
 * measures only the disk, so its ratio is the share of the disk's sync capacity in use — low whenever
 * the service is CPU-bound however efficient its storage, and raised by syncing more often for nothing.
 * The raw fdatasync rate of one record is still reported, in details.disk.
 *
 * Also in details: CPU per update of both processes and the client's CPU share (from /proc), the
 * coordinator's commits, WAL syncs and store writes (journal rows, plus the compaction steps).
 */
import { closeSync, fdatasyncSync, openSync, rmSync, statSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import {
  adminStatus,
  cleanup,
  connectClient,
  cpuSeconds,
  endClients,
  fsTypeOf,
  makeTempDir,
  median,
  percentile,
  removeTempDir,
  resultRow,
  round,
  spawnBareAedes,
  spawnCoordinator,
} from './lib.js';

const ROUNDS = 5;
const WARMUP = 1_000;
const COUNT = 10_000;
const WINDOW = 100;
const CASES_ALL = [
  { key: 'one', shadows: 1, label: '1 shadow' },
  { key: 'hundred', shadows: 100, label: '100 shadows' },
];
// BENCH_SHADOW_CASES=one|hundred runs one case only (to profile it with BENCH_NODE_ARGS); the table
// then shows only that case's rows.
const CASES = process.env.BENCH_SHADOW_CASES ? CASES_ALL.filter((c) => process.env.BENCH_SHADOW_CASES.split(',').includes(c.key)) : CASES_ALL;
const PHASE_TIMEOUT_MS = 20_000;
const TARGET_RATE = 5_000;
const TARGET_RATIO = 0.8;
const BASELINE_WARMUP_SYNCS = 20;

let runSeq = 0;

const updateTopic = (i) => `$aws/things/bench-${i}/shadow/update`;

/** A reported-only update (no desired, so no delta); same keys every time, so the document keeps its size. */
function updatePayload(seq, clientToken) {
  return `{"state":{"reported":{"seq":${seq},"temperature":${(20 + (seq % 100) / 10).toFixed(1)},"humidity":${40 + (seq % 20)},"status":"ok"}},"clientToken":"${clientToken}"}`;
}

/**
 * Connects one client, subscribes to update/accepted and update/rejected of the shadows in use, and
 * returns run(n) which sends n updates round-robin over `shadows` shadows, WINDOW at a time.
 */
async function openUpdater(coord, shadows) {
  const runId = `${process.pid}-${++runSeq}`;
  const client = await connectClient(coord.url, { clientId: `bench-shadow-${runId}`, clean: true });
  try {
    client.stream.setMaxListeners(0); // see broker-throughput.js: one 'drain' listener per buffered publish
    const thing = shadows === 1 ? 'bench-0' : '+';
    const filters = [`$aws/things/${thing}/shadow/update/accepted`, `$aws/things/${thing}/shadow/update/rejected`];
    const granted = await client.subscribeAsync(filters, { qos: 1 });
    if (granted.some((g) => g.qos !== 1)) throw new Error(`subscriptions granted ${JSON.stringify(granted.map((g) => g.qos))}, wanted QoS 1`);
  } catch (err) {
    await endClients(client);
    throw err;
  }
  const topics = Array.from({ length: shadows }, (_, i) => updateTopic(i));
  let seq = 0;

  /** Sends n updates; resolves with the time taken, each accepted update's latency (ms) and rejections by code. */
  const run = (n) =>
    new Promise((resolveRun, reject) => {
      const sent = new Map(); // clientToken → publish time
      const latencies = [];
      const rejected = {};
      let published = 0;
      let answered = 0;
      let finished = false;
      let t0 = 0;
      const finish = (err) => {
        if (finished) return;
        finished = true;
        clearTimeout(timer);
        client.off('message', onMessage);
        client.off('error', finish);
        client.off('close', onClose);
        if (err) reject(err);
        else resolveRun({ seconds: (performance.now() - t0) / 1000, latencies, rejected });
      };
      const onPublished = (err) => {
        if (err) finish(err);
      };
      const pump = () => {
        while (published < n && published - answered < WINDOW) {
          const s = seq++;
          const token = `${runId}-${s}`;
          const topic = topics[published % topics.length];
          published++;
          sent.set(token, performance.now());
          client.publish(topic, updatePayload(s, token), { qos: 1 }, onPublished);
        }
      };
      const onMessage = (topic, payload) => {
        let answer;
        try {
          answer = JSON.parse(payload.toString('utf8'));
        } catch {
          return;
        }
        const at = sent.get(answer?.clientToken);
        if (at === undefined) return; // not one of this run's (a late answer from an earlier run)
        sent.delete(answer.clientToken);
        if (topic.endsWith('/accepted')) latencies.push(performance.now() - at);
        else rejected[answer.code] = (rejected[answer.code] ?? 0) + 1;
        answered++;
        if (answered >= n) finish();
        else pump();
      };
      const onClose = () => finish(new Error(`coordinator: client connection closed mid-run (${answered}/${n} answered)`));
      const timer = setTimeout(() => finish(new Error(`coordinator: ${answered}/${n} updates answered within ${PHASE_TIMEOUT_MS} ms (published ${published})`)), PHASE_TIMEOUT_MS);
      client.on('message', onMessage);
      client.on('error', finish);
      client.on('close', onClose);
      t0 = performance.now();
      pump();
    });

  return { client, run, close: () => endClients(client) };
}

/** One update to bench-0, then a get: the document's size as stored (state, metadata, version). */
async function probeDocument(coord) {
  const client = await connectClient(coord.url, { clientId: `bench-shadow-probe-${process.pid}`, clean: true });
  try {
    await client.subscribeAsync(['$aws/things/bench-0/shadow/update/+', '$aws/things/bench-0/shadow/get/+'], { qos: 1 });
    const answer = (op) =>
      new Promise((resolveAnswer, reject) => {
        const timer = setTimeout(() => reject(new Error(`no answer to shadow ${op} within 5 s`)), 5000);
        const onMessage = (topic, payload) => {
          if (!topic.startsWith(`$aws/things/bench-0/shadow/${op}/`)) return;
          client.off('message', onMessage);
          clearTimeout(timer);
          if (topic.endsWith('/accepted')) resolveAnswer(payload);
          else reject(new Error(`shadow ${op} rejected: ${payload.toString('utf8')}`));
        };
        client.on('message', onMessage);
      });
    const updated = answer('update');
    await client.publishAsync(updateTopic(0), updatePayload(0, 'probe-update'), { qos: 1 });
    await updated;
    const got = answer('get');
    await client.publishAsync('$aws/things/bench-0/shadow/get', '{"clientToken":"probe-get"}', { qos: 1 });
    const doc = JSON.parse((await got).toString('utf8'));
    delete doc.clientToken;
    delete doc.timestamp; // a response field, not part of the stored row
    return JSON.stringify(doc);
  } finally {
    await endClients(client);
  }
}

/**
 * The baseline: `appends` records written to a fresh file in `dir` in batches averaging `batch` records,
 * writeSync of each batch's bytes then fdatasyncSync. Returns appends/s and time per batch.
 */
function rawAppend(dir, { appends, batch, record }) {
  const path = join(dir, `append-${++runSeq}.log`);
  const line = Buffer.from(`${record}\n`);
  const syncs = Math.max(1, Math.round(appends / batch));
  const largest = Math.ceil(appends / syncs);
  const buffer = Buffer.alloc(largest * line.length);
  for (let i = 0; i < largest; i++) line.copy(buffer, i * line.length);
  const fd = openSync(path, 'a');
  try {
    for (let i = 0; i < BASELINE_WARMUP_SYNCS; i++) {
      writeSync(fd, buffer, 0, line.length);
      fdatasyncSync(fd);
    }
    let done = 0;
    const t0 = performance.now();
    for (let i = 1; i <= syncs; i++) {
      const upto = Math.round((i * appends) / syncs);
      const bytes = (upto - done) * line.length;
      let off = 0;
      while (off < bytes) off += writeSync(fd, buffer, off, bytes - off);
      fdatasyncSync(fd);
      done = upto;
    }
    const seconds = (performance.now() - t0) / 1000;
    return { appendsPerSec: appends / seconds, syncsPerSec: syncs / seconds, batch: appends / syncs, msPerBatch: (seconds * 1000) / syncs, recordBytes: line.length };
  } finally {
    closeSync(fd);
    rmSync(path, { force: true });
  }
}

/** Sends WARMUP then COUNT updates through `server`; returns rate, latencies and CPU of the server process. */
async function drive(server, shadows) {
  const updater = await openUpdater(server, shadows);
  try {
    await updater.run(WARMUP);
    const cpu0 = cpuSeconds(server.pid);
    const self0 = process.cpuUsage();
    const got = await updater.run(COUNT);
    const self = process.cpuUsage(self0);
    const serverCpu = cpu0 === null ? null : cpuSeconds(server.pid) - cpu0;
    const accepted = got.latencies.length;
    return {
      rate: accepted / got.seconds,
      seconds: got.seconds,
      accepted,
      rejected: got.rejected,
      p50: percentile(got.latencies, 50),
      p99: percentile(got.latencies, 99),
      max: Math.max(...got.latencies),
      cpuUsPerUpdate: serverCpu === null ? null : (serverCpu * 1e6) / Math.max(1, accepted),
      cpuShare: serverCpu === null ? null : serverCpu / got.seconds,
      clientCpuShare: (self.user + self.system) / 1e6 / got.seconds,
    };
  } finally {
    await updater.close();
  }
}

/** One round of one case: the coordinator (with its commit counters), then the baseline broker. */
async function measureCase(coord, baseline, c) {
  const before = await adminStatus(coord.socketPath);
  const got = await drive(coord, c.shadows);
  const after = await adminStatus(coord.socketPath);
  const base = await drive(baseline, c.shadows);
  const commits = after.store.commit.commits - before.store.commit.commits;
  const syncs = after.store.commit.syncs - before.store.commit.syncs;
  const writes = after.store.commit.writes - before.store.commit.writes;
  return {
    ...got,
    // Counted from before the warm-up, so a little more than COUNT writes.
    commits,
    syncs,
    writes,
    avgBatch: syncs > 0 ? writes / syncs : 1,
    syncsPerSec: syncs / got.seconds,
    largestBatchSoFar: after.store.commit.largestBatch,
    failedWrites: after.store.commit.failedWrites,
    baseline: base,
    ratio: got.rate / base.rate,
  };
}

function describe(r) {
  const rej = Object.keys(r.rejected).length ? `, rejected ${JSON.stringify(r.rejected)}` : '';
  return (
    `${Math.round(r.rate)} updates/s, p50 ${r.p50.toFixed(2)} ms, p99 ${r.p99.toFixed(2)} ms; ` +
    `${r.commits} commits, ${r.syncs} syncs (${r.avgBatch.toFixed(1)} store writes/sync, ${Math.round(r.syncsPerSec)} syncs/s); ` +
    `CPU ${r.cpuUsPerUpdate?.toFixed(1) ?? '?'} µs/update (${r.cpuShare?.toFixed(2) ?? '?'} core), client ${r.clientCpuShare.toFixed(2)} core; ` +
    `baseline ${Math.round(r.baseline.rate)} updates/s, p50 ${r.baseline.p50.toFixed(2)} ms, p99 ${r.baseline.p99.toFixed(2)} ms, ` +
    `CPU ${r.baseline.cpuUsPerUpdate?.toFixed(1) ?? '?'} µs/update → ${r.ratio.toFixed(2)}×${rej}`
  );
}

/** The benchmark: 1 shadow and 100 shadows, each with its baseline. */
export async function shadowUpdates({ log }) {
  const coord = await spawnCoordinator({ logLevel: 'warn' });
  const baselineDir = makeTempDir('ec-bench-append-');
  try {
    const baseline = await spawnBareAedes({ label: 'bare aedes + append', appendEchoDir: baselineDir });
    const sameFs = statSync(baselineDir).dev === statSync(coord.dataDir).dev;
    const disk = { coordinatorDataDir: fsTypeOf(coord.dataDir), baselineDir: fsTypeOf(baselineDir), sameFilesystem: sameFs };
    if (!sameFs) log('WARNING: the baseline file and the coordinator database are on different file systems');
    const record = await probeDocument(coord);
    const single = rawAppend(baselineDir, { appends: 500, batch: 1, record });
    disk.fdatasyncPerSecBatch1 = round(single.syncsPerSec, 0);
    disk.msPerFdatasyncBatch1 = round(single.msPerBatch, 3);
    log(`coordinator pid ${coord.pid} on ${coord.url}, baseline pid ${baseline.pid}; ${disk.coordinatorDataDir}, document ${record.length} bytes; raw fdatasync of 1 record: ${Math.round(single.syncsPerSec)}/s`);

    const runs = Object.fromEntries(CASES.map((c) => [c.key, []]));
    for (let r = 0; r < ROUNDS; r++) {
      const order = r % 2 === 0 ? CASES : [...CASES].reverse();
      for (const c of order) {
        const got = await measureCase(coord, baseline, c);
        runs[c.key].push(got);
        log(`round ${r + 1} ${c.label}: ${describe(got)}`);
      }
    }

    const rows = [];
    for (const c of CASES) {
      const rs = runs[c.key];
      const med = (f) => median(rs.map(f));
      const rate = med((x) => x.rate);
      const baselineRate = med((x) => x.baseline.rate);
      const rejected = {};
      for (const x of rs) for (const [code, n] of Object.entries(x.rejected)) rejected[code] = (rejected[code] ?? 0) + n;
      const details = {
        shadows: c.shadows,
        updates: COUNT,
        warmup: WARMUP,
        window: WINDOW,
        rounds: ROUNDS,
        statistic: 'median of rounds',
        runs: rs.map((x) => round(x.rate, 0)),
        latencyMs: {
          p50: round(med((x) => x.p50), 3),
          p99: round(med((x) => x.p99), 3),
          p50Runs: rs.map((x) => round(x.p50, 3)),
          p99Runs: rs.map((x) => round(x.p99, 3)),
          maxRuns: rs.map((x) => round(x.max, 3)),
        },
        rejected,
        store: {
          commits: rs.map((x) => x.commits),
          syncs: rs.map((x) => x.syncs),
          writes: rs.map((x) => x.writes),
          rowWritesPerSync: round(med((x) => x.avgBatch), 2),
          syncsPerSec: round(med((x) => x.syncsPerSec), 0),
          largestBatch: rs[rs.length - 1].largestBatchSoFar,
          failedWrites: rs[rs.length - 1].failedWrites,
        },
        cpu: {
          coordinatorUsPerUpdate: round(med((x) => x.cpuUsPerUpdate ?? NaN), 1),
          coordinatorCores: round(med((x) => x.cpuShare ?? NaN), 2),
          baselineUsPerUpdate: round(med((x) => x.baseline.cpuUsPerUpdate ?? NaN), 1),
          clientCores: round(med((x) => x.clientCpuShare), 2),
        },
        baseline: {
          what: 'bare aedes answering each update after appending it to a file, pipelined group fdatasync (bench/bare-aedes.js --append-echo)',
          runs: rs.map((x) => round(x.baseline.rate, 0)),
          p50Ms: rs.map((x) => round(x.baseline.p50, 3)),
          p99Ms: rs.map((x) => round(x.baseline.p99, 3)),
        },
        pairedRatios: rs.map((x) => round(x.ratio, 3)),
        medianPairedRatio: round(med((x) => x.ratio), 3),
        disk,
      };
      rows.push(
        resultRow({
          name: `shadow updates, ${c.label}`,
          value: rate,
          unit: 'updates/s',
          target: { of: 'value', op: '>=', value: TARGET_RATE },
          details,
        }),
        resultRow({
          name: `shadow updates vs durable append echo, ${c.label}`,
          value: rate,
          unit: 'updates/s',
          baseline: 'aedes+append+fdatasync',
          baselineValue: baselineRate,
          target: { of: 'ratio', op: '>=', value: TARGET_RATIO },
          details: { see: `shadow updates, ${c.label}`, pairedRatios: details.pairedRatios, baseline: details.baseline, store: details.store },
        }),
        resultRow({ name: `shadow ack latency p50, ${c.label} (info)`, value: details.latencyMs.p50, unit: 'ms', details: { runs: details.latencyMs.p50Runs } }),
        resultRow({ name: `shadow ack latency p99, ${c.label} (info)`, value: details.latencyMs.p99, unit: 'ms', details: { runs: details.latencyMs.p99Runs } }),
      );
    }
    return rows;
  } finally {
    await coord.stop();
    await cleanup();
    removeTempDir(baselineDir);
  }
}
