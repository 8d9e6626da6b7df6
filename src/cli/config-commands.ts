/** `coordinator config check FILE` and `coordinator config print`. */
import { compileCoordinatorOptions } from '../config/load.js';
import { maskSecrets } from '../config/mask.js';
import { configFromFlags, type ConfigFlags } from './common.js';

/** Validates one config file on its own (defaults applied, environment and flags ignored). */
export function runConfigCheck(file: string): void {
  compileCoordinatorOptions({ file, env: {} });
  process.stdout.write(`ok: ${file} is a valid coordinator configuration\n`);
}

/** Prints the effective configuration as JSON, secrets masked. */
export function runConfigPrint(flags: ConfigFlags): void {
  process.stdout.write(`${JSON.stringify(maskSecrets(configFromFlags(flags)), null, 2)}\n`);
}
