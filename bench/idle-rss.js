/**
 * Idle footprint (DESIGN.md §2 "small and fast", §6): resident memory of a coordinator with nothing
 * connected, a few seconds after start, against a bare aedes process measured the same way.
 */
import { procStatusKb, resultRow, round, rssMiB, sleep, spawnBareAedes, spawnCoordinator } from './lib.js';

const SETTLE_MS = 3_000;
const TARGET_MIB = 60;

/** The benchmark: VmRSS of an idle coordinator (info log level, the default) and of bare aedes. */
export async function idleRss({ log }) {
  const started = await Promise.allSettled([spawnCoordinator({ logLevel: 'info' }), spawnBareAedes()]);
  const [coord, bare] = started.map((s) => (s.status === 'fulfilled' ? s.value : null));
  try {
    const failed = started.find((s) => s.status === 'rejected');
    if (failed) throw failed.reason;
    log(`coordinator pid ${coord.pid}, bare aedes pid ${bare.pid}; idling ${SETTLE_MS} ms`);
    await sleep(SETTLE_MS);
    const value = rssMiB(coord.pid);
    const baselineValue = rssMiB(bare.pid);
    const peak = (pid) => round((procStatusKb(pid, 'VmHWM') ?? NaN) / 1024, 1);
    return [
      resultRow({
        name: 'idle RSS',
        value,
        unit: 'MiB',
        baseline: 'bare aedes',
        baselineValue,
        target: { of: 'value', op: '<=', value: TARGET_MIB },
        details: {
          settleMs: SETTLE_MS,
          source: '/proc/<pid>/status VmRSS (kB = KiB), in MiB',
          coordinatorPeakMiB: peak(coord.pid),
          bareAedesPeakMiB: peak(bare.pid),
          coordinatorLogLevel: 'info',
        },
      }),
    ];
  } finally {
    await Promise.allSettled([coord?.stop(), bare?.stop()]);
  }
}
