/**
 * Pieces of the deployment crash test (test/e2e/deployment-crash.test.ts): an HTTPS bundle server that
 * can hold a response mid-body, task bundles that answer with the deployment they belong to, deployment
 * documents built from them, an MQTT "cloud" client that writes desired and keeps a persistent session
 * on the deployment shadow across restarts, and a look at a coordinator's child processes.
 */
import { createHash, randomBytes } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import type { ServerResponse } from 'node:http';
import { createServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import mqtt, { type MqttClient } from 'mqtt';
import { waitOnSignal } from './mqtt.js';

/** CRASH_DEBUG=1 prints what the crash test does, with times. */
export function debug(text: string): void {
  if (process.env.CRASH_DEBUG) process.stderr.write(`${new Date().toISOString().slice(11, 23)} ${text}\n`);
}

export const sha256 = (text: string): string => createHash('sha256').update(text).digest('hex');

/** An HTTPS server of task bundles on 127.0.0.1. */
export interface BundleServer {
  readonly origin: string;
  /** Serves `code` at `path` from now on; returns its URL. */
  put(path: string, code: string): string;
  /** How many requests `path` received. */
  requests(path: string): number;
  /**
   * Holds every response to `path` after its headers and first bytes (a slow download); resolves at
   * the first such request.
   */
  hold(path: string): Promise<void>;
  /** Ends the held responses and serves every path normally again. */
  release(): void;
  /** Stops serving `path` (404 from now on). */
  drop(path: string): void;
  /** While offline, every connection is cut as soon as its request arrives (a network that fails). */
  setOffline(offline: boolean): void;
  close(): Promise<void>;
}

export async function startBundleServer(cert: { certPem: string; keyPem: string }): Promise<BundleServer> {
  const bodies = new Map<string, string>();
  const counts = new Map<string, number>();
  const held = new Map<string, () => void>();
  const pending = new Set<{ res: ServerResponse; rest: string }>();
  let offline = false;
  let closed = false;
  const server = createServer({ cert: cert.certPem, key: cert.keyPem }, (req, res) => {
    const path = new URL(req.url ?? '/', 'https://127.0.0.1').pathname;
    counts.set(path, (counts.get(path) ?? 0) + 1);
    if (offline) {
      req.socket.destroy();
      return;
    }
    const body = bodies.get(path);
    if (body === undefined) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { 'content-type': 'text/javascript', 'content-length': Buffer.byteLength(body) });
    const arrived = held.get(path);
    if (arrived) {
      // Headers and a few bytes, then nothing: the coordinator is inside its download.
      const entry = { res, rest: body.slice(16) };
      res.write(body.slice(0, 16));
      pending.add(entry);
      res.once('close', () => pending.delete(entry));
      arrived();
      return;
    }
    res.end(body);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const origin = `https://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    origin,
    put(path, code) {
      bodies.set(path, code);
      return `${origin}${path}`;
    },
    requests: (path) => counts.get(path) ?? 0,
    hold(path) {
      return new Promise<void>((resolve) => held.set(path, resolve));
    },
    release() {
      held.clear();
      for (const p of pending) if (!p.res.destroyed) p.res.end(p.rest);
      pending.clear();
    },
    drop(path) {
      bodies.delete(path);
    },
    setOffline(value) {
      offline = value;
    },
    async close() {
      if (closed) return;
      closed = true;
      held.clear();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** One task of a planned deployment: `tag` names the deployment its code comes from (d1, d2, ...). */
export interface TaskPlan {
  readonly name: string;
  readonly tag: string;
  /** A pinned task whose onStart sleeps `startMs`: what makes a load step long enough to kill inside. */
  readonly pinned?: boolean;
  /** Its invocations (not its messages) throw: three in a row make it BROKEN. */
  readonly failOnInvoke?: boolean;
}

/** Topic a probe is published to (every task triggers on it) and where the answers come back. */
export const PROBE_ASK = 'crash-probe/ask';
export const PROBE_REPLY = 'crash-probe/reply';

/**
 * The bundle of one task: it answers a probe message (on `crash-probe/reply/<nonce>`) and an invoke
 * with `{task, tag}`, so what runs says which deployment it came from.
 */
export function taskCode(t: TaskPlan, startMs: number): string {
  const who = JSON.stringify({ task: t.name, tag: t.tag });
  return [
    `const WHO = ${who};`,
    'export default {',
    ...(t.pinned ? [`  async onStart() { await new Promise((resolve) => setTimeout(resolve, ${startMs})); },`] : []),
    '  async onEvent(event, ctx) {',
    "    if (event.type === 'message') {",
    `      await ctx.publish('${PROBE_REPLY}/' + event.topic.split('/')[2], WHO, { qos: 1 });`,
    '      return null;',
    '    }',
    ...(t.failOnInvoke ? [`    throw new Error('${t.name} ${t.tag} is broken on purpose');`] : []),
    '    return WHO;',
    '  },',
    '};',
    '',
  ].join('\n');
}

/** A deployment document and what it must run. */
export interface Planned {
  readonly id: string;
  readonly doc: Record<string, unknown>;
  /** task name → its version and tag. */
  readonly tasks: ReadonlyMap<string, { version: string; tag: string; sha256: string; path: string }>;
}

/** Version of a task whose code comes from deployment `tag` (d7 → 1.7.0). */
const versionOf = (tag: string): string => `1.${Number(tag.replace(/\D/g, ''))}.0`;

/** Builds deployment `id` of `tasks`, serving their bundles from `server`. */
export function planDeployment(server: BundleServer, id: string, tasks: readonly TaskPlan[], startMs: number): Planned {
  const out = new Map<string, { version: string; tag: string; sha256: string; path: string }>();
  const docTasks = tasks.map((t) => {
    const code = taskCode(t, startMs);
    const path = `/${t.name}-${t.tag}${t.failOnInvoke ? '-broken' : ''}.js`;
    const url = server.put(path, code);
    const version = versionOf(t.tag);
    out.set(t.name, { version, tag: t.tag, sha256: sha256(code), path });
    return {
      name: t.name,
      version,
      ...(t.pinned ? { lifecycle: 'pinned', limits: { timeoutMs: 15_000 } } : {}),
      bundle: { url, sha256: sha256(code) },
      triggers: [{ topic: `${PROBE_ASK}/+` }],
      routes: [{ source: `task:${t.name}`, filter: `${PROBE_REPLY}/#`, target: 'broker' }],
      permissions: { publish: [`${PROBE_REPLY}/#`] },
    };
  });
  return { id, doc: { schema: 1, id, tasks: docTasks, routes: [] }, tasks: out };
}

