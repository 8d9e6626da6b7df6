/**
 * What a task is, as the task registry installs it: the manifest (task.json in a task folder, and later
 * each task of a deployment document) validated by one zod schema, with every default here.
 */
import { z } from 'zod';
import { validateFilter } from '../router/topic.js';

/** Task names: what appears in logs, CLI arguments and route sources (`task:<name>`). */
export const TASK_NAME = /^[a-z0-9][a-z0-9_-]{0,63}$/;

const filter = z.string().superRefine((value, ctx) => {
  const problem = validateFilter(value);
  if (problem) ctx.addIssue({ code: 'custom', message: problem });
});

/** A trigger: what makes the coordinator invoke the task. */
export const triggerSchema = z.union([
  z.object({ topic: filter, source: z.string().optional() }).strict(),
  z.object({ cron: z.string().min(1), timezone: z.string().optional() }).strict(),
  z.object({ shadowDelta: z.object({ thing: z.string().min(1), name: z.string().min(1).optional() }).strict() }).strict(),
]);

/** A route a task declares: messages from `source` on `filter` go to `target`. */
export const routeSchema = z
  .object({
    /** `device:<clientId>`, `device:*`, `task:<name>`, `task:*`, `shadow`, `cloud` or `*`. */
    source: z.string().regex(/^(\*|shadow|cloud|device:.+|task:.+)$/, 'must be *, shadow, cloud, device:<id>, device:*, task:<name> or task:*'),
    filter,
    /** `task:<name>`, `broker` (to devices and every other subscriber) or `cloud` (through the durable spool, upstream). */
    target: z.string().regex(/^(broker|cloud|task:.+)$/, 'must be broker, cloud or task:<name>'),
  })
  .strict();

/** Limits of one task; defaults sized for a Raspberry Pi class gateway. */
export const limitsSchema = z
  .object({
    memoryMb: z.int().min(8).max(1024).default(32),
    timeoutMs: z.int().min(10).max(15 * 60_000).default(3000),
    concurrency: z.int().min(1).max(64).default(1),
    queueDepth: z.int().min(1).max(100_000).default(100),
  })
  .strict();

/** A task manifest. */
export const taskSpecSchema = z
  .object({
    name: z.string().regex(TASK_NAME, 'must be 1–64 lowercase letters, digits, "_" or "-", starting with a letter or digit'),
    version: z.string().regex(/^\d+\.\d+\.\d+([-+][0-9A-Za-z.-]+)?$/, 'must be a semantic version such as 1.0.0'),
    description: z.string().max(500).optional(),
    /** TypeScript or JavaScript entry of the task folder, bundled to one ES module. */
    entry: z.string().min(1).default('index.ts'),
    /** on-demand: an isolate per invocation from a warm pool; pinned: one isolate from start to stop. */
    lifecycle: z.enum(['on-demand', 'pinned']).default('on-demand'),
    triggers: z.array(triggerSchema).max(64).default([]),
    routes: z.array(routeSchema).max(256).default([]),
    limits: limitsSchema.prefault({}),
    /** 0 (lowest) … 9 (highest). */
    priority: z.int().min(0).max(9).default(5),
    retries: z.object({ max: z.int().min(0).max(10).default(0), backoffMs: z.int().min(10).max(600_000).default(1000) }).strict().prefault({}),
    config: z.record(z.string(), z.unknown()).default({}),
    permissions: z
      .object({
        /** Topic filters the task may publish to. */
        publish: z.array(filter).default([]),
        /** Topic filters routes may deliver to the task. */
        subscribe: z.array(filter).default([]),
        /** Shadows the task may read and write: `thing` (classic) or `thing/name`, `+` and `#` as in topic filters. */
        shadows: z.array(filter).default([]),
        /** Devices the task may drive with ctx.devices.invoke: thing names, `+` or `#` for any. */
        devices: z.array(filter).default([]),
      })
      .strict()
      .prefault({}),
  })
  .strict();

/** A validated task manifest with its defaults. */
export type TaskSpec = z.output<typeof taskSpecSchema>;
/** A trigger of a task. */
export type Trigger = z.output<typeof triggerSchema>;
/** A route declared by a task. */
export type RouteSpec = z.output<typeof routeSchema>;

/** A task ready to install: its manifest and its bundled code. */
export interface TaskBundle {
  readonly spec: TaskSpec;
  /** One ES module (esbuild output). */
  readonly code: string;
  /** sha256 of `code`, hex. */
  readonly sha256: string;
}
