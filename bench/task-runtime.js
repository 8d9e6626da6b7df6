/**
 * The task runtime (DESIGN.md §6; issue 4, acceptance 5), four measures in one run:
 *
 * 1. Device → task → device round trip at a paced 1,000 msg/s (targets p50 ≤ 1 ms, p99 ≤ 5 ms, p99 ≤ 2×
 *    a bare aedes echo in the same run). One MQTT.js "device" client (TCP_NODELAY, clean session,
 *    subscribed QoS 0 to echo/+/out) publishes QoS 0 `{"seq":N,...}` (64 bytes) to echo/<N % 100>/in,
 *    one message every millisecond on a schedule (not in bursts), and times each seq until its
 *    echo/<id>/out comes back. Coordinator: `start --tasks-dir <tmp>` with a copy of tasks/echo (warm
 *    isolate, routes, scheduler, task host process, host-API publish authorized in the core). Baseline:
 *    bare aedes (bench/bare-aedes.js) plus an echo *client* in its own process (this file run with
 *    --echo-client: MQTT.js, TCP_NODELAY, subscribes echo/+/in and republishes each payload to
 *    echo/<id>/out) — two processes and one hop each way, like the core and the task host. The 5 s
 *    run as 1 s segments alternating the two (a burst of other load hits both); latencies are pooled
 *    per side. A message that never comes back counts as an infinite latency (details.lost).
 *
 * 2. Trivial-task invocation throughput (targets ≥ 20,000/s and ≥ 0.5× the bare echo). The same device
 *    client keeps WINDOW messages in flight and the figure is echoes received per second over COUNT
 *    messages after a warm-up; the same against the bare echo. ROUNDS rounds alternate the order; the
 *    figures are medians. Also the CPU (from /proc) per invocation of the coordinator core and of the
 *    task host, against the broker and the echo client of the baseline.
 *
 * 3. Isolate cold start (target ≤ 2 ms). A child process (this file run with --cold-start, node
 *    --no-node-snapshot like the task host) imports dist/sandbox/isolate-runtime.js and times
 *    IsolateRuntime.create() of the echo task (bundled by dist/tasks/bundle.js, as the coordinator does)
 *    with a stub host — isolate, context, bootstrap module, task module, ctx wiring — against a bare
 *    `new ivm.Isolate() + createContext()`, interleaved, after a warm-up. Also timed there: the first
 *    and second invocation of a fresh runtime (informational).
 *
 * 4. RSS per warm task (target ≤ 3 MiB). Two coordinators, one with echo alone and one with echo plus
 *    RSS_COPIES copies of it under other names and trigger topics (same code, each its own isolate);
 *    every task is invoked once, then both idle and the task hosts' VmRSS is sampled every second; the
 *    figure is (RSS with 1 + RSS_COPIES tasks − RSS with 1 task) / RSS_COPIES from the last sample.
 *    Also: each task's V8 heap as `coordinator tasks show` reports it, and the core's RSS difference.
 *
 * Loopback only; every process is started through lib.js and stopped after the benchmark.
 */
import { cpSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath, pathToFileURL } from 'node:url';
import {
  REPO_ROOT,
  adminGet,
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
  sleep,
  spawnBareAedes,
  spawnCoordinator,
  spawnScript,
} from './lib.js';

const SELF = fileURLToPath(import.meta.url);
const ECHO_DIR = join(REPO_ROOT, 'tasks', 'echo');

// 1. round trip
const RT_RATE = 1_000; // msg/s
const RT_WARMUP_S = 1;
const RT_SECONDS = 5;
// The measured seconds run as segments alternating coordinator and baseline, so that a burst of other
// load hits both; each side's latencies are pooled over its segments.
const RT_SEGMENTS = 5;
const RT_GRACE_MS = 2_000; // wait this long after the last send for stragglers
const DEVICES = 100; // echo/<seq % DEVICES>/in
// 2. throughput
const TP_WINDOW = 1_000;
const TP_WARMUP = 2_000;
const TP_COUNT = 20_000;
const TP_ROUNDS = 3;
const PHASE_TIMEOUT_MS = 30_000;
// 3. cold start
const COLD_WARMUP = 20;
const COLD_ITERATIONS = 200;
// 4. RSS
const RSS_COPIES = 20;
const RSS_IDLE_S = 12;

const TARGETS = { p50Ms: 1, p99Ms: 5, p99Ratio: 2, invPerSec: 20_000, invRatio: 0.5, coldStartMs: 2, rssPerTaskMiB: 3 };

const PAD = 'x'.repeat(64);
/** `{"seq":N,"pad":"xx…"}`, 64 bytes for small N (the same payload size as the broker benchmark). */
const payloadOf = (seq) => {
  const head = `{"seq":${seq},"pad":"`;
  return `${head}${PAD.slice(0, Math.max(1, 62 - head.length))}"}`;
};

