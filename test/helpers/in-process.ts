/**
 * A real coordinator started inside the test process (the embedding API): real broker on a free
 * loopback port, real database in a temp dir, real task host process with real isolates. For tests that
 * install task bundles directly instead of through a tasks folder.
 */
import { createHash } from 'node:crypto';
import { afterAll } from 'vitest';
import { compileCoordinatorOptions } from '../../src/config/load.js';
import { Coordinator } from '../../src/coordinator.js';
import { createLogger } from '../../src/log/logger.js';
import { taskSpecSchema, type TaskBundle } from '../../src/tasks/spec.js';
import { tempDir } from './process.js';

const running = new Set<Coordinator>();
afterAll(async () => {
  await Promise.all([...running].map((c) => c.stop()));
});

/** Starts a coordinator in this process; stopped after the test file if the test does not. */
export async function startInProcess(overrides: Record<string, unknown> = {}): Promise<{ coordinator: Coordinator; url: string }> {
  const config = compileCoordinatorOptions({
    env: {},
    overrides: [
      { path: 'dataDir', value: tempDir('coord-inproc-'), source: 'test' },
      { path: 'listeners.mqtt.port', value: 0, source: 'test' },
      { path: 'logLevel', value: process.env.TEST_LOG_LEVEL ?? 'silent', source: 'test' },
      ...Object.entries(overrides).map(([path, value]) => ({ path, value, source: 'test' })),
    ],
  });
  const coordinator = await Coordinator.start(config, createLogger({ level: config.logLevel, pretty: false }));
  running.add(coordinator);
  const mqtt = coordinator.broker.listeners.find((l) => l.name === 'mqtt')!;
  return { coordinator, url: `mqtt://127.0.0.1:${mqtt.port}` };
}

/** A task bundle from a manifest (defaults applied) and already-bundled ES module code. */
export function bundle(manifest: Record<string, unknown>, code: string): TaskBundle {
  return { spec: taskSpecSchema.parse({ version: '1.0.0', ...manifest }), code, sha256: createHash('sha256').update(code).digest('hex') };
}