/** `name@version` of a set, sorted: how sets are compared and printed. */
export function setOf(tasks: Iterable<{ name: string; version: string }>): string[] {
  return [...tasks].map((t) => `${t.name}@${t.version}`).sort();
}

export function planSet(p: Planned): string[] {
  return setOf([...p.tasks].map(([name, t]) => ({ name, version: t.version })));
}

/** One report of the deployment shadow, as a persistent watcher received it. */
export interface SeenReport {
  /** Which coordinator process (start number) published it. */
  readonly proc: number;
  readonly reported: Record<string, unknown> & { id?: string; status?: string; reason?: string; running?: string | null; tasks?: { name: string; version: string; state: string }[] };
}

/**
 * The test's "cloud": an MQTT client with a persistent session (clean: false, a fixed client id listed
 * in shadows.controlClients) that writes desired, watches `/update/documents` and `/update/accepted` of
 * the deployment shadow, and probes the tasks. Its session outlives coordinator restarts, so the
 * reports a restarted coordinator publishes before the client reconnects are delivered on reconnect.
 */
export interface Cloud {
  readonly client: MqttClient;
  /** Every report (reported changed) seen so far, across processes, in arrival order. */
  readonly reports: SeenReport[];
  /** Writes desired; resolves with the clientToken (its /update/accepted is `accepted(token)`). */
  requestDeployment(doc: Record<string, unknown>): Promise<string>;
  /** Resolves when /update/accepted with this clientToken arrives. */
  accepted(token: string, timeoutMs?: number): Promise<void>;
  /** Resolves with the first report (seen or future) matching `pred`. */
  report(pred: (r: SeenReport) => boolean, timeoutMs?: number): Promise<SeenReport>;
  /**
   * Publishes one probe; resolves with the answers (task → the distinct tags it answered with) once
   * `expected` arrived or after `timeoutMs`.
   */
  probe(expected: number, timeoutMs?: number): Promise<Map<string, string[]>>;
  end(): Promise<void>;
}

const CLOUD_CLIENT_ID = 'crash-cloud';
export const CLOUD_CLIENT = CLOUD_CLIENT_ID;

