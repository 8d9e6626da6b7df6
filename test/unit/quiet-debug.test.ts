/**
 * Switched-off `debug` loggers of the libraries on the message path are no-ops, and DEBUG still turns
 * the real ones on. Run in a child process: the replacement must happen before the libraries load,
 * which a test worker that already loaded them cannot show.
 */
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const MODULE = fileURLToPath(new URL('../../dist/log/quiet-debug.js', import.meta.url));
const ROOT = fileURLToPath(new URL('../..', import.meta.url));

/** Loads the module, then aedes (hence mqtt-packet) and MQTT.js, and reports what was made quiet. */
function quieted(debug: string | undefined): { quiet: string[]; parserEnabled: boolean } {
  const script = `
    const { quietedNamespaces } = await import(${JSON.stringify(MODULE)});
    await import('aedes');
    await import('mqtt');
    const { createRequire } = await import('node:module');
    const fromAedes = createRequire(createRequire(import.meta.url).resolve('aedes'));
    const debug = createRequire(fromAedes.resolve('mqtt-packet'))('debug');
    process.stdout.write(JSON.stringify({ quiet: quietedNamespaces(), parserEnabled: debug('mqtt-packet:parser').enabled }));`;
  const env = { ...process.env };
  delete env.DEBUG;
  if (debug !== undefined) env.DEBUG = debug;
  const out = execFileSync(process.execPath, ['--input-type=module', '-e', script], { cwd: ROOT, env, encoding: 'utf8', timeout: 20_000 });
  return JSON.parse(out) as { quiet: string[]; parserEnabled: boolean };
}

describe('quiet debug', () => {
  it("turns mqtt-packet's and MQTT.js's switched-off loggers into no-ops", () => {
    const { quiet, parserEnabled } = quieted(undefined);
    expect(quiet).toEqual(expect.arrayContaining(['mqtt-packet:parser', 'mqtt-packet:writeToStream', 'mqttjs']));
    expect(parserEnabled).toBe(false);
  });

  it('keeps the real logger of a namespace DEBUG enables', () => {
    const { quiet, parserEnabled } = quieted('mqtt-packet:*');
    expect(quiet).not.toContain('mqtt-packet:parser');
    expect(quiet).not.toContain('mqtt-packet:writeToStream');
    expect(parserEnabled).toBe(true);
  });
});
