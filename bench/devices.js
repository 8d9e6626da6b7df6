/**
 * 1,000 simulated devices over mutual TLS (DESIGN.md §6 footprint; issue 6, acceptance 5): the
 * coordinator's RSS with them connected (target ≤ 150 MB: decimal megabytes, 150 × 10^6 bytes =
 * 143.05 MiB; the figure is in MB for that comparison, MiB in the log and details) and the device →
 * task → device round trip under that load.
 *
 * Set-up: `certs init` in a fresh data directory; a config (outside it: JSON files in the data directory
 * are shadow seeds) enabling listeners.mqtts on 127.0.0.1 port 0, plus one policy group letting the
 * probe device use the echo task's topics. A first coordinator registers DEVICES + 1 devices over the
 * admin socket (POST /v1/devices: a key and certificate from the gateway CA each; profiles smart-plug,
 * relay-board, env-sensor in turn) and is stopped; the measured coordinator then starts on that data
 * directory with `--tasks-dir` holding only tasks/echo — a gateway started with its devices registered,
 * not one that has just issued 1,000 certificates. The devices are a child process
 * (bench/device-swarm.js: SimulatedDevice each, its own certificate, its profile's subscriptions and
 * shadow report, telemetry every TELEMETRY_MS evenly spread), so 1,000 TLS clients do not share the
 * probe's event loop.
 *
 * 1. RSS (VmRSS of the coordinator process: broker, TLS, auth, registry, shadows; the task host is a
 *    process of its own, in details), median of RSS_SAMPLES samples 1 s apart. Baseline: the same
 *    coordinator before the devices connect (probe connected; the last of 1 s samples over the ≥ 20 s it
 *    idles through the bare aedes phase, as in idle-rss.js); the figure: once all DEVICES are
 *    connected and have reported their shadows, telemetry flowing, before any round trip (the probe's
 *    500 msg/s grows V8's young generation, which is not the devices' doing). Ratio = growth factor.
 *    Per device: the growth / DEVICES, against bare aedes behind node:tls requiring client
 *    certificates (this file run with --bare-tls-aedes) with the same swarm connected, in the same run.
 *
 * 2. Round trip. A probe device (its own certificate, mutual TLS, TCP_NODELAY) publishes QoS 0
 *    `{"seq":N,...}` to echo/<N % 100>/in at RT_RATE msg/s, paced, and times each seq until the echo
 *    task's echo/<id>/out comes back: RT_SECONDS with the devices connected, then RT_SECONDS on the same
 *    coordinator right after they disconnected (the baseline). A lost message counts as infinitely
 *    late. The issue sets no target; issue 4's p99 ≤ 5 ms (plain MQTT, 1k msg/s) is the reference.
 *
 * Loopback only; every process is started through lib.js (spawnScript) and stopped after the benchmark.
 */
