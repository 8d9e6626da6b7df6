/**
 * Shared helpers of the benchmark harness: spawning the coordinator and the bare-aedes baseline as
 * child processes (always on 127.0.0.1, port 0, fresh temp data directory), stopping every process and
 * removing every temp directory even when a benchmark throws, /proc readings, statistics and the table.
 *
 * Plain JavaScript on purpose: the harness only spawns dist/cli/main.js, it imports nothing from src/.
 */
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, existsSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import mqtt from 'mqtt';

export const BENCH_DIR = dirname(fileURLToPath(import.meta.url));
export const REPO_ROOT = resolve(BENCH_DIR, '..');
export const COORDINATOR_CLI = join(REPO_ROOT, 'dist', 'cli', 'main.js');
export const BARE_AEDES = join(BENCH_DIR, 'bare-aedes.js');
export const HOST = '127.0.0.1';

const STARTUP_TIMEOUT_MS = 20_000;
const STOP_TIMEOUT_MS = 5_000;

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Resolves with `promise`'s outcome, or with `onTimeout()` after `ms`; the timer never outlives it. */
export async function withTimeout(promise, ms, onTimeout) {
  let timer;
  const expired = new Promise((r) => {
    timer = setTimeout(() => r(onTimeout()), ms);
  });
  try {
    return await Promise.race([promise, expired]);
  } finally {
    clearTimeout(timer);
  }
}

// ---------------------------------------------------------------------------------------------------
// Process and temp-dir bookkeeping. Everything started through these helpers is registered here so
// run.js can stop it after each benchmark, on SIGINT/SIGTERM and, as a last resort, on exit.

/** @type {Set<ManagedProcess>} */
const processes = new Set();
/** @type {Set<string>} */
const tempDirs = new Set();

/** Creates a fresh temp directory that cleanup() removes. */
export function makeTempDir(prefix = 'ec-bench-') {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  tempDirs.add(dir);
  return dir;
}

/** Removes a temp directory now (and forgets it). */
export function removeTempDir(dir) {
  tempDirs.delete(dir);
  rmSync(dir, { recursive: true, force: true });
}

/** Stops every process still running and removes every temp directory. Safe to call repeatedly. */
export async function cleanup() {
  await Promise.allSettled([...processes].map((p) => p.stop()));
  for (const dir of [...tempDirs]) removeTempDir(dir);
}

/** Synchronous last resort for process 'exit': SIGKILL what is left, remove temp dirs. */
export function cleanupSync() {
  for (const p of processes) {
    try {
      p.child.kill('SIGKILL');
    } catch {
      // already gone
    }
  }
  processes.clear();
  for (const dir of [...tempDirs]) {
    try {
      removeTempDir(dir);
    } catch {
      // best effort
    }
  }
}

/** The environment for children, minus COORDINATOR_* settings: the bench measures the defaults. */
function inheritedEnv() {
  return Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('COORDINATOR_')));
}

/** A child process with its output drained (a full pipe would stall the child) and kept for errors. */
class ManagedProcess {
  constructor(label, args, options = {}) {
    this.label = label;
    this.lines = [];
    this.exited = false;
    this.exitCode = null;
    this.signal = null;
    // BENCH_NODE_ARGS (e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof") profiles the processes under test;
    // node refuses --cpu-prof in NODE_OPTIONS. COORD_TASK_HOST_NODE_ARGS (passed through the environment)
    // does the same for the coordinator's task host process (src/sandbox/task-host.ts).
    const nodeArgs = (process.env.BENCH_NODE_ARGS ?? '').split(' ').filter(Boolean);
    this.child = spawn(process.execPath, [...nodeArgs, ...args], {
      cwd: REPO_ROOT,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...inheritedEnv(), NODE_ENV: 'production', ...options.env },
    });
    this.pid = this.child.pid;
    this.exitPromise = new Promise((resolveExit) => {
      this.child.once('exit', (code, signal) => {
        this.exited = true;
        this.exitCode = code;
        this.signal = signal;
        processes.delete(this);
        resolveExit();
      });
    });
    this.child.once('error', () => {
      // spawn failure: 'exit' may never come
      this.exited = true;
      processes.delete(this);
    });
    processes.add(this);
    this.stdout = createInterface({ input: this.child.stdout });
    this.stdout.on('line', (line) => this.#keep(line));
    createInterface({ input: this.child.stderr }).on('line', (line) => this.#keep(`[stderr] ${line}`));
  }

  #keep(line) {
    this.lines.push(line);
    if (this.lines.length > 50) this.lines.shift();
  }

