/** Pieces every CLI command shares: the config flags, exit codes and error printing. */
import type { OptionSpec } from './args.js';
import { compileCoordinatorOptions, type ConfigOverride } from '../config/load.js';
import type { CoordinatorConfig } from '../config/schema.js';
import { isCoordinatorError, type ErrorCode } from '../errors.js';

/** Process exit codes (sysexits.h where one fits). */
export const EXIT = { ok: 0, failure: 1, usage: 64, unavailable: 69, config: 78 } as const;

/** Flags that select or override configuration, shared by start, config print and status. */
export interface ConfigFlags {
  config?: string;
  dataDir?: string;
  mqttPort?: string;
  mqttHost?: string;
  thingName?: string;
  logLevel?: string;
  tasksDir?: string;
}

/** The configuration flags, shared by start, config print and status. */
export const CONFIG_OPTIONS: Readonly<Record<keyof ConfigFlags, OptionSpec>> = {
  config: { type: 'string', value: '<file>', description: 'JSON configuration file (also COORDINATOR_CONFIG)' },
  dataDir: { type: 'string', value: '<dir>', description: 'data directory: database, admin socket (default ./device-shadows)' },
  mqttPort: { type: 'string', value: '<n>', description: 'port of the MQTT listener; 0 picks a free port (default 1883)' },
  mqttHost: { type: 'string', value: '<host>', description: 'address of the MQTT listener (default 127.0.0.1)' },
  thingName: { type: 'string', value: '<name>', description: "the coordinator's own thing name (default from the host name)" },
  logLevel: { type: 'string', value: '<level>', description: 'fatal, error, warn, info, debug, trace or silent (default info)' },
  tasksDir: { type: 'string', value: '<dir>', description: 'load the task folders in DIR at start-up (e.g. tasks/, the examples)' },
};

/** A decimal integer flag becomes a number; anything else stays a string so validation reports it as given. */
function numeric(value: string): number | string {
  return /^-?\d+$/.test(value) ? Number(value) : value;
}

/** Turns the flags into config overrides, labelled with the flag that set each. */
export function overridesFrom(flags: ConfigFlags): ConfigOverride[] {
  const o: ConfigOverride[] = [];
  if (flags.dataDir !== undefined) o.push({ path: 'dataDir', value: flags.dataDir, source: '--data-dir' });
  if (flags.mqttPort !== undefined) o.push({ path: 'listeners.mqtt.port', value: numeric(flags.mqttPort), source: '--mqtt-port' });
  if (flags.mqttHost !== undefined) o.push({ path: 'listeners.mqtt.host', value: flags.mqttHost, source: '--mqtt-host' });
  if (flags.thingName !== undefined) o.push({ path: 'thingName', value: flags.thingName, source: '--thing-name' });
  if (flags.logLevel !== undefined) o.push({ path: 'logLevel', value: flags.logLevel, source: '--log-level' });
  if (flags.tasksDir !== undefined) o.push({ path: 'tasks.dir', value: flags.tasksDir, source: '--tasks-dir' });
  return o;
}

/** The effective configuration for a command's flags (file + environment + flags). */
export function configFromFlags(flags: ConfigFlags): CoordinatorConfig {
  return compileCoordinatorOptions({ file: flags.config, overrides: overridesFrom(flags) });
}

const EXIT_BY_CODE: Partial<Record<ErrorCode, number>> = {
  COORD_ERR_CONFIG_INVALID: EXIT.config,
  COORD_ERR_CONFIG_FILE_UNREADABLE: EXIT.config,
  COORD_ERR_CONFIG_FILE_PARSE: EXIT.config,
  COORD_ERR_CLI_USAGE: EXIT.usage,
  COORD_ERR_ADMIN_UNREACHABLE: EXIT.unavailable,
  COORD_ERR_DATA_DIR_IN_USE: EXIT.unavailable,
  COORD_ERR_BROKER_LISTEN: EXIT.unavailable,
};

/** Prints an error as `coordinator: CODE: message` on stderr and returns the exit code it maps to. */
export function reportError(err: unknown): number {
  if (isCoordinatorError(err)) {
    process.stderr.write(`coordinator: ${err.code}: ${err.message}\n`);
    return EXIT_BY_CODE[err.code] ?? EXIT.failure;
  }
  process.stderr.write(`coordinator: COORD_ERR_INTERNAL: ${(err as Error)?.stack ?? String(err)}\n`);
  return EXIT.failure;
}
