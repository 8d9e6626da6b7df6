/**
 * "The cloud" for end-to-end tests: a real Mosquitto on a free loopback port (Debian's `mosquitto`
 * package; .ci/run installs it) and `coordinator shadow-service` attached to it as an MQTT client.
 * Every process started here is killed after the test file.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import { createConnection, createServer } from 'node:net';
import { userInfo } from 'node:os';
import { join } from 'node:path';
import { afterAll } from 'vitest';
import { spawnCli, tempDir, type LogLine } from './process.js';

const live = new Set<ChildProcess>();
afterAll(() => {
  for (const p of live) p.kill('SIGKILL');
});

/** The mosquitto binary: $MOSQUITTO, else Debian's /usr/sbin/mosquitto (not on a user's PATH), else PATH. */
export function mosquittoBinary(): string {
  return process.env.MOSQUITTO ?? (existsSync('/usr/sbin/mosquitto') ? '/usr/sbin/mosquitto' : 'mosquitto');
}

/** A free TCP port on loopback (free when asked; fine for tests). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = createConnection({ host: '127.0.0.1', port });
    socket.once('connect', () => (socket.destroy(), resolve(true)));
    socket.once('error', () => (socket.destroy(), resolve(false)));
  });
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** A Mosquitto broker started by a test. */
export interface RunningMosquitto {
  readonly port: number;
  readonly url: string;
  /** What mosquitto wrote to stderr (its log). */
  output(): string;
  /** Stops it (SIGTERM) and waits for the exit. */
  stop(): Promise<void>;
  /** Starts it again on the same port and config (after stop()). */
  start(): Promise<void>;
  /** stop() then start(): clients are disconnected; without persistence, sessions are forgotten. */
  restart(): Promise<void>;
}

/** A TLS listener: PEM files; with `requireCertificate`, clients must present a certificate the CA signed. */
export interface MosquittoTls {
  readonly caFile: string;
  readonly certFile: string;
  readonly keyFile: string;
  readonly requireCertificate?: boolean;
}

/**
 * Starts Mosquitto on a free loopback port, anonymous clients allowed (2.x refuses them unless told),
 * and resolves once it accepts connections. `persistence` keeps sessions and queued messages across
 * restart(), in a temporary directory; `tls` makes the listener TLS (url mqtts://).
 */
export async function startMosquitto(options: { persistence?: boolean; port?: number; tls?: MosquittoTls } = {}): Promise<RunningMosquitto> {
  const dir = tempDir('mosquitto-');
  const port = options.port ?? (await freePort());
  const conf = join(dir, 'mosquitto.conf');
  writeFileSync(
    conf,
    [
      `listener ${port} 127.0.0.1`,
      'allow_anonymous true',
      ...(options.tls
        ? [`cafile ${options.tls.caFile}`, `certfile ${options.tls.certFile}`, `keyfile ${options.tls.keyFile}`, `require_certificate ${options.tls.requireCertificate ? 'true' : 'false'}`]
        : []),
      // Run as whoever runs the tests: as root, mosquitto would switch to user `mosquitto`, who cannot
      // write the temporary directory.
      `user ${userInfo().username}`,
      'log_dest stderr',
      'log_type error',
      'log_type warning',
      'log_type notice',
      ...(options.persistence ? ['persistence true', `persistence_location ${dir}/`, 'autosave_interval 1'] : ['persistence false']),
      '',
    ].join('\n'),
  );
  let proc: ChildProcess | undefined;
  let exited: Promise<void> = Promise.resolve();
  let log = '';

  const start = async (): Promise<void> => {
    const p = spawn(mosquittoBinary(), ['-c', conf], { stdio: ['ignore', 'ignore', 'pipe'] });
    proc = p;
    live.add(p);
    let gone = false;
    exited = new Promise((resolve) =>
      p.once('exit', () => {
        gone = true;
        live.delete(p);
        resolve();
      }),
    );
    p.once('error', (err) => (log += `spawn failed: ${err.message}\n`));
    p.stderr.on('data', (c: Buffer) => (log += c.toString()));
    const deadline = Date.now() + 10_000;
    while (!(await accepts(port))) {
      if (gone) throw new Error(`mosquitto exited before accepting connections on ${port}:\n${log}`);
      if (Date.now() > deadline) throw new Error(`mosquitto did not accept connections on ${port} within 10 s:\n${log}`);
      await sleep(25);
    }
  };
  const stop = async (): Promise<void> => {
    proc?.kill('SIGTERM');
    await exited;
    proc = undefined;
  };

  await start();
  return {
    port,
    url: `${options.tls ? 'mqtts' : 'mqtt'}://127.0.0.1:${port}`,
    output: () => log,
    stop,
    start,
    async restart() {
      await stop();
      await start();
    },
  };
}

/** A `coordinator shadow-service` process started by a test. */
export interface RunningShadowService {
  readonly proc: ChildProcess;
  readonly dataDir: string;
  readonly logs: LogLine[];
  /** Resolves with the n-th log line (1-based, seen or future) matching `pred`. */
  waitForLog(pred: (l: LogLine) => boolean, options?: { nth?: number; timeoutMs?: number }): Promise<LogLine>;
  /** Sends `signal` and resolves with how the process ended. */
  stop(signal?: NodeJS.Signals): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** SIGKILL, as a power cut would. */
  kill(): Promise<void>;
}

/**
 * Spawns `coordinator shadow-service --broker URL --data-dir DIR` and resolves once it serves shadow
 * requests (connected and subscribed). Pass the same dataDir to start it again over its own database.
 */
export async function startShadowService(brokerUrl: string, options: { dataDir?: string; args?: string[] } = {}): Promise<RunningShadowService> {
  const dataDir = options.dataDir ?? tempDir('shadow-service-');
  const { proc, logs, exited, stderr, waitForLog } = spawnCli(['shadow-service', '--broker', brokerUrl, '--data-dir', dataDir, ...(options.args ?? [])]);
  await Promise.race([
    waitForLog((l) => l.msg === 'serving shadow requests', { timeoutMs: 15_000 }),
    exited.then(({ code }) => {
      throw new Error(`shadow-service exited with ${String(code)} before serving: ${stderr()}`);
    }),
  ]);

  return {
    proc,
    dataDir,
    logs,
    waitForLog,
    async stop(signal = 'SIGTERM') {
      proc.kill(signal);
      return exited;
    },
    async kill() {
      proc.kill('SIGKILL');
      await exited;
    },
  };
}
