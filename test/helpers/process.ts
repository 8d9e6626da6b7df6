/** Spawning the real `coordinator` CLI for end-to-end tests, and making sure every process is stopped. */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll } from 'vitest';

/** The built CLI entry point (npm test builds before running vitest). */
export const CLI = fileURLToPath(new URL('../../dist/cli/main.js', import.meta.url));

const live = new Set<ChildProcess>();
const dirs: string[] = [];

afterAll(() => {
  for (const p of live) p.kill('SIGKILL');
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

/** A fresh temporary directory, removed after the test file. */
export function tempDir(prefix = 'coord-'): string {
  const d = mkdtempSync(join(tmpdir(), prefix));
  dirs.push(d);
  return d;
}

/** One parsed JSON log line of the coordinator. */
export type LogLine = Record<string, unknown> & { msg?: string; level?: number };

/** A coordinator process started by a test. */
export interface RunningCoordinator {
  readonly proc: ChildProcess;
  readonly port: number;
  readonly url: string;
  readonly dataDir: string;
  readonly logs: LogLine[];
  /** Sends `signal` and resolves with how the process ended and how long it took. */
  stop(signal?: NodeJS.Signals): Promise<{ code: number | null; signal: NodeJS.Signals | null; ms: number }>;
  /** SIGKILL, as a power cut would. */
  kill(): Promise<void>;
  /** Resolves with the first log line (seen or future) matching `pred`. */
  waitForLog(pred: (l: LogLine) => boolean, timeoutMs?: number): Promise<LogLine>;
}

/** A CLI process whose JSON log lines (stdout) are collected as they come. */
export interface LoggedProcess {
  readonly proc: ChildProcess;
  readonly logs: LogLine[];
  /** How the process ended. */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** What it wrote on stderr so far. */
  readonly stderr: () => string;
  /** Resolves with the n-th log line (1-based, seen or future) matching `pred`. */
  readonly waitForLog: (pred: (l: LogLine) => boolean, options?: { nth?: number; timeoutMs?: number }) => Promise<LogLine>;
}

/** Spawns the CLI with `args`, killed after the test file if still running. */
export function spawnCli(args: readonly string[], env?: NodeJS.ProcessEnv): LoggedProcess {
  const proc = spawn(process.execPath, [CLI, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  live.add(proc);
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    proc.once('exit', (code, signal) => {
      live.delete(proc);
      resolve({ code, signal });
    }),
  );
  const logs: LogLine[] = [];
  const waiters = new Set<() => void>();
  let stderr = '';
  let buffer = '';
  proc.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
  proc.stdout.on('data', (chunk: Buffer) => {
    buffer += chunk.toString();
    let nl;
    while ((nl = buffer.indexOf('\n')) >= 0) {
      const text = buffer.slice(0, nl);
      buffer = buffer.slice(nl + 1);
      try {
        logs.push(JSON.parse(text) as LogLine);
      } catch {
        logs.push({ msg: text });
      }
    }
    for (const w of [...waiters]) w();
  });
  const waitForLog: LoggedProcess['waitForLog'] = (pred, { nth = 1, timeoutMs = 10_000 } = {}) =>
    new Promise((resolve, reject) => {
      const check = (): boolean => {
        const hit = logs.filter(pred)[nth - 1];
        if (hit) resolve(hit);
        return hit !== undefined;
      };
      if (check()) return;
      const timer = setTimeout(() => {
        waiters.delete(waiter);
        reject(new Error(`${args[0]}: log line #${nth} not seen within ${timeoutMs} ms; stderr: ${stderr}\nlogs: ${logs.map((l) => l.msg).join(' | ')}`));
      }, timeoutMs);
      const waiter = (): void => {
        if (check()) {
          clearTimeout(timer);
          waiters.delete(waiter);
        }
      };
      waiters.add(waiter);
    });
  return { proc, logs, exited, stderr: () => stderr, waitForLog };
}

/** Spawns `coordinator start` on a free port and waits until it is ready. */
export async function startCoordinator(options: { dataDir?: string; args?: string[]; env?: NodeJS.ProcessEnv } = {}): Promise<RunningCoordinator> {
  const dataDir = options.dataDir ?? tempDir();
  const { proc, logs, exited, stderr, waitForLog: waitForNth } = spawnCli(['start', '--mqtt-port', '0', '--data-dir', dataDir, ...(options.args ?? [])], options.env);
  const waitForLog = (pred: (l: LogLine) => boolean, timeoutMs = 10_000): Promise<LogLine> => waitForNth(pred, { timeoutMs });

  const ready = await Promise.race([
    waitForLog((l) => l.msg === 'coordinator ready', 15_000),
    exited.then(({ code }) => {
      throw new Error(`coordinator exited with ${String(code)} before it was ready: ${stderr()}`);
    }),
  ]);
  void ready;
  const listener = logs.find((l) => l.listener === 'mqtt')!;
  const port = listener.port as number;

  return {
    proc,
    port,
    url: `mqtt://127.0.0.1:${port}`,
    dataDir,
    logs,
    waitForLog,
    async stop(signal = 'SIGTERM') {
      const started = Date.now();
      proc.kill(signal);
      const { code, signal: sig } = await exited;
      return { code, signal: sig, ms: Date.now() - started };
    },
    async kill() {
      proc.kill('SIGKILL');
      await exited;
    },
  };
}

/** Result of a CLI run. */
export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs the CLI to completion. */
export function runCli(args: string[], options: { env?: NodeJS.ProcessEnv; cwd?: string; timeoutMs?: number } = {}): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const proc = spawn(process.execPath, [CLI, ...args], {
      env: { ...process.env, ...options.env },
      cwd: options.cwd,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    live.add(proc);
    let stdout = '';
    let stderr = '';
    proc.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    proc.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    const timer = setTimeout(() => {
      proc.kill('SIGKILL');
      reject(new Error(`coordinator ${args.join(' ')} did not finish; stdout: ${stdout} stderr: ${stderr}`));
    }, options.timeoutMs ?? 15_000);
    proc.once('exit', (code) => {
      clearTimeout(timer);
      live.delete(proc);
      resolve({ code, stdout, stderr });
    });
  });
}

/**
 * Runs the node script `script` with `args`, hands every complete line it prints to `onLine`, and SIGKILLs
 * it `killAfterMs` after its first line (after 10 s whatever happens). Resolves with its stderr once it is
 * gone and its output read; rejects if it exited on its own. A line cut short by the kill is not handed
 * over: what it reported was not printed whole. For crash tests of a writer in a child process.
 */
export function runUntilKilled(script: string, args: readonly string[], onLine: (line: string) => void, killAfterMs: number): Promise<{ stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [script, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    let timer: NodeJS.Timeout | undefined;
    const guard = setTimeout(() => child.kill('SIGKILL'), 10_000);
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    child.stdout.on('data', (c: Buffer) => {
      stdout += c.toString();
      let nl;
      while ((nl = stdout.indexOf('\n')) >= 0) {
        onLine(stdout.slice(0, nl));
        stdout = stdout.slice(nl + 1);
        timer ??= setTimeout(() => child.kill('SIGKILL'), killAfterMs);
      }
    });
    child.on('error', reject);
    // 'close': the process is gone and everything it wrote to the pipe has been read.
    child.on('close', (code, signal) => {
      clearTimeout(guard);
      clearTimeout(timer);
      if (signal !== 'SIGKILL') reject(new Error(`${script} exited on its own (code ${String(code)}, signal ${String(signal)}): ${stderr}`));
      else resolve({ stderr });
    });
  });
}
