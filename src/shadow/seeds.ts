/**
 * Seed shadow documents: `*.json` files in the data directory, each `{thingName, shadowName?, state}`,
 * applied as an update when that shadow has never existed. The repository ships the demo gateway's seeds
 * in device-shadows/; `coordinator shadow export DIR` writes files in the same format.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from '../log/logger.js';
import { isJsonObject, ShadowRequestError } from './document.js';
import { parseUpdateRequest, type ShadowLimits } from './request.js';
import type { ShadowService } from './service.js';

/** The seed / export file format. */
export interface SeedFile {
  thingName: string;
  shadowName?: string;
  state: { desired?: unknown; reported?: unknown };
}

/** File name of a shadow's seed/export file: `<thing>.json` or `<thing>~<shadow>.json`. */
export function seedFileName(thingName: string, shadowName?: string): string {
  return shadowName === undefined ? `${thingName}.json` : `${thingName}~${shadowName}.json`;
}

/** Applies every seed whose shadow has never existed; a bad file is logged and skipped. Returns how many were applied. */
export async function applySeeds(dir: string, shadows: ShadowService, limits: ShadowLimits, log: Logger): Promise<number> {
  let files: string[];
  try {
    files = readdirSync(dir).filter((f) => f.endsWith('.json')).sort();
  } catch {
    return 0;
  }
  let applied = 0;
  for (const file of files) {
    try {
      const seed = JSON.parse(readFileSync(join(dir, file), 'utf8')) as unknown;
      if (!isJsonObject(seed) || typeof seed.thingName !== 'string' || (seed.shadowName !== undefined && typeof seed.shadowName !== 'string')) {
        throw new Error('expected {"thingName": string, "shadowName"?: string, "state": {...}}');
      }
      const id = { thing: seed.thingName, name: seed.shadowName };
      if (shadows.exists(id)) continue;
      // Through the same validation as any request: a seed can never store what a client could not.
      const request = parseUpdateRequest(Buffer.from(JSON.stringify({ state: seed.state })), limits);
      await shadows.update(id, request);
      applied++;
    } catch (err) {
      const reason = err instanceof ShadowRequestError ? `${err.code} ${err.message}` : (err as Error).message;
      log.warn({ code: 'COORD_ERR_SHADOW_SEED', file: join(dir, file), reason }, 'seed shadow document skipped');
    }
  }
  if (applied > 0) log.info({ applied, dir }, 'seed shadow documents applied');
  return applied;
}
