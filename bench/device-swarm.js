/**
 * The device swarm of bench/devices.js, in its own process so that 1,000 TLS clients do not share an
 * event loop with the measuring client: `node bench/device-swarm.js <bundles.json>`.
 *
 * bundles.json: { url, caPem, telemetryMs, concurrency, devices: [{ thing, profile, certPem, keyPem }] }.
 * Every device is a SimulatedDevice (dist/devices/simulator.js, the simulator of `coordinator simulate`
 * and the tests): MQTT.js over mutual TLS with its own certificate, client id = thing name, its
 * profile's subscriptions and initial shadow report. Telemetry is paced here rather than by each
 * device's own timer, so that the total is an even stream (devices × 1000 / telemetryMs msg/s, one
 * device after the other) instead of bursts that depend on how fast the devices happened to connect;
 * topics and payloads are the simulator's (devices/<thing>/temperature for env-sensor,
 * devices/<thing>/telemetry otherwise).
 *
 * stdout, one JSON object a line: {"swarm":"connected",...} once every device is connected, then
 * {"swarmStatus":{...}} every second. SIGTERM disconnects every device (a clean DISCONNECT each) and
 * exits.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { pathToFileURL } from 'node:url';
import { REPO_ROOT } from './lib.js';

const { SimulatedDevice } = await import(pathToFileURL(join(REPO_ROOT, 'dist', 'devices', 'simulator.js')).href);

const file = process.argv[2];
if (!file) {
  process.stderr.write('usage: node bench/device-swarm.js <bundles.json> (started by bench/devices.js)\n');
  process.exit(64);
}
const spec = JSON.parse(readFileSync(file, 'utf8'));
const out = (obj) => process.stdout.write(`${JSON.stringify(obj)}\n`);
const rssMiB = () => Math.round((process.memoryUsage.rss() / 2 ** 20) * 10) / 10;

const devices = [];
const counters = { closes: 0, reconnects: 0, errors: 0, published: 0, publishErrors: 0, messages: 0 };
let lastError = null;
let stopping = false;
let telemetryTimer;
let statusTimer;

async function stopAll(code) {
  if (stopping) return;
  stopping = true;
  clearInterval(telemetryTimer);
  clearInterval(statusTimer);
  await Promise.allSettled(devices.map((d) => Promise.race([d.stop(), new Promise((r) => setTimeout(r, 2000))])));
  for (const d of devices) d.client.end(true);
  out({ swarm: 'stopped', devices: devices.length, ...counters });
  process.exit(code);
}
process.once('SIGTERM', () => void stopAll(0));
process.once('SIGINT', () => void stopAll(0));

const rssBefore = rssMiB();
const t0 = performance.now();
let next = 0;
const worker = async () => {
  while (next < spec.devices.length && !stopping) {
    const d = spec.devices[next++];
    const device = await SimulatedDevice.start({ thing: d.thing, profile: d.profile, url: spec.url, caPem: spec.caPem, certPem: d.certPem, keyPem: d.keyPem, telemetryMs: 0 });
    device.client.on('close', () => counters.closes++);
    device.client.on('reconnect', () => counters.reconnects++);
    device.client.on('message', () => counters.messages++);
    device.client.on('error', (err) => {
      counters.errors++;
      lastError = String(err?.message ?? err);
    });
    devices.push(device);
  }
};
try {
  await Promise.all(Array.from({ length: Math.min(spec.concurrency ?? 16, spec.devices.length) }, worker));
} catch (err) {
  process.stderr.write(`device swarm: connecting failed after ${devices.length} devices: ${err?.stack ?? err}\n`);
  await stopAll(1);
}
const connectMs = performance.now() - t0;

// Telemetry: one device every telemetryMs / devices, round robin, on a schedule (not in bursts).
const publishedCb = (err) => {
  if (err) counters.publishErrors++;
};
if (spec.telemetryMs > 0 && devices.length > 0) {
  const interval = spec.telemetryMs / devices.length;
  const tStart = performance.now();
  let sent = 0;
  telemetryTimer = setInterval(() => {
    const due = Math.floor((performance.now() - tStart) / interval);
    while (sent < due) {
      const d = devices[sent++ % devices.length];
      if (!d.client.connected) continue;
      const topic = d.profile === 'env-sensor' ? `devices/${d.thing}/temperature` : `devices/${d.thing}/telemetry`;
      const payload = d.profile === 'env-sensor' ? { temperatureC: d.state.temperatureC } : { seq: sent, ...d.state };
      d.client.publish(topic, JSON.stringify(payload), { qos: 0 }, publishedCb);
      counters.published++;
    }
  }, 10);
}

out({ swarm: 'connected', devices: devices.length, connectMs: Math.round(connectMs), rssBeforeMiB: rssBefore, rssMiB: rssMiB(), pid: process.pid });
statusTimer = setInterval(() => {
  const connected = devices.reduce((n, d) => n + (d.client.connected ? 1 : 0), 0);
  out({ swarmStatus: { connected, rssMiB: rssMiB(), ...counters, lastError } });
}, 1000);
