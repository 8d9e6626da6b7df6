/**
 * The deployment document (DESIGN.md §4.2): what `desired` of the coordinator's `deployment` shadow
 * carries, as one versioned zod schema. A deployment replaces the whole previous task set.
 *
 * Shape choices follow from living in a shadow:
 * - Tasks and routes are arrays, because the shadow merges objects key by key but replaces arrays whole:
 *   writing a new `tasks` array replaces the task set, where a map keyed by name would keep every task
 *   the writer did not mention.
 * - Objects nest at most 6 levels in a shadow (arrays do not count), which this shape respects with room
 *   for a task's own `config`.
 * - Every field of a task except name, version and bundle has the manifest's default, so a document stays
 *   well inside the 8 KB a shadow state may hold (about 20 tasks with their triggers and permissions).
 *
 * The reported side is described here too, so the agent, the CLI and the docs share one definition.
 */
import { z } from 'zod';
import { routeSchema, taskSpecSchema } from '../tasks/spec.js';

/** The format version this coordinator understands; a document names it in `schema`. */
export const DEPLOYMENT_SCHEMA_VERSION = 1;

/** The named shadow of the coordinator's thing that carries deployments. */
export const DEPLOYMENT_SHADOW = 'deployment';

/** Deployment ids: what operators quote, so short and printable. */
export const DEPLOYMENT_ID = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$/;

/** Where a task's bundle comes from and what it must hash to. */
export const bundleRefSchema = z
  .object({
    /** https://, file:// or data: URL of the bundle (one ES module, UTF-8). */
    url: z.string().min(1).max(65_536),
    /** sha256 of the bundle bytes, lowercase hex: always verified. */
    sha256: z.string().regex(/^[0-9a-f]{64}$/, 'must be 64 lowercase hex digits'),
    /** base64 ed25519 signature of the bundle bytes by a key in deployments.trustedKeys. */
    signature: z.string().min(1).max(200).optional(),
  })
  .strict();

/** One task of a deployment: a task manifest (without the local-folder `entry`) plus its bundle. */
export const deployedTaskSchema = taskSpecSchema.omit({ entry: true }).extend({ bundle: bundleRefSchema }).strict();

/** The deployment document, version 1. */
export const deploymentSchema = z
  .object({
    /** Format version of this document. */
    schema: z.literal(DEPLOYMENT_SCHEMA_VERSION, { error: `must be ${DEPLOYMENT_SCHEMA_VERSION}` }),
    /** Unique id of this deployment, chosen by whoever writes it. */
    id: z.string().regex(DEPLOYMENT_ID, 'must be 1–64 characters of letters, digits, ".", "_", ":" or "-", starting with a letter or digit'),
    /** The complete task set: tasks not listed are removed. */
    tasks: z.array(deployedTaskSchema).max(64),
    /** Routes besides those the tasks declare themselves. */
    routes: z.array(routeSchema).max(256).default([]),
  })
  .strict();

/** A validated deployment document with its defaults. */
export type Deployment = z.output<typeof deploymentSchema>;
/** One task of a deployment. */
export type DeployedTask = z.output<typeof deployedTaskSchema>;
/** A bundle reference. */
export type BundleRef = z.output<typeof bundleRefSchema>;

/** Outcome of a deployment as `reported.status` shows it. */
export type DeploymentStatus = 'IN_PROGRESS' | 'SUCCEEDED' | 'FAILED_ROLLED_BACK' | 'REJECTED';

/** One problem found in a document: where (dot path from the document root) and what. */
export interface Problem {
  readonly path: string;
  readonly message: string;
}

/** A task as reported: its version and state. */
export interface ReportedTask {
  readonly name: string;
  readonly version: string;
  readonly state: string;
}

/** What the agent writes to `reported` of the deployment shadow. */
export interface DeploymentReport {
  /** The deployment this report is about (the desired one), or null when desired carries no valid id. */
  readonly id: string | null;
  readonly status: DeploymentStatus;
  /** One human-readable sentence: why this status. */
  readonly reason: string;
  /** Every problem of a REJECTED document (at most MAX_REPORTED_PROBLEMS); null otherwise. */
  readonly problems: readonly Problem[] | null;
  /** The deployment the gateway runs now (null: none yet). */
  readonly running: string | null;
  /** The running tasks and their states. */
  readonly tasks: readonly ReportedTask[];
  /** ISO time of this report. */
  readonly updatedAt: string;
}

/**
 * `reported` of the deployment shadow as readers see it: the report's null fields are absent there (a
 * shadow update's null deletes the key), and `problemCount` tells how many problems there were in all.
 */
export interface ReportedState {
  id?: string | null;
  status?: string;
  reason?: string;
  problems?: Problem[];
  problemCount?: number;
  running?: string | null;
  tasks?: ReportedTask[];
  updatedAt?: string;
}

/** Problems beyond this many are summarized, so a report fits in a shadow. */
export const MAX_REPORTED_PROBLEMS = 20;

/** Parses a desired document; returns the deployment or every schema problem. */
export function parseDeployment(raw: unknown): { ok: true; deployment: Deployment } | { ok: false; problems: Problem[] } {
  const parsed = deploymentSchema.safeParse(raw);
  if (parsed.success) return { ok: true, deployment: parsed.data };
  return { ok: false, problems: parsed.error.issues.map((i) => ({ path: i.path.map(String).join('.') || '(root)', message: i.message })) };
}

/** The id a raw document claims, if it is a valid id (to report on a document that fails the schema). */
export function claimedId(raw: unknown): string | null {
  const id = (raw as { id?: unknown } | null)?.id;
  return typeof id === 'string' && DEPLOYMENT_ID.test(id) ? id : null;
}

/** JSON Schema of the deployment document (docs/deployment.schema.json is generated from this). */
export function deploymentJsonSchema(): Record<string, unknown> {
  return z.toJSONSchema(deploymentSchema, { io: 'input', target: 'draft-2020-12' });
}
