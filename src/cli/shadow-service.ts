/** `coordinator shadow-service`: the shadow service on another broker, in the foreground until SIGINT/SIGTERM. */
import { BrokerShadowService } from '../cloud/shadow-service.js';
import { compileBrokerShadowServiceOptions, type ShadowServiceFlags } from '../cloud/shadow-service-options.js';
import { createLogger } from '../log/logger.js';
import { EXIT } from './common.js';

// Stopping waits for the answers in flight and the broker's acknowledgements (drainTimeoutMs): bounded.
const SHUTDOWN_TIMEOUT_MS = 10_000;

/** Starts the service and wires signals; resolves once it runs (connected or still trying). */
export async function runShadowService(flags: ShadowServiceFlags): Promise<void> {
  // The database holds device state: owner only, as the coordinator's.
  process.umask(0o077);
  const options = compileBrokerShadowServiceOptions(flags);
  const log = createLogger({ level: options.logLevel });
  const service = await BrokerShadowService.start(options, log);

  let stopping = false;
  const shutdown = (signal: NodeJS.Signals): void => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'shutdown requested');
    const deadline = setTimeout(() => {
      log.error({ code: 'COORD_ERR_SHUTDOWN_TIMEOUT', timeoutMs: SHUTDOWN_TIMEOUT_MS }, 'graceful shutdown timed out; exiting');
      process.exit(EXIT.failure);
    }, SHUTDOWN_TIMEOUT_MS);
    deadline.unref();
    service.stop().then(
      () => {
        clearTimeout(deadline);
        log.info('shadow service stopped');
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
  process.on('unhandledRejection', (reason) => log.error({ err: reason, code: 'COORD_ERR_INTERNAL' }, 'unhandled promise rejection'));
  process.on('uncaughtException', (err) => {
    log.fatal({ err, code: 'COORD_ERR_INTERNAL' }, 'uncaught exception; exiting');
    try {
      service.store.close();
    } finally {
      process.exit(EXIT.failure);
    }
  });
}
