/** Public API of the edge coordinator package: embed it, or script it from Node. */
export { Coordinator, type CoordinatorStatus, type ListenerStatus } from './coordinator.js';
export { compileCoordinatorOptions, type ConfigSources, type ConfigOverride, type ConfigProblem } from './config/load.js';
export { configSchema, type CoordinatorConfig, type CoordinatorConfigInput } from './config/schema.js';
export { createLogger, type Logger } from './log/logger.js';
export { CoordinatorError, ERRORS, isCoordinatorError, type ErrorCode } from './errors.js';
export { VERSION } from './version.js';
export type {
  CronEvent,
  EventSource,
  InvokeEvent,
  JsonValue,
  MessageEvent,
  PublishOptions,
  ShadowDeltaEvent,
  ShadowUpdateRequest,
  Task,
  TaskContext,
  TaskEvent,
} from './tasks/api.js';
export { taskSpecSchema, type TaskSpec, type TaskBundle } from './tasks/spec.js';
