/**
 * The size of V8's young generation in the coordinator process (config memory.youngGeneration).
 *
 * V8 doubles the young generation whenever enough of it survives a scavenge, up to 2 × 16 MiB on
 * 64-bit, and gives it back only when the process idles: 1,000 TLS devices connecting grew it to
 * 30 MiB of RSS, a sixth of the coordinator's, for no lasting benefit (what survives is promoted either
 * way). `--max-semi-space-size` only counts at process start, which is over by the time any of our code
 * runs; the growth factor is read at every growth, so 1 pins the current size, and V8's shrinking when
 * idle still works. This module is the CLI's first import, so the pin holds from before the rest of the
 * CLI loads (devices connecting the moment the coordinator is ready find 2 × 1 MiB, not the 2 × 8 MiB
 * start-up would otherwise grow it to); `coordinator start` then applies the configured mode. A
 * young-generation option the operator gave node explicitly wins: nothing is changed then.
 */
import { getHeapSpaceStatistics, setFlagsFromString } from 'node:v8';

/** Node options given on the command line or in NODE_OPTIONS that size the young generation. */
const YOUNG_GENERATION_FLAG = /--(?:semi-space-growth-factor|max-semi-space-size|min-semi-space-size|max-heap-size)\b/;
const explicit = [...process.execArgv, process.env.NODE_OPTIONS ?? ''].some((a) => YOUNG_GENERATION_FLAG.test(a));
let pinned = false;

/**
 * Stops (`fixed`) or allows (`adaptive`) the growth of the young generation from now on; returns whether
 * it is pinned and its size in bytes, for the start-up log.
 */
export function setYoungGeneration(mode: 'fixed' | 'adaptive'): { pinned: boolean; bytes: number } {
  const want = mode === 'fixed';
  if (!explicit && want !== pinned) {
    // 2 is V8's default, and the least it accepts at start-up (which is why only a runtime change pins).
    setFlagsFromString(want ? '--semi-space-growth-factor=1' : '--semi-space-growth-factor=2');
    pinned = want;
  }
  const bytes = getHeapSpaceStatistics().find((s) => s.space_name === 'new_space')?.space_size ?? 0;
  return { pinned, bytes };
}

// The default, from the first module the CLI evaluates (see above).
setYoungGeneration('fixed');
