/** `coordinator cloud status`: the running coordinator's link to its upstream, over the admin socket. */
import { adminRequest } from '../admin/client.js';
import { adminSocketPath } from '../admin/socket.js';
import { configFromFlags, type ConfigFlags } from './common.js';

/** What GET /v1/cloud answers (CloudLink.status(), or {state: 'disabled'}). */
interface CloudStatusView {
  state: string;
  since?: string;
  url?: string;
  clientId?: string;
  lastError?: string | null;
  lastErrorCode?: string | null;
  connects?: number;
  sync?: { up: number; down: number; reconciled: number; conflicts: number; errors: number; shadows: { thing: string; name?: string; direction: string }[] };
  spool?: {
    messages: number;
    bytes: number;
    maxBytes: number;
    acked: number;
    evicted: number;
    rejected: number;
    suspect: { seq: number; drops: number } | null;
    rejectAfterDrops: number;
    recentRejected: { seq: number; topic: string; bytes: number; rejectedAt: number }[];
  };
}

/** Prints the link's state, since when, the last error, the sync counters and the spool. */
export async function runCloudStatus(flags: ConfigFlags & { socket?: string; json?: boolean }): Promise<void> {
  const socket = flags.socket ?? adminSocketPath(configFromFlags(flags));
  const s = await adminRequest<CloudStatusView>(socket, 'GET', '/v1/cloud');
  if (flags.json || s.state === 'disabled') {
    process.stdout.write(`${JSON.stringify(s, null, 2)}\n`);
    return;
  }
  const sync = s.sync ?? { up: 0, down: 0, reconciled: 0, conflicts: 0, errors: 0, shadows: [] };
  const shadows = sync.shadows;
  process.stdout.write(
    [
      `cloud link  ${s.state} since ${s.since ?? ''}  ${s.url ?? ''} as ${s.clientId ?? ''}  (${s.connects ?? 0} connections)`,
      ...(s.lastError ? [`last error  ${s.lastErrorCode ? `${s.lastErrorCode}: ` : ''}${s.lastError}`] : []),
      `sync        ${sync.up} up, ${sync.down} down, ${sync.reconciled} reconciles, ${sync.conflicts} conflicts, ${sync.errors} errors`,
      ...shadows.map((p) => `shadow      ${p.thing}${p.name ? `/${p.name}` : ''}  ${p.direction}`),
      ...(s.spool ? spoolLines(s.spool) : []),
    ].join('\n') + '\n',
  );
}

function spoolLines(sp: NonNullable<CloudStatusView['spool']>): string[] {
  return [
    `spool       ${sp.messages} waiting (${sp.bytes} of ${sp.maxBytes} bytes), ${sp.acked} delivered, ${sp.evicted} evicted, ${sp.rejected} set aside`,
    ...(sp.suspect ? [`suspect     seq ${sp.suspect.seq}: ${sp.suspect.drops} of ${sp.rejectAfterDrops} drops while alone in flight`] : []),
    ...sp.recentRejected.map((r) => `set aside   seq ${r.seq} ${r.topic} (${r.bytes} bytes) at ${new Date(r.rejectedAt).toISOString()}`),
  ];
}
