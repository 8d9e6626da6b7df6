#!/usr/bin/env node
/** The `coordinator` command: parse, call, print; nothing else. Each command loads only what it needs. */
import { VERSION } from '../version.js';
import { parseCommandLine, type CommandSpec } from './args.js';
import { CONFIG_OPTIONS, configFromFlags, reportError } from './common.js';

const PROGRAM = 'coordinator';
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
