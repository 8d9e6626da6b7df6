/** `coordinator shadow-service`: the shadow service on another broker, in the foreground until SIGINT/SIGTERM. */
import { BrokerShadowService } from '../cloud/shadow-service.js';
import { compileBrokerShadowServiceOptions, type ShadowServiceFlags } from '../cloud/shadow-service-options.js';
import { createLogger } from '../log/logger.js';
import { supervise } from './supervise.js';

// Stopping waits for the answers in flight and the broker's acknowledgements (drainTimeoutMs): bounded.
const SHUTDOWN_TIMEOUT_MS = 10_000;

/** Starts the service and wires signals; resolves once it runs (connected or still trying). */
export async function runShadowService(flags: ShadowServiceFlags): Promise<void> {
  // The database holds device state: owner only, as the coordinator's.
  process.umask(0o077);
  const options = compileBrokerShadowServiceOptions(flags);
  const log = createLogger({ level: options.logLevel });
  const service = await BrokerShadowService.start(options, log);

  supervise({ stop: () => service.stop(), closeStore: () => service.store.close() }, log, SHUTDOWN_TIMEOUT_MS, 'shadow service stopped');
}
