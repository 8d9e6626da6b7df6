#!/usr/bin/env node
/** The `coordinator` command: parse, call, print; nothing else. Each command loads only what it needs. */
import { VERSION } from '../version.js';
import { parseCommandLine, type CommandSpec } from './args.js';
import { CONFIG_OPTIONS, configFromFlags, reportError } from './common.js';
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