import { execFileSync } from 'node:child_process';
import { cpSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import {
  BENCH_DIR,
  COORDINATOR_CLI,
  HOST,
  REPO_ROOT,
  adminStatus,
  connectClient,
  cpuSeconds,
  endClients,
  machineBusySeconds,
  makeTempDir,
  median,
  percentile,
  procStatusKb,
  removeTempDir,
  resultRow,
  round,
  rssMiB,
  sleep,
  spawnScript,
} from './lib.js';

const SELF = fileURLToPath(import.meta.url);
const SWARM = join(BENCH_DIR, 'device-swarm.js');
const ECHO_DIR = join(REPO_ROOT, 'tasks', 'echo');

const DEVICES = 1_000;
const PROFILES = ['smart-plug', 'relay-board', 'env-sensor'];
const PROBE = 'bench-probe';
const TELEMETRY_MS = 5_000; // per device: DEVICES / 5 s = 200 msg/s in all
const REGISTER_CONCURRENCY = 8;
const CONNECT_CONCURRENCY = 16; // as `coordinator simulate`
const RT_RATE = 500; // msg/s
const RT_WARMUP_S = 1;
const RT_SECONDS = 10; // with the devices, and the same without them
const RT_SEGMENTS = 5; // p99 per segment in details: a burst of other load on the shared machine shows
const RT_TOPICS = 100; // echo/<seq % RT_TOPICS>/in
const RT_GRACE_MS = 2_000;
const RSS_SAMPLES = 5; // one a second
const BARE_IDLE_SAMPLES = 2;
const IDLE_MIN_MS = 20_000; // the coordinator's baseline: at least this long idle, as idle-rss.js
const SWARM_TIMEOUT_MS = 60_000;
const PHASE_TIMEOUT_MS = 30_000;

const TARGETS = { rssMB: 150, referenceP99Ms: 5 };
/** MiB (what /proc reports, in KiB) to MB (10^6 bytes, the unit of the target). */
const toMB = (mib) => (mib * 2 ** 20) / 1e6;

const PAD = 'x'.repeat(64);
/** `{"seq":N,"pad":"xx…"}`, 64 bytes for small N, as in task-runtime.js. */
const payloadOf = (seq) => {
  const head = `{"seq":${seq},"pad":"`;
  return `${head}${PAD.slice(0, Math.max(1, 62 - head.length))}"}`;
};

const f = (v, d = 2) => (typeof v === 'number' && Number.isFinite(v) ? v.toFixed(d) : String(v));

// ---------------------------------------------------------------------------------------------------
// The coordinator, its data directory and the device registrations.

/** POST `path` with a JSON body over the admin socket; resolves with the JSON answer. */
function adminPost(socketPath, path, body, timeoutMs = 30_000) {
  return new Promise((resolvePost, reject) => {
    const payload = JSON.stringify(body);
    const req = request(
      { socketPath, method: 'POST', path, timeout: timeoutMs, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) } },
      (res) => {
        const chunks = [];
        res.on('data', (c) => chunks.push(c));
        res.on('end', () => {
          try {
            const answer = JSON.parse(Buffer.concat(chunks).toString('utf8'));
            if (res.statusCode >= 400) reject(new Error(`POST ${path}: HTTP ${res.statusCode}: ${JSON.stringify(answer)}`));
            else resolvePost(answer);
          } catch (err) {
            reject(err);
          }
        });
      },
    );
    req.on('timeout', () => req.destroy(new Error(`POST ${path}: no answer within ${timeoutMs} ms`)));
    req.on('error', reject);
    req.end(payload);
  });
}

/** A data directory with the gateway PKI, a config file (outside it: JSON in the data dir are seeds) and an echo-only tasks folder. */
function prepare() {
  const root = makeTempDir('ec-bench-devices-');
  const dataDir = join(root, 'data');
  const tasksDir = join(root, 'tasks');
  mkdirSync(dataDir);
  cpSync(ECHO_DIR, join(tasksDir, 'echo'), { recursive: true });
  execFileSync(process.execPath, [COORDINATOR_CLI, 'certs', 'init', '--data-dir', dataDir], { cwd: REPO_ROOT, stdio: 'ignore', timeout: 30_000 });
  const config = {
    listeners: { mqtts: { enabled: true, host: HOST, port: 0 } },
    devices: { policies: [{ name: 'bench-probe', match: { thing: PROBE }, allow: { publish: ['echo/+/in'], subscribe: ['echo/+/out'], receive: ['echo/+/out'] } }] },
  };
  const configFile = join(root, 'config.json');
  writeFileSync(configFile, `${JSON.stringify(config, null, 2)}\n`);
  return { root, dataDir, tasksDir, configFile };
}