// ---------------------------------------------------------------------------------------------------
// Task folders for the coordinator.

/** The echo manifest (tasks/echo/task.json) as it is now. */
function echoManifest() {
  return JSON.parse(readFileSync(join(ECHO_DIR, 'task.json'), 'utf8'));
}

/**
 * A tasks folder with a copy of tasks/echo and `copies` more copies named echo-<i>, each triggered by
 * echo-<i>/+/in (the code is echo's: it answers on echo/<id>/out, which its route sends to the broker).
 */
function writeTasksDir(copies) {
  const dir = makeTempDir('ec-bench-tasks-');
  cpSync(ECHO_DIR, join(dir, 'echo'), { recursive: true });
  const manifest = echoManifest();
  for (let i = 1; i <= copies; i++) {
    const name = `echo-${i}`;
    cpSync(ECHO_DIR, join(dir, name), { recursive: true });
    const m = {
      ...manifest,
      name,
      description: `benchmark copy ${i} of echo`,
      triggers: [{ topic: `${name}/+/in` }],
      routes: (manifest.routes ?? []).map((r) => ({ ...r, source: `task:${name}` })),
    };
    writeFileSync(join(dir, name, 'task.json'), `${JSON.stringify(m, null, 2)}\n`);
  }
  return dir;
}

async function startCoordinator(tasksDir, expectTasks, label) {
  const coord = await spawnCoordinator({ logLevel: 'warn', label, extraArgs: ['--tasks-dir', tasksDir] });
  const status = await adminStatus(coord.socketPath);
  const installed = status.tasks?.installed;
  const hostPid = status.tasks?.host?.pid;
  if (installed !== expectTasks || typeof hostPid !== 'number') {
    const tail = coord.proc.tail();
    await coord.stop();
    throw new Error(`${label}: ${installed} task(s) installed (wanted ${expectTasks}), task host pid ${hostPid}:\n${tail}`);
  }
  return { ...coord, hostPid };
}

const taskShow = (coord, name) => adminGet(coord.socketPath, `/v1/task?name=${encodeURIComponent(name)}`);

// ---------------------------------------------------------------------------------------------------
// The device client: publishes to echo/<id>/in, receives echo/<id>/out, matches them by seq.

let clientSeq = 0;

async function openDevice(server, topicIn = (seq) => `echo/${seq % DEVICES}/in`) {
  const client = await connectClient(server.url, { clientId: `bench-device-${process.pid}-${++clientSeq}`, clean: true });
  try {
    client.stream.setNoDelay(true);
    client.stream.setMaxListeners(0); // see broker-throughput.js: one 'drain' listener per buffered publish
    const granted = await client.subscribeAsync('echo/+/out', { qos: 0 });
    if (granted[0]?.qos !== 0) throw new Error(`subscription granted QoS ${granted[0]?.qos}, wanted 0`);
  } catch (err) {
    await endClients(client);
    throw err;
  }
  let nextSeq = 0;

  /**
   * Sends n messages; `schedule` decides when: { rate } paces them (one every 1000/rate ms), { window }
   * keeps that many in flight. Resolves with per-message latencies (NaN for lost ones) and timings.
   */
  const run = (n, schedule) =>
    new Promise((resolveRun, reject) => {
      const base = nextSeq;
      nextSeq += n;
      const sentAt = new Float64Array(n).fill(NaN);
      const latency = new Float64Array(n).fill(NaN);
      let sent = 0;
      let received = 0;
      let finished = false;
      let lastSentAt = 0;
      let maxSendLag = 0;
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
        client.off('error', finish);
        client.off('close', onClose);
        if (err) reject(err);
        else resolveRun({ latency, sent, received, lost: n - received, seconds: (lastReceivedAt - t0) / 1000, maxSendLagMs: maxSendLag });
      };
      let lastReceivedAt = t0;
      const onPublished = (err) => {
        if (err) finish(err);
      };
      const send = () => {
        const seq = base + sent;
        const now = performance.now();
        sentAt[sent] = now;
        lastSentAt = now;
        sent++;
        client.publish(topicIn(seq), payloadOf(seq), { qos: 0 }, onPublished);
      };
      const pump = () => {
        while (sent < n && sent - received < schedule.window) send();
      };
      const interval = schedule.rate ? 1000 / schedule.rate : 0;
      const tick = () => {
        const now = performance.now();
        const due = Math.min(n, Math.floor((now - t0) / interval) + 1);
        while (sent < due) {
          maxSendLag = Math.max(maxSendLag, now - (t0 + sent * interval));
          send();
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
        received++;
        lastReceivedAt = now;
        if (received >= n) finish();
        else if (schedule.window) pump();
      };
      const onClose = () => finish(new Error(`${server.label}: device connection closed mid-run (${received}/${n} received)`));
      const timer = setTimeout(
        () => finish(new Error(`${server.label}: ${received}/${n} echoes received within ${PHASE_TIMEOUT_MS} ms (sent ${sent}, last sent ${Math.round(performance.now() - lastSentAt)} ms ago)`)),
        PHASE_TIMEOUT_MS,
      );
      client.on('message', onMessage);
      client.on('error', finish);
      client.on('close', onClose);
      if (schedule.rate) tick();
      else pump();
    });

  return { client, run, close: () => endClients(client) };
}

