/**
 * The coordinator core: composes store, broker, shadow service, task runtime and admin channel, starts
 * them in dependency order and stops them in reverse. Later components (deployments, device registry,
 * cloud link) join here.
 */
import type { CoordinatorConfig } from './config/schema.js';
import type { Logger } from './log/logger.js';
import { startAdminServer, type AdminRoutes, type AdminServer } from './admin/server.js';
import { adminSocketPath } from './admin/socket.js';
import { startBroker, type Broker } from './broker/broker.js';
import { deviceRoutes, tlsEndpoint } from './devices/admin-routes.js';
import { listenerTlsFiles } from './devices/pki-files.js';
import { DeviceActions } from './devices/actions.js';
import { loadProfiles } from './devices/profiles.js';
import { DeviceRegistry } from './devices/registry.js';
import { CloudLink } from './cloud/link.js';
import { CloudSpool } from './cloud/spool.js';
import { deploymentRoutes } from './deployment/admin-routes.js';
import { DeploymentAgent } from './deployment/agent.js';
import { acquireBundle } from './deployment/bundles.js';
import { ContentStore } from './deployment/content-store.js';
import { localDeployment } from './deployment/local.js';
import { DeploymentRecords } from './deployment/records.js';
import { parseTrustedKeys } from './deployment/signature.js';
import { shadowRoutes } from './shadow/admin-routes.js';
import { attachShadowMqtt } from './shadow/mqtt.js';
import { AWS_SHADOW_LIMITS } from './shadow/request.js';
import { applySeeds } from './shadow/seeds.js';
import { ShadowService } from './shadow/service.js';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { ensureDataDir, Store, type StoreHealth } from './store/database.js';
import { taskRoutes } from './tasks/admin-routes.js';
import { TaskRuntime } from './tasks/runtime.js';
import { VERSION } from './version.js';

/** The device profiles shipped with the coordinator (profiles/ next to dist/). */
const SHIPPED_PROFILES = fileURLToPath(new URL('../profiles', import.meta.url));

/** One listener as `coordinator status` shows it. */
export interface ListenerStatus {
  name: string;
  url: string;
  host: string;
  port: number;
  anonymous: boolean;
}

/** What `coordinator status` prints. */
export interface CoordinatorStatus {
  version: string;
  thingName: string;
  pid: number;
  startedAt: string;
  uptimeSeconds: number;
  dataDir: string;
  listeners: ListenerStatus[];
  clients: { connected: number; ids: string[] };
  /** Shadows stored (deleted ones excluded). */
  shadows: number;
  /** Messages dropped because a persistent session's queue was full (COORD_ERR_BROKER_QUEUE_FULL). */
  droppedMessages: number;
  store: StoreHealth;
  /** Installed tasks, queued and running invocations, the task host. */
  tasks: Record<string, unknown>;
  /** The running deployment, and the desired one's reported status. */
  deployment: { running: string | null; id: string | null; status: string | null; inProgress: string | null };
}

const STATUS_CLIENT_IDS = 100;

/** A running coordinator. */
export class Coordinator {
  readonly config: CoordinatorConfig;
  readonly log: Logger;
  readonly store: Store;
  readonly broker: Broker;
  /** The shadow service's in-process face (tasks, deployments and the cloud link use this). */
  readonly shadows: ShadowService;
  /** The task registry, scheduler and task host. */
  readonly tasks: TaskRuntime;
  /** Converges the tasks to the `deployment` shadow's desired state. */
  readonly deployments: DeploymentAgent;
  /** The link to the upstream MQTT service (undefined without cloud.url). */
  readonly cloud: CloudLink | undefined;
  readonly #detachShadowMqtt: () => Promise<void>;
  readonly #admin: AdminServer;
  readonly #startedAt = new Date();
  #stopping: Promise<void> | undefined;

