/**
 * Helpers for deployment end-to-end tests: an HTTPS bundle server on 127.0.0.1 with its own test CA,
 * a client that plays the cloud side of the coordinator's `deployment` shadow (writes desired, follows
 * reported over MQTT), a device that asks a task and waits for its answer, and small document builders.
 */
import type { ReportedState } from '../../src/deployment/document.js';
import { createHash } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createServer, type Server } from 'node:https';
import type { Socket } from 'node:net';
import { join } from 'node:path';
import type { MqttClient } from 'mqtt';
import { afterAll } from 'vitest';
import { connect, inbox } from './mqtt.js';
import { runCli, tempDir } from './process.js';
import { createTestCa } from './tls.js';

/** sha256 of the exact bytes, lowercase hex (what a document's bundle.sha256 holds). */
export const sha256 = (bytes: string | Buffer): string => createHash('sha256').update(bytes).digest('hex');

/** Writes `config` as a JSON config file in a fresh temp dir; returns its path. */
/** The MQTT client id of the test's cloud: the gateway configs list it in shadows.controlClients. */
export const CLOUD_CLIENT_ID = 'cloud';

export function writeConfig(config: Record<string, unknown>): string {
  const file = join(tempDir('coord-cfg-'), 'config.json');
  writeFileSync(file, JSON.stringify(config, null, 2));
  return file;
}

// ---------------------------------------------------------------------------------------------------
// HTTPS bundle server

/** What the server answers on one path. */
export interface Route {
  /** The bytes served (sent as is). */
  readonly body: string | Buffer;
  /** Never answer: the request stays open until the client gives up or the server closes. */
  readonly hang?: boolean;
  /** HTTP status (default 200). */
  readonly status?: number;
}

/** One request the server saw. */
export interface SeenRequest {
  readonly path: string;
  /** True once the client closed the connection before a (hanging) response finished. */
  clientClosed: boolean;
}

/** A local HTTPS server for bundles, with a certificate issued by a throw-away test CA. */
export interface BundleServer {
  /** PEM file of the CA that issued the server certificate: what deployments.fetch.trustRoots names. */
  readonly caFile: string;
  /** https://127.0.0.1:<port> */
  readonly origin: string;
  /** Serves `route` at `path` (e.g. `/greeter-1.js`); returns the full URL. */
  serve(path: string, route: Route): string;
  /** Requests seen so far, oldest first. */
  readonly requests: readonly SeenRequest[];
  /** Resolves with the first request for `path` (seen or future). */
  waitForRequest(path: string, timeoutMs?: number): Promise<SeenRequest>;
  /** Stops listening and destroys every open connection (hanging responses included). */
  close(): Promise<void>;
}

const servers = new Set<BundleServer>();
afterAll(async () => {
  await Promise.all([...servers].map((s) => s.close()));
});

/** Starts a bundle server on 127.0.0.1 (ephemeral port); closed after the test file if not before. */
export async function startBundleServer(): Promise<BundleServer> {
  const ca = await createTestCa('CN=bundle server test CA');
  const { certPem, keyPem } = await ca.issueServerCert();
  const caFile = join(tempDir('coord-ca-'), 'bundle-ca.pem');
  writeFileSync(caFile, ca.certPem);

  const routes = new Map<string, Route>();
  const requests: SeenRequest[] = [];
  const waiters: { path: string; resolve: (r: SeenRequest) => void }[] = [];
  const sockets = new Set<Socket>();

  const handler = (req: IncomingMessage, res: ServerResponse): void => {
    const path = new URL(req.url ?? '/', 'https://x').pathname;
    const seen: SeenRequest = { path, clientClosed: false };
    requests.push(seen);
    for (const w of [...waiters]) {
      if (w.path === path) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(seen);
      }
    }
    const route = routes.get(path);
    if (!route) {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found');
      return;
    }
    if (route.hang) {
      // Headers never come: the client waits for them until it aborts or times out.
      res.on('close', () => (seen.clientClosed = true));
      return;
    }
    const body = Buffer.isBuffer(route.body) ? route.body : Buffer.from(route.body, 'utf8');
    res.writeHead(route.status ?? 200, { 'content-type': 'text/javascript', 'content-length': body.length }).end(body);
  };

  const server: Server = createServer({ cert: certPem, key: keyPem }, handler);
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const { port } = server.address() as { port: number };
  const origin = `https://127.0.0.1:${port}`;
  let closed: Promise<void> | undefined;

  const bundleServer: BundleServer = {
    caFile,
    origin,
    requests,
    serve(path, route) {
      routes.set(path, route);
      return `${origin}${path}`;
    },
    waitForRequest(path, timeoutMs = 10_000) {
      const seen = requests.find((r) => r.path === path);
      if (seen) return Promise.resolve(seen);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no request for ${path} within ${timeoutMs} ms; saw ${requests.map((r) => r.path).join(', ')}`)), timeoutMs);
        waiters.push({ path, resolve: (r) => (clearTimeout(timer), resolve(r)) });
      });
    },
    close() {
      closed ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const s of sockets) s.destroy();
        server.closeAllConnections();
      }).finally(() => servers.delete(bundleServer));
      return closed;
    },
  };
  servers.add(bundleServer);
  return bundleServer;
}

// ---------------------------------------------------------------------------------------------------
// Documents

/** A bundle reference of a deployment document. */
export interface BundleRef {
  url: string;
  sha256: string;
  signature?: string;
}

/**
 * The code of a `greeter` task: answers `greet/<id>/in` on `greet/<id>/out` with
 * `{ version, got: <the payload> }`. `salt` changes the bytes (and so the digest) without changing behaviour.
 */
export function greeterCode(version: string, salt = ''): string {
  return [
    'export default {',
    '  async onEvent(event, ctx) {',
    "    if (event.type !== 'message') return null;",
    "    const id = event.topic.split('/')[1];",
    `    await ctx.publish('greet/' + id + '/out', { version: ${JSON.stringify(version)}, got: event.payload });`,
    '    return null;',
    '  },',
    '};',
    `// ${salt}`,
    '',
  ].join('\n');
}

