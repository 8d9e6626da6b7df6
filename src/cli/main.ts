#!/usr/bin/env node
/** The `coordinator` command: parse, call, print; nothing else. Each command loads only what it needs. */
// First: it pins V8's young generation before anything else loads (see the module).
import './young-generation.js';
// Second: switched-off `debug` loggers of mqtt-packet and MQTT.js become free (see the module).
import '../log/quiet-debug.js';
import { VERSION } from '../version.js';
import { parseCommandLine, type CommandSpec } from './args.js';
import { CONFIG_OPTIONS, configFromFlags, reportError } from './common.js';
import type * as DeployCli from './deploy.js';
import type * as DevicesCli from './devices.js';
import type * as KeysCli from './keys.js';
import type * as ShadowCli from './shadow.js';
import type * as TasksCli from './tasks.js';

const PROGRAM = 'coordinator';

const SOCKET_OPTION = { socket: { type: 'string', value: '<path>', description: 'admin socket (default <data-dir>/coordinator.sock)' } } as const;
const NAME_OPTION = { name: { type: 'string', value: '<shadow>', description: 'a named shadow (default: the classic shadow)' } } as const;

function shadowCommands(): CommandSpec[] {
  const load = (): Promise<typeof ShadowCli> => import('./shadow.js');
  return [
    {
      words: ['shadow', 'get'],
      args: ['<thing>'],
      summary: "print a shadow's document (desired, reported, delta, metadata, version)",
      options: { ...CONFIG_OPTIONS, ...SOCKET_OPTION, ...NAME_OPTION },
      run: async (values, [thing]) => (await load()).runShadowGet(thing!, values),
    },
    {
      words: ['shadow', 'update'],
      args: ['<thing>'],
      summary: 'update a shadow: --state \'{"desired":{...}}\' or --file REQUEST.json',
      options: {
        ...CONFIG_OPTIONS,
        ...SOCKET_OPTION,
        ...NAME_OPTION,
        state: { type: 'string', value: '<json>', description: 'the state change, e.g. {"desired":{"on":true}}' },
        file: { type: 'string', value: '<file>', description: 'a whole update request document {state, version?, clientToken?}' },
        version: { type: 'string', value: '<n>', description: 'apply only if the shadow is at this version (409 otherwise)' },
      },
      run: async (values, [thing]) => (await load()).runShadowUpdate(thing!, values),
    },
    {
      words: ['shadow', 'delete'],
      args: ['<thing>'],
      summary: 'delete a shadow (its version continues if it is created again)',
      options: { ...CONFIG_OPTIONS, ...SOCKET_OPTION, ...NAME_OPTION },
      run: async (values, [thing]) => (await load()).runShadowDelete(thing!, values),
    },
    {
      words: ['shadow', 'list'],
      summary: 'list shadows as thing or thing/name',
      options: { ...CONFIG_OPTIONS, ...SOCKET_OPTION, thing: { type: 'string', value: '<thing>', description: 'only this thing' } },
      run: async (values) => (await load()).runShadowList(values),
    },
    {
      words: ['shadow', 'export'],
      args: ['<dir>'],
      summary: 'write one JSON file per shadow into DIR (the seed format)',
      options: { ...CONFIG_OPTIONS, ...SOCKET_OPTION },
      run: async (values, [dir]) => (await load()).runShadowExport(dir!, values),
    },
  ];
}
function taskCommands(): CommandSpec[] {
  const load = (): Promise<typeof TasksCli> => import('./tasks.js');
  const json = { json: { type: 'boolean', description: 'print JSON' } } as const;
  return [
    {
      words: ['tasks', 'list'],
      summary: 'list installed tasks: version, lifecycle, state (INSTALLED, RUNNING, ERRORED, BROKEN), counters',
      options: { ...CONFIG_OPTIONS, ...SOCKET_OPTION, ...json },
      run: async (values) => (await load()).runTasksList(values),
    },
    {
      words: ['tasks', 'show'],
      args: ['<name>'],
      summary: "print one task: state, counters, manifest, isolates and heap",
      options: { ...CONFIG_OPTIONS, ...SOCKET_OPTION },
      run: async (values, [name]) => (await load()).runTasksShow(name!, values),
    },
    {
      words: ['tasks', 'logs'],
      args: ['<name>'],
      summary: "print a task's recent log lines (console.*, ctx.log.*, failures)",
      options: { ...CONFIG_OPTIONS, ...SOCKET_OPTION, ...json, follow: { type: 'boolean', description: 'keep printing new lines until interrupted' } },
      run: async (values, [name]) => (await load()).runTasksLogs(name!, values),
    },
    {
      words: ['invoke'],
      args: ['<name>'],
      summary: 'invoke a task with {"type":"invoke","payload":...} and print its result',
      options: {
        ...CONFIG_OPTIONS,
        ...SOCKET_OPTION,
        payload: { type: 'string', value: '<json>', description: 'the payload (JSON), default null' },
        timeout: { type: 'string', value: '<ms>', description: 'how long to wait for the result (default 60000)' },
      },
      run: async (values, [name]) => (await load()).runInvoke(name!, values),
    },
  ];
}