/** Percentiles of a run's latencies; a lost message counts as infinitely late. */
function latencyStats(latency) {
  const all = Array.from(latency, (v) => (Number.isNaN(v) ? Infinity : v));
  const got = all.filter(Number.isFinite);
  return { p50: percentile(all, 50), p90: percentile(all, 90), p99: percentile(all, 99), p999: percentile(all, 99.9), max: Math.max(...got), mean: got.reduce((a, b) => a + b, 0) / got.length };
}

// ---------------------------------------------------------------------------------------------------
// 1 + 2: the coordinator with echo against bare aedes with an echo client.

/**
 * Paced round trips through both servers: a warm-up on each, then RT_SEGMENTS segments per server,
 * alternating (the order flips every segment). Latencies are pooled per server; CPU is the mean of
 * the segments'.
 */
async function roundTrips(targets, devices) {
  const keys = Object.keys(targets);
  for (const key of keys) await devices[key].run(RT_RATE * RT_WARMUP_S, { rate: RT_RATE });
  const perSegment = Math.round((RT_RATE * RT_SECONDS) / RT_SEGMENTS);
  const acc = Object.fromEntries(keys.map((k) => [k, { latency: [], lost: 0, maxSendLagMs: 0, cpu: [], segmentP99: [] }]));
  for (let seg = 0; seg < RT_SEGMENTS; seg++) {
    for (const key of seg % 2 === 0 ? keys : [...keys].reverse()) {
      const cpu = cpuMark(targets[key]);
      const got = await devices[key].run(perSegment, { rate: RT_RATE });
      const a = acc[key];
      a.cpu.push(cpu.done(perSegment, perSegment / RT_RATE));
      for (const v of got.latency) a.latency.push(v);
      a.lost += got.lost;
      a.maxSendLagMs = Math.max(a.maxSendLagMs, got.maxSendLagMs);
      a.segmentP99.push(round(latencyStats(got.latency).p99, 3));
    }
  }
  const meanCpu = (list) => Object.fromEntries(Object.keys(list[0]).map((k) => [k, list.reduce((n, c) => n + c[k], 0) / list.length]));
  return Object.fromEntries(
    keys.map((k) => {
      const a = acc[k];
      return [k, { ...latencyStats(a.latency), lost: a.lost, maxSendLagMs: a.maxSendLagMs, segmentP99: a.segmentP99, cpu: meanCpu(a.cpu) }];
    }),
  );
}

async function throughput(target, device) {
  await device.run(TP_WARMUP, { window: TP_WINDOW });
  const cpu = cpuMark(target);
  const got = await device.run(TP_COUNT, { window: TP_WINDOW });
  return { rate: got.received / got.seconds, seconds: got.seconds, lost: got.lost, ...latencyStats(got.latency), cpu: cpu.done(got.received, got.seconds) };
}

/** CPU of the broker process, the echo process (and its main thread) and this process from now until done(). */
function cpuMark(target) {
  const broker0 = cpuSeconds(target.brokerPid);
  const echo0 = cpuSeconds(target.echoPid);
  const echoMain0 = cpuSeconds(target.echoPid, target.echoPid);
  const machine0 = machineBusySeconds();
  const self0 = process.cpuUsage();
  return {
    done(count, seconds) {
      const broker = cpuSeconds(target.brokerPid) - broker0;
      const echo = cpuSeconds(target.echoPid) - echo0;
      const echoMain = cpuSeconds(target.echoPid, target.echoPid) - echoMain0;
      const s = process.cpuUsage(self0);
      const self = (s.user + s.system) / 1e6;
      const machine = machineBusySeconds() - machine0;
      return {
        brokerUsPerMsg: (broker * 1e6) / count,
        echoUsPerMsg: (echo * 1e6) / count,
        // The task host's isolates run on isolated-vm's threads; its main thread does the IPC.
        echoMainThreadUsPerMsg: (echoMain * 1e6) / count,
        clientUsPerMsg: (self * 1e6) / count,
        brokerCores: broker / seconds,
        echoCores: echo / seconds,
        clientCores: self / seconds,
        otherCores: Math.max(0, (machine - broker - echo - self) / seconds),
      };
    },
  };
}

const f = (v, d = 2) => (typeof v === 'number' && Number.isFinite(v) ? v.toFixed(d) : String(v));
const describeRt = (r) =>
  `p50 ${f(r.p50, 3)} ms, p99 ${f(r.p99, 3)} ms, max ${f(r.max, 1)} ms, lost ${r.lost}; CPU broker ${f(r.cpu.brokerCores)} core, echo ${f(r.cpu.echoCores)} core, other load ${f(r.cpu.otherCores)} core`;
