/**
 * The coordinator configuration: one zod schema, and every default lives here.
 *
 * Values are in human units (milliseconds, bytes, ports); `compileCoordinatorOptions()` in
 * ./load.ts turns sources into one validated, defaulted `CoordinatorConfig`.
 */
import { hostname } from 'node:os';
import { z } from 'zod';
import { policyFilterProblem } from '../devices/policy.js';

/** AWS IoT thing names: 1–128 bytes of [a-zA-Z0-9:_-]. */
export const THING_NAME_PATTERN = /^[a-zA-Z0-9:_-]+$/;

/** The coordinator's default thing name, derived from the host name so two gateways never share one. */
export function defaultThingName(host: string = hostname()): string {
  const cleaned = host.replace(/[^a-zA-Z0-9:_-]+/g, '-').replace(/^-+|-+$/g, '').slice(0, 120);
  return `coordinator-${cleaned || 'gateway'}`.slice(0, 128);
}

const port = z.int().min(0, 'must be 0 (pick a free port) or a TCP port').max(65535, 'must be at most 65535');
const host = z.string().min(1, 'must be a host name or IP address');
const filePath = z.string().min(1, 'must be a file path');

const tcpListener = z
  .object({
    /** Whether the plain MQTT listener runs. */
    enabled: z.boolean().default(true),
    /** Address to bind; loopback by default so a fresh install is not exposed to the network. */
    host: host.default('127.0.0.1'),
    /** Port to bind; 0 picks a free port (printed at start-up). */
    port: port.default(1883),
  })
  .strict();

const tlsListener = z
  .object({
    enabled: z.boolean().default(false),
    host: host.default('127.0.0.1'),
    port: port.default(8883),
    /** PEM server certificate (chain); default: `<dataDir>/pki/server.pem` from `coordinator certs init`. */
    certFile: filePath.optional(),
    /** PEM private key of the server certificate; default: `<dataDir>/pki/server.key.pem`. */
    keyFile: filePath.optional(),
    /** PEM CA bundle client certificates must chain to; default: the device CA `<dataDir>/pki/ca.pem`. */
    caFile: filePath.optional(),
    /** Passphrase of keyFile; a secret, masked by `config print`. */
    passphrase: z.string().optional(),
    /**
     * TLS session tickets (resumption without a full handshake). Off by default: with TLS 1.3 each
     * connection keeps ~12 KiB more native memory while it lasts, and the ticket keys change at every
     * restart anyway (docs/devices.md, "Memory").
     */
    sessionTickets: z.boolean().default(false),
  })
  .strict()
  .superRefine((tls, ctx) => {
    // A certificate without its key (or the reverse) cannot work; neither means the gateway PKI's pair.
    if ((tls.certFile === undefined) !== (tls.keyFile === undefined)) {
      const missing = tls.certFile === undefined ? 'certFile' : 'keyFile';
      ctx.addIssue({ code: 'custom', path: [missing], message: 'must be set together with listeners.mqtts.certFile/keyFile (or leave both out to use the gateway PKI)' });
    }
  });

/** A maximum grant for task topics: never a reserved $ filter (src/router/reserved.ts). */
const grantFilter = z
  .string()
  .min(1)
  .refine((f) => f.charCodeAt(0) !== 36, { message: 'must not name a reserved $ topic: tasks are never granted $aws/... or $SYS/... topics' });

/** One device policy group (docs/devices.md, "Policies"). */
const policyFilter = z.string().superRefine((filter, ctx) => {
  const problem = policyFilterProblem(filter);
  if (problem !== undefined) ctx.addIssue({ code: 'custom', message: `is not a policy topic filter: ${problem}` });
});
const policyGroup = z
  .object({
    name: z.string().min(1, 'must name the group'),
    match: z
      .object({
        /** Thing-name glob (`*` = any characters). */
        thing: z.string().min(1).optional(),
        /** Attribute values (globs) a device must have. */
        attributes: z.record(z.string(), z.string()).optional(),
      })
      .strict()
      .prefault({}),
    allow: z
      .object({
        connect: z.boolean().optional(),
        publish: z.array(policyFilter).default([]),
        subscribe: z.array(policyFilter).default([]),
        receive: z.array(policyFilter).default([]),
      })
      .strict()
      .prefault({}),
  })
  .strict();

