/**
 * Turns zod issues into "what is allowed" phrases for config error reports, and lists the keys the
 * schema knows at a path (so an unknown key's report can name the right ones).
 */
import type { z } from 'zod';
import { configSchema } from './schema.js';

type AnySchema = z.core.$ZodType;

function unwrap(schema: AnySchema): AnySchema {
  let s = schema;
  for (;;) {
    const def = s._zod.def as { innerType?: AnySchema };
    if (!def.innerType) return s;
    s = def.innerType;
  }
}

function shapeOf(schema: AnySchema): Record<string, AnySchema> | undefined {
  const def = unwrap(schema)._zod.def as { type: string; shape?: Record<string, AnySchema> };
  return def.type === 'object' ? def.shape : undefined;
}

/** Keys the schema accepts at `path` (empty when the path is not an object). */
export function allowedKeysAt(path: readonly PropertyKey[]): string[] {
  let schema: AnySchema = configSchema;
  for (const key of path) {
    const child = shapeOf(schema)?.[String(key)];
    if (!child) return [];
    schema = child;
  }
  return Object.keys(shapeOf(schema) ?? {});
}

/** A short phrase of what the failing check allows. */
export function allowedFor(issue: z.core.$ZodIssue): string {
  switch (issue.code) {
    case 'invalid_type':
      return issue.expected === 'int' ? 'an integer' : `a ${issue.expected}`;
    case 'too_small':
      return issue.origin === 'string'
        ? `a string of at least ${String(issue.minimum)} character(s)`
        : `a value ${issue.inclusive ? '>=' : '>'} ${String(issue.minimum)}`;
    case 'too_big':
      return issue.origin === 'string'
        ? `a string of at most ${String(issue.maximum)} character(s)`
        : `a value ${issue.inclusive ? '<=' : '<'} ${String(issue.maximum)}`;
    case 'invalid_value':
      return `one of ${issue.values.map((v) => JSON.stringify(v)).join(', ')}`;
    case 'invalid_format':
      return `a string in ${issue.format} format`;
    default:
      return issue.message;
  }
}