function deployCommands(): CommandSpec[] {
  const load = (): Promise<typeof DeployCli> => import('./deploy.js');
  const json = { json: { type: 'boolean', description: 'print JSON' } } as const;
  const follow = {
    noWait: { type: 'boolean', description: 'return once requested instead of following the deployment to its end' },
    timeout: { type: 'string', value: '<ms>', description: 'how long to follow it (default 600000)' },
  } as const;
  return [
    {
      words: ['deploy'],
      args: ['<task-dir>'],
      variadic: true,
      summary: 'bundle task folders and deploy them as the whole task set (the local path of a cloud deployment)',
      options: { ...CONFIG_OPTIONS, ...SOCKET_OPTION, ...json, ...follow, id: { type: 'string', value: '<id>', description: 'deployment id (default local-<digest>)' } },
      run: async (values, dirs) => (await load()).runDeploy(dirs, values),
    },
    {
      words: ['deployment', 'status'],
      summary: 'show the desired deployment, the reported outcome and the running tasks',
      options: { ...CONFIG_OPTIONS, ...SOCKET_OPTION, ...json },
      run: async (values) => (await load()).runDeploymentStatus(values),
    },
    {
      words: ['deployment', 'history'],
      summary: 'list the deployments the gateway took up, newest first',
      options: { ...CONFIG_OPTIONS, ...SOCKET_OPTION, ...json, limit: { type: 'string', value: '<n>', description: 'how many (default 20)' } },
      run: async (values) => (await load()).runDeploymentHistory(values),
    },
    {
      words: ['deployment', 'rollback'],
      summary: 'deploy again the last successful deployment before the running one',
      options: { ...CONFIG_OPTIONS, ...SOCKET_OPTION, ...json, ...follow },
      run: async (values) => (await load()).runDeploymentRollback(values),
    },
    {
      words: ['bundle'],
      args: ['<task-dir>'],
      summary: "bundle a task folder into one file and print its deployment document entry (sha256, signature)",
      options: {
        out: { type: 'string', value: '<file>', description: 'where to write the bundle (default <name>-<version>.js)' },
        url: { type: 'string', value: '<url>', description: 'the URL the bundle will be served from, for the printed entry' },
        key: { type: 'string', value: '<file>', description: 'ed25519 private key (PEM) to sign the bundle with' },
      },
      run: async (values, [dir]) => (await load()).runBundle(dir!, values),
    },
  ];
}