const describeTp = (r) =>
  `${Math.round(r.rate)}/s (p50 ${f(r.p50, 1)} ms in flight); CPU µs/msg broker ${f(r.cpu.brokerUsPerMsg, 1)}, echo ${f(r.cpu.echoUsPerMsg, 1)} (main thread ${f(r.cpu.echoMainThreadUsPerMsg, 1)}), client ${f(r.cpu.clientUsPerMsg, 1)}; cores broker ${f(r.cpu.brokerCores)}, echo ${f(r.cpu.echoCores)}, client ${f(r.cpu.clientCores)}, other ${f(r.cpu.otherCores)}`;

async function echoFigures(log) {
  const tasksDir = writeTasksDir(0);
  const started = await Promise.allSettled([startCoordinator(tasksDir, 1, 'coordinator+echo'), spawnBareAedes()]);
  const [coord, bare] = started.map((s) => (s.status === 'fulfilled' ? s.value : null));
  let echoClient;
  const devices = [];
  try {
    const failed = started.find((s) => s.status === 'rejected');
    if (failed) throw failed.reason;
    echoClient = await spawnScript({
      label: 'bare echo client',
      args: [SELF, '--echo-client', bare.url],
      ready: (o) => (o.echoClient === 'ready' ? o.pid : undefined),
    });
    const targets = {
      coordinator: { kind: 'coordinator', label: coord.label, url: coord.url, brokerPid: coord.pid, echoPid: coord.hostPid },
      bare: { kind: 'bare', label: 'bare aedes + echo client', url: bare.url, brokerPid: bare.pid, echoPid: echoClient.pid },
    };
    log(`coordinator pid ${coord.pid} (task host ${coord.hostPid}) on ${coord.url}; bare aedes pid ${bare.pid} on ${bare.url}, echo client pid ${echoClient.pid}`);
    const device = { coordinator: await openDevice(targets.coordinator), bare: await openDevice(targets.bare) };
    devices.push(device.coordinator, device.bare);
    const before = await taskShow(coord, 'echo');

    const rt = await roundTrips(targets, device);
    for (const key of ['coordinator', 'bare']) {
      log(`round trip @${RT_RATE}/s, ${RT_SECONDS} s in ${RT_SEGMENTS} alternating segments, ${targets[key].label}: ${describeRt(rt[key])}; p99 per segment ${rt[key].segmentP99.join(', ')} ms`);
    }

    const tp = { coordinator: [], bare: [] };
    const paired = [];
    for (let r = 0; r < TP_ROUNDS; r++) {
      const order = r % 2 === 0 ? ['coordinator', 'bare'] : ['bare', 'coordinator'];
      for (const key of order) {
        const got = await throughput(targets[key], device[key]);
        tp[key].push(got);
        log(`throughput round ${r + 1}, ${targets[key].label}: ${describeTp(got)}`);
      }
      paired.push(tp.coordinator[r].rate / tp.bare[r].rate);
    }
    const after = await taskShow(coord, 'echo');
    const status = await adminStatus(coord.socketPath);
    const counters = {};
    for (const k of ['succeeded', 'failed', 'rejected', 'retried']) counters[k] = (after[k] ?? 0) - (before[k] ?? 0);
    return { rt, tp, paired, counters, isolatesAfter: after.isolates, unrouted: status.tasks?.unrouted, droppedMessages: status.droppedMessages };
  } finally {
    await Promise.allSettled(devices.map((d) => d.close()));
    await Promise.allSettled([coord?.stop(), echoClient?.stop()]);
    await bare?.stop();
    removeTempDir(tasksDir);
  }
}

// ---------------------------------------------------------------------------------------------------
// 3: isolate cold start, in a child process.

async function coldStart(log) {
  const manifest = echoManifest();
  const opts = { echoDir: ECHO_DIR, entry: manifest.entry ?? 'index.ts', memoryMb: manifest.limits?.memoryMb ?? 32, timeoutMs: manifest.limits?.timeoutMs ?? 3000, warmup: COLD_WARMUP, iterations: COLD_ITERATIONS };
  const child = await spawnScript({
    label: 'isolate cold start',
    args: ['--no-node-snapshot', SELF, '--cold-start', JSON.stringify(opts)],
    ready: (o) => o.coldStart,
    timeoutMs: 90_000,
  });
  await child.stop();
  const r = child.value;
  const stats = (xs) => ({ p50: percentile(xs, 50), p90: percentile(xs, 90), p99: percentile(xs, 99), max: Math.max(...xs), min: Math.min(...xs) });
  const out = { create: stats(r.create), bare: stats(r.bare), bareIsolateOnly: stats(r.bareIsolateOnly), firstInvoke: stats(r.firstInvoke), secondInvoke: stats(r.secondInvoke), codeBytes: r.codeBytes, memoryMb: opts.memoryMb };
  log(
    `IsolateRuntime.create p50 ${f(out.create.p50, 3)} ms, p99 ${f(out.create.p99, 3)} ms; bare isolate+context p50 ${f(out.bare.p50, 3)} ms (isolate alone ${f(out.bareIsolateOnly.p50, 3)} ms), p99 ${f(out.bare.p99, 3)} ms; ` +
      `first invocation p50 ${f(out.firstInvoke.p50, 3)} ms, second ${f(out.secondInvoke.p50, 3)} ms (${r.codeBytes} bytes of task code)`,
  );
  return out;
}