/** The full configuration schema. */
export const configSchema = z
  .object({
    /** The coordinator's own thing name (its shadows live under it). */
    thingName: z
      .string()
      .min(1, 'must not be empty')
      .refine((s) => Buffer.byteLength(s) <= 128, 'must be at most 128 bytes (AWS IoT limit)')
      .refine((s) => THING_NAME_PATTERN.test(s), 'may contain only letters, digits, ":", "_" and "-" (AWS IoT thing name)')
      .default(() => defaultThingName()),
    /** Data directory: the database, the admin socket, seed shadow documents. */
    dataDir: z.string().min(1, 'must be a directory path').default('./device-shadows'),
    logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'], { error: 'is not a log level' }).default('info'),
    listeners: z
      .object({
        mqtt: tcpListener.prefault({}),
        mqtts: tlsListener.prefault({}),
      })
      .strict()
      .prefault({}),
    broker: z
      .object({
        /**
         * Who may connect without credentials: `loopback` (development default: only on listeners bound to
         * a loopback address), `never`, or `always` (explicit opt-in; logged as a warning at start-up).
         */
        anonymous: z.enum(['loopback', 'never', 'always'], { error: 'is not an anonymous-access mode' }).default('loopback'),
        /** Longest accepted MQTT client id, in bytes; AWS IoT allows 128. */
        maxClientIdBytes: z.int().min(23, 'must be at least 23 ([MQTT-3.1.3-5])').max(65535).default(128),
        /** Largest PUBLISH or will payload accepted, in bytes; AWS IoT allows 128 KB. */
        maxPayloadBytes: z.int().min(1).max(268_435_455).default(131_072),
        /** Most messages queued for one persistent session; more are dropped for that session and counted. */
        maxQueuedPerSession: z.int().min(1).max(10_000_000).default(5000),
        /** How long a new TCP connection may take to send CONNECT. */
        connectTimeoutMs: z.int().min(100).max(600_000).default(30_000),
        /** Packets a client may send before its CONNECT has been fully processed (aedes' queueLimit). */
        queueLimit: z.int().min(1).max(1_000_000).default(1000),
      })
      .strict()
      .prefault({}),
    shadows: z
      .object({
        /** Largest state document (desired + reported, no metadata) in bytes; AWS IoT: 8 KB. */
        maxStateBytes: z.int().min(256).max(1_048_576).default(8192),
        /** Updates/deletes of one shadow waiting for their commit before more are refused with 429. */
        maxInFlightPerShadow: z.int().min(1).max(100_000).default(100),
        /**
         * MQTT client ids allowed to update or delete the coordinator's own shadows (its `deployment`
         * shadow) over MQTT: an operator console or a bridge playing the cloud. None by default — the CLI and
         * the cloud link use the in-process API. As trustworthy as the listener's authentication.
         */
        controlClients: z.array(z.string().min(1)).default([]),
        /**
         * How long after a change the shadow journal is folded into the documents (src/shadow/journal.ts):
         * shorter = less to replay at start-up, more document writes.
         */
        compactAfterMs: z.int().min(10).max(600_000).default(1000),
        /** Changes journaled since the last compaction that start one at once. */
        compactAfterChanges: z.int().min(100).max(10_000_000).default(20_000),
      })
      .strict()
      .prefault({}),
    tasks: z
      .object({
        /** A folder of task folders (task.json + source) loaded at start-up; none by default. */
        dir: filePath.optional(),
        /** Invocations running at once across all tasks; default: the number of CPU cores. */
        slots: z.int().min(1).max(256).optional(),
        /** Isolates kept warm per on-demand task version. */
        minWarm: z.int().min(0).max(64).default(1),
        /** Idle isolates beyond minWarm are disposed after this long. */
        idleMs: z.int().min(1000).max(86_400_000).default(60_000),
        /** Largest result of one invocation (JSON), bytes. */
        maxResultBytes: z.int().min(1024).max(16_777_216).default(65_536),
        /** Most publishes one invocation may make. */
        maxPublishesPerInvocation: z.int().min(1).max(1_000_000).default(100),
        /** Most publishes per second of one task outside invocations (timers of pinned tasks). */
        maxPublishesPerSecond: z.int().min(1).max(1_000_000).default(100),
        /** Most pending timers in one isolate. */
        maxTimers: z.int().min(1).max(10_000).default(64),
        /** Most log lines one invocation may write. */
        maxLogLines: z.int().min(1).max(100_000).default(200),
        /** Log lines kept per task for `coordinator tasks logs`. */
        logRing: z.int().min(10).max(100_000).default(1000),
        /** Largest single ctx.state value (its JSON), bytes; refused inside the sandbox before it is copied out. */
        maxStateValueBytes: z.int().min(64).max(16_777_216).default(262_144),
        /** Most bytes of ctx.state (keys + JSON values) per task. */
        stateMaxBytes: z.int().min(1024).max(104_857_600).default(1_048_576),
        /** First delay before restarting a dead task host; doubles up to 5 s. */
        hostRestartDelayMs: z.int().min(10).max(60_000).default(100),
      })
      .strict()
      .prefault({}),
    deployments: z
      .object({
        /** After the switch, how long a new deployment is watched; a task going BROKEN in it rolls back. */
        healthWindowMs: z.int().min(0).max(3_600_000).default(10_000),
        /** Longest a deployment may take from start to switch (fetch + load) before it fails. */
        timeoutMs: z.int().min(1000).max(3_600_000).default(300_000),
        /** In-flight invocations of replaced task versions may finish for this long before they are cancelled. */
        drainMs: z.int().min(0).max(600_000).default(5000),
        /** A deployment interrupted by this many coordinator restarts is abandoned (no crash loop). */
        maxAttempts: z.int().min(1).max(100).default(3),
        /** Sum of the tasks' memory limits (memoryMb × concurrency; pinned: memoryMb) a deployment may ask for. */
        memoryBudgetMb: z.int().min(8).max(1_048_576).default(1024),
        /** The widest permissions any deployed task may be granted: every filter a task asks for must lie inside one. */
        maxGrants: z
          .object({
            publish: z.array(grantFilter).default(['#']),
            subscribe: z.array(grantFilter).default(['#']),
            shadows: z.array(z.string().min(1)).default(['#']),
            devices: z.array(z.string().min(1)).default(['#']),
          })
          .strict()
          .prefault({}),
        /** ed25519 public keys (PEM text, or paths of PEM files) whose bundle signatures are trusted. */
        trustedKeys: z.array(z.string().min(1)).default([]),
        /** Refuse bundles without a valid signature by a trusted key. */
        requireSignatures: z.boolean().default(false),
        fetch: z
          .object({
            /** Time limit of one download attempt, connect to last byte. */
            timeoutMs: z.int().min(100).max(3_600_000).default(30_000),
            /** Largest bundle accepted, bytes. */
            maxBytes: z.int().min(1024).max(1_073_741_824).default(5_242_880),
            /** Further attempts after a failed download (network errors, timeouts, 5xx). */
            retries: z.int().min(0).max(20).default(3),
            /** First delay between attempts; doubles each time, with jitter. */
            backoffMs: z.int().min(10).max(600_000).default(1000),
            /** PEM files of the CAs https:// bundle servers must chain to; when set they replace the system roots. */
            trustRoots: z.array(filePath).optional(),
          })
          .strict()
          .prefault({}),
        /** Finished deployments kept in the history (their bundles stay cached while kept). */
        historySize: z.int().min(2).max(10_000).default(20),
      })
      .strict()
      .prefault({}),
    devices: z
      .object({
        /**
         * Where devices may log in with a development password: `loopback` (default: only on listeners
         * bound to a loopback address), `always`, or `never`.
         */
        passwordAuth: z.enum(['loopback', 'always', 'never'], { error: 'is not a password-login mode' }).default('loopback'),
        /** Validity of device certificates issued by `coordinator devices add`, in days. */
        certDays: z.int().min(1).max(3650).default(825),
        /** Policy groups granting devices topics beyond their default grant. */
        policies: z.array(policyGroup).default([]),
        /** Folder of device profiles (one JSON file per device model); default: the shipped profiles/. */
        profilesDir: filePath.optional(),
      })
      .strict()
      .prefault({}),
    cloud: z
      .object({
        /** The upstream MQTT service: mqtts://<endpoint>:8883 for AWS IoT Core, mqtt(s)://host:port for any broker; unset: no cloud link. */
        url: z.string().regex(/^mqtts?:\/\/[^/]+$/, 'must be mqtt://host:port or mqtts://host:port').optional(),
        /** MQTT client id upstream; default the coordinator's thing name (AWS IoT policies usually require that). */
        clientId: z.string().min(1).max(128).optional(),
        /** CA bundle (PEM) the upstream's server certificate must chain to; default the system roots. */
        caFile: filePath.optional(),
        /** Client certificate and key (PEM) for mutual TLS (AWS IoT Core). */
        certFile: filePath.optional(),
        keyFile: filePath.optional(),
        username: z.string().optional(),
        /** A secret: masked by `config print`. */
        password: z.string().optional(),
        keepaliveS: z.int().min(5).max(1200).default(30),
        /** Reconnect delays: full jitter over an exponential ceiling from min to max. */
        reconnectMinMs: z.int().min(10).max(600_000).default(1000),
        reconnectMaxMs: z.int().min(100).max(3_600_000).default(60_000),
        connectTimeoutMs: z.int().min(100).max(600_000).default(10_000),
        /** How long a shadow request upstream may wait for its answer. */
        requestTimeoutMs: z.int().min(100).max(600_000).default(10_000),
        /** Most bytes the durable spool of cloud-bound messages holds; beyond, the oldest are evicted (and counted). */
        spoolMaxBytes: z.int().min(4096).max(10_737_418_240).default(10_485_760),
        /**
         * A spooled message is set aside (dead-letter table, counted `rejected`) once the upstream has closed
         * the connection this many times in a row while that message alone was in flight (docs/cloud.md); 0: never.
         */
        spoolRejectAfterDrops: z.int().min(0).max(1000).default(5),
        /** Cloud topics the gateway subscribes to; their messages follow the routes whose source is `cloud`. */
        subscribe: z.array(z.string().min(1)).default([]),
        /** Shadows synced besides the coordinator's own deployment shadow. */
        shadows: z
          .array(
            z
              .object({
                thing: z.string().min(1).max(128),
                name: z.string().min(1).max(64).optional(),
                direction: z.enum(['both', 'device-to-cloud', 'cloud-to-device']).default('both'),
              })
              .strict(),
          )
          .default([]),
      })
      .strict()
      .superRefine((c, ctx) => {
        if ((c.certFile === undefined) !== (c.keyFile === undefined)) ctx.addIssue({ code: 'custom', path: ['keyFile'], message: 'certFile and keyFile go together' });
        // TLS files with a plain mqtt:// URL would be ignored silently: the operator meant mqtts://.
        if (c.url?.startsWith('mqtt://')) {
          for (const key of ['caFile', 'certFile', 'keyFile'] as const) {
            if (c[key] !== undefined) ctx.addIssue({ code: 'custom', path: [key], message: 'needs an mqtts:// cloud.url (TLS)' });
          }
        }
        if (c.reconnectMaxMs < c.reconnectMinMs) ctx.addIssue({ code: 'custom', path: ['reconnectMaxMs'], message: 'must be at least reconnectMinMs' });
      })
      .prefault({}),
    admin: z
      .object({
        /** Unix socket of the admin channel; default `<dataDir>/coordinator.sock`. */
        socketPath: filePath.optional(),
      })
      .strict()
      .prefault({}),
    /** Upper bound of a graceful shutdown before the process exits anyway. */
    shutdownTimeoutMs: z.int().min(100).max(60_000).default(1500),
    memory: z
      .object({
        /**
         * `fixed`: V8's young generation stays at the size node starts it with
         * (2 × 1 MiB) instead of letting it grow to 2 × 16 MiB under load: the coordinator's largest
         * avoidable RSS with many devices (docs/configuration.md, "Memory"). `adaptive`: V8's default.
         */
        youngGeneration: z.enum(['fixed', 'adaptive'], { error: 'is not a young-generation mode' }).default('fixed'),
      })
      .strict()
      .prefault({}),
  })
  .strict();

/** The validated, defaulted configuration. */
export type CoordinatorConfig = z.output<typeof configSchema>;
/** What a config file (or any source) may contain: every key optional. */
export type CoordinatorConfigInput = z.input<typeof configSchema>;

/** Paths (dot-separated) whose values are secrets and are masked when printed. */
export const SECRET_PATHS: readonly string[] = ['listeners.mqtts.passphrase', 'cloud.password'];
