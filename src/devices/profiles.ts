/**
 * Device profiles (DESIGN.md §4.4): one action vocabulary, many device interfaces. A profile maps generic
 * actions (turnOn, turnOff, setTarget, read, reboot, …) onto what one device model understands:
 *
 * - `shadow`: a desired-state update of the device's shadow (the device follows its shadow);
 * - `publish`: a message on a topic, payload from a template;
 * - `request`: a message on a topic, then the device's answer on a response topic within a time limit;
 * - `read`: a section of the device's shadow as it stands (no message to the device).
 *
 * Templates are JSON values in which strings name parameters: a string that is exactly `${params.x}`
 * becomes the parameter's value with its type; `${thingName}`, `${requestId}` and `${params.x}` inside a
 * longer string are replaced by their text. Profiles are JSON files (one per model) in a folder, `profiles/`
 * by default, validated at start-up.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import { CoordinatorError } from '../errors.js';
import { validateFilter, validateTopic } from '../router/topic.js';

/** Action names: what tasks call. */
export const ACTION_NAME = /^[a-zA-Z][a-zA-Z0-9_]{0,63}$/;

const template = z.unknown();
const topicTemplate = z.string().min(1).max(512);

const shadowAction = z.object({ shadow: z.object({ name: z.string().min(1).max(64).optional(), desired: z.record(z.string(), template) }).strict() }).strict();
const publishAction = z.object({ publish: z.object({ topic: topicTemplate, payload: template.optional(), qos: z.union([z.literal(0), z.literal(1)]).default(1) }).strict() }).strict();
const requestAction = z
  .object({
    request: z
      .object({
        topic: topicTemplate,
        payload: template.optional(),
        /** Where the device answers; a filter template (may use `${thingName}`). */
        responseTopic: topicTemplate,
        /** When set, only an answer whose field of this name equals the request id counts. */
        correlationField: z.string().min(1).max(64).optional(),
        timeoutMs: z.int().min(10).max(60_000).default(2000),
      })
      .strict(),
  })
  .strict();
const readAction = z.object({ read: z.object({ name: z.string().min(1).max(64).optional(), section: z.enum(['reported', 'desired', 'delta']).default('reported') }).strict() }).strict();

/** One action of a profile. */
export const actionSchema = z.union([shadowAction, publishAction, requestAction, readAction]);

/** A device profile. */
export const profileSchema = z
  .object({
    name: z.string().regex(/^[a-z0-9][a-z0-9_-]{0,63}$/, 'must be 1–64 lowercase letters, digits, "_" or "-"'),
    description: z.string().max(500).optional(),
    actions: z.record(z.string().regex(ACTION_NAME, 'action names are letters, digits and "_", starting with a letter'), actionSchema),
  })
  .strict();

export type DeviceProfile = z.output<typeof profileSchema>;
export type DeviceAction = z.output<typeof actionSchema>;

/** Values a template may refer to. */
export interface TemplateScope {
  readonly thingName: string;
  readonly requestId: string;
  readonly params: Readonly<Record<string, unknown>>;
}

const WHOLE = /^\$\{([a-zA-Z0-9_.]+)\}$/;
const PART = /\$\{([a-zA-Z0-9_.]+)\}/g;

function lookup(scope: TemplateScope, path: string): unknown {
  if (path === 'thingName') return scope.thingName;
  if (path === 'requestId') return scope.requestId;
  if (path.startsWith('params.')) {
    let v: unknown = scope.params;
    for (const key of path.slice(7).split('.')) v = v !== null && typeof v === 'object' ? (v as Record<string, unknown>)[key] : undefined;
    if (v === undefined) throw new CoordinatorError('COORD_ERR_DEVICE_ACTION', `parameter ${path.slice(7)} is required`);
    return v;
  }
  throw new CoordinatorError('COORD_ERR_DEVICE_ACTION', `unknown template variable \${${path}}`);
}

/** Fills a template with `scope`; throws COORD_ERR_DEVICE_ACTION for a missing parameter. */
export function render(value: unknown, scope: TemplateScope): unknown {
  if (typeof value === 'string') {
    const whole = WHOLE.exec(value);
    if (whole) return lookup(scope, whole[1]!);
    return value.replace(PART, (_m, path: string) => {
      const v = lookup(scope, path);
      return typeof v === 'string' ? v : JSON.stringify(v);
    });
  }
  if (Array.isArray(value)) return value.map((v) => render(v, scope));
  if (value !== null && typeof value === 'object') return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, render(v, scope)]));
  return value;
}

/** Topic templates must give valid topics (request) or filters (response) whatever the thing name. */
function checkTopics(profile: DeviceProfile): string[] {
  const problems: string[] = [];
  const probe: TemplateScope = { thingName: 'thing', requestId: 'id', params: new Proxy({}, { get: () => 'x' }) };
  for (const [name, action] of Object.entries(profile.actions)) {
    const topic = 'publish' in action ? action.publish.topic : 'request' in action ? action.request.topic : undefined;
    if (topic !== undefined) {
      const p = validateTopic(String(render(topic, probe)));
      if (p) problems.push(`actions.${name}: topic ${p}`);
    }
    if ('request' in action) {
      const p = validateFilter(String(render(action.request.responseTopic, probe)));
      if (p) problems.push(`actions.${name}: responseTopic ${p}`);
    }
  }
  return problems;
}

/** Reads every `*.json` profile of `dir`; throws COORD_ERR_DEVICE_PROFILE listing every problem. */
export function loadProfiles(dir: string): Map<string, DeviceProfile> {
  const profiles = new Map<string, DeviceProfile>();
  let files: string[];
  try {
    files = readdirSync(dir).filter((f) => f.endsWith('.json')).sort();
  } catch (err) {
    throw new CoordinatorError('COORD_ERR_DEVICE_PROFILE', `cannot read the profiles folder ${dir}: ${(err as Error).message}`, { cause: err });
  }
  const problems: string[] = [];
  for (const f of files) {
    let raw: unknown;
    try {
      raw = JSON.parse(readFileSync(join(dir, f), 'utf8'));
    } catch (err) {
      problems.push(`${f}: ${(err as Error).message}`);
      continue;
    }
    const parsed = profileSchema.safeParse(raw);
    if (!parsed.success) {
      problems.push(...parsed.error.issues.map((i) => `${f}: ${i.path.join('.') || '(root)'}: ${i.message}`));
      continue;
    }
    const topicProblems = checkTopics(parsed.data);
    if (topicProblems.length > 0) {
      problems.push(...topicProblems.map((p) => `${f}: ${p}`));
      continue;
    }
    if (profiles.has(parsed.data.name)) problems.push(`${f}: a second profile named ${parsed.data.name}`);
    profiles.set(parsed.data.name, parsed.data);
  }
  if (problems.length > 0) throw new CoordinatorError('COORD_ERR_DEVICE_PROFILE', `invalid device profiles in ${dir}: ${problems.join('; ')}`, { details: { problems } });
  return profiles;
}
