/**
 * Local deployments: task folders bundled on this machine become a deployment document whose bundles
 * sit in the content store (file:// URLs) — the document `coordinator deploy` and the tasks.dir start-up
 * option write to the deployment shadow, so a deployment made offline takes exactly the cloud's path.
 */
import { createHash } from 'node:crypto';
import type { JsonObject } from '../shadow/document.js';
import { taskSpecSchema, type TaskBundle, type TaskSpec } from '../tasks/spec.js';
import { DEPLOYMENT_SCHEMA_VERSION } from './document.js';

/** Puts a bundle in the content store; returns its digest and the URL the document names. */
export type PutBundle = (code: string) => Promise<{ sha256: string; url: string }>;

/** A manifest without the fields left at their defaults, so the document stays small (8 KB shadow limit). */
export function compactSpec(spec: TaskSpec): JsonObject {
  const defaults = taskSpecSchema.parse({ name: spec.name, version: spec.version }) as Record<string, unknown>;
  const out: JsonObject = {};
  for (const [key, value] of Object.entries(spec)) {
    if (key === 'entry') continue;
    const dflt = defaults[key];
    if (key !== 'name' && key !== 'version' && JSON.stringify(value) === JSON.stringify(dflt)) continue;
    if (value !== null && typeof value === 'object' && !Array.isArray(value) && dflt !== null && typeof dflt === 'object' && !Array.isArray(dflt) && key !== 'config') {
      // limits, retries, permissions: keep only the sub-fields that differ.
      const sub: JsonObject = {};
      for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
        if (JSON.stringify(v) !== JSON.stringify((dflt as Record<string, unknown>)[k])) sub[k] = v as JsonObject[string];
      }
      out[key] = sub;
      continue;
    }
    out[key] = value as JsonObject[string];
  }
  return out;
}

/** A deployment document made here. */
export interface LocalDocument extends JsonObject {
  schema: number;
  id: string;
  tasks: JsonObject[];
  routes: JsonObject[];
}

/** The deployment document of `bundles`, after putting each bundle in the content store. */
export async function localDeployment(bundles: readonly TaskBundle[], put: PutBundle): Promise<LocalDocument> {
  const tasks: JsonObject[] = [];
  for (const b of bundles) {
    const { sha256, url } = await put(b.code);
    tasks.push({ ...compactSpec(b.spec), bundle: { url, sha256 } });
  }
  // The same folders give the same id: starting again with an unchanged tasks.dir changes nothing.
  const digest = createHash('sha256').update(JSON.stringify(tasks)).digest('hex').slice(0, 12);
  return { schema: DEPLOYMENT_SCHEMA_VERSION, id: `local-${digest}`, tasks, routes: [] };
}
