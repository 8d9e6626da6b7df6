/** `coordinator start`: run the coordinator in the foreground until SIGINT/SIGTERM. */
import type { CoordinatorConfig } from '../config/schema.js';
import { Coordinator } from '../coordinator.js';
import { createLogger, type Logger } from '../log/logger.js';
import { supervise } from './supervise.js';
import { setYoungGeneration } from './young-generation.js';

/** Starts the coordinator and wires signals; resolves once it is serving. */
export async function runStart(config: CoordinatorConfig): Promise<void> {
  // Pinned since the CLI's first import (./young-generation.ts); the configuration may unpin it.
  const young = setYoungGeneration(config.memory.youngGeneration);
  // Everything the service creates (database, WAL, admin socket) holds device data: owner only.
  process.umask(0o077);
  const log: Logger = createLogger({ level: config.logLevel });
  log.debug({ youngGeneration: config.memory.youngGeneration, pinned: young.pinned, newSpaceBytes: young.bytes }, 'young generation');
  const coordinator = await Coordinator.start(config, log);

  supervise({ stop: () => coordinator.stop(), closeStore: () => coordinator.store.close() }, log, config.shutdownTimeoutMs);
}
