/**
 * The cloud link (issue 7, acceptance 5), against a real Mosquitto with `coordinator shadow-service` as the
 * cloud, all on 127.0.0.1:
 *
 * - Spool drain rate: the gateway spools N cloud-bound messages while the cloud is down (a route
 *   `device:* telemetry/# → cloud`); when Mosquitto returns, the rate at which they reach a cloud-side
 *   consumer (first to last message received). Baseline, same run, same broker and consumer: an MQTT.js
 *   client publishing the same N messages at QoS 1 with the same window (64 in flight) the drain uses.
 * - Shadow sync throughput: N reported updates made on the gateway's local shadow (by a local MQTT
 *   client, QoS 1 with a window) until the cloud shadow shows the last; the sync sends each accepted
 *   change upstream, one at a time per shadow, each answered by the shadow-service once durable.
 *   Baseline, same run: the same N updates sent straight to the cloud shadow-service by an MQTT.js client
 *   the same way — one request in flight, waiting for /update/accepted — which is the upstream's own limit.
 */
import { writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { adminGet, COORDINATOR_CLI, connectClient, endClients, makeTempDir, resultRow, round, sleep, spawnCoordinator, spawnScript } from './lib.js';

const SPOOLED = 5000;
const UPDATES = 500;
const WINDOW = 64;

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/** Nagle off, as the coordinator's own links do: request/response over small packets. */
async function client(url, options) {
  const c = await connectClient(url, options);
  c.stream.setNoDelay?.(true);
  return c;
}

function startMosquitto(port, dir) {
  return spawnScript({ label: 'mosquitto', args: [join(import.meta.dirname, 'mosquitto.js'), String(port), dir], ready: (o) => o.port });
}

/** Publishes `count` QoS 1 messages with at most `window` unacknowledged. */
async function publishWindowed(client, count, topicOf, payloadOf, window = WINDOW) {
  let next = 0;
  const worker = async () => {
    while (next < count) {
      const i = next++;
      await client.publishAsync(topicOf(i), payloadOf(i), { qos: 1 });
    }
  };
  await Promise.all(Array.from({ length: window }, worker));
}

/**
 * Connects a consumer that counts arrivals from its first packet on: a persistent session's queued
 * messages come right behind CONNACK, before any code awaiting the connection runs. `arrived` resolves
 * with [firstAt, lastAt] once `count` messages arrived.
 */
async function receiver(url, options, count, what, timeoutMs = 60_000) {
  let n = 0;
  let first = 0;
  let timer;
  let onMessage = () => {};
  const arrived = new Promise((resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: only ${n} of ${count} messages arrived`)), timeoutMs);
    onMessage = () => {
      if (n === 0) first = performance.now();
      if (++n === count) {
        clearTimeout(timer);
        resolve([first, performance.now()]);
      }
    };
  });
  arrived.catch(() => undefined);
  try {
    const c = await connectClient(url, { ...options, onMessage });
    c.stream.setNoDelay?.(true);
    return { client: c, arrived };
  } catch (err) {
    clearTimeout(timer);
    throw err;
  }
}

export async function cloud({ log }) {
  const port = await freePort();
  const mqDir = makeTempDir('ec-bench-mosq-');
  const url = `mqtt://127.0.0.1:${port}`;
  let broker = await startMosquitto(port, mqDir);
  const svcDir = makeTempDir('ec-bench-svc-');
  const service = await spawnScript({
    label: 'shadow-service',
    args: [COORDINATOR_CLI, 'shadow-service', '--broker', url, '--data-dir', svcDir],
    ready: (o) => (o.msg === 'serving shadow requests' ? true : undefined),
  });
  const cfgDir = makeTempDir('ec-bench-cloudcfg-');
  const config = join(cfgDir, 'gateway.json');
  writeFileSync(
    config,
    JSON.stringify({ thingName: 'bench-gw', cloud: { url, reconnectMinMs: 50, reconnectMaxMs: 200, spoolMaxBytes: 100_000_000, shadows: [{ thing: 'bench-sync' }] }, deployments: { healthWindowMs: 0 } }),
  );
  const gw = await spawnCoordinator({ label: 'gateway', extraArgs: ['--config', config] });
  const clients = [];
  try {
    // The route that sends telemetry to the cloud, deployed the usual way (admin socket → deployment shadow).
    const { request } = await import('node:http');
    await new Promise((resolve, reject) => {
      const body = JSON.stringify({ document: { schema: 1, id: 'bench-routes', tasks: [], routes: [{ source: 'device:*', filter: 'telemetry/#', target: 'cloud' }] } });
      const req = request({ socketPath: gw.socketPath, method: 'POST', path: '/v1/deployment', headers: { 'content-type': 'application/json' } }, (res) => {
        res.resume();
        res.on('end', resolve);
      });
      req.on('error', reject);
      req.end(body);
    });
    for (let i = 0; i < 100; i++) {
      const s = await adminGet(gw.socketPath, '/v1/deployment');
      if (s.reported?.id === 'bench-routes' && s.reported.status === 'SUCCEEDED') break;
      await sleep(50);
    }
    for (let i = 0; i < 100 && (await adminGet(gw.socketPath, '/v1/cloud')).state !== 'connected'; i++) await sleep(50);

    // --- spool drain -------------------------------------------------------------------------------
    // The cloud-side consumer keeps a persistent session, so it misses nothing sent before it reconnects.
    const sinkOpts = { clientId: 'bench-sink', clean: false };
    const sink0 = await client(url, sinkOpts);
    await sink0.subscribeAsync('telemetry/#', { qos: 1 });
    await endClients(sink0);
    const payload = Buffer.alloc(200, 'x');

    // Baseline: a direct QoS 1 publish loop to the same broker, same window, same consumer.
    const direct = await client(url, { clientId: 'bench-direct' });
    clients.push(direct);
    const base = await receiver(url, sinkOpts, SPOOLED, 'direct publish loop');
    await publishWindowed(direct, SPOOLED, () => 'telemetry/direct', () => payload);
    const [b0, b1] = await base.arrived;
    await endClients(base.client);
    const baseRate = (SPOOLED - 1) / ((b1 - b0) / 1000);

    // The gateway spools while the cloud is down.
    await broker.stop();
    const device = await client(gw.url, { clientId: 'bench-meter' });
    clients.push(device);
    await publishWindowed(device, SPOOLED, () => 'telemetry/meter', () => payload);
    for (let i = 0; i < 600; i++) {
      const s = await adminGet(gw.socketPath, '/v1/cloud');
      if (s.spool?.messages >= SPOOLED) break;
      await sleep(50);
    }
    broker = await startMosquitto(port, mqDir);
    const drained = await receiver(url, sinkOpts, SPOOLED, 'spool drain');
    clients.push(drained.client);
    log(`spooled: ${JSON.stringify((await adminGet(gw.socketPath, '/v1/cloud')).spool)}`);
    const [d0, d1] = await drained.arrived;
    const drainRate = (SPOOLED - 1) / ((d1 - d0) / 1000);
    log(`spool drain ${Math.round(drainRate)} msg/s vs direct ${Math.round(baseRate)} msg/s`);
    for (let i = 0; i < 100 && (await adminGet(gw.socketPath, '/v1/cloud')).state !== 'connected'; i++) await sleep(50);
    // --- shadow sync -------------------------------------------------------------------------------
    const cloudApp = await client(url, { clientId: 'bench-cloud-app' });
    clients.push(cloudApp);
    const prefix = (thing) => `$aws/things/${thing}/shadow`;
    // The shadow-service reconnects to the restarted broker on its own backoff: wait until it answers.
    await cloudApp.subscribeAsync(`${prefix('bench-probe')}/get/+`, { qos: 1 });
    for (let i = 0; ; i++) {
      const answered = new Promise((resolve) => {
        const timer = setTimeout(() => resolve(false), 500);
        cloudApp.once('message', () => {
          clearTimeout(timer);
          resolve(true);
        });
      });
      await cloudApp.publishAsync(`${prefix('bench-probe')}/get`, JSON.stringify({ clientToken: `probe-${i}` }), { qos: 1 });
      if (await answered) break;
      if (i > 120) throw new Error('the shadow-service did not come back after the broker restart');
    }
    await cloudApp.subscribeAsync([`${prefix('bench-sync')}/update/documents`, `${prefix('bench-direct')}/update/accepted`], { qos: 1 });
    const lastSeen = (thing, n) =>
      new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`cloud shadow ${thing} never reached seq ${n}`)), 120_000);
        const on = (topic, p) => {
          if (!topic.startsWith(prefix(thing))) return;
          const doc = JSON.parse(p.toString());
          const seq = doc.current?.state?.reported?.seq ?? doc.state?.reported?.seq;
          if (seq === n) {
            clearTimeout(timer);
            cloudApp.off('message', on);
            resolve(performance.now());
          }
        };
        cloudApp.on('message', on);
      });
    // Baseline: straight to the cloud shadow-service, one request in flight (what the sync does per shadow).
    const t0 = performance.now();
    const baseDone = lastSeen('bench-direct', UPDATES);
    for (let i = 1; i <= UPDATES; i++) {
      const accepted = new Promise((resolve) => {
        const on = (topic, p) => {
          if (topic === `${prefix('bench-direct')}/update/accepted` && JSON.parse(p.toString()).clientToken === `d${i}`) {
            cloudApp.off('message', on);
            resolve();
          }
        };
        cloudApp.on('message', on);
      });
      await cloudApp.publishAsync(`${prefix('bench-direct')}/update`, JSON.stringify({ state: { reported: { seq: i } }, clientToken: `d${i}` }), { qos: 1 });
      await accepted;
    }
    const syncBase = UPDATES / (((await baseDone) - t0) / 1000);
    // Through the gateway: local updates, synced upstream.
    const local = await client(gw.url, { clientId: 'bench-local' });
    clients.push(local);
    const t1 = performance.now();
    const syncDone = lastSeen('bench-sync', UPDATES);
    await publishWindowed(local, UPDATES, () => `${prefix('bench-sync')}/update`, (i) => JSON.stringify({ state: { reported: { seq: i + 1 } } }), 1);
    const syncRate = UPDATES / (((await syncDone) - t1) / 1000);
    log(`shadow sync ${Math.round(syncRate)} updates/s vs direct ${Math.round(syncBase)} updates/s`);
    const status = await adminGet(gw.socketPath, '/v1/cloud');
    return [
      resultRow({ name: 'cloud spool drain rate', value: drainRate, unit: 'msg/s', baseline: 'MQTT.js QoS 1 publish loop, same broker', baselineValue: baseRate, details: { messages: SPOOLED, payloadBytes: payload.length, window: WINDOW, broker: 'mosquitto 2 (loopback)' } }),
      resultRow({
        name: 'cloud shadow sync throughput',
        value: syncRate,
        unit: 'updates/s',
        baseline: 'MQTT.js updates straight to the cloud shadow-service, one in flight',
        baselineValue: syncBase,
        details: { updates: UPDATES, sync: status.sync, note: 'one shadow: the sync sends one update at a time per shadow, as the direct baseline does' },
      }),
    ].map((r) => ({ ...r, value: round(r.value, 0) }));
  } finally {
    await endClients(...clients);
    await Promise.allSettled([gw.stop(), service.stop(), broker.stop()]);
  }
}
