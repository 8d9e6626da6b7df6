/**
 * Broker throughput (DESIGN.md §6: "broker with our auth + routing ≥ 0.9× bare aedes msg/s").
 *
 * One MQTT.js publisher → one MQTT.js subscriber, both in this process, 64-byte payloads, at most
 * WINDOW messages published but not yet received. Each run connects fresh clients, warms up, then
 * times COUNT messages from the first publish to the last delivery. Coordinator and bare aedes run
 * alternately (the order flips every round) and the figure is the median of the rounds.
 *
 * Third figure (informational): QoS 1 into a persistent session (clean: false, fixed client id) through
 * the coordinator, where every message is written durably (group commit, synchronous=FULL) before the
 * publisher gets its PUBACK; compared with the same bare-aedes QoS 1 baseline (memory only).
 *
 * Also reported, informational: the broker process's CPU time per message (from /proc), which stays
 * comparable when other processes share the cores and make msg/s noisy, and how busy those other
 * processes kept the machine (details.*.otherCpuCores).
 */
import { performance } from 'node:perf_hooks';
import {
  adminStatus,
  connectClient,
  cpuSeconds,
  endClients,
  fsTypeOf,
  machineBusySeconds,
  median,
  best,
  resultRow,
  round,
  spawnBareAedes,
  spawnCoordinator,
} from './lib.js';

const ROUNDS = 5;
const PERSISTENT_ROUNDS = 3;
const WARMUP = 2_000;
const WINDOW = 1_000;
const PAYLOAD = Buffer.alloc(64, 'x');
const CASES = [
  { key: 'qos0', qos: 0, count: 50_000 },
  { key: 'qos1', qos: 1, count: 20_000 },
];
const PERSISTENT_COUNT = 20_000;
const PERSISTENT_CLIENT_ID = 'bench-persistent-sub';
const PHASE_TIMEOUT_MS = 60_000;
const TARGET_RATIO = 0.9;

let runSeq = 0;

/**
 * Publishes `count` messages at `qos` through the broker at `broker.url` and returns msg/s plus the
 * CPU the broker process and this process spent per message. `subscriber` overrides the subscriber's
 * connect options (clientId, clean).
 */
export async function measureThroughput(broker, { qos, count, warmup = WARMUP, window = WINDOW, payload = PAYLOAD, subscriber = {} }) {
  const runId = `${process.pid}-${++runSeq}`;
  const base = `bench/throughput/${runId}`;
  let sub;
  let pub;
  try {
    sub = await connectClient(broker.url, { clientId: `bench-sub-${runId}`, clean: true, ...subscriber });
    const granted = await sub.subscribeAsync(`${base}/#`, { qos });
    if (granted[0]?.qos !== qos) throw new Error(`subscription granted QoS ${granted[0]?.qos}, wanted ${qos}`);
    pub = await connectClient(broker.url, { clientId: `bench-pub-${runId}`, clean: true });
    // MQTT.js adds a 'drain' listener per publish written while the socket buffer is over its high-water
    // mark; they only go when the buffer empties completely, which under load can take a while.
    pub.stream.setMaxListeners(0);

    const phase = (n, topic) =>
      new Promise((resolvePhase, reject) => {
        let published = 0;
        let received = 0;
        let finished = false;
        const finish = (err) => {
          if (finished) return;
          finished = true;
          clearTimeout(timer);
          sub.off('message', onMessage);
          sub.off('error', finish);
          pub.off('error', finish);
          sub.off('close', onClose);
          pub.off('close', onClose);
          if (err) reject(err);
          else resolvePhase();
        };
        const onPublished = (err) => {
          if (err) finish(err);
        };
        const pump = () => {
          while (published < n && published - received < window) {
            published++;
            pub.publish(topic, payload, { qos }, onPublished);
          }
        };
        const onMessage = (t) => {
          if (t !== topic) return; // e.g. a persistent session's leftovers from an earlier run
          received++;
          if (received >= n) finish();
          else pump();
        };
        const onClose = () => finish(new Error(`${broker.label}: client connection closed mid-run (${received}/${n} received)`));
        const timer = setTimeout(
          () => finish(new Error(`${broker.label}: ${received}/${n} messages received within ${PHASE_TIMEOUT_MS} ms (published ${published})`)),
          PHASE_TIMEOUT_MS,
        );
        sub.on('message', onMessage);
        sub.on('error', finish);
        pub.on('error', finish);
        sub.on('close', onClose);
        pub.on('close', onClose);
        pump();
      });

    if (warmup > 0) await phase(warmup, `${base}/warmup`);
    const brokerCpu0 = cpuSeconds(broker.pid);
    const machine0 = machineBusySeconds();
    const selfCpu0 = process.cpuUsage();
    const t0 = performance.now();
    await phase(count, `${base}/measure`);
    const seconds = (performance.now() - t0) / 1000;
    const self = process.cpuUsage(selfCpu0);
    const brokerCpu = brokerCpu0 === null ? null : cpuSeconds(broker.pid) - brokerCpu0;
    const clientCpu = (self.user + self.system) / 1e6;
    const machine = machine0 === null ? null : machineBusySeconds() - machine0;
    return {
      msgPerSec: count / seconds,
      seconds,
      brokerCpuUsPerMsg: brokerCpu === null ? null : (brokerCpu * 1e6) / count,
      brokerCpuShare: brokerCpu === null ? null : brokerCpu / seconds,
      clientCpuUsPerMsg: (clientCpu * 1e6) / count,
      clientCpuShare: clientCpu / seconds,
      // Cores busy with anything but the broker and this process: other load makes msg/s noisy.
      otherCpuCores: machine === null || brokerCpu === null ? null : Math.max(0, (machine - brokerCpu - clientCpu) / seconds),
    };
  } finally {
    await endClients(pub, sub);
  }
}

