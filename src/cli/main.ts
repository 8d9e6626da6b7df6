#!/usr/bin/env node
/** The `coordinator` command: parse, call, print; nothing else. */
import { Command, CommanderError } from 'commander';
import { CoordinatorError } from '../errors.js';
import { VERSION } from '../version.js';
import { EXIT, configFromFlags, reportError, withConfigFlags, type ConfigFlags } from './common.js';
import { runConfigCheck, runConfigPrint } from './config-commands.js';
import { runStart } from './start.js';
import { runStatus } from './status.js';

function buildProgram(): Command {
  const program = new Command('coordinator')
    .description('The edge coordinator: local MQTT broker, device shadows and sandboxed tasks for a gateway.')
    .version(VERSION, '-v, --version')
    .showHelpAfterError()
    .exitOverride();

  withConfigFlags(program.command('start').description('run the coordinator in the foreground (npm start)')).action(
    async (flags: ConfigFlags) => runStart(configFromFlags(flags)),
  );

  const config = program.command('config').description('check or print configuration');
  config
    .command('check')
    .argument('<file>', 'JSON configuration file')
    .description('validate a configuration file; exit 0 if valid, 78 with every problem listed if not')
    .action((file: string) => runConfigCheck(file));
  withConfigFlags(config.command('print').description('print the effective configuration (file + env + flags), secrets masked')).action(
    (flags: ConfigFlags) => runConfigPrint(flags),
  );

  withConfigFlags(program.command('status').description("show the running coordinator's status"))
    .option('--json', 'print JSON')
    .option('--socket <path>', 'admin socket (default <data-dir>/coordinator.sock)')
    .action(async (flags: ConfigFlags & { json?: boolean; socket?: string }) => runStatus(flags));

  // Every command's own parse errors exit through exitOverride too.
  for (const cmd of [program, ...program.commands, ...config.commands]) cmd.exitOverride();
  return program;
}

async function main(argv: string[]): Promise<void> {
  try {
    await buildProgram().parseAsync(argv);
  } catch (err) {
    if (err instanceof CommanderError) {
      // --help and --version end here too, with exit code 0.
      if (err.exitCode === 0) process.exit(EXIT.ok);
      process.exit(reportError(new CoordinatorError('COORD_ERR_CLI_USAGE', err.message.replace(/^error: /, ''))));
    }
    process.exit(reportError(err));
  }
}

await main(process.argv);
