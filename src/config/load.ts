/**
 * Compiles the configuration from its sources — defaults < file < environment < flags — into one
 * validated `CoordinatorConfig`, or refuses it with every problem listed by path, the source that set
 * it, the value given and what is allowed. Nothing starts before this succeeds.
 */
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import type { z } from 'zod';
import { CoordinatorError } from '../errors.js';
import { configSchema, SECRET_PATHS, type CoordinatorConfig } from './schema.js';
import { allowedFor, allowedKeysAt } from './describe.js';

/** Environment variable naming the config file, when --config is not given. */
export const CONFIG_FILE_ENV = 'COORDINATOR_CONFIG';
const ENV_PREFIX = 'COORDINATOR_';

/** One value set from the command line, addressed by its config path. */
export interface ConfigOverride {
  /** Dot-separated config path, e.g. `listeners.mqtt.port`. */
  readonly path: string;
  readonly value: unknown;
  /** Where it came from, for error messages, e.g. `--mqtt-port`. */
  readonly source: string;
}

/** Where the configuration comes from. */
export interface ConfigSources {
  /** Path of a JSON config file. */
  readonly file?: string | undefined;
  /** Environment to read `COORDINATOR_*` variables from; pass `{}` to ignore the environment. */
  readonly env?: NodeJS.ProcessEnv;
  /** Command-line flags, applied last. */
  readonly overrides?: readonly ConfigOverride[];
  /** Directory relative paths are resolved against (default: process.cwd()). */
  readonly cwd?: string;
}

/** One reason a configuration was refused. */
export interface ConfigProblem {
  readonly path: string;
  readonly source: string;
  readonly given: string;
  readonly allowed: string;
  readonly message: string;
}

type Tree = Record<string, unknown>;

function isPlainObject(v: unknown): v is Tree {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** `LISTENERS__MQTT__PORT` → `listeners.mqtt.port`; `DATA_DIR` → `dataDir`. */
export function envKeyToPath(key: string): string {
  return key
    .split('__')
    .map((segment) => segment.toLowerCase().replace(/_([a-z0-9])/g, (_m, c: string) => c.toUpperCase()))
    .join('.');
}

/** Environment values are JSON when they parse as JSON (numbers, booleans, objects), otherwise strings. */
function parseEnvValue(raw: string): unknown {
  try {
    return JSON.parse(raw) as unknown;
  } catch {
    return raw;
  }
}

function setPath(tree: Tree, path: string, value: unknown): void {
  const keys = path.split('.');
  let node = tree;
  for (const key of keys.slice(0, -1)) {
    const next = node[key];
    if (!isPlainObject(next)) node[key] = {};
    node = node[key] as Tree;
  }
  node[keys[keys.length - 1]!] = value;
}

function getPath(tree: unknown, path: readonly PropertyKey[]): unknown {
  let node = tree;
  for (const key of path) {
    if (!isPlainObject(node)) return undefined;
    node = node[String(key)];
  }
  return node;
}

/** Keys that would reach Object.prototype through plain assignment (JSON.parse keeps them as own keys). */
const PROTO_KEYS = new Set(['__proto__', 'constructor', 'prototype']);

/** Deep-merges `layer` into `target`, recording which source set each leaf. */
function mergeLayer(target: Tree, layer: Tree, source: string, sources: Map<string, string>, prefix = ''): void {
  for (const [key, value] of Object.entries(layer)) {
    const path = prefix ? `${prefix}.${key}` : key;
    if (PROTO_KEYS.has(key)) {
      // Kept as an own data property, so validation reports it as an unknown key instead of the
      // assignment polluting every object in the process.
      Object.defineProperty(target, key, { value, enumerable: true, configurable: true, writable: true });
      sources.set(path, source);
    } else if (isPlainObject(value) && isPlainObject(target[key])) {
      mergeLayer(target[key], value, source, sources, path);
    } else {
      target[key] = isPlainObject(value) ? structuredClone(value) : value;
      sources.set(path, source);
      if (isPlainObject(value)) recordLeaves(value, source, sources, path);
    }
  }
}

function recordLeaves(tree: Tree, source: string, sources: Map<string, string>, prefix: string): void {
  for (const [key, value] of Object.entries(tree)) {
    const path = `${prefix}.${key}`;
    sources.set(path, source);
    if (isPlainObject(value)) recordLeaves(value, source, sources, path);
  }
}

/** Reads and parses a JSON config file, with coded errors for the two ways it can fail. */
export function readConfigFile(file: string): Tree {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new CoordinatorError('COORD_ERR_CONFIG_FILE_UNREADABLE', `cannot read config file ${file}: ${(err as Error).message}`, {
      cause: err,
      details: { file },
    });
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    throw new CoordinatorError('COORD_ERR_CONFIG_FILE_PARSE', `config file ${file} is not valid JSON: ${(err as Error).message}`, {
      cause: err,
      details: { file },
    });
  }
  if (!isPlainObject(parsed)) {
    throw new CoordinatorError('COORD_ERR_CONFIG_INVALID', `config file ${file} must contain a JSON object at the top level`, {
      details: { file, problems: [{ path: '(root)', source: `file ${file}`, given: describeValue(parsed), allowed: 'a JSON object', message: 'must be an object' }] },
    });
  }
  return parsed;
}

