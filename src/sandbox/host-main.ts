/**
 * The task host process: owns every isolate, so that a V8 fatal error in a task kills this process and
 * never the broker (isolated-vm's own guidance). The core spawns it with --no-node-snapshot (needed by
 * isolated-vm on Node >= 20), supervises it, and talks to it over Node's IPC channel (./protocol.ts).
 * It decides nothing: it loads what the core sends and forwards every host-API call to the core.
 */
import { Batcher } from './batch.js';
import { RuntimeError, type RuntimeHost } from './isolate-runtime.js';
import type { CoreToHost, HostToCore, LogLevel, WireError } from './protocol.js';
import { TaskPool } from './task-pool.js';

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

const outbox = new Batcher<HostToCore>((m) => {
  // A core that went away leaves nothing to serve: exit rather than run tasks nobody controls.
  if (!process.connected) process.exit(0);
  process.send!(m.length === 1 ? m[0] : { t: 'batch', m });
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
      send(text === undefined ? { t: 'publish', key, invocationId, topic, base64, qos } : { t: 'publish', key, invocationId, topic, text, qos });
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

async function invoke(message: Extract<CoreToHost, { t: 'invoke' }>): Promise<void> {
  const started = performance.now();
  const pool = pools.get(message.key);
  try {
    if (!pool) throw new RuntimeError('COORD_ERR_TASK_CANCELLED', `no task loaded as ${message.key}`);
    const valueJson = await pool.invoke(message.id, message.eventJson);
    const result = { t: 'result', id: message.id, ok: true, valueJson, ms: performance.now() - started } as const;
    send(pool.onHostThread ? { ...result, quick: true } : result);
  } catch (err) {
    const result = { t: 'result', id: message.id, ok: false, error: wire(err), ms: performance.now() - started } as const;
    send(pool?.onHostThread ? { ...result, quick: true } : result);
  }
}

process.on('message', (raw: CoreToHost) => onMessage(raw));

function onMessage(raw: CoreToHost): void {
  switch (raw.t) {
    case 'batch':
      for (const m of raw.m) onMessage(m);
      break;
    case 'load':
      void load(raw);
      break;
    case 'invoke':
      void invoke(raw);
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