/** Starts `coordinator start` on the prepared data directory (default info log level) and waits for "coordinator ready". */
async function startCoordinator(env, label, { tasks = false } = {}) {
  const args = [COORDINATOR_CLI, 'start', '--config', env.configFile, '--data-dir', env.dataDir, '--mqtt-host', HOST, '--mqtt-port', '0', '--log-level', 'info'];
  if (tasks) args.push('--tasks-dir', env.tasksDir);
  const proc = await spawnScript({ label, args, ready: (o) => (o.msg === 'coordinator ready' ? true : undefined) });
  const socketPath = join(env.dataDir, 'coordinator.sock');
  try {
    const status = await adminStatus(socketPath);
    const tls = status.listeners?.find((l) => l.name === 'mqtts');
    if (!tls) throw new Error(`${label}: no mqtts listener in status: ${JSON.stringify(status.listeners)}`);
    const hostPid = status.tasks?.host?.pid;
    if (tasks && (status.tasks?.installed !== 1 || typeof hostPid !== 'number')) throw new Error(`${label}: ${status.tasks?.installed} task(s) installed, task host pid ${hostPid}`);
    return { label, pid: proc.pid, proc: proc.proc, socketPath, tlsUrl: `mqtts://${HOST}:${tls.port}`, hostPid, stop: () => proc.stop() };
  } catch (err) {
    await proc.stop();
    throw err;
  }
}

/** Registers the swarm's devices and the probe; resolves with their bundles. */
async function registerDevices(coord) {
  const things = Array.from({ length: DEVICES }, (_, i) => ({ thing: `bench-dev-${i + 1}`, profile: PROFILES[i % PROFILES.length] }));
  const all = [...things, { thing: PROBE, profile: null }];
  const bundles = new Array(all.length);
  let next = 0;
  const worker = async () => {
    while (next < all.length) {
      const i = next++;
      const added = await adminPost(coord.socketPath, '/v1/devices', all[i]);
      bundles[i] = { thing: all[i].thing, profile: all[i].profile, certPem: added.certPem, keyPem: added.keyPem, caPem: added.caPem };
    }
  };
  await Promise.all(Array.from({ length: REGISTER_CONCURRENCY }, worker));
  return { devices: bundles.slice(0, DEVICES), probe: bundles[DEVICES], caPem: bundles[0].caPem };
}

// ---------------------------------------------------------------------------------------------------
// The probe: a device over mutual TLS timing echo/<id>/in → echo task → echo/<id>/out.

async function openProbe(url, bundle) {
  const client = await connectClient(url, { clientId: PROBE, clean: true, ca: bundle.caPem, cert: bundle.certPem, key: bundle.keyPem, rejectUnauthorized: true });
  try {
    client.stream.setNoDelay(true);
    client.stream.setMaxListeners(0); // one 'drain' listener per buffered publish
    const granted = await client.subscribeAsync('echo/+/out', { qos: 0 });
    if (granted[0]?.qos !== 0) throw new Error(`probe subscription granted ${granted[0]?.qos}, wanted QoS 0`);
  } catch (err) {
    await endClients(client);
    throw err;
  }
  let nextSeq = 0;

  /** Sends n messages paced at RT_RATE; resolves with per-message latencies (NaN = lost). */
  const run = (n) =>
    new Promise((resolveRun, reject) => {
      const base = nextSeq;
      nextSeq += n;
      const sentAt = new Float64Array(n).fill(NaN);
      const latency = new Float64Array(n).fill(NaN);
      const interval = 1000 / RT_RATE;
      let sent = 0;
      let received = 0;
      let maxSendLag = 0;
      let finished = false;
      let pacer;
      let grace;
      const t0 = performance.now();
      const finish = (err) => {
        if (finished) return;
        finished = true;
        clearTimeout(timer);
        clearTimeout(pacer);
        clearTimeout(grace);
        client.off('message', onMessage);
        client.off('close', onClose);
        if (err) reject(err);
        else resolveRun({ latency, lost: n - received, maxSendLagMs: maxSendLag });
      };
      const onPublished = (err) => {
        if (err) finish(err);
      };
      const tick = () => {
        const now = performance.now();
        const due = Math.min(n, Math.floor((now - t0) / interval) + 1);
        while (sent < due) {
          maxSendLag = Math.max(maxSendLag, now - (t0 + sent * interval));
          const seq = base + sent;
          sentAt[sent++] = now;
          client.publish(`echo/${seq % RT_TOPICS}/in`, payloadOf(seq), { qos: 0 }, onPublished);
        }
        if (sent < n) pacer = setTimeout(tick, Math.max(0, t0 + sent * interval - performance.now()));
        else grace = setTimeout(() => finish(), RT_GRACE_MS);
      };
      const onMessage = (_topic, payload) => {
        const now = performance.now();
        let seq;
        try {
          seq = JSON.parse(payload.toString('utf8')).seq;
        } catch {
          return;
        }
        const i = seq - base;
        if (!(i >= 0 && i < n) || !Number.isNaN(latency[i])) return; // an earlier run's straggler
        latency[i] = now - sentAt[i];
        if (++received >= n) finish();
      };
      const onClose = () => finish(new Error(`probe connection closed mid-run (${received}/${n} received)`));
      const timer = setTimeout(() => finish(new Error(`probe: ${received}/${n} echoes within ${PHASE_TIMEOUT_MS} ms`)), PHASE_TIMEOUT_MS);
      client.on('message', onMessage);
      client.on('close', onClose);
      tick();
    });

  return { run, close: () => endClients(client) };
}