/** Child mode: times IsolateRuntime.create and a bare isolate + context; prints {"coldStart":{...}}. */
async function coldStartMain(opts) {
  const ivm = (await import('isolated-vm')).default;
  const { IsolateRuntime } = await import(pathToFileURL(join(REPO_ROOT, 'dist', 'sandbox', 'isolate-runtime.js')).href);
  const { bundleTask } = await import(pathToFileURL(join(REPO_ROOT, 'dist', 'tasks', 'bundle.js')).href);
  const { code } = await bundleTask(opts.echoDir, opts.entry);
  // TaskLoad as src/tasks/runtime.ts builds it, with the config defaults of src/config/schema.ts.
  const task = {
    key: 'echo@1.0.0#cold',
    name: 'echo',
    version: '1.0.0',
    code,
    lifecycle: 'on-demand',
    memoryMb: opts.memoryMb,
    timeoutMs: opts.timeoutMs,
    minWarm: 1,
    concurrency: 1,
    idleMs: 60_000,
    configJson: '{}',
    maxResultBytes: 65_536,
    maxTimers: 64,
    maxPublishesPerInvocation: 100,
    publishFilters: ['echo/+/out'],
    maxPayloadBytes: 131_072,
    maxLogLines: 200,
  };
  // The core's answer to ctx.publish, as host-main.ts splices it.
  const host = { call: async () => '{"ok":true}', publish: () => {}, log: () => {}, failed: () => {} };
  const text = payloadOf(1);
  const eventJson = JSON.stringify({ type: 'message', topic: 'echo/1/in', payload: JSON.parse(text), text, qos: 0, source: { kind: 'device', id: 'bench' } });
  const out = { create: [], bare: [], bareIsolateOnly: [], firstInvoke: [], secondInvoke: [], codeBytes: code.length };
  const measureRuntime = async (keep) => {
    const t0 = performance.now();
    const rt = await IsolateRuntime.create(task, host);
    const t1 = performance.now();
    await rt.invoke('cold-1', eventJson);
    const t2 = performance.now();
    await rt.invoke('cold-2', eventJson);
    const t3 = performance.now();
    rt.dispose();
    if (keep) {
      out.create.push(t1 - t0);
      out.firstInvoke.push(t2 - t1);
      out.secondInvoke.push(t3 - t2);
    }
  };
  const measureBare = async (keep) => {
    const t0 = performance.now();
    const iso = new ivm.Isolate({ memoryLimit: opts.memoryMb });
    const tIso = performance.now();
    const context = await iso.createContext();
    const t1 = performance.now();
    context.release();
    iso.dispose();
    if (keep) {
      out.bare.push(t1 - t0);
      out.bareIsolateOnly.push(tIso - t0);
    }
  };
  for (let i = 0; i < opts.warmup + opts.iterations; i++) {
    const keep = i >= opts.warmup;
    if (i % 2 === 0) {
      await measureRuntime(keep);
      await measureBare(keep);
    } else {
      await measureBare(keep);
      await measureRuntime(keep);
    }
  }
  process.stdout.write(`${JSON.stringify({ coldStart: out })}\n`);
}

// ---------------------------------------------------------------------------------------------------
// 4: RSS per warm task.

/** Invokes every task once (one message each) and waits for all the echoes. */
async function invokeEach(coord, names) {
  const device = await openDevice(coord, (seq) => `${names[seq]}/w${seq}/in`);
  try {
    const got = await device.run(names.length, { window: names.length });
    if (got.lost > 0) throw new Error(`${coord.label}: ${got.lost} of ${names.length} tasks did not answer`);
  } finally {
    await device.close();
  }
}

