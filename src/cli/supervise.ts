/**
 * What a long-running command (`coordinator start`, `coordinator shadow-service`) does about its own
 * process: SIGINT/SIGTERM stop it gracefully within a time limit; a stray rejected promise is logged, not
 * fatal; an uncaught exception persists what was acknowledged and exits for the supervisor to restart.
 */
import type { Logger } from '../log/logger.js';
import { EXIT } from './common.js';

/** The service a command runs. */
export interface Supervised {
  /** Graceful stop. */
  stop(): Promise<void>;
  /** Last resort after an uncaught exception: commit and close the database. */
  closeStore(): void;
}

/** Wires signals and process-level errors for `service`; `stopped` is logged after a clean stop. */
export function supervise(service: Supervised, log: Logger, timeoutMs: number, stopped?: string): void {
  let stopping = false;
  const shutdown = (signal: NodeJS.Signals): void => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'shutdown requested');
    const deadline = setTimeout(() => {
      log.error({ code: 'COORD_ERR_SHUTDOWN_TIMEOUT', timeoutMs }, 'graceful shutdown timed out; exiting');
      process.exit(EXIT.failure);
    }, timeoutMs);
    deadline.unref();
    service.stop().then(
      () => {
        clearTimeout(deadline);
        if (stopped) log.info(stopped);
        process.exit(EXIT.ok);
      },
      (err: unknown) => {
        log.error({ err, code: 'COORD_ERR_INTERNAL' }, 'shutdown failed');
        process.exit(EXIT.failure);
      },
    );
  };
  process.on('SIGINT', shutdown);
  process.on('SIGTERM', shutdown);

  // A rejected promise nobody awaited is a bug, not a reason to drop every device connection.
  process.on('unhandledRejection', (reason) => log.error({ err: reason, code: 'COORD_ERR_INTERNAL' }, 'unhandled promise rejection'));
  process.on('uncaughtException', (err) => {
    // State may be inconsistent now: persist what was acknowledged, then exit for the supervisor to restart.
    log.fatal({ err, code: 'COORD_ERR_INTERNAL' }, 'uncaught exception; exiting');
    try {
      service.closeStore();
    } finally {
      process.exit(EXIT.failure);
    }
  });
}

