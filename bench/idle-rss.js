/**
 * Idle footprint (DESIGN.md §2 "small and fast", §6): resident memory of a coordinator with nothing
 * connected, against a bare aedes process measured the same way. "Idle" is the steady state: V8's
 * memory reducer shrinks the heap some seconds after start-up, so RSS is sampled every second for
 * IDLE_MS and the last sample is the figure; the 3 s sample is kept in details.
 */
import { procStatusKb, resultRow, round, rssMiB, sleep, spawnBareAedes, spawnCoordinator } from './lib.js';

const EARLY_MS = 3_000;
const IDLE_MS = 20_000;
/** DESIGN.md §6: idle ≤ 60 MB, decimal megabytes (10^6 bytes = 57.2 MiB); /proc reports KiB. */
const TARGET_MB = 60;
const toMB = (mib) => (mib * 2 ** 20) / 1e6;

/** The benchmark: VmRSS of an idle coordinator (info log level, the default) and of bare aedes. */
export async function idleRss({ log }) {
  const started = await Promise.allSettled([spawnCoordinator({ logLevel: 'info' }), spawnBareAedes()]);
  const [coord, bare] = started.map((s) => (s.status === 'fulfilled' ? s.value : null));
  try {
    const failed = started.find((s) => s.status === 'rejected');
    if (failed) throw failed.reason;
    log(`coordinator pid ${coord.pid}, bare aedes pid ${bare.pid}; idling ${IDLE_MS} ms`);
    const samples = [];
    for (let t = 1000; t <= IDLE_MS; t += 1000) {
      await sleep(1000);
      samples.push({ t, coordinator: rssMiB(coord.pid), bare: rssMiB(bare.pid) });
    }
    const early = samples.find((x) => x.t === EARLY_MS);
    const last = samples[samples.length - 1];
    const value = last.coordinator;
    const baselineValue = last.bare;
    const peak = (pid) => round((procStatusKb(pid, 'VmHWM') ?? NaN) / 1024, 1);
    return [
      resultRow({
        name: 'idle RSS',
        value: toMB(value),
        unit: 'MB',
        baseline: 'bare aedes',
        baselineValue: toMB(baselineValue),
        target: { of: 'value', op: '<=', value: TARGET_MB },
        details: {
          units: 'value, baseline and target in MB (10^6 bytes, as DESIGN.md §6 states the target); every *MiB field in 2^20 bytes',
          coordinatorMiB: round(value, 1),
          bareAedesMiB: round(baselineValue, 1),
          idleMs: IDLE_MS,
          coordinatorAt3sMiB: early.coordinator,
          bareAedesAt3sMiB: early.bare,
          source: '/proc/<pid>/status VmRSS (kB = KiB)',
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