async function rssPerTask(log) {
  const one = writeTasksDir(0);
  const many = writeTasksDir(RSS_COPIES);
  const names = ['echo', ...Array.from({ length: RSS_COPIES }, (_, i) => `echo-${i + 1}`)];
  const started = await Promise.allSettled([startCoordinator(one, 1, 'coordinator, 1 task'), startCoordinator(many, names.length, `coordinator, ${names.length} tasks`)]);
  const [c1, cN] = started.map((s) => (s.status === 'fulfilled' ? s.value : null));
  try {
    const failed = started.find((s) => s.status === 'rejected');
    if (failed) throw failed.reason;
    await invokeEach(c1, ['echo']);
    await invokeEach(cN, names);
    log(`task hosts: pid ${c1.hostPid} (1 task), pid ${cN.hostPid} (${names.length} tasks); every task invoked once; idling ${RSS_IDLE_S} s`);
    const samples = [];
    for (let t = 1; t <= RSS_IDLE_S; t++) {
      await sleep(1000);
      const kb = (pid) => procStatusKb(pid, 'VmRSS');
      samples.push({ t, host1: kb(c1.hostPid), hostN: kb(cN.hostPid), core1: kb(c1.pid), coreN: kb(cN.pid) });
    }
    const last = samples[samples.length - 1];
    const mib = (kb) => kb / 1024;
    const perTask = mib(last.hostN - last.host1) / RSS_COPIES;
    const corePerTask = mib(last.coreN - last.core1) / RSS_COPIES;
    const shows = await Promise.all(names.map((n) => taskShow(cN, n)));
    const heaps = shows.map((s) => s.isolates?.heapBytes ?? NaN);
    const isolates = shows.map((s) => s.isolates?.isolates ?? NaN);
    const [s1, sN] = await Promise.all([adminStatus(c1.socketPath), adminStatus(cN.socketPath)]);
    const hwm = (pid) => round((procStatusKb(pid, 'VmHWM') ?? NaN) / 1024, 1);
    const out = {
      perTaskMiB: perTask,
      corePerTaskMiB: corePerTask,
      host1MiB: round(mib(last.host1), 1),
      hostNMiB: round(mib(last.hostN), 1),
      core1MiB: round(mib(last.core1), 1),
      coreNMiB: round(mib(last.coreN), 1),
      host1PeakMiB: hwm(c1.hostPid),
      hostNPeakMiB: hwm(cN.hostPid),
      hostSelfReportedMiB: { one: round((s1.tasks?.host?.rssBytes ?? NaN) / 2 ** 20, 1), many: round((sN.tasks?.host?.rssBytes ?? NaN) / 2 ** 20, 1) },
      perTaskSeriesMiB: samples.map((x) => round(mib(x.hostN - x.host1) / RSS_COPIES, 2)),
      hostRssSeriesMiB: samples.map((x) => [round(mib(x.host1), 1), round(mib(x.hostN), 1)]),
      heapKiBPerTask: median(heaps) / 1024,
      heapKiBRange: [round(Math.min(...heaps) / 1024, 0), round(Math.max(...heaps) / 1024, 0)],
      isolatesPerTask: [Math.min(...isolates), Math.max(...isolates)],
    };
    log(
      `task host RSS ${out.host1MiB} MiB (1 task) vs ${out.hostNMiB} MiB (${names.length} tasks) → ${f(perTask)} MiB per task ` +
        `(series ${out.perTaskSeriesMiB.join(', ')}); core ${f(corePerTask)} MiB per task; V8 heap ${f(out.heapKiBPerTask, 0)} KiB per task, isolates per task ${out.isolatesPerTask.join('–')}`,
    );
    return out;
  } finally {
    await Promise.allSettled([c1?.stop(), cN?.stop()]);
    removeTempDir(one);
    removeTempDir(many);
  }
}

// ---------------------------------------------------------------------------------------------------
// The benchmark.