/** Connects the cloud client to a coordinator process `proc`, appending to `reports`. */
export function connectCloud(url: string, thing: string, proc: number, reports: SeenReport[]): Promise<Cloud> {
  const shadow = `$aws/things/${thing}/shadow/name/deployment`;
  const tokens = new Set<string>();
  const replies = new Map<string, { task: string; tag: string }[]>();
  const listeners = new Set<() => void>();
  // Reconnects on its own, as a cloud bridge would (each restart of the coordinator drops the connection).
  const client = mqtt.connect(url, { clientId: CLOUD_CLIENT_ID, clean: false, reconnectPeriod: 100, connectTimeout: 5000, protocolVersion: 4 });
  client.on('error', (err) => debug(`cloud client (start ${proc}): ${err.message}`));
  client.on('close', () => debug(`cloud client (start ${proc}): connection closed`));
  client.on('reconnect', () => debug(`cloud client (start ${proc}): reconnecting`));
  // Attached before CONNACK: a persistent session's queued messages can come in the same read.
  client.on('message', (topic, payload) => {
    if (topic === `${shadow}/update/documents`) {
      const body = JSON.parse(payload.toString()) as { previous?: { state?: { reported?: unknown } }; current: { state: { reported?: SeenReport['reported'] } } };
      const now = body.current.state.reported;
      if (now && JSON.stringify(now) !== JSON.stringify(body.previous?.state?.reported)) reports.push({ proc, reported: now });
    } else if (topic === `${shadow}/update/accepted`) {
      const token = (JSON.parse(payload.toString()) as { clientToken?: string }).clientToken;
      if (token) tokens.add(token);
    } else if (topic.startsWith(`${PROBE_REPLY}/`)) {
      const nonce = topic.slice(PROBE_REPLY.length + 1);
      const list = replies.get(nonce) ?? [];
      list.push(JSON.parse(payload.toString()) as { task: string; tag: string });
      replies.set(nonce, list);
    }
    for (const l of [...listeners]) l();
  });
  const waitFor = <T>(check: () => T | undefined, timeoutMs: number, what: string): Promise<T> => waitOnSignal(listeners, check, timeoutMs, () => what);
  return new Promise((resolve, reject) => {
    const failed = (err: Error): void => {
      client.end(true);
      reject(err);
    };
    client.once('error', failed);
    client.once('connect', () => {
      client.off('error', failed);
      const cloud: Cloud = {
        client,
        reports,
        async requestDeployment(doc) {
          const token = `crash-${randomBytes(6).toString('hex')}`;
          await withTimeout(client.publishAsync(`${shadow}/update`, JSON.stringify({ state: { desired: doc }, clientToken: token }), { qos: 1 }), 5000, 'PUBACK of the desired document');
          return token;
        },
        accepted: (token, timeoutMs = 10_000) => waitFor(() => (tokens.has(token) ? true : undefined), timeoutMs, `/update/accepted of ${token}`).then(() => undefined),
        report: (pred, timeoutMs = 20_000) =>
          waitFor(() => reports.find(pred), timeoutMs, `a deployment report; last seen: ${JSON.stringify(reports[reports.length - 1]?.reported ?? null)}`),
        async probe(expected, timeoutMs = 5000) {
          const nonce = randomBytes(6).toString('hex');
          await withTimeout(client.publishAsync(`${PROBE_ASK}/${nonce}`, 'probe', { qos: 1 }), 5000, 'PUBACK of a probe');
          const tasks = (): number => new Set((replies.get(nonce) ?? []).map((r) => r.task)).size;
          await waitFor(() => (tasks() >= expected ? true : undefined), timeoutMs, `answers of ${expected} tasks`).catch(() => undefined);
          // A moment more: an answer beyond the expected ones would show a mix.
          await new Promise((r) => setTimeout(r, 150));
          // QoS 1 is at least once: a probe or an answer resent after a dropped connection comes twice.
          // What counts is which deployments answered, per task.
          const byTask = new Map<string, string[]>();
          for (const r of replies.get(nonce) ?? []) byTask.set(r.task, [...new Set([...(byTask.get(r.task) ?? []), r.tag])].sort());
          return byTask;
        },
        end: () => withTimeout(client.endAsync(true), 2000, 'the MQTT client to end').catch(() => undefined),
      };
      // The session keeps these subscriptions across restarts; a SUBSCRIBE cut short by a dropped
      // connection is sent again once the client is back.
      const subscribe = async (): Promise<void> => {
        for (let attempt = 1; ; attempt++) {
          try {
            await client.subscribeAsync({ [`${shadow}/update/documents`]: { qos: 1 }, [`${shadow}/update/accepted`]: { qos: 1 }, [`${PROBE_REPLY}/+`]: { qos: 1 } });
            return;
          } catch (err) {
            if (attempt >= 5) throw err;
            if (!client.connected) await withTimeout(new Promise((r) => client.once('connect', r)), 5000, 'the cloud client to reconnect');
          }
        }
      };
      subscribe()
        .then(() => resolve(cloud))
        .catch(reject);
    });
  });
}

/** `p`, or a rejection after `ms` naming `what` (nothing in this test may hang without saying so). */
export function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    p.finally(() => clearTimeout(timer)),
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
    }),
  ]);
}

/** Pids of the live (not zombie) children of `pid`, from /proc (Linux); [] where /proc is not there. */
export function childPids(pid: number): number[] {
  let entries: string[];
  try {
    entries = readdirSync('/proc');
  } catch {
    return [];
  }
  const out: number[] = [];
  for (const e of entries) {
    if (!/^\d+$/.test(e)) continue;
    const stat = procStat(Number(e));
    if (stat && stat.ppid === pid && stat.state !== 'Z') out.push(Number(e));
  }
  return out;
}

function procStat(pid: number): { state: string; ppid: number } | undefined {
  try {
    const text = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // pid (comm) state ppid ...: comm may hold spaces and parentheses, so split after the last ')'.
    const rest = text.slice(text.lastIndexOf(')') + 2).split(' ');
    return { state: rest[0]!, ppid: Number(rest[1]) };
  } catch {
    return undefined;
  }
}

/** Resolves with the pids of `pids` still alive (not gone, not zombies) after up to `timeoutMs`. */
export async function survivors(pids: readonly number[], timeoutMs: number): Promise<number[]> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const alive = pids.filter((p) => {
      const s = procStat(p);
      return s !== undefined && s.state !== 'Z';
    });
    if (alive.length === 0 || Date.now() >= deadline) return alive;
    await new Promise((r) => setTimeout(r, 50));
  }
}
