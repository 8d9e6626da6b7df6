/**
 * `coordinator deploy`, `coordinator deployment status|history|rollback` and `coordinator bundle`:
 * deployments from the command line. `deploy` bundles task folders here, puts the bundles in the running
 * coordinator's content store and writes the desired deployment to its shadow — the cloud's path, with
 * no cloud — then follows the reported state until the deployment ends.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { adminRequest } from '../admin/client.js';
import { adminSocketPath } from '../admin/socket.js';
import { DEPLOYMENT_ID, type ReportedState } from '../deployment/document.js';
import { compactSpec, localDeployment } from '../deployment/local.js';
import { CoordinatorError } from '../errors.js';
import { loadTaskFolder } from '../tasks/local.js';
import { stopBundler } from '../tasks/bundle.js';
import { configFromFlags, EXIT, type ConfigFlags } from './common.js';

/** Flags of the deployment commands. */
export type DeployFlags = ConfigFlags & { socket?: string; json?: boolean; id?: string; noWait?: boolean; timeout?: string; out?: string; url?: string; key?: string; limit?: string };

type Reported = ReportedState;

interface DeploymentView {
  desired: { id?: string } | null;
  reported: Reported | null;
  active: { id: string } | null;
  inProgress: string | null;
}

function socketOf(flags: DeployFlags): string {
  return flags.socket ?? adminSocketPath(configFromFlags(flags));
}

function timeoutOf(flags: DeployFlags, dflt: number): number {
  if (flags.timeout === undefined) return dflt;
  const n = Number(flags.timeout);
  if (!Number.isInteger(n) || n <= 0) throw new CoordinatorError('COORD_ERR_CLI_USAGE', '--timeout must be a positive number of milliseconds');
  return n;
}

/** Bundles each task folder (esbuild), in order. */
async function bundleFolders(dirs: readonly string[]): Promise<Awaited<ReturnType<typeof loadTaskFolder>>[]> {
  try {
    return await Promise.all(dirs.map((d) => loadTaskFolder(resolve(d))));
  } finally {
    await stopBundler();
  }
}

/** Deploys task folders to the running coordinator; exits 0 when the deployment SUCCEEDED. */
export async function runDeploy(dirs: readonly string[], flags: DeployFlags): Promise<void> {
  if (flags.id !== undefined && !DEPLOYMENT_ID.test(flags.id)) throw new CoordinatorError('COORD_ERR_CLI_USAGE', `--id ${JSON.stringify(flags.id)} is not a valid deployment id`);
  const socket = socketOf(flags);
  const bundles = await bundleFolders(dirs);
  const doc = await localDeployment(bundles, (code) => adminRequest<{ sha256: string; url: string }>(socket, 'POST', '/v1/bundles', { code }, 30_000));
  if (flags.id !== undefined) doc.id = flags.id;
  await adminRequest(socket, 'POST', '/v1/deployment', { document: doc });
  const id = doc.id;
  process.stdout.write(`deployment ${id} requested: ${bundles.map((b) => `${b.spec.name}@${b.spec.version}`).join(', ') || 'no tasks'}\n`);
  if (flags.noWait) return;
  await follow(socket, id, timeoutOf(flags, 600_000), flags.json);
}

/** Prints each new status of deployment `id` until it ends; sets the exit code from the outcome. */
async function follow(socket: string, id: string, timeoutMs: number, json: boolean | undefined): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = '';
  for (;;) {
    const view = await adminRequest<DeploymentView>(socket, 'GET', '/v1/deployment');
    const r = view.reported;
    if (r?.id === id && r.status !== undefined) {
      const line = `${r.status}: ${r.reason ?? ''}`;
      if (line !== last && !json) process.stdout.write(`${line}\n`);
      last = line;
      if (r.status !== 'IN_PROGRESS') {
        if (json) process.stdout.write(`${JSON.stringify(r, null, 2)}\n`);
        else printProblems(r);
        if (r.status !== 'SUCCEEDED') process.exitCode = EXIT.failure;
        return;
      }
    }
    if (Date.now() > deadline) {
      process.stderr.write(`coordinator: deployment ${id} has not finished after ${timeoutMs} ms; \`coordinator deployment status\` follows it\n`);
      process.exitCode = EXIT.failure;
      return;
    }
    await new Promise((res) => setTimeout(res, 200));
  }
}

