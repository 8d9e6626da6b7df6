/**
 * The coordinator refuses to start when a patch it applies to aedes' dependencies does not take effect
 * (src/broker/patches.ts, issue 14): the real CLI runs with a test double of mqtt-packet, resolved for
 * aedes by a module resolution hook (test/fixtures/unpatchable-mqtt-packet/hooks.mjs), whose
 * writeToStream cannot be replaced — the PUBACK gate would be bypassed. It must exit with
 * COORD_ERR_BROKER_PATCH_FAILED naming the patch, before any listener binds.
 */
import { createServer } from 'node:net';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { spawnCli, tempDir } from '../helpers/process.js';

const HOOKS = fileURLToPath(new URL('../fixtures/unpatchable-mqtt-packet/hooks.mjs', import.meta.url));

/**
 * Holds a loopback port for the duration of `fn`: a coordinator started on it that gets as far as binding
 * its listener fails with COORD_ERR_BROKER_LISTEN, so any other refusal came before binding.
 */
async function withHeldPort<T>(fn: (port: number) => Promise<T>): Promise<T> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen({ host: '127.0.0.1', port: 0 }, resolve));
  try {
    return await fn((server.address() as { port: number }).port);
  } finally {
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}

async function start(port: number, env?: NodeJS.ProcessEnv): Promise<{ code: number | null; stderr: string; logs: Record<string, unknown>[] }> {
  const run = spawnCli(['start', '--mqtt-port', String(port), '--data-dir', tempDir()], env);
  const { code } = await run.exited;
  return { code, stderr: run.stderr(), logs: run.logs };
}

describe('broker patch check at start', () => {
  it.each([
    ['ignoring', "aedes' mqtt-packet.writeToStream is not the coordinator's writer"],
    ['frozen', 'could not be applied'],
  ])('refuses to start when mqtt-packet.writeToStream cannot be replaced (%s double), naming the patch, before any listener binds', async (mode, why) => {
    await withHeldPort(async (port) => {
      const { code, stderr, logs } = await start(port, { NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ''} --import=${HOOKS}`, MQTT_PACKET_DOUBLE: mode });
      expect(code).toBe(1);
      expect(stderr).toMatch(/^coordinator: COORD_ERR_BROKER_PATCH_FAILED: refusing to start: mqtt-packet\.writeToStream: /m);
      expect(stderr).toContain(why);
      // Only that patch: the double claims the pinned version and the rest of mqtt-packet is real.
      expect(stderr).not.toMatch(/mqtt-packet version|cacheNumbers|aedes\./);
      // Refused before binding: the listener would have failed on the held port (COORD_ERR_BROKER_LISTEN).
      expect(stderr).not.toContain('COORD_ERR_BROKER_LISTEN');
      expect(logs.filter((l) => l.listener !== undefined || l.msg === 'coordinator ready')).toEqual([]);
    });
  });

  it('with the real modules the same start passes every check and gets as far as binding the listener', async () => {
    await withHeldPort(async (port) => {
      const { code, stderr } = await start(port);
      expect(stderr).toContain('COORD_ERR_BROKER_LISTEN');
      expect(stderr).not.toContain('COORD_ERR_BROKER_PATCH_FAILED');
      expect(code).toBe(69);
    });
  });
});