function summarize(runs) {
  const rates = runs.map((r) => r.msgPerSec);
  const med = (key) => median(runs.map((r) => r[key] ?? NaN));
  return {
    median: median(rates),
    best: best(rates),
    runs: rates.map((v) => round(v, 0)),
    brokerCpuUsPerMsg: med('brokerCpuUsPerMsg'),
    brokerCpuShare: round(med('brokerCpuShare'), 2),
    clientCpuUsPerMsg: round(med('clientCpuUsPerMsg'), 2),
    clientCpuShare: round(med('clientCpuShare'), 2),
    otherCpuCores: round(med('otherCpuCores'), 2),
  };
}

function describe(r) {
  const f = (v, d = 1) => (typeof v === 'number' ? v.toFixed(d) : '?');
  return `${Math.round(r.msgPerSec)} msg/s; CPU broker ${f(r.brokerCpuUsPerMsg)} µs/msg (${f(r.brokerCpuShare, 2)} core), clients ${f(r.clientCpuShare, 2)} core, other load ${f(r.otherCpuCores, 2)} core`;
}

/** The benchmark: QoS 0 and QoS 1 ratios against bare aedes, plus the persistent-session figure. */
export async function brokerThroughput({ log }) {
  const started = await Promise.allSettled([spawnCoordinator({ logLevel: 'warn' }), spawnBareAedes()]);
  const [coord, bare] = started.map((s) => (s.status === 'fulfilled' ? s.value : null));
  try {
    const failed = started.find((s) => s.status === 'rejected');
    if (failed) throw failed.reason;
    log(`coordinator pid ${coord.pid} on ${coord.url}; bare aedes pid ${bare.pid} on ${bare.url}`);

    const runs = { coordinator: { qos0: [], qos1: [] }, 'bare-aedes': { qos0: [], qos1: [] } };
    const paired = { qos0: [], qos1: [] };
    for (let round_ = 0; round_ < ROUNDS; round_++) {
      for (const c of CASES) {
        const order = round_ % 2 === 0 ? [coord, bare] : [bare, coord];
        const got = {};
        for (const broker of order) {
          const r = await measureThroughput(broker, { qos: c.qos, count: c.count });
          got[broker.kind] = r.msgPerSec;
          runs[broker.kind][c.key].push(r);
          log(`round ${round_ + 1} QoS ${c.qos} ${broker.label}: ${describe(r)}`);
        }
        paired[c.key].push(got.coordinator / got['bare-aedes']);
      }
    }

    // Persistent session through the coordinator: every message is durably queued before PUBACK.
    const before = await adminStatus(coord.socketPath);
    const persistentRuns = [];
    for (let i = 0; i < PERSISTENT_ROUNDS; i++) {
      const r = await measureThroughput(coord, { qos: 1, count: PERSISTENT_COUNT, subscriber: { clientId: PERSISTENT_CLIENT_ID, clean: false } });
      persistentRuns.push(r);
      log(`persistent run ${i + 1}: ${describe(r)}`);
    }
    const after = await adminStatus(coord.socketPath);
    const messages = PERSISTENT_ROUNDS * (PERSISTENT_COUNT + WARMUP);
    const commits = after.store.commit.commits - before.store.commit.commits;
    const writes = after.store.commit.writes - before.store.commit.writes;

    const config = { warmup: WARMUP, window: WINDOW, payloadBytes: PAYLOAD.length, rounds: ROUNDS, statistic: 'median of rounds' };
    const rows = [];
    const cpuRows = [];
    const allRuns = [...runs.coordinator.qos0, ...runs.coordinator.qos1, ...runs['bare-aedes'].qos0, ...runs['bare-aedes'].qos1];
    const otherLoad = median(allRuns.map((r) => r.otherCpuCores ?? NaN));
    if (otherLoad > 0.25) {
      log(`WARNING: other processes kept ${otherLoad.toFixed(2)} cores busy during the runs; msg/s figures are noisy; compare broker CPU per message too, and rerun on an idle machine`);
    }
    for (const c of CASES) {
      const co = summarize(runs.coordinator[c.key]);
      const ba = summarize(runs['bare-aedes'][c.key]);
      const tidy = (o) => ({ ...o, median: round(o.median, 1), best: round(o.best, 1), brokerCpuUsPerMsg: round(o.brokerCpuUsPerMsg, 2) });
      rows.push(
        resultRow({
          name: `broker throughput QoS ${c.qos}`,
          value: co.median,
          unit: 'msg/s',
          baseline: 'bare aedes',
          baselineValue: ba.median,
          target: { of: 'ratio', op: '>=', value: TARGET_RATIO },
          details: {
            ...config,
            messages: c.count,
            coordinator: tidy(co),
            bareAedes: tidy(ba),
            pairedRatios: paired[c.key].map((v) => round(v, 3)),
            medianPairedRatio: round(median(paired[c.key]), 3),
            otherLoadCores: round(otherLoad, 2),
          },
        }),
      );
      // Lower is better; steadier than msg/s when other processes share the cores.
      cpuRows.push(
        resultRow({
          name: `broker CPU per msg QoS ${c.qos} (info)`,
          value: co.brokerCpuUsPerMsg,
          unit: 'µs/msg',
          baseline: 'bare aedes',
          baselineValue: ba.brokerCpuUsPerMsg,
          target: null,
          details: {
            note: 'user+system CPU of the broker process during the measured phase / messages; from /proc/<pid>/stat (10 ms ticks); lower is better',
            coordinatorRuns: runs.coordinator[c.key].map((r) => round(r.brokerCpuUsPerMsg, 2)),
            bareAedesRuns: runs['bare-aedes'][c.key].map((r) => round(r.brokerCpuUsPerMsg, 2)),
          },
        }),
      );
    }
    const pe = summarize(persistentRuns);
    const qos1Bare = summarize(runs['bare-aedes'].qos1);
    rows.push(...cpuRows);
    rows.push(
      resultRow({
        name: 'QoS 1 to persistent session, durable (info)',
        value: pe.median,
        unit: 'msg/s',
        baseline: 'bare aedes QoS 1',
        baselineValue: qos1Bare.median,
        target: null,
        details: {
          ...config,
          rounds: PERSISTENT_ROUNDS,
          messages: PERSISTENT_COUNT,
          note: 'subscriber clean:false, fixed client id; each message is committed to SQLite (WAL, synchronous=FULL, group commit) before the publisher gets PUBACK; baseline is bare aedes QoS 1 with a clean session in memory',
          coordinator: { ...pe, median: round(pe.median, 1), best: round(pe.best, 1), brokerCpuUsPerMsg: round(pe.brokerCpuUsPerMsg, 2) },
          dataDirFs: fsTypeOf(coord.dataDir),
          store: {
            commits,
            writes,
            writesPerMessage: round(writes / messages, 2),
            messagesPerCommit: round(messages / commits, 1),
          },
        },
      }),
    );
    return rows;
  } finally {
    await Promise.allSettled([coord?.stop(), bare?.stop()]);
  }
}