/** Percentiles of latencies; a lost message counts as infinitely late. */
function latencyStats(latencies) {
  const all = Array.from(latencies, (v) => (Number.isNaN(v) ? Infinity : v));
  const got = all.filter(Number.isFinite);
  return { p50: percentile(all, 50), p90: percentile(all, 90), p99: percentile(all, 99), p999: percentile(all, 99.9), max: Math.max(...got), mean: got.reduce((a, b) => a + b, 0) / got.length, count: all.length, lost: all.length - got.length };
}

/** CPU (cores) of the coordinator, its task host, the swarm and this process from now until done(seconds). */
function cpuMark(pids) {
  const at0 = Object.fromEntries(Object.entries(pids).map(([k, pid]) => [k, pid ? cpuSeconds(pid) : null]));
  const machine0 = machineBusySeconds();
  const self0 = process.cpuUsage();
  const t0 = performance.now();
  return () => {
    const seconds = (performance.now() - t0) / 1000;
    const out = {};
    let known = 0;
    for (const [k, pid] of Object.entries(pids)) {
      if (!pid || at0[k] === null) continue;
      const used = cpuSeconds(pid) - at0[k];
      known += used;
      out[k] = round(used / seconds, 2);
    }
    const s = process.cpuUsage(self0);
    const self = (s.user + s.system) / 1e6;
    out.bench = round(self / seconds, 2);
    out.other = round(Math.max(0, (machineBusySeconds() - machine0 - known - self) / seconds), 2);
    return out;
  };
}

/** Paced round trips for `seconds` in RT_SEGMENTS runs; pooled latencies, p99 per segment, CPU of every process. */
async function roundTrips(probe, pids, seconds) {
  const cpu = cpuMark(pids);
  const latency = [];
  const segmentP99 = [];
  let lost = 0;
  let maxSendLagMs = 0;
  for (let i = 0; i < RT_SEGMENTS; i++) {
    const got = await probe.run(Math.round((RT_RATE * seconds) / RT_SEGMENTS));
    latency.push(...got.latency);
    segmentP99.push(round(latencyStats(got.latency).p99, 2));
    lost += got.lost;
    maxSendLagMs = Math.max(maxSendLagMs, got.maxSendLagMs);
  }
  return { latency, lost, maxSendLagMs, segmentP99, cpu: cpu() };
}

// ---------------------------------------------------------------------------------------------------
// RSS.

const kbMiB = (pid, field) => (procStatusKb(pid, field) ?? NaN) / 1024;

/** `count` samples of a process's (and a task host's) VmRSS, one a second; medians and the series. */
async function sampleRss(pid, hostPid, count) {
  const core = [];
  const host = [];
  for (let i = 0; i < count; i++) {
    await sleep(1000);
    core.push(rssMiB(pid));
    if (hostPid) host.push(kbMiB(hostPid, 'VmRSS'));
  }
  return { core: median(core), host: median(host), coreSeries: core.map((v) => round(v, 1)), hostSeries: host.map((v) => round(v, 1)) };
}

