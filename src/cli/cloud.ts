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
  connects?: number;
  sync?: { up: number; down: number; reconciled: number; conflicts: number; errors: number; shadows: { thing: string; name?: string; direction: string }[] };
}

/** Prints the link's state, since when, the last error and the sync counters. */
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
      ...(s.lastError ? [`last error  ${s.lastError}`] : []),
      `sync        ${sync.up} up, ${sync.down} down, ${sync.reconciled} reconciles, ${sync.conflicts} conflicts, ${sync.errors} errors`,
      ...shadows.map((p) => `shadow      ${p.thing}${p.name ? `/${p.name}` : ''}  ${p.direction}`),
    ].join('\n') + '\n',
  );
}