export async function taskRuntime({ log }) {
  const echo = await echoFigures(log);
  const cold = await coldStart(log);
  const rss = await rssPerTask(log);

  const rows = [];
  const { rt, tp } = echo;
  const rtConfig = { rate: RT_RATE, seconds: RT_SECONDS, segments: RT_SEGMENTS, warmupSeconds: RT_WARMUP_S, messages: RT_RATE * RT_SECONDS, qos: 0, payloadBytes: payloadOf(0).length, devices: DEVICES };
  const rtDetails = {
    ...rtConfig,
    coordinator: tidyLatency(rt.coordinator),
    bareAedesEcho: tidyLatency(rt.bare),
    p50Ratio: round(rt.coordinator.p50 / rt.bare.p50, 3),
    baseline: 'bare aedes (bench/bare-aedes.js) + an MQTT.js echo client in its own process (subscribes echo/+/in, republishes to echo/<id>/out)',
  };
  rows.push(
    resultRow({ name: 'task round trip p50 @1k msg/s', value: rt.coordinator.p50, unit: 'ms', baseline: 'bare aedes echo', baselineValue: rt.bare.p50, target: { of: 'value', op: '<=', value: TARGETS.p50Ms }, details: rtDetails }),
    resultRow({ name: 'task round trip p99 @1k msg/s', value: rt.coordinator.p99, unit: 'ms', baseline: 'bare aedes echo', baselineValue: rt.bare.p99, target: { of: 'value', op: '<=', value: TARGETS.p99Ms }, details: { see: 'task round trip p50 @1k msg/s' } }),
    resultRow({ name: 'task round trip p99 vs bare aedes echo', value: rt.coordinator.p99, unit: 'ms', baseline: 'bare aedes echo', baselineValue: rt.bare.p99, target: { of: 'ratio', op: '<=', value: TARGETS.p99Ratio }, details: { see: 'task round trip p50 @1k msg/s' } }),
    resultRow({ name: 'task round trip max (info)', value: rt.coordinator.max, unit: 'ms', baseline: 'bare aedes echo', baselineValue: rt.bare.max, details: { lost: { coordinator: rt.coordinator.lost, bareAedesEcho: rt.bare.lost } } }),
  );

  const med = (xs, fn) => median(xs.map(fn));
  const coRate = med(tp.coordinator, (x) => x.rate);
  const baRate = med(tp.bare, (x) => x.rate);
  const cpu = (xs) => ({
    brokerUsPerMsg: round(med(xs, (x) => x.cpu.brokerUsPerMsg), 1),
    echoUsPerMsg: round(med(xs, (x) => x.cpu.echoUsPerMsg), 1),
    echoMainThreadUsPerMsg: round(med(xs, (x) => x.cpu.echoMainThreadUsPerMsg), 1),
    clientUsPerMsg: round(med(xs, (x) => x.cpu.clientUsPerMsg), 1),
    brokerCores: round(med(xs, (x) => x.cpu.brokerCores), 2),
    echoCores: round(med(xs, (x) => x.cpu.echoCores), 2),
    clientCores: round(med(xs, (x) => x.cpu.clientCores), 2),
    otherCores: round(med(xs, (x) => x.cpu.otherCores), 2),
  });
  const coCpu = cpu(tp.coordinator);
  const baCpu = cpu(tp.bare);
  const tpDetails = {
    window: TP_WINDOW,
    messages: TP_COUNT,
    warmup: TP_WARMUP,
    rounds: TP_ROUNDS,
    statistic: 'median of rounds',
    coordinatorRuns: tp.coordinator.map((x) => round(x.rate, 0)),
    bareAedesEchoRuns: tp.bare.map((x) => round(x.rate, 0)),
    pairedRatios: echo.paired.map((x) => round(x, 3)),
    lost: { coordinator: tp.coordinator.map((x) => x.lost), bareAedesEcho: tp.bare.map((x) => x.lost) },
    inFlightLatencyP50Ms: { coordinator: round(med(tp.coordinator, (x) => x.p50), 2), bareAedesEcho: round(med(tp.bare, (x) => x.p50), 2) },
    cpu: { coordinator: { core: 'broker', taskHost: 'echo', ...coCpu }, bareAedesEcho: { broker: 'broker', echoClient: 'echo', ...baCpu } },
    echoTaskCounters: echo.counters,
    echoIsolatesAfter: echo.isolatesAfter,
    unrouted: echo.unrouted,
    droppedMessages: echo.droppedMessages,
  };
  rows.push(
    resultRow({ name: 'trivial-task invocations', value: coRate, unit: 'inv/s', target: { of: 'value', op: '>=', value: TARGETS.invPerSec }, details: tpDetails }),
    resultRow({ name: 'trivial-task invocations vs bare aedes echo', value: coRate, unit: 'inv/s', baseline: 'bare aedes echo', baselineValue: baRate, target: { of: 'ratio', op: '>=', value: TARGETS.invRatio }, details: { see: 'trivial-task invocations', pairedRatios: tpDetails.pairedRatios } }),
    resultRow({
      name: 'CPU per invocation, coordinator core (info)',
      value: coCpu.brokerUsPerMsg,
      unit: 'µs/inv',
      baseline: 'bare aedes broker',
      baselineValue: baCpu.brokerUsPerMsg,
      details: { note: 'user+system CPU of the coordinator process (broker, router, scheduler, host API) per echo during the throughput phase, from /proc/<pid>/stat; baseline: the bare aedes process', cores: coCpu.brokerCores },
    }),
    resultRow({
      name: 'CPU per invocation, task host (info)',
      value: coCpu.echoUsPerMsg,
      unit: 'µs/inv',
      baseline: 'echo client',
      baselineValue: baCpu.echoUsPerMsg,
      details: {
        note: 'user+system CPU of the task host process (isolates, IPC) per echo; baseline: the MQTT.js echo client process',
        cores: coCpu.echoCores,
        mainThreadUsPerInv: coCpu.echoMainThreadUsPerMsg,
        otherThreadsUsPerInv: round(coCpu.echoUsPerMsg - coCpu.echoMainThreadUsPerMsg, 1),
      },
    }),
    resultRow({
      name: 'CPU per invocation, total (info)',
      value: coCpu.brokerUsPerMsg + coCpu.echoUsPerMsg,
      unit: 'µs/inv',
      baseline: 'aedes + echo client',
      baselineValue: baCpu.brokerUsPerMsg + baCpu.echoUsPerMsg,
      details: { clientUsPerMsg: { coordinator: coCpu.clientUsPerMsg, bareAedesEcho: baCpu.clientUsPerMsg }, otherCores: { coordinator: coCpu.otherCores, bareAedesEcho: baCpu.otherCores } },
    }),
  );

  const coldDetails = {
    iterations: COLD_ITERATIONS,
    warmup: COLD_WARMUP,
    what: 'IsolateRuntime.create(echo) in a --no-node-snapshot child: isolate (memoryLimit of echo), context, bootstrap module, ctx wiring, task module; baseline new ivm.Isolate + createContext, interleaved',
    createMs: tidy(cold.create),
    bareIsolateMs: tidy(cold.bare),
    bareIsolateWithoutContextMs: tidy(cold.bareIsolateOnly),
    firstInvocationMs: tidy(cold.firstInvoke),
    secondInvocationMs: tidy(cold.secondInvoke),
    taskCodeBytes: cold.codeBytes,
    memoryMb: cold.memoryMb,
  };
  rows.push(
    resultRow({ name: 'isolate cold start p50', value: cold.create.p50, unit: 'ms', baseline: 'bare isolate+context', baselineValue: cold.bare.p50, target: { of: 'value', op: '<=', value: TARGETS.coldStartMs }, details: coldDetails }),
    resultRow({ name: 'isolate cold start p99 (info)', value: cold.create.p99, unit: 'ms', baseline: 'bare isolate+context', baselineValue: cold.bare.p99, details: { see: 'isolate cold start p50' } }),
    resultRow({ name: 'cold start + first invocation p50 (info)', value: cold.create.p50 + cold.firstInvoke.p50, unit: 'ms', details: { firstInvocationMs: coldDetails.firstInvocationMs, secondInvocationMs: coldDetails.secondInvocationMs } }),
  );

  rows.push(
    resultRow({
      name: 'RSS per warm task',
      value: rss.perTaskMiB,
      unit: 'MiB',
      target: { of: 'value', op: '<=', value: TARGETS.rssPerTaskMiB },
      details: {
        how: `(task host VmRSS with ${RSS_COPIES + 1} tasks − with 1 task) / ${RSS_COPIES}, after invoking each task once and idling ${RSS_IDLE_S} s; copies of echo under other names and topics`,
        ...rss,
        perTaskMiB: round(rss.perTaskMiB, 3),
        corePerTaskMiB: round(rss.corePerTaskMiB, 3),
        corePerTaskNote: "the coordinator core's RSS difference over the same tasks; noisy (its heap is not settled), ±0.5 MiB between runs",
        heapKiBPerTask: round(rss.heapKiBPerTask, 0),
      },
    }),
    resultRow({ name: 'V8 heap per warm task (info)', value: rss.heapKiBPerTask, unit: 'KiB', details: { source: 'coordinator tasks show: isolates.heapBytes (used heap + external), median of the tasks', range: rss.heapKiBRange, isolatesPerTask: rss.isolatesPerTask } }),
  );
  return rows;
}

