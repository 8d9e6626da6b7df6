/**
 * The task host process: owns every isolate, so that a V8 fatal error in a task kills this process and
 * never the broker (isolated-vm's own guidance). The core spawns it with --no-node-snapshot (needed by
 * isolated-vm on Node >= 20), supervises it, and talks to it over Node's IPC channel (./protocol.ts).
 * It decides nothing: it loads what the core sends and forwards every host-API call to the core.
 */
import { Batcher, type Frame } from './batch.js';
import { RuntimeError, type RuntimeHost } from './isolate-runtime.js';
import type { CoreToHost, HostToCore, LogLevel, WireError } from './protocol.js';
import { TaskPool } from './task-pool.js';
import { packPublish, packResult, WireReader } from './wire.js';

/** How long a pinned task waits before its isolate is recreated after it died outside an invocation. */
const PINNED_REVIVE_MS = 1000;

const pools = new Map<string, TaskPool>();
const pendingCalls = new Map<number, { resolve: (json: string) => void }>();
let nextCallId = 1;
/**
 * Log lines per task in the current second. The sandbox caps lines per invocation; this caps a task
 * whose timers log without end (bounded by the number of tasks, reset every second).
 */
const MAX_LOG_LINES_PER_SECOND = 1000;
const logBudget = new Map<string, { second: number; lines: number }>();

const outbox = new Batcher<HostToCore>((frame) => {
  // A core that went away leaves nothing to serve: exit rather than run tasks nobody controls.
  if (!process.connected) process.exit(0);
  process.send!(frame);
}, { turn: true });

function send(message: HostToCore): void {
  outbox.push(message);
}

function wire(err: unknown): WireError {
  if (err instanceof RuntimeError) return { code: err.code, message: err.message, stack: err.stack };
  const e = err as Error;
  return { code: 'COORD_ERR_TASK_THREW', message: e?.message ?? String(err), stack: e?.stack };
}

function hostFor(key: string, maxPayloadBytes: number): RuntimeHost {
  return {
    call: (invocationId, method, argsJson) =>
      new Promise<string>((resolve) => {
        const callId = nextCallId++;
        pendingCalls.set(callId, { resolve });
        send({ t: 'call', callId, key, invocationId, method, argsJson });
      }),
    publish: (invocationId, topic, text, base64, qos) => {
      // Checked again here, in trusted code, before anything large reaches the core's thread.
      const bytes = text !== undefined ? Buffer.byteLength(text) : Math.floor(((base64?.length ?? 0) * 3) / 4);
      if (bytes > maxPayloadBytes) {
        send({ t: 'log', key, invocationId, level: 'warn', text: `COORD_ERR_TASK_LIMIT: publish to ${topic} dropped: ${bytes} bytes exceed broker.maxPayloadBytes` });
        return;
      }
      outbox.pack(packPublish(key, invocationId, topic, text, base64, qos));
    },
    log: (invocationId: string, level: LogLevel, text: string) => {
      const second = Math.floor(Date.now() / 1000);
      let b = logBudget.get(key);
      if (!b || b.second !== second) logBudget.set(key, (b = { second, lines: 0 }));
      if (++b.lines > MAX_LOG_LINES_PER_SECOND) {
        if (b.lines === MAX_LOG_LINES_PER_SECOND + 1) send({ t: 'log', key, invocationId, level: 'warn', text: `more than ${MAX_LOG_LINES_PER_SECOND} log lines in one second; the rest of this second are dropped` });
        return;
      }
      send({ t: 'log', key, invocationId, level, text: text.length > 4096 ? `${text.slice(0, 4096)}…` : text });
    },
    failed: (error) => {
      send({ t: 'failed', key, error });
      const pool = pools.get(key);
      if (pool?.task.lifecycle === 'pinned') {
        setTimeout(() => {
          pool.revive().catch((err: unknown) => send({ t: 'failed', key, error: wire(err) }));
        }, PINNED_REVIVE_MS).unref();
      }
    },
  };
}

async function load(message: Extract<CoreToHost, { t: 'load' }>): Promise<void> {
  const { task } = message;
  await pools.get(task.key)?.close();
  const pool = new TaskPool(task, hostFor(task.key, task.maxPayloadBytes));
  pools.set(task.key, pool);
  try {
    await pool.open();
    send({ t: 'loaded', key: task.key, ok: true });
  } catch (err) {
    pools.delete(task.key);
    await pool.close();
    send({ t: 'loaded', key: task.key, ok: false, error: wire(err) });
  }
}

function invoke(id: string, key: string, eventJson: string): void {
  const pool = pools.get(key);
  if (!pool) {
    send({ t: 'result', id, ok: false, error: { code: 'COORD_ERR_TASK_CANCELLED', message: `no task loaded as ${key}` } });
    return;
  }
  pool.run(id, eventJson, (err, valueJson) => {
    if (!err) outbox.pack(packResult(id, valueJson!, pool.onHostThread));
    else send(pool.onHostThread ? { t: 'result', id, ok: false, error: wire(err), quick: true } : { t: 'result', id, ok: false, error: wire(err) });
  });
}

process.on('message', (frame: Frame<CoreToHost>) => {
  if (!Array.isArray(frame)) return;
  for (const m of frame) {
    if (typeof m === 'string') onPacked(m);
    else onMessage(m);
  }
});

/** Packed invocations (wire.ts), in the order the core sent them. */
function onPacked(packed: string): void {
  const r = new WireReader(packed);
  while (!r.done) {
    // Only 'i' travels this way; the core is the only sender, so anything else is a bug to surface.
    if (r.letter() !== 105) throw new Error('unknown packed record from the core');
    const id = r.field();
    const key = r.field();
    invoke(id, key, r.field());
  }
}

function onMessage(raw: CoreToHost): void {
  switch (raw.t) {
    case 'load':
      void load(raw);
      break;
    case 'unload': {
      const pool = pools.get(raw.key);
      pools.delete(raw.key);
      logBudget.delete(raw.key);
      void (pool?.close() ?? Promise.resolve()).then(() => send({ t: 'unloaded', key: raw.key }));
      break;
    }
    case 'reply': {
      const pending = pendingCalls.get(raw.callId);
      if (!pending) break;
      pendingCalls.delete(raw.callId);
      // valueJson is JSON the core produced: spliced in, not parsed and serialized again.
      pending.resolve(raw.ok ? (raw.valueJson === undefined ? '{"ok":true}' : `{"ok":true,"value":${raw.valueJson}}`) : JSON.stringify({ ok: false, error: raw.error }));
      break;
    }
    case 'stats':
      void Promise.all([...pools.values()].map((p) => p.stats())).then((tasks) => send({ t: 'stats', tasks, rssBytes: process.memoryUsage.rss() }));
      break;
  }
}

// The core closing the channel (or dying) ends the host: no orphaned isolates.
process.on('disconnect', () => process.exit(0));
send({ t: 'ready', pid: process.pid });
