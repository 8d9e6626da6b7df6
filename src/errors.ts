/**
 * The one registry of error codes the coordinator raises (DESIGN.md §5).
 *
 * Every code is stable: operators grep logs for it, scripts match on it, docs/errors.md documents it
 * (a test keeps the two in step). Add a code here, then document it there; never reuse a retired code.
 */

/** Description and remedy of one error code. */
export interface ErrorSpec {
  /** What went wrong, in one sentence. */
  readonly meaning: string;
  /** What the operator or client should do about it. */
  readonly remedy: string;
}

/** Every error code, with its meaning and remedy. */
export const ERRORS = {
  COORD_ERR_CONFIG_INVALID: {
    meaning: 'The effective configuration (file + environment + flags) failed validation.',
    remedy: 'Fix every listed path; `coordinator config check FILE` shows the same report without starting.',
  },
  COORD_ERR_CONFIG_FILE_UNREADABLE: {
    meaning: 'The configuration file named by --config or COORDINATOR_CONFIG could not be read.',
    remedy: 'Check the path and its permissions.',
  },
  COORD_ERR_CONFIG_FILE_PARSE: {
    meaning: 'The configuration file is not valid JSON.',
    remedy: 'Fix the JSON syntax at the reported position.',
  },
  COORD_ERR_CLI_USAGE: {
    meaning: 'The command line was not understood (unknown command, flag or argument).',
    remedy: 'Run `coordinator --help` or `coordinator <command> --help`.',
  },
  COORD_ERR_DATA_DIR: {
    meaning: 'The data directory could not be created or is not writable.',
    remedy: 'Choose a writable directory with --data-dir or fix its permissions.',
  },
  COORD_ERR_DATA_DIR_IN_USE: {
    meaning: 'Another coordinator is already running on this data directory.',
    remedy: 'Stop the other coordinator, or give this one its own --data-dir.',
  },
  COORD_ERR_STORE_OPEN: {
    meaning: 'The embedded database could not be opened or migrated.',
    remedy: 'Check disk space and permissions of the data directory; restore the database file from a backup if it is corrupt.',
  },
  COORD_ERR_STORE_RESTORE: {
    meaning:
      'A stored row could not be restored at start-up and was skipped: a broker row (retained message, queued message, subscription), or a shadow journal record that does not follow on from its shadow (the shadow keeps the state before it).',
    remedy: 'The log line names the row or the shadow; the rest of the state was restored and the coordinator runs. Only damage to the database file outside the coordinator causes it.',
  },
  COORD_ERR_STORE_WRITE: {
    meaning: 'A durable write failed; the change it carried was not acknowledged.',
    remedy: 'Check disk space and health; the client may retry.',
  },
  COORD_ERR_STORE_CLOSED: {
    meaning: 'A write reached the store after it was closed (during shutdown).',
    remedy: 'None: the change was not acknowledged and the client will retry after restart.',
  },
  COORD_ERR_BROKER_LISTEN: {
    meaning: 'A broker listener could not bind its address and port.',
    remedy: 'Pick another port (--mqtt-port, 0 picks a free one) or stop the process holding it.',
  },
  COORD_ERR_BROKER_QUEUE_FULL: {
    meaning: 'A persistent session already had broker.maxQueuedPerSession messages queued; a new message was dropped for that session only.',
    remedy: 'Let the device reconnect and drain its queue, or raise broker.maxQueuedPerSession; `coordinator status` counts the drops.',
  },
  COORD_ERR_BROKER_TLS: {
    meaning: 'The TLS listener could not load its certificate, key or CA.',
    remedy: 'Check listeners.mqtts.certFile / keyFile / caFile and the passphrase.',
  },
  COORD_ERR_BROKER_PATCH_FAILED: {
    meaning: 'A patch the broker applies to aedes, mqtt-packet or aedes-persistence internals did not take effect, or a version other than the one package.json pins is installed (e.g. after an upgrade); the coordinator refused to start, before any listener bound.',
    remedy: 'Install the exact versions package.json pins (`npm install`); the message names the patch. If it persists with those versions, report it.',
  },
  COORD_ERR_MQTT_CLIENT_ID: {
    meaning: 'A CONNECT was refused with return code 0x02 (identifier rejected): an empty client id with cleanSession=0, or one longer than the configured limit.',
    remedy: 'Use a non-empty client id of at most broker.maxClientIdBytes bytes (AWS IoT allows 128).',
  },
  COORD_ERR_MQTT_NOT_AUTHORIZED: {
    meaning: 'A CONNECT was refused with return code 0x05 (not authorized): anonymous clients are not accepted on this listener.',
    remedy: 'Connect to a loopback listener in development, or present device credentials.',
  },
  COORD_ERR_MQTT_PUBLISH_DENIED: {
    meaning: 'A PUBLISH was refused by policy (for example a reserved `$` topic); the client is disconnected, as AWS IoT does.',
    remedy: 'Publish only to topics the client is granted.',
  },
  COORD_ERR_MQTT_PAYLOAD_TOO_LARGE: {
    meaning: 'A PUBLISH (or a will) carried a payload larger than broker.maxPayloadBytes; the client is disconnected, as AWS IoT does.',
    remedy: 'Send smaller payloads, or raise broker.maxPayloadBytes (AWS IoT allows 128 KB).',
  },
  COORD_ERR_MQTT_SUBSCRIBE_DENIED: {
    meaning: 'A SUBSCRIBE topic filter was refused by policy; the SUBACK carries 0x80 for it.',
    remedy: 'Subscribe only to topic filters the client is granted.',
  },
  COORD_ERR_MQTT_PROTOCOL: {
    meaning: 'A client broke the MQTT protocol (malformed packet, wildcard in a PUBLISH topic, ...); its connection was closed.',
    remedy: 'Fix the client; the message in the log names the violation.',
  },
  COORD_ERR_SHADOW_REJECTED: {
    meaning: "A shadow request was rejected on its /rejected topic with AWS's code and message (400 bad request, 404 no such shadow, 409 version conflict, 413 too large, 415 not UTF-8, 429 too many in flight, 500).",
    remedy: 'Fix the request as the message says; the log line names the thing, shadow, operation and status.',
  },
  COORD_ERR_SHADOW_SEED: {
    meaning: 'A seed shadow document (*.json in the data directory) could not be applied; it was skipped.',
    remedy: 'Fix the file named in the log: {"thingName", "shadowName"?, "state": {"desired"?, "reported"?}} with a valid state.',
  },
  COORD_ERR_SHADOW_SERVICE_BROKER: {
    meaning: '`coordinator shadow-service` cannot reach its broker, was refused by it, or lost the connection; it keeps retrying with backoff and its session keeps requests queued.',
    remedy: 'Check --broker, the credentials (--username/--password, --cert/--key) and the broker; the log line carries the broker error or CONNACK return code.',
  },
  COORD_ERR_SHADOW_SERVICE_SUBSCRIBE: {
    meaning: 'The broker refused the shadow-service subscription to the shadow request topics; requests on them are not served.',
    remedy: 'Grant its client id subscribe on $aws/things/+/shadow/{get,update,delete} and .../shadow/name/+/{get,update,delete}, and publish on $aws/things/#; it subscribes again on every connection.',
  },
  COORD_ERR_SHADOW_SERVICE_TLS: {
    meaning: 'A certificate, key or CA file given to `coordinator shadow-service` (--ca, --cert, --key) could not be read.',
    remedy: 'Check the paths and their permissions.',
  },
  COORD_ERR_TASK_UNKNOWN: {
    meaning: 'No task of that name is installed.',
    remedy: 'Check the name with `coordinator tasks list`.',
  },
  COORD_ERR_TASK_QUEUE_FULL: {
    meaning: "An invocation was refused because the task's queue already held limits.queueDepth invocations.",
    remedy: 'The task cannot keep up: raise its concurrency or queueDepth, make it faster, or send fewer events; `coordinator tasks show NAME` counts refusals.',
  },
  COORD_ERR_TASK_BROKEN: {
    meaning: 'An invocation was refused because the task is BROKEN (3 consecutive failed invocations).',
    remedy: 'Read `coordinator tasks logs NAME`, fix the task and deploy it again (a new deployment or a coordinator restart clears BROKEN).',
  },
  COORD_ERR_TASK_TIMEOUT: {
    meaning: 'An invocation ran longer than the task\'s limits.timeoutMs and was stopped; its isolate was recreated.',
    remedy: 'Make the task finish sooner (no busy loops, await what it starts) or raise limits.timeoutMs.',
  },
  COORD_ERR_TASK_MEMORY: {
    meaning: "An invocation exceeded the task's limits.memoryMb; its isolate was disposed and recreated.",
    remedy: 'Keep less in memory (state belongs in ctx.state) or raise limits.memoryMb.',
  },
  COORD_ERR_TASK_THREW: {
    meaning: 'The task threw an exception or returned a rejected promise.',
    remedy: 'The message and stack come from the task; fix the task.',
  },
  COORD_ERR_TASK_HOST_CRASHED: {
    meaning: "A task host process died while this task's code ran in it (a V8 fatal error); the crash is charged to the task, which moves to the isolation host, and the host restarts. Invocations of other tasks are run again and, if caught twice, fail with details.bystander, never counted against them.",
    remedy: 'Usually a V8 fatal error caused by a task: the log line before it names the host exit; the invocation may be retried.',
  },
  COORD_ERR_TASK_LOAD: {
    meaning: 'A task bundle could not be loaded: it failed to compile or evaluate, imports a module, or has no default export with onEvent.',
    remedy: 'Bundle the task as one ES module whose default export has onEvent(event, ctx) (`coordinator bundle DIR` checks it).',
  },
  COORD_ERR_TASK_DENIED: {
    meaning: "A task's host API call (publish, shadow, device) was outside the permissions its manifest grants; nothing was done.",
    remedy: 'Grant the topic or shadow in the task\'s permissions, or stop the task from making the call.',
  },
  COORD_ERR_TASK_BAD_CALL: {
    meaning: 'A task called the host API with invalid arguments (bad topic, non-JSON value, unknown method).',
    remedy: 'Fix the call as the message says; see docs/tasks.md for the ctx API.',
  },
  COORD_ERR_TASK_LIMIT: {
    meaning: 'A task exceeded a sandbox limit: result or payload size, publishes per invocation, pending timers, or state size.',
    remedy: 'Stay inside the limit named in the message (docs/tasks.md lists them) or raise it in the configuration.',
  },
  COORD_ERR_TASK_QUARANTINED: {
    meaning: 'A task crashed its task host process repeatedly (a V8 fatal error, an out-of-memory abort); it is stopped until it is deployed again, and the other tasks were not charged for the crashes.',
    remedy: '`coordinator tasks logs NAME` shows the crash messages; make the task allocate less per call (or raise limits.memoryMb) and deploy a new version.',
  },
  COORD_ERR_TASK_CANCELLED: {
    meaning: 'A queued or running invocation was cancelled because its task was replaced or removed, or the coordinator is stopping.',
    remedy: 'None needed; events sent after the new tasks are active reach them.',
  },
  COORD_ERR_TASK_MANIFEST: {
    meaning: 'A task folder has a missing or invalid task.json manifest, or two tasks share a name.',
    remedy: 'Fix every listed problem in the manifest (docs/tasks.md describes the format).',
  },
  COORD_ERR_TASK_BUNDLE: {
    meaning: "A task's TypeScript source could not be bundled (esbuild reported errors).",
    remedy: 'Fix the reported source errors; `coordinator bundle DIR` shows them without starting.',
  },
  COORD_ERR_ROUTE_INVALID: {
    meaning: 'A route or trigger is invalid: bad topic filter, bad cron expression or time zone, unknown source or target task.',
    remedy: 'Fix the route as the message says (docs/tasks.md, "Routes and triggers").',
  },
  COORD_ERR_BUNDLE_FETCH: {
    meaning: 'A task bundle could not be fetched: refused URL scheme, network or TLS failure, HTTP error status, bad redirect, unreadable file, malformed data: URL, or the bundle is not UTF-8 text; the message gives the URL (without credentials or query) and the attempts made.',
    remedy: 'Check the bundle URL and that its server is reachable and trusted (deployments.fetch.trustRoots); transient failures were already retried (deployments.fetch.retries).',
  },
  COORD_ERR_BUNDLE_TOO_LARGE: {
    meaning: 'A task bundle is larger than deployments.fetch.maxBytes (by its Content-Length, its file size or the bytes received).',
    remedy: 'Make the bundle smaller or raise deployments.fetch.maxBytes.',
  },
  COORD_ERR_BUNDLE_DIGEST: {
    meaning: "A task bundle's bytes do not hash to the sha256 the deployment names (or a cached copy was corrupt and was deleted).",
    remedy: 'Publish the sha256 of the exact bundle bytes the URL serves; a corrupt cached copy is fetched again on the next deployment.',
  },
  COORD_ERR_BUNDLE_SIGNATURE: {
    meaning: 'A task bundle signature is missing while deployments.requireSignatures is set, is malformed, or was not made by any key of deployments.trustedKeys.',
    remedy: 'Sign the exact bundle bytes with a trusted key (`coordinator sign FILE --key KEY.pem`) and put the output in bundle.signature.',
  },
  COORD_ERR_TRUSTED_KEY_INVALID: {
    meaning: 'A key of deployments.trustedKeys (or a signing key) is unreadable, not PEM, a private key where a public one belongs, or not an ed25519 key.',
    remedy: 'Use the public key written by `coordinator keys create` (signing-key.pub.pem), as PEM text or a file path.',
  },
  COORD_ERR_ADMIN_UNREACHABLE: {
    meaning: 'The CLI could not reach a running coordinator on the admin socket.',
    remedy: 'Start the coordinator, or point the CLI at its data directory with --data-dir / --config.',
  },
  COORD_ERR_ADMIN_LISTEN: {
    meaning: 'The admin socket could not be created.',
    remedy: 'Check that the data directory (or admin.socketPath) is writable.',
  },
  COORD_ERR_ADMIN_SOCKET_PATH: {
    meaning: 'The admin socket path is longer than the operating system allows for a Unix socket.',
    remedy: 'Set admin.socketPath to a shorter path, or use a shorter data directory.',
  },
  COORD_ERR_ADMIN_REQUEST: {
    meaning: 'The admin endpoint refused a request (unknown route or malformed body).',
    remedy: 'Use a CLI of the same version as the running coordinator.',
  },
  COORD_ERR_SHUTDOWN_TIMEOUT: {
    meaning: 'Graceful shutdown did not finish within shutdownTimeoutMs; the process exited anyway.',
    remedy: 'Look at the log lines before it for the component that hung.',
  },
  COORD_ERR_DEPLOY_REJECTED: {
    meaning: 'A desired deployment document was refused before anything changed: it fails the schema or a semantic rule, or a bundle failed its digest, signature or size check.',
    remedy: 'reported.problems of the deployment shadow lists every problem (path + message); fix them and write the document again under a new id.',
  },
  COORD_ERR_DEPLOY_RESERVED_TOPIC: {
    meaning: 'A task of a deployment (or a task set installed directly) asks to publish to, subscribe to, be triggered by or route a reserved $ topic ($aws/..., $SYS/...); the deployment was REJECTED and nothing changed.',
    remedy: 'Remove the $ filter: tasks reach shadows through ctx.shadow and shadowDelta triggers, never through the $aws topics.',
  },
  COORD_ERR_DEPLOY_FAILED: {
    meaning: 'A deployment could not be completed (a bundle could not be fetched, a task failed to load, restarts interrupted it too often); the previous deployment keeps running.',
    remedy: 'reported.reason says which step failed and why; fix the cause and write the document again under a new id.',
  },
  COORD_ERR_DEPLOY_TIMEOUT: {
    meaning: 'Fetching and loading a deployment took longer than deployments.timeoutMs; nothing was switched.',
    remedy: 'Check the bundle servers and the bundle sizes, or raise deployments.timeoutMs; write the document again under a new id.',
  },
  COORD_ERR_DEPLOY_UNHEALTHY: {
    meaning: 'A task of a new deployment went BROKEN, or a pinned task failed to start, during the health window; the gateway rolled back to the previous deployment.',
    remedy: '`coordinator tasks logs NAME` shows why the task failed; fix it and deploy a new version.',
  },
  COORD_ERR_DEPLOY_NO_PREVIOUS: {
    meaning: '`coordinator deployment rollback` found no earlier successful deployment to go back to.',
    remedy: '`coordinator deployment history` lists what the gateway kept; deploy the wanted task set explicitly.',
  },
  COORD_ERR_DEVICE_EXISTS: {
    meaning: 'A device with this thing name is already registered.',
    remedy: 'Pick another thing name, or `coordinator devices show THING` to see the existing one.',
  },
  COORD_ERR_DEVICE_PROFILE: {
    meaning: 'A device profile file is invalid, or a device names a profile that is not loaded.',
    remedy: 'Fix the listed profile files (docs/devices.md, "Device profiles"), or give the device a loaded profile.',
  },
  COORD_ERR_DEVICE_ACTION: {
    meaning: "A device action could not be carried out: the device's profile has no such action, a parameter is missing, or the device is revoked or has no profile.",
    remedy: "Check the action name and parameters against the device's profile.",
  },
  COORD_ERR_DEVICE_TIMEOUT: {
    meaning: 'A device did not answer a request action on its response topic within the time limit.',
    remedy: 'Check that the device is connected (`coordinator devices show THING`) and follows its profile.',
  },
  COORD_ERR_DEVICE_UNKNOWN: {
    meaning: 'No device with this thing name is registered.',
    remedy: '`coordinator devices list` shows the registered devices; `coordinator devices add THING` registers one.',
  },
  COORD_ERR_DEVICE_INVALID: {
    meaning: 'A device registration was refused: the thing name is not an AWS IoT thing name, or an attribute is malformed (--attr k=v).',
    remedy: 'Use 1–128 characters of [a-zA-Z0-9:_-] for the thing name and attribute names of [A-Za-z0-9_.-] (docs/devices.md).',
  },
  COORD_ERR_DEVICE_CERT_REFUSED: {
    meaning: 'The TLS listener refused a connection in the handshake: no client certificate, one not signed by the device CA, expired or not yet valid, or not made for client authentication; the log line gives the reason.',
    remedy: 'Connect with the cert.pem/key.pem bundle that `coordinator devices add` wrote, or issue a new one.',
  },
  COORD_ERR_DEVICE_NOT_AUTHORIZED: {
    meaning: 'A device CONNECT was refused with return code 0x05 (not authorized): its certificate is not registered or was revoked, the client id is not the thing name, a policy says connect: false, password login is not allowed on this listener, or an anonymous client used a registered device\'s client id; revoked devices are also disconnected at once.',
    remedy: 'The log line gives the reason: register the device (`coordinator devices add`), use the thing name as client id, or fix devices.policies / devices.passwordAuth.',
  },
  COORD_ERR_DEVICE_BAD_CREDENTIALS: {
    meaning: 'A CONNECT with a user name and password was refused with return code 0x04: no device of that name has a development password, or the password is wrong.',
    remedy: 'Use the thing name as user name and the password printed once by `coordinator devices add THING --password`.',
  },
  COORD_ERR_PKI_MISSING: {
    meaning: "The gateway's device CA (<dataDir>/pki/ca.pem and ca.key.pem) does not exist, so no device certificate can be issued.",
    remedy: 'Run `coordinator certs init` with the same --data-dir / --config as the coordinator.',
  },
  COORD_ERR_PKI_EXISTS: {
    meaning: '`coordinator certs init` found PKI files in the data directory and did not overwrite them.',
    remedy: 'Keep them, or pass --force to replace them: every device certificate issued by the old CA then stops working.',
  },
  COORD_ERR_CLOUD_OFFLINE: {
    meaning: 'The cloud link is down (or went down before an answer came); the gateway works on and catches up when it returns.',
    remedy: '`coordinator cloud status` shows the state and the last connection error; check the endpoint, credentials and network.',
  },
  COORD_ERR_CLOUD_TIMEOUT: {
    meaning: "The cloud's shadow service did not answer a request within cloud.requestTimeoutMs.",
    remedy: 'Check that the upstream runs a shadow service (AWS IoT Core, or `coordinator shadow-service`); the next reconnect reconciles.',
  },
  COORD_ERR_CLOUD_REJECTED: {
    meaning: "The cloud's shadow service rejected a sync request (its status and message are in the log line).",
    remedy: "Check the gateway's rights on the cloud (an AWS IoT policy must allow its shadow topics) and the document size limits.",
  },
  COORD_ERR_CLOUD_SYNC: {
    meaning: 'A shadow sync step failed; the shadow is reconciled again at the next connection.',
    remedy: 'Usually transient; if it repeats, the log line names the shadow and the cause.',
  },
  COORD_ERR_CLOUD_SPOOL_TOO_LARGE: {
    meaning: "A cloud-bound message (topic + payload + 32 bytes of bookkeeping) is larger than the cloud spool's whole byte limit; it was refused, not spooled.",
    remedy: "Send smaller messages to the cloud, or raise the cloud spool's byte limit.",
  },
  COORD_ERR_CLOUD_SPOOL_INVALID: {
    meaning: 'A cloud-bound message had a topic MQTT cannot publish (empty, wildcards, NUL, not UTF-8, over 65,535 bytes) or a QoS other than 0 or 1, or the spool was asked to ack a message it never held; nothing changed.',
    remedy: 'Publish to a plain topic name with QoS 0 or 1; an ack error is a bug of the cloud link: report it.',
  },
  COORD_ERR_CLOUD_SPOOL_REJECTED: {
    meaning: 'A cloud-bound message was set aside: the upstream closed the connection cloud.spoolRejectAfterDrops times in a row while that message alone was in flight, which is how AWS IoT Core answers a publish its policy refuses; it was moved to the bounded dead-letter table, counted as `rejected`, and the spool went on with the next message.',
    remedy: "The log line names the topic: grant the gateway's upstream identity publish rights on it (AWS IoT policy, or the upstream coordinator's devices.policies), or stop routing that topic to the cloud; `coordinator cloud status` lists the latest set-aside messages.",
  },
  COORD_ERR_CLOUD_AUTH: {
    meaning: "The upstream refused the cloud link's connection: CONNACK 2, 4 or 5 (client id, credentials or not authorized), or the TLS handshake failed over a certificate (none sent, one the upstream does not trust, or an upstream server certificate the gateway does not trust); the link stays down and retries with backoff.",
    remedy: 'Check cloud.certFile/cloud.keyFile (registered and active upstream, client id = thing name), cloud.caFile (the CA of the upstream server certificate) and cloud.username/password; `coordinator cloud status` shows the last error.',
  },
  COORD_ERR_CLOUD_TLS: {
    meaning: 'A file named by cloud.caFile, cloud.certFile or cloud.keyFile cannot be read, holds no PEM certificate or key, or the key does not belong to the certificate; the coordinator does not start.',
    remedy: 'Fix the path or the file named in the message (PEM certificate, unencrypted PEM private key, PEM CA bundle) and its permissions.',
  },
  COORD_ERR_INTERNAL: {
    meaning: 'An unexpected internal failure; the process stays up where it safely can.',
    remedy: 'Report it with the log lines around it.',
  },
} as const satisfies Record<string, ErrorSpec>;

/** A registered error code. */
export type ErrorCode = keyof typeof ERRORS;

/** An error carrying a registered code and optional structured details. */
export class CoordinatorError extends Error {
  /** The stable code from the registry. */
  readonly code: ErrorCode;
  /** Machine-readable context (paths, values, limits). */
  readonly details: Readonly<Record<string, unknown>> | undefined;

  constructor(code: ErrorCode, message: string, options?: { cause?: unknown; details?: Record<string, unknown> }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'CoordinatorError';
    this.code = code;
    this.details = options?.details;
  }
}

/** True when `err` is a CoordinatorError, optionally with the given code. */
export function isCoordinatorError(err: unknown, code?: ErrorCode): err is CoordinatorError {
  return err instanceof CoordinatorError && (code === undefined || err.code === code);
}