/** VmRSS of a process (and a task host) every second until stop(), which returns the last sample and the series; cancel() on failure. */
function startSampler(pid, hostPid) {
  const core = [];
  const host = [];
  // kbMiB, not rssMiB: a timer callback must not throw when the benchmark fails and the process is gone.
  const timer = setInterval(() => {
    core.push(kbMiB(pid, 'VmRSS'));
    host.push(kbMiB(hostPid, 'VmRSS'));
  }, 1000);
  return {
    since: performance.now(),
    cancel: () => clearInterval(timer),
    stop() {
      clearInterval(timer);
      core.push(rssMiB(pid));
      host.push(kbMiB(hostPid, 'VmRSS'));
      return { core: core[core.length - 1], host: host[host.length - 1], coreSeries: core.map((v) => round(v, 1)), hostSeries: host.map((v) => round(v, 1)) };
    },
  };
}

/** Waits until the coordinator counts `n` connected clients (presence follows connects and disconnects). */
async function waitConnected(coord, n, timeoutMs) {
  const deadline = performance.now() + timeoutMs;
  let connected;
  while (performance.now() < deadline) {
    connected = (await adminStatus(coord.socketPath)).clients?.connected;
    if (connected === n) return;
    await sleep(200);
  }
  throw new Error(`${coord.label}: ${connected} clients connected after ${timeoutMs} ms, wanted ${n}`);
}

/** The latest {"swarmStatus":...} line of the swarm (it prints one a second). */
function swarmStatus(swarm) {
  return swarm.proc.waitForJsonLine((o) => o.swarmStatus, 3000);
}

// ---------------------------------------------------------------------------------------------------
// The benchmark.