  private constructor(
    config: CoordinatorConfig,
    log: Logger,
    parts: { store: Store; broker: Broker; shadows: ShadowService; tasks: TaskRuntime; deployments: DeploymentAgent; cloud: CloudLink | undefined; detachShadowMqtt: () => Promise<void>; admin: AdminServer },
  ) {
    this.config = config;
    this.log = log;
    this.store = parts.store;
    this.broker = parts.broker;
    this.shadows = parts.shadows;
    this.tasks = parts.tasks;
    this.deployments = parts.deployments;
    this.cloud = parts.cloud;
    this.#detachShadowMqtt = parts.detachShadowMqtt;
    this.#admin = parts.admin;
  }

  /** Starts every component; on failure, stops what had started and rethrows. */
  static async start(config: CoordinatorConfig, log: Logger): Promise<Coordinator> {
    // A TLS listener without its files (no `coordinator certs init` yet) is refused before anything starts.
    if (config.listeners.mqtts.enabled) listenerTlsFiles(config);
    ensureDataDir(config.dataDir);
    // The admin socket is the data directory's lock: bound first, before the database is touched, so a
    // second coordinator on the same directory stops here.
    const routes: AdminRoutes = {};
    const admin = await startAdminServer(adminSocketPath(config), routes, log);
    let store: Store | undefined;
    let broker: Broker | undefined;
    let tasks: TaskRuntime | undefined;
    let agent: DeploymentAgent | undefined;
    let cloud: CloudLink | undefined;
    let shadows: ShadowService | undefined;
    try {
      store = Store.open(
        config.dataDir,
        (err) => log.error({ err, code: 'COORD_ERR_STORE_WRITE' }, 'background durable write failed'),
        (err) => {
          // After a failed fdatasync the kernel may have dropped pages it could not write: nothing this
          // process holds can be trusted to be on disk. Exit for the supervisor; restart recovers from the file.
          log.fatal({ err, code: 'COORD_ERR_STORE_WRITE' }, 'syncing the database log failed; exiting');
          process.exit(1);
        },
      );
      const devices = new DeviceRegistry(store);
      broker = await startBroker(config, store, log, devices);
      shadows = new ShadowService(store, {
        maxInFlightPerShadow: config.shadows.maxInFlightPerShadow,
        compaction: { afterMs: config.shadows.compactAfterMs, afterRecords: config.shadows.compactAfterChanges },
        onStoreError: (err) => log.error({ err, code: (err as { code?: string }).code ?? 'COORD_ERR_STORE_WRITE' }, err.message),
      });
      const limits = { maxStateBytes: config.shadows.maxStateBytes, maxDepth: AWS_SHADOW_LIMITS.maxDepth };
      await applySeeds(config.dataDir, shadows, limits, log);
      const detachShadowMqtt = await attachShadowMqtt(broker.aedes, shadows, limits, broker.shadowAccess, broker.hasSubscribers, log);
      const actions = new DeviceActions({ registry: devices, profiles: loadProfiles(config.devices.profilesDir ?? SHIPPED_PROFILES), shadows, shadowLimits: limits, aedes: broker.aedes, log });
      // Cloud-bound messages are spooled durably whether or not a link is configured now: one that is
      // configured later sends them, in order.
      const spool = new CloudSpool(store, { maxBytes: config.cloud.spoolMaxBytes });
      const toCloud = (topic: string, payload: Buffer, qos: 0 | 1): Promise<void> =>
        spool.append(topic, payload, qos).then(
          () => undefined,
          (err: unknown) => {
            const code = (err as { code?: string }).code;
            log.warn({ err, code, topic }, 'cloud-bound message not spooled');
            // A message the spool can never take is refused for good (logged, counted by nobody else);
            // a failed write is not: the device's PUBACK is withheld and it sends the message again.
            if (code !== 'COORD_ERR_CLOUD_SPOOL_TOO_LARGE' && code !== 'COORD_ERR_CLOUD_SPOOL_INVALID') throw err;
          },
        );
      tasks = new TaskRuntime({ config, log, store, aedes: broker.aedes, shadows, shadowLimits: limits, devices: actions, toCloud });
      const runtime = tasks;
      broker.onAccept((client, packet) => runtime.fromDevice(client.id, packet.topic, packet.payload as Buffer, packet.qos === 1 ? 1 : 0));
      tasks.start();
      const bundleStore = new ContentStore(join(config.dataDir, 'bundles'));
      const d = config.deployments;
      const trustedKeys = parseTrustedKeys(d.trustedKeys);
      const ca = d.fetch.trustRoots?.map((f) => readFileSync(f, 'utf8'));
      const records = new DeploymentRecords(store);
      agent = new DeploymentAgent({
        config,
        log,
        shadows,
        tasks,
        records,
        acquire: (ref, signal) =>
          acquireBundle(ref, {
            store: bundleStore,
            fetch: { timeoutMs: d.fetch.timeoutMs, maxBytes: d.fetch.maxBytes, retries: d.fetch.retries, backoffMs: d.fetch.backoffMs, ...(ca ? { ca } : {}), signal },
            trustedKeys,
            requireSignatures: d.requireSignatures,
          }),
        pruneBundles: (keep) => {
          // A bundle uploaded in the last minutes may belong to a document not written yet (`coordinator
          // deploy` uploads first, then writes desired): kept too.
          const recent = Date.now() - 10 * 60_000;
          const kept = new Set(keep);
          for (const b of bundleStore.list()) if (b.mtime.getTime() > recent) kept.add(b.sha256);
          bundleStore.prune(kept);
        },
      });
      const upload = (code: string): { sha256: string; url: string } => {
        const sha256 = bundleStore.put(Buffer.from(code, 'utf8'));
        return { sha256, url: pathToFileURL(bundleStore.path(sha256)).href };
      };
      await agent.start();
      if (config.cloud.url !== undefined) {
        // After the agent: a deployment arriving from the cloud at the first reconcile finds it listening.
        cloud = new CloudLink({ config, log, shadows, store, spool, deliver: (topic, payload) => tasks!.fromCloud(topic, payload, 1) });
        cloud.start();
      }
      if (config.tasks.dir !== undefined) await deployLocalTasks(agent, config.tasks.dir, upload, log);
      const coordinator: Coordinator = new Coordinator(config, log, { store, broker, shadows, tasks, deployments: agent, cloud, detachShadowMqtt, admin });
      routes['GET /v1/cloud'] = () => cloud?.status() ?? { state: 'disabled', note: 'no cloud.url configured' };
      routes['GET /v1/status'] = () => coordinator.status();
      Object.assign(routes, shadowRoutes(shadows, limits), taskRoutes(tasks), deploymentRoutes(agent, records, upload));
      const mqtts = broker.listeners.find((l) => l.name === 'mqtts');
      Object.assign(routes, deviceRoutes(devices, config, () => tlsEndpoint(config, mqtts), new Set(actions.profiles.keys())));
      coordinator.#announce();
      return coordinator;
    } catch (err) {
      await cloud?.stop();
      await agent?.stop();
      await tasks?.stop();
      await broker?.close();
      shadows?.close();
      store?.close();
      await admin.close();
      throw err;
    }
  }

