/** Masks secret values before a configuration is printed or logged. */
import { SECRET_PATHS, type CoordinatorConfig } from './schema.js';

/** A deep copy of `config` with every secret that is set replaced by `"****"`. */
export function maskSecrets(config: CoordinatorConfig): Record<string, unknown> {
  const copy = structuredClone(config) as unknown as Record<string, unknown>;
  for (const path of SECRET_PATHS) {
    const keys = path.split('.');
    let node: Record<string, unknown> | undefined = copy;
    for (const key of keys.slice(0, -1)) node = node?.[key] as Record<string, unknown> | undefined;
    const leaf = keys[keys.length - 1]!;
    if (node && node[leaf] !== undefined) node[leaf] = '****';
  }
  return copy;
}