  /** Last lines of output, for error messages. */
  tail() {
    return this.lines.slice(-15).join('\n');
  }

  /**
   * Resolves with the first stdout line parsed as JSON for which pick() returns a value; rejects when
   * the process exits first or on timeout. The promise's cancel() stops waiting (it then rejects).
   */
  waitForJsonLine(pick, timeoutMs = STARTUP_TIMEOUT_MS) {
    let cancel;
    const promise = new Promise((resolveLine, reject) => {
      const onLine = (line) => {
        let obj;
        try {
          obj = JSON.parse(line);
        } catch {
          return;
        }
        const v = pick(obj);
        if (v !== undefined) finish(null, v);
      };
      const onExit = () => finish(new Error(`${this.label} exited (code ${this.exitCode}, signal ${this.signal}) before it was ready:\n${this.tail()}`));
      const timer = setTimeout(() => finish(new Error(`${this.label} not ready within ${timeoutMs} ms:\n${this.tail()}`)), timeoutMs);
      const finish = (err, v) => {
        clearTimeout(timer);
        this.stdout.off('line', onLine);
        this.child.off('exit', onExit);
        if (err) reject(err);
        else resolveLine(v);
      };
      cancel = () => finish(new Error('cancelled'));
      this.stdout.on('line', onLine);
      this.child.once('exit', onExit);
    });
    promise.cancel = cancel;
    return promise;
  }

  /** SIGTERM, then SIGKILL after a timeout. Resolves once the process is gone. */
  async stop(timeoutMs = STOP_TIMEOUT_MS) {
    if (this.exited) return;
    this.child.kill('SIGTERM');
    const killed = await withTimeout(this.exitPromise.then(() => false), timeoutMs, () => true);
    if (killed && !this.exited) {
      process.stderr.write(`bench: ${this.label} (pid ${this.pid}) ignored SIGTERM for ${timeoutMs} ms; sending SIGKILL\n`);
      this.child.kill('SIGKILL');
      await this.exitPromise;
    }
  }
}

/** GET /v1/status over the coordinator's admin socket. */
export function adminStatus(socketPath) {
  return adminGet(socketPath, '/v1/status');
}

/** GET `path` (e.g. `/v1/task?name=echo`) over the coordinator's admin socket; resolves with the JSON body. */
export function adminGet(socketPath, path) {
  return new Promise((resolveStatus, reject) => {
    const req = request({ socketPath, method: 'GET', path, timeout: 1000 }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => {
        try {
          const body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
          if (res.statusCode >= 400) reject(new Error(`GET ${path}: HTTP ${res.statusCode}: ${JSON.stringify(body)}`));
          else resolveStatus(body);
        } catch (err) {
          reject(err);
        }
      });
    });
    req.on('timeout', () => req.destroy(new Error('admin socket timeout')));
    req.on('error', reject);
    req.end();
  });
}

/**
 * Spawns `node dist/cli/main.js start --mqtt-port 0 --data-dir <fresh tmp> --log-level <level>` (plus
 * `extraArgs`, e.g. `['--tasks-dir', dir]`) and resolves once its MQTT listener is bound. At info level
 * the listener line on stdout gives the port; at warn and above that line is not logged, so the port
 * comes from the admin socket's status instead (whichever answers first wins).
 */
export async function spawnCoordinator({ logLevel = 'warn', label = 'coordinator', extraArgs = [] } = {}) {
  if (!existsSync(COORDINATOR_CLI)) throw new Error(`${COORDINATOR_CLI} is missing: run \`npm run build\` first (npm run bench does)`);
  const dataDir = makeTempDir('ec-bench-coord-');
  const proc = new ManagedProcess(label, [COORDINATOR_CLI, 'start', '--mqtt-port', '0', '--mqtt-host', HOST, '--data-dir', dataDir, '--log-level', logLevel, ...extraArgs]);
  const fromLog = proc.waitForJsonLine((o) => (o.listener === 'mqtt' && typeof o.port === 'number' ? o.port : undefined));
  const socketPath = join(dataDir, 'coordinator.sock');
  let polling = true;
  const fromAdmin = (async () => {
    while (polling && !proc.exited) {
      if (existsSync(socketPath)) {
        try {
          const status = await adminStatus(socketPath);
          const mqtt = status.listeners?.find((l) => l.name === 'mqtt');
          if (mqtt) return mqtt.port;
        } catch {
          // not answering yet
        }
      }
      await sleep(50);
    }
    return new Promise(() => {}); // never: the log line or its error decides
  })();
  try {
    const port = await Promise.race([fromLog, fromAdmin]);
    return {
      kind: 'coordinator',
      label,
      pid: proc.pid,
      port,
      host: HOST,
      url: `mqtt://${HOST}:${port}`,
      dataDir,
      socketPath,
      proc,
      stop: () => stopAndRemove(proc, dataDir),
    };
  } catch (err) {
    await stopAndRemove(proc, dataDir);
    throw err;
  } finally {
    polling = false;
    fromLog.catch(() => {});
    fromLog.cancel();
  }
}

