/** Public API of the edge coordinator package: embed it, or script it from Node. */
export { Coordinator, type CoordinatorStatus, type ListenerStatus } from './coordinator.js';
export { compileCoordinatorOptions, type ConfigSources, type ConfigOverride, type ConfigProblem } from './config/load.js';
export { configSchema, type CoordinatorConfig, type CoordinatorConfigInput } from './config/schema.js';
export { createLogger, type Logger } from './log/logger.js';
export { CoordinatorError, ERRORS, isCoordinatorError, type ErrorCode } from './errors.js';
export { VERSION } from './version.js';
