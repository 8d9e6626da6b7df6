/**
 * Modules as aedes itself loads them. The broker patches mqtt-packet's writer (PUBACK gate, write
 * batching) and settings (number cache): that must be the very instance aedes imports, which need not be
 * the copy our own imports would resolve to.
 */
import { createRequire } from 'node:module';

// require.resolve rather than import.meta.resolve: the same file, and it also works where a test runner
// transforms this module (vitest has no import.meta.resolve).
const fromAedes = createRequire(createRequire(import.meta.url).resolve('aedes'));

/** `require(id)` from aedes' own directory. */
export function requireFromAedes<T>(id: string): T {
  return fromAedes(id) as T;
}