  #announce(): void {
    const anonymous = this.config.broker.anonymous;
    for (const l of this.broker.listeners) {
      this.log.info(
        { listener: l.name, url: l.url, host: l.host, port: l.port, anonymous: this.#anonymousOn(l) },
        `${l.name} listener on ${l.url}`,
      );
    }
    if (anonymous === 'loopback') {
      this.log.warn('development mode: anonymous MQTT clients are accepted on loopback listeners only (broker.anonymous=loopback)');
    } else if (anonymous === 'always') {
      this.log.warn('anonymous MQTT clients are accepted on every listener (broker.anonymous=always): do not use on an open network');
    }
    this.log.info(
      {
        thingName: this.config.thingName,
        dataDir: this.config.dataDir,
        admin: this.#admin.socketPath,
        version: VERSION,
        shadows: this.shadows.size,
        // Time since the process started: what a restart costs (restored sessions and shadows included).
        startupMs: Math.round(performance.now()),
      },
      'coordinator ready',
    );
  }

  #anonymousOn(listener: { loopback: boolean; protocol: string }): boolean {
    // The TLS listener requires a device certificate from every client.
    if (listener.protocol === 'mqtts') return false;
    const mode = this.config.broker.anonymous;
    return mode === 'always' || (mode === 'loopback' && listener.loopback);
  }

  /** Version, uptime, listeners, connected clients, store health and tasks. */
  async status(): Promise<CoordinatorStatus> {
    const clients = this.broker.clients();
    return {
      version: VERSION,
      thingName: this.config.thingName,
      pid: process.pid,
      startedAt: this.#startedAt.toISOString(),
      uptimeSeconds: Math.round((Date.now() - this.#startedAt.getTime()) / 1000),
      dataDir: this.config.dataDir,
      listeners: this.broker.listeners.map((l) => ({ name: l.name, url: l.url, host: l.host, port: l.port, anonymous: this.#anonymousOn(l) })),
      clients: { connected: clients.length, ids: clients.slice(0, STATUS_CLIENT_IDS).map((c) => c.id) },
      shadows: this.shadows.size,
      droppedMessages: this.broker.droppedMessages(),
      store: this.store.health(),
      tasks: await this.tasks.status(),
      deployment: this.#deploymentStatus(),
    };
  }

  #deploymentStatus(): CoordinatorStatus['deployment'] {
    const s = this.deployments.status();
    const r = (s.reported ?? {}) as { id?: unknown; status?: unknown };
    return {
      running: s.active?.id ?? null,
      id: typeof r.id === 'string' ? r.id : null,
      status: typeof r.status === 'string' ? r.status : null,
      inProgress: s.inProgress,
    };
  }

  /** Stops accepting, disconnects clients, flushes and closes storage. Idempotent. */
  stop(): Promise<void> {
    this.#stopping ??= (async () => {
      this.log.info('coordinator stopping');
      await this.#admin.close();
      await this.cloud?.stop();
      await this.deployments.stop();
      // Pinned tasks' onStop may still publish or update shadows: before the broker goes.
      await this.tasks.stop();
      await this.#detachShadowMqtt();
      await this.broker.close();
      this.shadows.close();
      this.store.close();
      this.log.info('coordinator stopped');
    })();
    return this.#stopping;
  }
}

/**
 * Deploys the task folders of `dir` (config tasks.dir / --tasks-dir) through the deployment agent, as
 * `coordinator deploy` would: the development path takes the production path. An unchanged folder
 * gives the same document, so a restart changes nothing. A folder that does not bundle is the tasks'
 * problem, not the gateway's: it is logged with its code and whatever ran keeps running.
 */
async function deployLocalTasks(agent: DeploymentAgent, dir: string, upload: (code: string) => { sha256: string; url: string }, log: Logger): Promise<void> {
  try {
    // Loaded only when used: esbuild and the manifest schema cost idle memory a gateway without a
    // tasks folder should not pay.
    const { loadTasksDir } = await import('./tasks/local.js');
    const doc = await localDeployment(await loadTasksDir(dir), (code) => Promise.resolve(upload(code)));
    await agent.request(doc);
    const outcome = await agent.switched(doc.id, 60_000);
    if (!outcome) log.warn({ dir, deployment: doc.id }, `tasks in ${dir} are still deploying`);
    else if (outcome.status === 'REJECTED' || outcome.status === 'FAILED_ROLLED_BACK') log.error({ dir, deployment: doc.id, code: 'COORD_ERR_DEPLOY_FAILED' }, `tasks in ${dir} not deployed: ${outcome.reason}`);
  } catch (err) {
    const e = err as { code?: string; message?: string };
    log.error({ code: e.code ?? 'COORD_ERR_INTERNAL', dir, err }, `tasks in ${dir} not deployed: ${e.message ?? String(err)}`);
  }
}