/** The code of a task that throws on every event. */
export function throwerCode(salt = ''): string {
  return `export default { async onEvent() { throw new Error('broken on purpose'); } };\n// ${salt}\n`;
}

/** The greeter task entry of a document. */
export function greeterTask(version: string, bundle: BundleRef, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    name: 'greeter',
    version,
    bundle,
    triggers: [{ topic: 'greet/+/in' }],
    permissions: { publish: ['greet/+/out'] },
    ...extra,
  };
}

/** The route that lets devices hear the greeter. */
export const GREETER_ROUTES = [{ source: 'task:greeter', filter: 'greet/+/out', target: 'broker' }];

/** A version-1 deployment document. */
export function documentOf(id: string, tasks: Record<string, unknown>[], routes: Record<string, unknown>[] = GREETER_ROUTES): Record<string, unknown> {
  return { schema: 1, id, tasks, routes };
}

// ---------------------------------------------------------------------------------------------------
// The cloud side of the deployment shadow

/** `reported` of the deployment shadow. */
export type Report = ReportedState;

/**
 * Plays the cloud: follows `reported` of `$aws/things/<thing>/shadow/name/deployment` over MQTT (its
 * `/update/documents` topic) and writes `desired`.
 *
 * Writing: over MQTT, as a cloud or an operator console would, to the shadow's /update topic, waiting for
 * its /update/accepted; the coordinator lets only the client ids in shadows.controlClients do that (the
 * gateway config of these tests names CLOUD_CLIENT_ID). Keys of the previous document that the new one
 * lacks are set to null, so desired holds exactly the new document (a shadow merges objects key by key).
 */
export class Cloud {
  /** Every `reported` seen on /update/documents, oldest first. */
  readonly reports: Report[] = [];
  readonly #thing: string;
  #lastKeys: string[] = [];
  readonly #listeners = new Set<() => void>();

  readonly #client: MqttClient;
  #token = 0;

