/**
 * Structured logging (pino): JSON lines for machines, human-readable lines when stdout is a terminal.
 */
import { createRequire } from 'node:module';
import { pino, type DestinationStream, type Logger } from 'pino';
import type { PrettyOptions } from 'pino-pretty';

export type { Logger } from 'pino';

/** Options of the coordinator logger. */
export interface LoggerOptions {
  readonly level: string;
  /** Force pretty (true) or JSON (false) output; default: pretty when stdout is a TTY. */
  readonly pretty?: boolean;
}

/** Creates the process logger writing to stdout. */
export function createLogger(options: LoggerOptions): Logger {
  const usePretty = options.pretty ?? process.stdout.isTTY === true;
  const base = { level: options.level, base: { pid: process.pid }, timestamp: pino.stdTimeFunctions.isoTime };
  if (!usePretty) {
    // Synchronous writes: nothing is buffered, so nothing has to be flushed at exit — pino's exit flush
    // spins forever on EPIPE when the reader of stdout (`| tee`) died with the same Ctrl-C.
    const destination = pino.destination({ dest: 1, sync: true });
    destination.on('error', () => undefined); // a vanished reader must not take the service down
    return pino(base, destination);
  }
  // Loaded only for a terminal: a service under systemd never pays its memory. A synchronous stream in
  // this thread: no worker thread to start, no lines lost on exit.
  const pretty = createRequire(import.meta.url)('pino-pretty') as (options: PrettyOptions) => DestinationStream;
  return pino(base, pretty({ sync: true, colorize: true, translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname', singleLine: true }));
}
