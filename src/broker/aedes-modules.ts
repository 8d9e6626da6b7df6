/**
 * Modules as aedes itself loads them. The broker patches mqtt-packet's writer (PUBACK gate, write
 * batching) and settings (number cache): that must be the very instance aedes imports, which need not be
 * the copy our own imports would resolve to. ./patches.ts checks at start that the patches took effect.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';

// require.resolve rather than import.meta.resolve: the same file, and it also works where a test runner
// transforms this module (vitest has no import.meta.resolve).
/** aedes' entry point, as the coordinator imports it. */
export const AEDES_ENTRY: string = createRequire(import.meta.url).resolve('aedes');
const fromAedes = createRequire(AEDES_ENTRY);

/** `require(id)` from aedes' own directory. */
export function requireFromAedes<T>(id: string): T {
  return fromAedes(id) as T;
}

/** `require.resolve(id)` from aedes' own directory: the file aedes loads for `id`. */
export function resolveFromAedes(id: string): string {
  return fromAedes.resolve(id);
}

/** An installed package: its directory and its package.json's version. */
export interface InstalledPackage {
  readonly root: string;
  readonly version: string | undefined;
}

/**
 * The package `name` that `file` (a resolved entry point) belongs to: the nearest directory above it
 * whose package.json is named `name`. Read from disk rather than required: not every package exports
 * its package.json (aedes does not).
 */
export function packageOf(name: string, file: string): InstalledPackage {
  for (let dir = dirname(file); ; dir = dirname(dir)) {
    try {
      const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { name?: string; version?: string };
      if (pkg.name === name) return { root: dir, version: pkg.version };
    } catch {
      // no (readable) package.json here: go up
    }
    if (dirname(dir) === dir) throw new Error(`no package.json named ${name} above ${file}`);
  }
}