  private constructor(client: MqttClient, thing: string) {
    this.#client = client;
    this.#thing = thing;
    client.on('message', (topic, payload) => {
      if (topic !== this.documentsTopic) return;
      const doc = JSON.parse(payload.toString()) as { current?: { state?: { reported?: Report } } };
      const reported = doc.current?.state?.reported;
      if (reported) this.reports.push(reported);
      for (const l of [...this.#listeners]) l();
    });
  }

  /** `$aws/things/<thing>/shadow/name/deployment` */
  get prefix(): string {
    return `$aws/things/${this.#thing}/shadow/name/deployment`;
  }

  get documentsTopic(): string {
    return `${this.prefix}/update/documents`;
  }

  /** Connects to the coordinator's broker and subscribes to the deployment shadow's documents. */
  static async connect(mqttUrl: string, thing: string): Promise<Cloud> {
    const client = await connect(mqttUrl, { clientId: CLOUD_CLIENT_ID });
    const cloud = new Cloud(client, thing);
    await client.subscribeAsync([cloud.documentsTopic, `${cloud.prefix}/update/accepted`, `${cloud.prefix}/update/rejected`], { qos: 1 });
    return cloud;
  }

  /** Writes `doc` as the desired deployment; returns a marker for `until` (reports after the write). */
  async desire(doc: Record<string, unknown>): Promise<number> {
    const marker = this.reports.length;
    const desired: Record<string, unknown> = { ...doc };
    for (const k of this.#lastKeys) if (!(k in desired)) desired[k] = null;
    this.#lastKeys = Object.keys(doc);
    await this.#update({ desired });
    return marker;
  }

  /** Removes desired (`"desired": null`); returns a marker for `until`. */
  async clearDesired(): Promise<number> {
    const marker = this.reports.length;
    this.#lastKeys = [];
    await this.#update({ desired: null });
    return marker;
  }

  /** Publishes an update of the deployment shadow and waits for its accepted (or fails on rejected). */
  async #update(state: Record<string, unknown>): Promise<void> {
    const clientToken = `cloud-${++this.#token}`;
    const box = inbox(this.#client);
    const answer = box.next((t, p) => (t === `${this.prefix}/update/accepted` || t === `${this.prefix}/update/rejected`) && (JSON.parse(p.toString()) as { clientToken?: string }).clientToken === clientToken);
    await this.#client.publishAsync(`${this.prefix}/update`, JSON.stringify({ state, clientToken }), { qos: 1 });
    const got = await answer;
    if (got.topic.endsWith('/rejected')) throw new Error(`desired refused: ${got.payload.toString()}`);
  }

  /** Resolves with the first report at index >= `after` matching `pred`. */
  until(pred: (r: Report) => boolean, after = 0, timeoutMs = 15_000): Promise<Report> {
    return new Promise((resolve, reject) => {
      const check = (): boolean => {
        const hit = this.reports.slice(after).find(pred);
        if (!hit) return false;
        clearTimeout(timer);
        this.#listeners.delete(listener);
        resolve(hit);
        return true;
      };
      const listener = (): void => void check();
      const timer = setTimeout(() => {
        this.#listeners.delete(listener);
        reject(new Error(`no matching report within ${timeoutMs} ms; reports: ${JSON.stringify(this.reports.slice(after).map((r) => [r.id, r.status, r.reason]))}`));
      }, timeoutMs);
      this.#listeners.add(listener);
      check();
    });
  }

  /** Resolves with the first report (after `after`) of deployment `id` in `status`. */
  status(id: string | null, status: string, after = 0, timeoutMs = 15_000): Promise<Report> {
    return this.until((r) => r.id === id && r.status === status, after, timeoutMs);
  }

  /** The statuses deployment `id` went through (after `after`), consecutive repeats collapsed. */
  statusesOf(id: string, after = 0): string[] {
    const out: string[] = [];
    for (const r of this.reports.slice(after)) if (r.id === id && r.status !== undefined && out[out.length - 1] !== r.status) out.push(r.status);
    return out;
  }
}

// ---------------------------------------------------------------------------------------------------
// Devices

let nonce = 0;

/** A device that talks to the greeter (or any task answering `<prefix>/<id>/in` on `<prefix>/<id>/out`). */
export class Device {
  readonly #client: MqttClient;
  readonly id: string;

  private constructor(client: MqttClient, id: string) {
    this.#client = client;
    this.id = id;
  }

  static async connect(mqttUrl: string, id: string): Promise<Device> {
    const client = await connect(mqttUrl, { clientId: id });
    await client.subscribeAsync(`greet/${id}/out`, { qos: 1 });
    return new Device(client, id);
  }

  get client(): MqttClient {
    return this.#client;
  }

  /** Sends one message to the greeter without waiting; returns its nonce. */
  async send(): Promise<number> {
    const n = ++nonce;
    await this.#client.publishAsync(`greet/${this.id}/in`, JSON.stringify({ n }), { qos: 1 });
    return n;
  }

  /** Sends one message and resolves with the version that answered it. */
  async ask(timeoutMs = 5000): Promise<string> {
    const n = await this.send();
    return this.answer(n, timeoutMs);
  }

  /** The version that answered message `n`. */
  async answer(n: number, timeoutMs = 5000): Promise<string> {
    const m = await inbox(this.#client).next((topic, payload) => topic === `greet/${this.id}/out` && (JSON.parse(payload.toString()) as { got?: { n?: number } }).got?.n === n, timeoutMs);
    return (JSON.parse(m.payload.toString()) as { version: string }).version;
  }
}

// ---------------------------------------------------------------------------------------------------
// CLI

/** `coordinator deployment history --json` of the coordinator with data directory `dataDir`. */
export async function history(dataDir: string, limit = 20): Promise<{ seq: number; id: string; status: string; step: string; reason: string }[]> {
  const r = await runCli(['deployment', 'history', '--json', '--limit', String(limit), '--data-dir', dataDir]);
  if (r.code !== 0) throw new Error(`deployment history exited ${String(r.code)}: ${r.stderr}`);
  return JSON.parse(r.stdout) as { seq: number; id: string; status: string; step: string; reason: string }[];
}