/** Spawns bench/bare-aedes.js (aedes, default in-memory persistence) and waits for its port line. */
export async function spawnBareAedes({ label = 'bare aedes', appendEchoDir } = {}) {
  const proc = new ManagedProcess(label, appendEchoDir ? [BARE_AEDES, '--append-echo', appendEchoDir] : [BARE_AEDES]);
  try {
    const port = await proc.waitForJsonLine((o) => (typeof o.port === 'number' ? o.port : undefined));
    return { kind: 'bare-aedes', label, pid: proc.pid, port, host: HOST, url: `mqtt://${HOST}:${port}`, proc, stop: () => proc.stop() };
  } catch (err) {
    await proc.stop();
    throw err;
  }
}

/**
 * Spawns `node <args...>` (args may start with node options such as --no-node-snapshot) as a managed
 * process and resolves once a stdout line parsed as JSON makes `ready(obj)` return a value:
 * { label, pid, proc, value, stop }. For helper processes of a benchmark (an echo client, a
 * measurement script); stopped by cleanup() like the brokers.
 */
export async function spawnScript({ label, args, ready, timeoutMs = STARTUP_TIMEOUT_MS }) {
  const proc = new ManagedProcess(label, args);
  try {
    const value = await proc.waitForJsonLine(ready, timeoutMs);
    return { label, pid: proc.pid, proc, value, stop: () => proc.stop() };
  } catch (err) {
    await proc.stop();
    throw err;
  }
}

async function stopAndRemove(proc, dir) {
  try {
    await proc.stop();
  } finally {
    removeTempDir(dir);
  }
}

// ---------------------------------------------------------------------------------------------------
// /proc readings (Linux).

/** A field of /proc/<pid>/status in kB (VmRSS, VmHWM, ...), or null when unavailable. */
export function procStatusKb(pid, field) {
  try {
    const text = readFileSync(`/proc/${pid}/status`, 'utf8');
    const m = new RegExp(`^${field}:\\s+(\\d+)\\s+kB`, 'm').exec(text);
    return m ? Number(m[1]) : null;
  } catch {
    return null;
  }
}

/** Resident set size of a process in MiB (VmRSS; /proc's "kB" are KiB). */
export function rssMiB(pid) {
  const kb = procStatusKb(pid, 'VmRSS');
  if (kb === null) throw new Error(`cannot read VmRSS of pid ${pid} (is this Linux, is the process alive?)`);
  return kb / 1024;
}

let clockTicks;
/** Clock ticks per second for /proc/<pid>/stat. */
function ticksPerSecond() {
  if (clockTicks === undefined) {
    try {
      clockTicks = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
    } catch {
      clockTicks = 100;
    }
  }
  return clockTicks;
}

/**
 * CPU seconds (user + system) a process has used so far, or null when unavailable; with `tid`, only
 * that thread's (the main thread's tid is the pid).
 */
export function cpuSeconds(pid, tid) {
  try {
    const stat = readFileSync(tid === undefined ? `/proc/${pid}/stat` : `/proc/${pid}/task/${tid}/stat`, 'utf8');
    // Fields after the command name (which may contain spaces) start at field 3; utime/stime are 14/15.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / ticksPerSecond();
  } catch {
    return null;
  }
}

/** CPU seconds the whole machine has spent busy (not idle, not iowait) so far, or null. */
export function machineBusySeconds() {
  try {
    const [, ...fields] = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0].trim().split(/\s+/);
    const t = fields.map(Number);
    // user nice system idle iowait irq softirq steal (guest time is already counted in user)
    const busy = t[0] + t[1] + t[2] + t[5] + t[6] + t[7];
    return busy / ticksPerSecond();
  } catch {
    return null;
  }
}

/** The file system type a path lives on (from /proc/mounts), e.g. ext4 or tmpfs. */
export function fsTypeOf(path) {
  try {
    let best = { mount: '', type: 'unknown' };
    for (const line of readFileSync('/proc/mounts', 'utf8').split('\n')) {
      const [, mount, type] = line.split(' ');
      if (mount && (path === mount || path.startsWith(mount === '/' ? '/' : `${mount}/`)) && mount.length >= best.mount.length) best = { mount, type };
    }
    return best.type;
  } catch {
    return 'unknown';
  }
}