function printProblems(r: Reported): void {
  for (const p of r.problems ?? []) process.stdout.write(`  ${p.path}: ${p.message}\n`);
  if ((r.problemCount ?? 0) > (r.problems?.length ?? 0)) process.stdout.write(`  … ${r.problemCount! - r.problems!.length} more\n`);
}

/** Prints the desired deployment, the reported outcome and the running tasks. */
export async function runDeploymentStatus(flags: DeployFlags): Promise<void> {
  const view = await adminRequest<DeploymentView>(socketOf(flags), 'GET', '/v1/deployment');
  if (flags.json) {
    process.stdout.write(`${JSON.stringify(view, null, 2)}\n`);
    return;
  }
  const r = view.reported;
  const out = [
    `desired:   ${view.desired?.id ?? '(none)'}`,
    `running:   ${view.active?.id ?? '(none)'}`,
    `status:    ${r?.status ?? '(none)'}${r?.id ? ` (${r.id})` : ''}`,
    `reason:    ${r?.reason ?? ''}`,
  ];
  process.stdout.write(`${out.join('\n')}\n`);
  if (r) printProblems(r);
  for (const t of r?.tasks ?? []) process.stdout.write(`  ${t.name}@${t.version}  ${t.state}\n`);
}

/** Prints the deployment history, newest first. */
export async function runDeploymentHistory(flags: DeployFlags): Promise<void> {
  const limit = flags.limit ?? '20';
  const { deployments } = await adminRequest<{ deployments: { seq: number; id: string; status: string; step: string; attempts: number; updatedAt: string; reason: string }[] }>(
    socketOf(flags),
    'GET',
    `/v1/deployments?${new URLSearchParams({ limit }).toString()}`,
  );
  if (flags.json) {
    process.stdout.write(`${JSON.stringify(deployments, null, 2)}\n`);
    return;
  }
  const rows = [['SEQ', 'ID', 'STATUS', 'STEP', 'ATTEMPTS', 'UPDATED', 'REASON']];
  for (const d of deployments) rows.push([String(d.seq), d.id, d.status, d.step, String(d.attempts), d.updatedAt, d.reason]);
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => r[c]!.length)));
  process.stdout.write(rows.map((r) => r.map((cell, c) => (c === r.length - 1 ? cell : cell.padEnd(widths[c]!))).join('  ').trimEnd()).join('\n') + '\n');
}

/** Asks for the previous successful deployment again, then follows it. */
export async function runDeploymentRollback(flags: DeployFlags): Promise<void> {
  const socket = socketOf(flags);
  const { requested } = await adminRequest<{ requested: string }>(socket, 'POST', '/v1/deployment/rollback');
  process.stdout.write(`deployment ${requested} requested\n`);
  if (flags.noWait) return;
  await follow(socket, requested, timeoutOf(flags, 600_000), flags.json);
}

/**
 * Bundles one task folder into a file and prints the document entry for it (manifest, sha256, and with
 * --key an ed25519 signature): what a cloud pipeline uploads and writes into a deployment document.
 */
export async function runBundle(dir: string, flags: DeployFlags): Promise<void> {
  const [b] = await bundleFolders([dir]);
  const out = resolve(flags.out ?? `${b!.spec.name}-${b!.spec.version}.js`);
  writeFileSync(out, b!.code);
  const bundle: Record<string, string> = { url: flags.url ?? `https://REPLACE-ME/${b!.spec.name}-${b!.spec.version}.js`, sha256: b!.sha256 };
  if (flags.key !== undefined) {
    const { signBundle } = await import('../deployment/signature.js');
    bundle.signature = signBundle(Buffer.from(b!.code, 'utf8'), readFileSync(flags.key, 'utf8'));
  }
  process.stderr.write(`wrote ${out} (${Buffer.byteLength(b!.code)} bytes)\n`);
  process.stdout.write(`${JSON.stringify({ ...compactSpec(b!.spec), bundle }, null, 2)}\n`);
}