const SECRET_KEY = /pass(word|phrase)?|secret|token|private/i;

/** Never echo a secret into a terminal or a log: known secret paths, and keys that look like one (typos included). */
function describeGiven(path: string, value: unknown): string {
  if (value !== undefined && (SECRET_PATHS.includes(path) || SECRET_KEY.test(path.slice(path.lastIndexOf('.') + 1)))) return '****';
  return describeValue(value);
}

function describeValue(value: unknown): string {
  if (value === undefined) return '(missing)';
  const json = JSON.stringify(value);
  return json.length > 80 ? `${json.slice(0, 77)}...` : json;
}

function sourceOf(path: string, sources: Map<string, string>): string {
  for (let p = path; p; p = p.includes('.') ? p.slice(0, p.lastIndexOf('.')) : '') {
    const s = sources.get(p);
    if (s) return s;
  }
  return 'default';
}

function toProblems(issues: readonly z.core.$ZodIssue[], raw: Tree, sources: Map<string, string>): ConfigProblem[] {
  const problems: ConfigProblem[] = [];
  for (const issue of issues) {
    if (issue.code === 'unrecognized_keys') {
      for (const key of issue.keys) {
        const path = [...issue.path, key].join('.');
        problems.push({
          path,
          source: sourceOf(path, sources),
          given: describeGiven(path, getPath(raw, [...issue.path, key])),
          allowed: `known keys here: ${allowedKeysAt(issue.path).join(', ')}`,
          message: 'unknown key',
        });
      }
      continue;
    }
    const path = issue.path.join('.') || '(root)';
    problems.push({
      path,
      source: sourceOf(path, sources),
      given: describeGiven(path, getPath(raw, issue.path)),
      allowed: allowedFor(issue),
      message: issue.message,
    });
  }
  return problems;
}

/** Renders problems the way the CLI prints them: one line each. */
export function formatProblems(problems: readonly ConfigProblem[]): string {
  return problems.map((p) => `  - ${p.path} (from ${p.source}): ${p.message}; got ${p.given}; allowed: ${p.allowed}`).join('\n');
}

/**
 * Compiles every source into one validated configuration (DESIGN.md §7 `compile…Options()`).
 * Throws CoordinatorError COORD_ERR_CONFIG_* listing every problem; starts nothing.
 */
export function compileCoordinatorOptions(sources: ConfigSources = {}): CoordinatorConfig {
  const env = sources.env ?? process.env;
  const cwd = sources.cwd ?? process.cwd();
  const raw: Tree = {};
  const origin = new Map<string, string>();

  const file = sources.file ?? env[CONFIG_FILE_ENV];
  if (file) mergeLayer(raw, readConfigFile(resolve(cwd, file)), `file ${file}`, origin);

  for (const [key, value] of Object.entries(env)) {
    if (!key.startsWith(ENV_PREFIX) || key === CONFIG_FILE_ENV || value === undefined) continue;
    const layer: Tree = {};
    setPath(layer, envKeyToPath(key.slice(ENV_PREFIX.length)), parseEnvValue(value));
    mergeLayer(raw, layer, `env ${key}`, origin);
  }

  for (const override of sources.overrides ?? []) {
    const layer: Tree = {};
    setPath(layer, override.path, override.value);
    mergeLayer(raw, layer, override.source, origin);
  }

  const result = configSchema.safeParse(raw);
  if (!result.success) {
    const problems = toProblems(result.error.issues, raw, origin);
    throw new CoordinatorError(
      'COORD_ERR_CONFIG_INVALID',
      `configuration refused, ${problems.length} problem${problems.length === 1 ? '' : 's'}:\n${formatProblems(problems)}`,
      { details: { problems } },
    );
  }
  const config = result.data;
  config.dataDir = resolve(cwd, config.dataDir);
  if (config.admin.socketPath) config.admin.socketPath = resolve(cwd, config.admin.socketPath);
  if (config.tasks.dir) config.tasks.dir = resolve(cwd, config.tasks.dir);
  return config;
}
