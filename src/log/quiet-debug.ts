/**
 * Makes the `debug` library's switched-off loggers free.
 *
 * mqtt-packet (which aedes parses and writes every packet with) and MQTT.js (the cloud link) call their
 * `debug` loggers several times per packet. A logger whose namespace is off still takes its arguments
 * as a rest array and reads an `enabled` getter before returning, and those arrays were a tenth of
 * everything the coordinator allocated per shadow update (sampled allocation profile of
 * `npm run bench -- --only shadow-updates`), all of it work for V8's scavenger.
 *
 * Here `require('debug')(namespace)` returns the library's own logger when DEBUG enables the namespace
 * at the time the logger is created (every library creates its loggers when it loads), and a no-op
 * function otherwise. The one behaviour lost: turning a namespace on later through `debug.enable()`
 * does not reach loggers created before. This module must load before any library that uses `debug`:
 * the CLI imports it second, after the young-generation pin.
 */
import { createRequire } from 'node:module';

interface Debugger {
  (...args: unknown[]): void;
  enabled: boolean;
  namespace: string;
  log: unknown;
  extend(namespace: string, delimiter?: string): Debugger;
  destroy(): boolean;
}
type CreateDebug = ((namespace: string) => Debugger) & Record<string, unknown>;

const require = createRequire(import.meta.url);
/** Namespaces handed a no-op logger, for `quietedNamespaces()`. */
const quieted = new Set<string>();

/** The namespaces whose loggers were made no-ops so far (tests check the libraries are covered). */
export function quietedNamespaces(): string[] {
  return [...quieted];
}

/** Replaces the cached copy of `debug` at `path` (as the library using it resolves it) once per process. */
function quietDebug(path: string): void {
  const real = require(path) as CreateDebug;
  const cached = require.cache[path];
  if (!cached || (real as { quiet?: boolean }).quiet) return;
  const quiet = ((namespace: string): Debugger => {
    const logger = real(namespace);
    if (logger.enabled) return logger;
    quieted.add(namespace);
    const off = (() => undefined) as unknown as Debugger;
    off.enabled = false;
    off.namespace = namespace;
    off.log = logger.log;
    off.extend = (sub, delimiter = ':') => quiet(`${namespace}${delimiter}${sub}`);
    off.destroy = () => false;
    return off;
  }) as CreateDebug;
  // enable(), disable(), enabled(), formatters… stay the library's own.
  Object.assign(quiet, real, { quiet: true });
  cached.exports = quiet;
}

/** The `debug` a package resolves from its own directory (each may have its own copy). */
const debugOf = (pkg: string): string => createRequire(require.resolve(pkg)).resolve('debug');
const aedes = createRequire(require.resolve('aedes'));
for (const path of new Set([createRequire(aedes.resolve('mqtt-packet')).resolve('debug'), debugOf('mqtt')])) quietDebug(path);
