/** `coordinator status [--json]`: ask the running coordinator how it is. */
import { adminRequest } from '../admin/client.js';
import { adminSocketPath } from '../admin/socket.js';
import type { CoordinatorStatus } from '../coordinator.js';
import { configFromFlags, type ConfigFlags } from './common.js';

function formatBytes(n: number): string {
  return n < 1024 * 1024 ? `${(n / 1024).toFixed(1)} KiB` : `${(n / 1024 / 1024).toFixed(1)} MiB`;
}

function formatUptime(seconds: number): string {
  const d = Math.floor(seconds / 86400);
  const h = Math.floor((seconds % 86400) / 3600);
  const m = Math.floor((seconds % 3600) / 60);
  const s = seconds % 60;
  return [d && `${d}d`, (d || h) && `${h}h`, (d || h || m) && `${m}m`, `${s}s`].filter(Boolean).join(' ');
}

/** Renders a status report for a terminal. */
export function formatStatus(s: CoordinatorStatus): string {
  const lines = [
    `coordinator ${s.version}  thing ${s.thingName}  pid ${s.pid}  up ${formatUptime(s.uptimeSeconds)}`,
    `data dir    ${s.dataDir}`,
    ...s.listeners.map((l) => `listener    ${l.name.padEnd(6)} ${l.url}${l.anonymous ? '  (anonymous allowed)' : ''}`),
    `clients     ${s.clients.connected} connected${s.clients.ids.length ? `: ${s.clients.ids.join(', ')}` : ''}`,
    ...(s.droppedMessages > 0 ? [`dropped     ${s.droppedMessages} messages (persistent session queues full)`] : []),
    `store       ${s.store.ok ? 'ok' : 'DEGRADED'}  ${formatBytes(s.store.sizeBytes)} + ${formatBytes(s.store.walBytes)} WAL  schema v${s.store.schemaVersion}` +
      `  ${s.store.commit.commits} commits, ${s.store.commit.syncs} syncs / ${s.store.commit.writes} writes, ${s.store.pendingWrites} pending` +
      (s.store.commit.lastError ? `  last error: ${s.store.commit.lastError}` : ''),
    `deployment  ${s.deployment.running ?? 'none'} running` + (s.deployment.id ? `; ${s.deployment.id} ${s.deployment.status ?? ''}` : ''),
  ];
  return `${lines.join('\n')}\n`;
}

/** Prints the running coordinator's status. */
export async function runStatus(flags: ConfigFlags & { json?: boolean; socket?: string }): Promise<void> {
  const socket = flags.socket ?? adminSocketPath(configFromFlags(flags));
  const status = await adminRequest<CoordinatorStatus>(socket, 'GET', '/v1/status');
  process.stdout.write(flags.json ? `${JSON.stringify(status, null, 2)}\n` : formatStatus(status));
}
