/**
 * Nested gateways over mutual TLS for end-to-end tests, through the real CLI: an upstream coordinator
 * with the gateway PKI and its TLS listener (`certs init`), a child gateway registered on it as a device
 * (`devices add`), and the child started with `cloud.url = mqtts://…` and the issued certificate, key
 * and CA — the AWS IoT Core set-up, with a coordinator playing the cloud.
 */
import { createHash } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { adminRequest } from '../../src/admin/client.js';
import { startTlsCoordinator, type Bundle, type TlsCoordinator } from './devices.js';
import { startCoordinator, tempDir, type RunningCoordinator } from './process.js';

/** A child gateway process with its admin socket. */
export interface ChildGateway extends RunningCoordinator {
  readonly socket: string;
  readonly configFile: string;
}

/** Starts the upstream ("the cloud"): a coordinator with the gateway PKI and TLS on `tlsPort` (0: free). */
export function startUpstream(options: { dataDir?: string; tlsPort?: number; init?: boolean } = {}): Promise<TlsCoordinator> {
  return startTlsCoordinator({
    config: { thingName: 'cloud-up', listeners: { mqtts: { port: options.tlsPort ?? 0 } } },
    ...(options.dataDir ? { dataDir: options.dataDir } : {}),
    ...(options.init === undefined ? {} : { init: options.init }),
  });
}

/** The files of a `devices add` bundle, as cloud.* options. */
export function tlsFilesOf(bundle: Bundle): { caFile: string; certFile: string; keyFile: string } {
  return { caFile: join(bundle.dir, 'ca.pem'), certFile: join(bundle.dir, 'cert.pem'), keyFile: join(bundle.dir, 'key.pem') };
}

/** Writes a config file for a child gateway `thing` whose cloud section is `cloud` (quick reconnects added). */
export function childConfig(thing: string, cloud: Record<string, unknown>): string {
  const file = join(tempDir('coord-child-cfg-'), 'config.json');
  writeFileSync(file, JSON.stringify({ thingName: thing, cloud: { reconnectMinMs: 50, reconnectMaxMs: 200, ...cloud }, deployments: { healthWindowMs: 200 } }));
  return file;
}

/** Starts a child gateway with `configFile` (see childConfig). */
export async function startChild(configFile: string): Promise<ChildGateway> {
  const c = await startCoordinator({ args: ['--config', configFile] });
  return Object.assign(c, { socket: join(c.dataDir, 'coordinator.sock'), configFile });
}

/** What GET /v1/cloud answers (the parts the tests read). */
export interface CloudStatus {
  state: string;
  clientId: string;
  url: string;
  connects: number;
  lastError: string | null;
  lastErrorCode: string | null;
  spool: {
    messages: number;
    acked: number;
    rejected: number;
    evicted: number;
    rejectAfterDrops: number;
    suspect: { seq: number; drops: number } | null;
    recentRejected: { seq: number; topic: string; reason: string }[];
  };
}

/** GET /v1/cloud of a running coordinator. */
export function cloudStatus(c: { socket: string }): Promise<CloudStatus> {
  return adminRequest<CloudStatus>(c.socket, 'GET', '/v1/cloud');
}

/** Polls `fn` every 25 ms until it returns a value; rejects after `timeoutMs` naming `what`. */
export async function until<T>(what: string, fn: () => Promise<T | undefined> | T | undefined, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** A deployment document with one trivial task (inline data: bundle) and `routes`. */
export function deploymentDoc(id: string, routes: unknown[]): Record<string, unknown> {
  const code = `export default { onEvent() { return 'hello over mTLS'; } }`;
  const url = `data:text/javascript;base64,${Buffer.from(code).toString('base64')}`;
  const sha256 = createHash('sha256').update(code).digest('hex');
  return { schema: 1, id, tasks: [{ name: 'greeter', version: '1.0.0', bundle: { url, sha256 } }], routes };
}

/** The reported section of `thing`'s deployment shadow on `c` (undefined while it has none). */
export async function reportedDeployment(c: { socket: string }, thing: string): Promise<Record<string, unknown> | undefined> {
  try {
    const doc = await adminRequest<{ state?: { reported?: Record<string, unknown> } }>(c.socket, 'GET', `/v1/shadow?${new URLSearchParams({ thing, name: 'deployment' }).toString()}`);
    return doc.state?.reported;
  } catch {
    return undefined;
  }
}