// ---------------------------------------------------------------------------------------------------
// Statistics.

/** The p-th percentile (0..100) of numbers, nearest-rank on a sorted copy. */
export function percentile(values, p) {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))];
}

/** Median (mean of the two middle values for an even count). */
export function median(values) {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

export const best = (values) => Math.max(...values);
export const mean = (values) => values.reduce((a, b) => a + b, 0) / values.length;

/** Rounds to `digits` significant decimals for results.json. */
export function round(value, digits = 3) {
  if (typeof value !== 'number' || !Number.isFinite(value)) return value;
  const f = 10 ** digits;
  return Math.round(value * f) / f;
}

// ---------------------------------------------------------------------------------------------------
// Result rows and the table.

/**
 * Builds one result row. `target` is { op: '>=' | '<=', value, of: 'ratio' | 'value', text? } or null
 * (informational); `pass` is computed from it (null when there is no target).
 */
export function resultRow({ name, value, unit, baseline = null, baselineValue = null, target = null, details = {} }) {
  const ratio = typeof baselineValue === 'number' && baselineValue !== 0 ? value / baselineValue : null;
  let pass = null;
  let targetText = null;
  if (target) {
    const subject = target.of === 'ratio' ? ratio : value;
    pass = subject === null ? false : target.op === '>=' ? subject >= target.value : subject <= target.value;
    targetText = target.text ?? `${target.of === 'ratio' ? 'ratio ' : ''}${target.op === '>=' ? '≥' : '≤'} ${target.value}${target.of === 'ratio' ? '×' : ` ${unit}`}`;
  }
  return {
    name,
    value: round(value, 2),
    unit,
    baseline,
    baselineValue: round(baselineValue, 2),
    ratio: round(ratio, 3),
    target: targetText,
    pass,
    details,
  };
}

function fmtNumber(v) {
  if (v === null || v === undefined) return '–';
  if (typeof v !== 'number') return String(v);
  if (!Number.isFinite(v)) return String(v);
  if (Math.abs(v) >= 1000) return Math.round(v).toLocaleString('en-US');
  if (Math.abs(v) >= 100) return v.toFixed(0);
  if (Math.abs(v) >= 10) return v.toFixed(1);
  return v.toFixed(2);
}

/** The results as a plain-text table. */
export function formatTable(rows) {
  const header = ['benchmark', 'figure', 'unit', 'baseline', 'ratio', 'target', 'result'];
  const body = rows.map((r) => [
    r.name,
    fmtNumber(r.value),
    r.unit ?? '',
    r.baselineValue === null || r.baselineValue === undefined ? '–' : `${fmtNumber(r.baselineValue)} (${r.baseline})`,
    r.ratio === null || r.ratio === undefined ? '–' : `${r.ratio.toFixed(2)}×`,
    r.target ?? '(info)',
    r.pass === null ? '' : r.pass ? 'PASS' : 'FAIL',
  ]);
  const numeric = new Set([1, 3, 4]);
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((row) => row[i].length)));
  const line = (cells) => cells.map((c, i) => (numeric.has(i) ? c.padStart(widths[i]) : c.padEnd(widths[i]))).join('  ').trimEnd();
  return [line(header), widths.map((w) => '-'.repeat(w)).join('  '), ...body.map(line)].join('\n');
}

// ---------------------------------------------------------------------------------------------------
// MQTT clients (MQTT.js, MQTT 3.1.1) shared by the broker benchmarks.

/**
 * Connects and resolves once CONNACK arrives; no automatic reconnects, so a lost broker fails the run.
 * `onMessage` is attached before CONNECT: a persistent session's queued messages arrive with CONNACK.
 */
export function connectClient(url, { onMessage, ...options } = {}) {
  return new Promise((resolveClient, reject) => {
    const client = mqtt.connect(url, { protocolVersion: 4, reconnectPeriod: 0, connectTimeout: 5000, keepalive: 60, ...options });
    if (onMessage) client.on('message', onMessage);
    const onError = (err) => {
      client.end(true);
      reject(err);
    };
    client.once('error', onError);
    client.once('connect', () => {
      client.off('error', onError);
      resolveClient(client);
    });
  });
}

/** Ends clients gracefully, forcing any that do not finish within a second. */
export async function endClients(...clients) {
  await Promise.allSettled(
    clients.filter(Boolean).map((c) => withTimeout(c.endAsync(), 1000, () => c.endAsync(true))),
  );
}