function shadowServiceCommands(): CommandSpec[] {
  return [
    {
      words: ['shadow-service'],
      summary: 'serve AWS-compatible device shadows on another MQTT broker (Mosquitto, a cluster, a coordinator), as its client; Ctrl-C stops it',
      options: {
        broker: { type: 'string', value: '<url>', description: 'the broker: mqtt://host:1883, mqtts://host:8883 (also tcp, ssl, ws, wss)' },
        dataDir: { type: 'string', value: '<dir>', description: "the service's own data directory: database, admin socket, client id (default ./shadow-service)" },
        clientId: { type: 'string', value: '<id>', description: 'MQTT client id of its persistent session (default: generated once, kept in <data-dir>/client-id)' },
        username: { type: 'string', value: '<user>', description: 'MQTT user name' },
        password: { type: 'string', value: '<password>', description: 'MQTT password (or the SHADOW_SERVICE_PASSWORD environment variable, kept out of ps)' },
        ca: { type: 'string', value: '<file>', description: "PEM CA certificate(s) to verify the broker's certificate" },
        cert: { type: 'string', value: '<file>', description: 'PEM client certificate (with --key)' },
        key: { type: 'string', value: '<file>', description: 'PEM private key of the client certificate' },
        logLevel: { type: 'string', value: '<level>', description: 'fatal, error, warn, info, debug, trace or silent (default info)' },
      },
      run: async (values) => (await import('./shadow-service.js')).runShadowService(values),
    },
  ];
}

function cloudCommands(): CommandSpec[] {
  return [
    {
      words: ['cloud', 'status'],
      summary: "show the cloud link: state (connecting, connected, offline), last error, sync counters, synced shadows",
      options: { ...CONFIG_OPTIONS, ...SOCKET_OPTION, json: { type: 'boolean', description: 'print JSON' } },
      run: async (values) => (await import('./cloud.js')).runCloudStatus(values),
    },
  ];
}

function simulateCommands(): CommandSpec[] {
  return [
    {
      words: ['simulate'],
      summary: 'run N simulated devices of a profile against the running coordinator, over mutual TLS (Ctrl-C stops them)',
      options: {
        ...CONFIG_OPTIONS,
        ...SOCKET_OPTION,
        devices: { type: 'string', value: '<n>', description: 'how many devices (default 1)' },
        profile: { type: 'string', value: '<profile>', description: 'smart-plug, relay-board, env-sensor, or a profile of devices.profilesDir' },
        prefix: { type: 'string', value: '<name>', description: 'thing names are <name>-1 … <name>-N (default sim-<profile>)' },
        telemetryMs: { type: 'string', value: '<ms>', description: 'telemetry period, 0 for none (default 5000)' },
        certs: { type: 'string', value: '<dir>', description: 'where device bundles are kept (default <data-dir>/simulated-devices)' },
        duration: { type: 'string', value: '<s>', description: 'stop after this many seconds (default: run until Ctrl-C)' },
      },
      run: async (values) => (await import('./simulate.js')).runSimulate(values),
    },
  ];
}

function deviceCommands(): CommandSpec[] {
  const load = (): Promise<typeof DevicesCli> => import('./devices.js');
  const json = { json: { type: 'boolean', description: 'print JSON' } } as const;
  return [
    {
      words: ['certs', 'init'],
      summary: "create the gateway's device CA and the TLS listener's server certificate in <data-dir>/pki/ (coordinator may be stopped)",
      options: {
        ...CONFIG_OPTIONS,
        hostname: { type: 'string', value: '<name>', multiple: true, description: 'a DNS name for the server certificate, besides localhost and this host name' },
        ip: { type: 'string', value: '<address>', multiple: true, description: 'an IP address for the server certificate, besides 127.0.0.1 and ::1' },
        days: { type: 'string', value: '<n>', description: 'validity of the server certificate in days (default 825)' },
        force: { type: 'boolean', description: 'replace existing PKI files (every issued device certificate stops working)' },
      },
      run: async (values) => (await import('./certs.js')).runCertsInit(values),
    },
    {
      words: ['devices', 'add'],
      args: ['<thing>'],
      summary: 'register a device, issue its key and certificate and write its bundle OUT/THING/ (cert.pem, key.pem, ca.pem, device.json)',
      options: {
        ...CONFIG_OPTIONS,
        ...SOCKET_OPTION,
        ...json,
        profile: { type: 'string', value: '<profile>', description: 'the device profile (device model)' },
        attr: { type: 'string', value: '<name=value>', multiple: true, description: 'an attribute policies can select on' },
        out: { type: 'string', value: '<dir>', description: 'where to write the bundle folder (default: the current directory)' },
        password: { type: 'boolean', description: 'also create a development password (printed once)' },
        days: { type: 'string', value: '<n>', description: 'certificate validity in days (default devices.certDays, 825)' },
      },
      run: async (values, [thing]) => (await load()).runDevicesAdd(thing!, values),
    },
    {
      words: ['devices', 'list'],
      summary: 'list registered devices: state, connected, last seen, profile, certificate expiry',
      options: { ...CONFIG_OPTIONS, ...SOCKET_OPTION, ...json },
      run: async (values) => (await load()).runDevicesList(values),
    },
    {
      words: ['devices', 'show'],
      args: ['<thing>'],
      summary: 'print one device with its attributes, presence and effective policy',
      options: { ...CONFIG_OPTIONS, ...SOCKET_OPTION },
      run: async (values, [thing]) => (await load()).runDevicesShow(thing!, values),
    },
    {
      words: ['devices', 'revoke'],
      args: ['<thing>'],
      summary: "revoke a device: its certificate and password are refused from now on and its live connection is closed",
      options: { ...CONFIG_OPTIONS, ...SOCKET_OPTION },
      run: async (values, [thing]) => (await load()).runDevicesRevoke(thing!, values),
    },
  ];
}