function tidy(s) {
  return Object.fromEntries(Object.entries(s).map(([k, v]) => [k, round(v, 3)]));
}

function tidyLatency(r) {
  return { p50: round(r.p50, 3), p90: round(r.p90, 3), p99: round(r.p99, 3), p999: round(r.p999, 3), max: round(r.max, 3), mean: round(r.mean, 3), lost: r.lost, maxSendLagMs: round(r.maxSendLagMs, 2), segmentP99: r.segmentP99, cpu: tidy(r.cpu) };
}

// ---------------------------------------------------------------------------------------------------
// Child modes: `node bench/task-runtime.js --echo-client <url>` and `--cold-start <json>`.

/** The baseline's echo: an MQTT client answering echo/<id>/in on echo/<id>/out, like the echo task. */
async function echoClientMain(url) {
  const client = await connectClient(url, { clientId: `bench-echo-${process.pid}`, clean: true });
  client.stream.setNoDelay(true);
  client.stream.setMaxListeners(0);
  await client.subscribeAsync('echo/+/in', { qos: 0 });
  client.on('message', (topic, payload) => {
    const id = topic.split('/')[1];
    client.publish(`echo/${id}/out`, payload, { qos: 0 });
  });
  client.on('close', () => process.exit(0));
  const stop = () => {
    client.end(true);
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  process.stdout.write(`${JSON.stringify({ echoClient: 'ready', pid: process.pid })}\n`);
}

if (process.argv[1] && resolve(process.argv[1]) === SELF) {
  const [mode, arg] = process.argv.slice(2);
  if (mode === '--echo-client' && arg) await echoClientMain(arg);
  else if (mode === '--cold-start' && arg) await coldStartMain(JSON.parse(arg));
  else {
    process.stderr.write('usage: node bench/task-runtime.js --echo-client <mqtt-url> | --cold-start <json>\n(the benchmark itself runs from bench/run.js)\n');
    process.exit(64);
  }
}
