/** `coordinator tasks list|show|logs` and `coordinator invoke`: the running coordinator's tasks, over the admin socket. */
import { adminRequest } from '../admin/client.js';
import { adminSocketPath } from '../admin/socket.js';
import { CoordinatorError } from '../errors.js';
import type { TaskInfo } from '../tasks/runtime.js';
import type { TaskLogLine } from '../tasks/task-log.js';
import { configFromFlags, type ConfigFlags } from './common.js';

/** Flags of the task commands. */
export type TaskFlags = ConfigFlags & { socket?: string; json?: boolean; follow?: boolean; payload?: string; timeout?: string };

function socketOf(flags: TaskFlags): string {
  return flags.socket ?? adminSocketPath(configFromFlags(flags));
}

/** Prints the installed tasks with their state and counters. */
export async function runTasksList(flags: TaskFlags): Promise<void> {
  const { tasks } = await adminRequest<{ tasks: TaskInfo[] }>(socketOf(flags), 'GET', '/v1/tasks');
  if (flags.json) {
    process.stdout.write(`${JSON.stringify(tasks, null, 2)}\n`);
    return;
  }
  const rows = [['NAME', 'VERSION', 'LIFECYCLE', 'STATE', 'QUEUED', 'RUNNING', 'OK', 'FAILED', 'REFUSED', 'LAST ERROR']];
  for (const t of tasks) {
    rows.push([t.name, t.version, t.lifecycle, t.state, String(t.queued), String(t.running), String(t.succeeded), String(t.failed), String(t.rejected), t.lastError ? `${t.lastError.code}: ${t.lastError.message}` : '']);
  }
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => r[c]!.length)));
  process.stdout.write(rows.map((r) => r.map((cell, c) => (c === r.length - 1 ? cell : cell.padEnd(widths[c]!))).join('  ').trimEnd()).join('\n') + '\n');
}

/** Prints one task: state, counters, manifest, isolates. */
export async function runTasksShow(name: string, flags: TaskFlags): Promise<void> {
  const task = await adminRequest<unknown>(socketOf(flags), 'GET', `/v1/task?${new URLSearchParams({ name }).toString()}`);
  process.stdout.write(`${JSON.stringify(task, null, 2)}\n`);
}

function formatLine(l: TaskLogLine, json: boolean | undefined): string {
  return json ? JSON.stringify(l) : `${l.time} ${l.level.toUpperCase().padEnd(5)} [${l.invocationId}] ${l.text}`;
}

/** Prints a task's recent log lines; with --follow keeps printing new ones until interrupted. */
export async function runTasksLogs(name: string, flags: TaskFlags): Promise<void> {
  const socket = socketOf(flags);
  let after = 0;
  for (;;) {
    const { lines } = await adminRequest<{ lines: TaskLogLine[] }>(socket, 'GET', `/v1/task/logs?${new URLSearchParams({ name, after: String(after) }).toString()}`);
    for (const l of lines) process.stdout.write(`${formatLine(l, flags.json)}\n`);
    if (lines.length > 0) after = lines[lines.length - 1]!.seq;
    if (!flags.follow) return;
    await new Promise((r) => setTimeout(r, 500));
  }
}

/** Invokes a task with `--payload JSON` and prints its result. */
export async function runInvoke(name: string, flags: TaskFlags): Promise<void> {
  let payload: unknown = null;
  if (flags.payload !== undefined) {
    try {
      payload = JSON.parse(flags.payload) as unknown;
    } catch (err) {
      throw new CoordinatorError('COORD_ERR_CLI_USAGE', `--payload is not valid JSON: ${(err as Error).message}`);
    }
  }
  const timeoutMs = flags.timeout === undefined ? 60_000 : Number(flags.timeout);
  if (!Number.isFinite(timeoutMs) || timeoutMs <= 0) throw new CoordinatorError('COORD_ERR_CLI_USAGE', '--timeout must be a positive number of milliseconds');
  const answer = await adminRequest<{ result: unknown; ms: number }>(socketOf(flags), 'POST', '/v1/task/invoke', { name, payload }, timeoutMs);
  process.stdout.write(`${JSON.stringify(answer.result, null, 2)}\n`);
}