export async function devices({ log }) {
  const t0 = performance.now();
  const env = prepare();
  let coord;
  let bare;
  let swarm;
  let probe;
  let idleSampler;
  const stopSwarm = async () => {
    const s = swarm;
    swarm = null;
    await s?.stop();
  };
  try {
    // Registration, by a coordinator of its own.
    const registrar = await startCoordinator(env, 'coordinator (registering devices)');
    let bundles;
    const tReg = performance.now();
    try {
      bundles = await registerDevices(registrar);
    } finally {
      await registrar.stop();
    }
    const registerS = (performance.now() - tReg) / 1000;
    log(`registered ${DEVICES} + 1 devices (certificate + key each) in ${f(registerS, 1)} s`);

    const started = await Promise.allSettled([
      startCoordinator(env, 'coordinator', { tasks: true }),
      spawnScript({ label: 'bare aedes over TLS', args: [SELF, '--bare-tls-aedes', join(env.dataDir, 'pki')], ready: (o) => (typeof o.bareTlsPort === 'number' ? o.bareTlsPort : undefined) }),
    ]);
    [coord, bare] = started.map((x) => (x.status === 'fulfilled' ? x.value : null));
    const failed = started.find((x) => x.status === 'rejected');
    if (failed) throw failed.reason;
    const swarmFile = (url) => {
      const file = join(env.root, `swarm-${new URL(url).port}.json`);
      writeFileSync(file, JSON.stringify({ url, caPem: bundles.caPem, telemetryMs: TELEMETRY_MS, concurrency: CONNECT_CONCURRENCY, devices: bundles.devices }));
      return file;
    };
    const startSwarm = async (url) => {
      swarm = await spawnScript({ label: 'device swarm', args: [SWARM, swarmFile(url)], ready: (o) => (o.swarm === 'connected' ? o : undefined), timeoutMs: SWARM_TIMEOUT_MS });
      return swarm.value;
    };
    probe = await openProbe(coord.tlsUrl, bundles.probe);
    log(`coordinator pid ${coord.pid} (task host ${coord.hostPid}) with ${coord.tlsUrl}, probe ${PROBE} connected over mutual TLS; bare aedes over node:tls pid ${bare.pid}`);

    // 1. RSS: both servers idle, then the swarm on bare aedes, then on the coordinator.
    // The coordinator idles through the bare aedes phase (and at least IDLE_MIN_MS); its baseline is the
    // last of those samples, as in idle-rss.js: V8's memory reducer shrinks the heap 8–15 s after start-up.
    idleSampler = startSampler(coord.pid, coord.hostPid);
    const bareIdle = await sampleRss(bare.pid, null, BARE_IDLE_SAMPLES);
    const bareSwarm = await startSwarm(`mqtts://${HOST}:${bare.value}`);
    const bareLoaded = await sampleRss(bare.pid, null, RSS_SAMPLES);
    await stopSwarm();
    await bare.stop();
    await sleep(IDLE_MIN_MS - (performance.now() - idleSampler.since));
    const rssBase = idleSampler.stop();
    log(
      `bare aedes over TLS: RSS ${f(bareIdle.core, 1)} MiB, then ${bareSwarm.devices} devices connected in ${f(bareSwarm.connectMs / 1000, 1)} s, RSS ${f(bareLoaded.core, 1)} MiB (${bareLoaded.coreSeries.join(', ')}); ` +
        `coordinator without devices: ${f(rssBase.core, 1)} MiB (${rssBase.coreSeries.join(', ')}), task host ${f(rssBase.host, 1)} MiB`,
    );

    const swarmUp = await startSwarm(coord.tlsUrl);
    await waitConnected(coord, DEVICES + 1, 10_000);
    const rssLoaded = await sampleRss(coord.pid, coord.hostPid, RSS_SAMPLES);
    log(
      `coordinator: ${swarmUp.devices} devices connected in ${f(swarmUp.connectMs / 1000, 1)} s (swarm RSS ${swarmUp.rssBeforeMiB} → ${swarmUp.rssMiB} MiB); ` +
        `RSS ${f(rssLoaded.core, 1)} MiB = ${f(toMB(rssLoaded.core), 1)} MB (${rssLoaded.coreSeries.join(', ')} MiB), task host ${f(rssLoaded.host, 1)} MiB`,
    );

    // 2. Round trips with the devices, then without them (same probe, same coordinator).
    const pids = { coordinator: coord.pid, taskHost: coord.hostPid };
    await probe.run(RT_RATE * RT_WARMUP_S);
    const loaded = await roundTrips(probe, { ...pids, swarm: swarm.pid }, RT_SECONDS);
    log(`round trip @${RT_RATE}/s with ${DEVICES} devices: ${describe(latencyStats(loaded.latency), loaded)}; CPU cores ${JSON.stringify(loaded.cpu)}`);
    const rssAfterLoad = rssMiB(coord.pid);
    const status = await swarmStatus(swarm);
    if (status.connected !== DEVICES) throw new Error(`only ${status.connected} of ${DEVICES} swarm devices are connected: ${JSON.stringify(status)}`);
    await stopSwarm();
    await waitConnected(coord, 1, 10_000);
    const rssAfterDisconnect = rssMiB(coord.pid);
    const unloaded = await roundTrips(probe, pids, RT_SECONDS);
    log(`round trip @${RT_RATE}/s after the devices left: ${describe(latencyStats(unloaded.latency), unloaded)}; CPU cores ${JSON.stringify(unloaded.cpu)}`);
    const peakMiB = kbMiB(coord.pid, 'VmHWM');

    const base = latencyStats(unloaded.latency);
    const load = latencyStats(loaded.latency);
    const perDeviceKiB = ((rssLoaded.core - rssBase.core) * 1024) / DEVICES;
    const barePerDeviceKiB = ((bareLoaded.core - bareIdle.core) * 1024) / DEVICES;
    const setup = {
      devices: DEVICES,
      profiles: PROFILES,
      transport: 'MQTT 3.1.1 over mutual TLS (ECDSA P-256 certificates issued by the gateway CA), 127.0.0.1',
      telemetry: `every ${TELEMETRY_MS} ms per device, evenly spread: ${round((DEVICES * 1000) / TELEMETRY_MS, 0)} msg/s QoS 0 in all`,
      registerSeconds: round(registerS, 1),
      connectSeconds: { coordinator: round(swarmUp.connectMs / 1000, 1), bareAedes: round(bareSwarm.connectMs / 1000, 1) },
      connectConcurrency: CONNECT_CONCURRENCY,
      // What the two servers differ in besides the coordinator's own code (docs/devices.md, "Memory").
      settings: {
        coordinator: 'its defaults: listeners.mqtts.sessionTickets false (no TLS 1.3 stateless tickets), memory.youngGeneration fixed (young generation pinned at start-up, shrunk by V8 while the coordinator idles before the devices come)',
        bareAedes: 'node:tls and V8 defaults (stateless session tickets, young generation growing to 2 × 16 MiB)',
      },
    };
    const n = DEVICES.toLocaleString('en-US');
    const rows = [
      resultRow({
        name: `RSS with ${n} TLS devices`,
        value: toMB(rssLoaded.core),
        unit: 'MB',
        baseline: 'same, no devices',
        baselineValue: toMB(rssBase.core),
        target: { of: 'value', op: '<=', value: TARGETS.rssMB },
        details: {
          ...setup,
          units: 'value, baseline and target in MB (10^6 bytes, as DESIGN.md §6 states the target); every *MiB field in 2^20 bytes',
          valueMiB: round(rssLoaded.core, 1),
          baselineMiB: round(rssBase.core, 1),
          targetMiB: round((TARGETS.rssMB * 1e6) / 2 ** 20, 2),
          how: `coordinator process VmRSS, median of ${RSS_SAMPLES} samples 1 s apart once every device has connected and reported its shadow (telemetry flowing, no round trips yet); baseline: the same process before, with only the probe connected: the last of its samples every second while idle since start-up (through the bare aedes phase, at least ${IDLE_MIN_MS / 1000} s); ratio = growth factor`,
          growthMiB: round(rssLoaded.core - rssBase.core, 1),
          // V8's memory reducer shrinks an idle heap once, 8–20 s after start-up (or later): without it the
          // baseline is ~15 MiB higher and the growth and per-device figures that much lower.
          baselineAfterHeapShrink: Math.min(...rssBase.coreSeries) < rssBase.coreSeries[0] - 5,
          coreSeriesMiB: { noDevices: rssBase.coreSeries, devices: rssLoaded.coreSeries },
          afterRoundTripsMiB: round(rssAfterLoad, 1),
          afterDisconnectMiB: round(rssAfterDisconnect, 1),
          peakMiB: round(peakMiB, 1),
          taskHostMiB: { noDevices: round(rssBase.host, 1), devices: round(rssLoaded.host, 1) },
          coreAndTaskHostMiB: round(rssLoaded.core + rssLoaded.host, 1),
        },
      }),
      resultRow({
        name: `RSS with ${n} TLS devices vs bare aedes (info)`,
        value: toMB(rssLoaded.core),
        unit: 'MB',
        baseline: 'bare aedes + TLS',
        baselineValue: toMB(bareLoaded.core),
        details: { how: 'bare aedes (in-memory persistence, no auth) behind node:tls requiring client certificates of the same CA, the same swarm connected; VmRSS median as above', bareAedesMiB: { noDevices: round(bareIdle.core, 1), devices: round(bareLoaded.core, 1), series: bareLoaded.coreSeries } },
      }),
      resultRow({
        name: 'RSS per connected TLS device (info)',
        value: perDeviceKiB,
        unit: 'KiB',
        baseline: 'bare aedes + TLS',
        baselineValue: barePerDeviceKiB,
        details: {
          how: `(VmRSS with ${DEVICES} devices − without) / ${DEVICES}, coordinator against bare aedes over node:tls in the same run`,
          clientSideKiBPerDevice: round(((swarmUp.rssMiB - swarmUp.rssBeforeMiB) * 1024) / DEVICES, 1),
          swarmRssMiB: { before: swarmUp.rssBeforeMiB, connected: swarmUp.rssMiB, end: status.rssMiB },
        },
      }),
    ];
    const rtDetails = {
      ...setup,
      rate: RT_RATE,
      seconds: RT_SECONDS,
      warmupSeconds: RT_WARMUP_S,
      probe: `${PROBE}: its own certificate over mutual TLS, QoS 0, ${payloadOf(0).length}-byte payloads to echo/<seq % ${RT_TOPICS}>/in, the echo task answers on echo/<id>/out`,
      baseline: 'the same probe and coordinator right after the devices disconnected',
      reference: `issue 4's task round trip target p99 ≤ ${TARGETS.referenceP99Ms} ms (plain MQTT, 1k msg/s; benchmark task-runtime); issue 6 sets no target here`,
      withDevices: tidy(load, loaded),
      withoutDevices: tidy(base, unloaded),
      swarm: status,
    };
    rows.push(
      resultRow({ name: `task round trip p50, ${n} devices (info)`, value: load.p50, unit: 'ms', baseline: 'no devices', baselineValue: base.p50, details: rtDetails }),
      resultRow({
        name: `task round trip p99, ${n} devices (info)`,
        value: load.p99,
        unit: 'ms',
        baseline: 'no devices',
        baselineValue: base.p99,
        details: { see: `task round trip p50, ${n} devices (info)`, withinReference: load.p99 <= TARGETS.referenceP99Ms, lost: { withDevices: load.lost, withoutDevices: base.lost } },
      }),
    );
    log(`total ${f((performance.now() - t0) / 1000, 1)} s`);
    return rows;
  } finally {
    idleSampler?.cancel();
    await probe?.close();
    await Promise.allSettled([stopSwarm(), bare?.stop(), coord?.stop()]);
    removeTempDir(env.root);
  }
}

