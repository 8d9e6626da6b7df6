/** `coordinator start`: run the coordinator in the foreground until SIGINT/SIGTERM. */
import type { CoordinatorConfig } from '../config/schema.js';
import { Coordinator } from '../coordinator.js';
import { createLogger, type Logger } from '../log/logger.js';
import { EXIT } from './common.js';

/** Starts the coordinator and wires signals; resolves once it is serving. */
export async function runStart(config: CoordinatorConfig): Promise<void> {
  // Everything the service creates (database, WAL, admin socket) holds device data: owner only.
  process.umask(0o077);
  const log: Logger = createLogger({ level: config.logLevel });
  const coordinator = await Coordinator.start(config, log);

  let stopping = false;
  const shutdown = (signal: NodeJS.Signals): void => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'shutdown requested');
    const deadline = setTimeout(() => {
      log.error({ code: 'COORD_ERR_SHUTDOWN_TIMEOUT', timeoutMs: config.shutdownTimeoutMs }, 'graceful shutdown timed out; exiting');
      process.exit(EXIT.failure);
    }, config.shutdownTimeoutMs);
    deadline.unref();
    coordinator.stop().then(
      () => {
        clearTimeout(deadline);
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
      coordinator.store.close();
    } finally {
      process.exit(EXIT.failure);
    }
  });
}