function keyCommands(): CommandSpec[] {
  const load = (): Promise<typeof KeysCli> => import('./keys.js');
  return [
    {
      words: ['keys', 'create'],
      summary: 'create an ed25519 key pair for signing bundles: DIR/signing-key.pem (0600) and DIR/signing-key.pub.pem',
      options: { out: { type: 'string', value: '<dir>', description: 'directory for the key files (default: the current directory); existing files are never overwritten' } },
      run: async (values) => (await load()).runKeysCreate(values),
    },
    {
      words: ['sign'],
      args: ['<file>'],
      summary: "print the base64 ed25519 signature of a bundle file (a deployment's bundle.signature), nothing else",
      options: { key: { type: 'string', value: '<private.pem>', description: 'the private key from `coordinator keys create`' } },
      run: async (values, [file]) => (await load()).runSign(file!, values),
    },
  ];
}

const DESCRIPTION = 'The edge coordinator: local MQTT broker, device shadows and sandboxed tasks for a gateway.';

const COMMANDS: readonly CommandSpec[] = [
  {
    words: ['start'],
    summary: 'run the coordinator in the foreground (this is what `npm start` does)',
    options: CONFIG_OPTIONS,
    run: async (values) => (await import('./start.js')).runStart(configFromFlags(values)),
  },
  {
    words: ['status'],
    summary: "show the running coordinator's version, uptime, listeners, clients and store health",
    options: {
      ...CONFIG_OPTIONS,
      json: { type: 'boolean', description: 'print JSON' },
      socket: { type: 'string', value: '<path>', description: 'admin socket (default <data-dir>/coordinator.sock)' },
    },
    run: async (values) => (await import('./status.js')).runStatus(values),
  },
  ...shadowCommands(),
  ...taskCommands(),
  ...deployCommands(),
  ...keyCommands(),
  ...deviceCommands(),
  ...simulateCommands(),
  ...cloudCommands(),
  ...shadowServiceCommands(),
  {
    words: ['config', 'check'],
    args: ['<file>'],
    summary: 'validate a configuration file: exit 0 if valid, 78 with every problem listed if not',
    run: async (_values, [file]) => (await import('./config-commands.js')).runConfigCheck(file!),
  },
  {
    words: ['config', 'print'],
    summary: 'print the effective configuration (defaults + file + environment + flags), secrets masked',
    options: CONFIG_OPTIONS,
    run: async (values) => (await import('./config-commands.js')).runConfigPrint(values),
  },
];

async function main(argv: string[]): Promise<void> {
  try {
    const parsed = parseCommandLine(PROGRAM, DESCRIPTION, COMMANDS, argv);
    if (parsed.kind === 'help') process.stdout.write(parsed.text);
    else if (parsed.kind === 'version') process.stdout.write(`${VERSION}\n`);
    else await parsed.command.run(parsed.values, parsed.positionals);
  } catch (err) {
    process.exit(reportError(err));
  }
}

await main(process.argv.slice(2));