const describe = (s, phase) =>
  `p50 ${f(s.p50, 3)} ms, p90 ${f(s.p90, 3)} ms, p99 ${f(s.p99, 3)} ms, max ${f(s.max, 1)} ms, lost ${s.lost} (p99 per ${RT_SECONDS / RT_SEGMENTS} s: ${phase.segmentP99.join(', ')}; probe send lag max ${f(phase.maxSendLagMs, 1)} ms)`;

function tidy(s, phase) {
  return { p50: round(s.p50, 3), p90: round(s.p90, 3), p99: round(s.p99, 3), p999: round(s.p999, 3), max: round(s.max, 3), mean: round(s.mean, 3), messages: s.count, lost: s.lost, segmentP99: phase.segmentP99, maxSendLagMs: round(phase.maxSendLagMs, 2), cpuCores: phase.cpu };
}

// ---------------------------------------------------------------------------------------------------
// Child mode: `node bench/devices.js --bare-tls-aedes <pki dir>`, the baseline broker.

/** Bare aedes behind node:tls requiring a client certificate of the gateway CA (no auth, no policy). */
async function bareTlsMain(pkiDir) {
  const { createServer } = await import('node:tls');
  const { Aedes } = await import('aedes');
  const broker = await Aedes.createBroker();
  const read = (name) => readFileSync(join(pkiDir, name));
  const server = createServer({ key: read('server.key.pem'), cert: read('server.pem'), ca: read('ca.pem'), requestCert: true, rejectUnauthorized: true }, broker.handle);
  server.listen(0, HOST, () => process.stdout.write(`${JSON.stringify({ bareTlsPort: server.address().port, pid: process.pid })}\n`));
  const stop = () => process.exit(0);
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
}

if (process.argv[1] && resolve(process.argv[1]) === SELF) {
  const [mode, arg] = process.argv.slice(2);
  if (mode === '--bare-tls-aedes' && arg) await bareTlsMain(arg);
  else {
    process.stderr.write('usage: node bench/devices.js --bare-tls-aedes <pki dir>\n(the benchmark itself runs from bench/run.js)\n');
    process.exit(64);
  }
}
