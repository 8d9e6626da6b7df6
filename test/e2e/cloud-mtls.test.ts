/**
 * Issue 7: the cloud link over mutual TLS, the AWS IoT Core set-up, with another coordinator as the
 * upstream (nested gateways). The upstream's gateway PKI issues the child gateway its certificate
 * (`certs init`, `devices add gw-child`); the child connects to the upstream's TLS listener with it, and
 * the upstream's default device policy lets it use exactly its own shadow topics and devices/gw-child/#.
 *
 * - A deployment written to the child's shadow on the upstream runs on the child; SUCCEEDED comes back.
 * - A spooled message on a topic the upstream's policy refuses (the upstream disconnects, as AWS IoT
 *   does) is set aside after cloud.spoolRejectAfterDrops drops and the spool goes on — with the refused
 *   message in the middle of a window, so the messages around it are not blamed.
 * - No certificate, one from an unknown CA, or another device's certificate: the link stays down,
 *   `coordinator cloud status` and a COORD_ERR_CLOUD_AUTH log line say why.
 * - Missing or mismatched TLS files stop the start with COORD_ERR_CLOUD_TLS.
 * - The same with Mosquitto (require_certificate) + `coordinator shadow-service` as the cloud.
 * Real components: `coordinator start` processes (upstream and children), the CLI, MQTT.js clients, a
 * Mosquitto process, an embedded gateway for the Mosquitto case.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { addDevice, type Bundle, type TlsCoordinator } from '../helpers/devices.js';
import { startInProcess } from '../helpers/in-process.js';
import { startMosquitto, startShadowService } from '../helpers/mosquitto.js';
import { connect, inbox } from '../helpers/mqtt.js';
import { childConfig, cloudStatus, deploymentDoc, reportedDeployment, startChild, startUpstream, tlsFilesOf, until } from '../helpers/nested.js';
import { runCli, tempDir } from '../helpers/process.js';
import { createTestCa } from '../helpers/tls.js';

describe('the cloud link over mutual TLS to an upstream coordinator', () => {
  let upstream: TlsCoordinator;
  let child: Bundle;
  let other: Bundle;
  beforeAll(async () => {
    upstream = await startUpstream();
    child = await addDevice(upstream, 'gw-child');
    other = await addDevice(upstream, 'gw-other');
  }, 30_000);
  afterAll(async () => {
    await upstream.stop();
  });

  it('a deployment written upstream runs on the child and SUCCEEDED comes back; a message the upstream refuses is set aside and the spool goes on', async () => {
    const gw = await startChild(childConfig('gw-child', { url: upstream.tlsUrl, ...tlsFilesOf(child), spoolRejectAfterDrops: 3 }));
    const linked = await until('the mTLS link', async () => {
      const s = await cloudStatus(gw);
      return s.state === 'connected' ? s : undefined;
    });
    expect(linked).toMatchObject({ url: upstream.tlsUrl, clientId: 'gw-child', connects: 1, lastError: null });
    // The upstream knows who connected: the certificate's device, not an anonymous client.
    await upstream.waitForLog((l) => l.msg === 'device connected' && l.thing === 'gw-child' && l.via === 'certificate');

    // The operator writes the child's deployment into the upstream's copy of its shadow.
    const routes = [
      { source: 'device:*', filter: 'devices/gw-child/#', target: 'cloud' },
      { source: 'device:*', filter: 'telemetry/#', target: 'cloud' },
    ];
    const desired = deploymentDoc('mtls-1', routes);
    const update = await runCli(['shadow', 'update', 'gw-child', '--name', 'deployment', '--state', JSON.stringify({ desired }), '--socket', upstream.socket]);
    expect(update.code, update.stderr).toBe(0);
    const report = await until('SUCCEEDED on the upstream', async () => {
      const r = await reportedDeployment(upstream, 'gw-child');
      return r?.id === 'mtls-1' && r.status === 'SUCCEEDED' ? r : undefined;
    });
    expect(report).toMatchObject({ running: 'mtls-1', tasks: [{ name: 'greeter', version: '1.0.0' }] });
    expect(await reportedDeployment(gw, 'gw-child')).toMatchObject({ id: 'mtls-1', status: 'SUCCEEDED' });

    // A fleet-side consumer of the child's messages, on the upstream.
    const watcher = await connect(upstream.url, { clientId: 'fleet-watcher' });
    const seen = inbox(watcher);
    await watcher.subscribeAsync(['devices/gw-child/#', 'telemetry/#'], { qos: 1 });
    const sensor = await connect(gw.url, { clientId: 'sensor-1' });

    // The upstream is paused while the sensor publishes, so the link sends the refused message in the
    // middle of a window: m/1 before it and m/2 after it are in flight with it when the upstream drops us.
    await sensor.publishAsync('devices/gw-child/m/0', '0', { qos: 1 });
    await seen.next((t) => t === 'devices/gw-child/m/0');
    upstream.proc.kill('SIGSTOP');
    try {
      // The device's PUBACK means durable in the child's spool (docs/cloud.md).
      await sensor.publishAsync('devices/gw-child/m/1', '1', { qos: 1 });
      await sensor.publishAsync('telemetry/refused', 'not in the policy', { qos: 1 });
      await sensor.publishAsync('devices/gw-child/m/2', '2', { qos: 1 });
      await new Promise((r) => setTimeout(r, 200));
    } finally {
      upstream.proc.kill('SIGCONT');
    }

    const status = await until(
      'the refused message set aside',
      async () => {
        const s = await cloudStatus(gw);
        return s.spool.rejected === 1 && s.spool.messages === 0 ? s : undefined;
      },
      30_000,
    );
    expect(status.spool.recentRejected).toMatchObject([{ topic: 'telemetry/refused' }]);
    expect(status.spool.suspect).toBeNull();
    const line = await gw.waitForLog((l) => l.code === 'COORD_ERR_CLOUD_SPOOL_REJECTED');
    expect(line).toMatchObject({ topic: 'telemetry/refused', drops: 3, level: 40 });
    // Exactly that one: the messages around it were delivered (at least once), in order.
    await seen.next((t) => t === 'devices/gw-child/m/2', 15_000);
    const delivered = [...new Set(seen.messages.map((m) => m.topic))];
    expect(delivered).toEqual(['devices/gw-child/m/0', 'devices/gw-child/m/1', 'devices/gw-child/m/2']);
    // The upstream refused it each time it came: once in the window, then alone three times.
    expect(upstream.logs.filter((l) => l.code === 'COORD_ERR_MQTT_PUBLISH_DENIED' && l.topic === 'telemetry/refused').length).toBeGreaterThanOrEqual(4);

    // The link is healthy again, and `coordinator cloud status` tells the story.
    await sensor.publishAsync('devices/gw-child/m/3', '3', { qos: 1 });
    await seen.next((t) => t === 'devices/gw-child/m/3');
    const text = await runCli(['cloud', 'status', '--socket', gw.socket]);
    expect(text.code, text.stderr).toBe(0);
    expect(text.stdout).toMatch(/cloud link {2}connected/);
    expect(text.stdout).toMatch(/1 set aside/);
    expect(text.stdout).toMatch(/set aside {3}seq \d+ telemetry\/refused/);
    await gw.stop();
  }, 60_000);

  it('without a client certificate, with one from another CA, or with another device’s, the link stays down and says why', async () => {
    const dir = tempDir('coord-badcert-');
    const stranger = await (await createTestCa('CN=not the gateway CA')).issueClientCert('gw-child');
    writeFileSync(join(dir, 'stranger.pem'), stranger.certPem);
    writeFileSync(join(dir, 'stranger.key'), stranger.keyPem);
    const ca = tlsFilesOf(child).caFile;
    const cases = [
      { name: 'no certificate', cloud: { caFile: ca }, error: /certificate required/i },
      // TLS 1.3: the upstream checks the certificate after the client's handshake ended, and just closes.
      { name: 'unknown CA', cloud: { caFile: ca, certFile: join(dir, 'stranger.pem'), keyFile: join(dir, 'stranger.key') }, error: /unknown ca|does not accept the client certificate/i },
      // A valid certificate, but of gw-other: the upstream refuses it for client id gw-child (CONNACK 5).
      { name: 'another device', cloud: { ...tlsFilesOf(other), caFile: ca }, error: /not authorized/i },
    ];
    const children = await Promise.all(cases.map((c) => startChild(childConfig('gw-child', { url: upstream.tlsUrl, ...c.cloud }))));
    try {
      for (const [i, c] of cases.entries()) {
        const gw = children[i]!;
        const line = await gw.waitForLog((l) => l.code === 'COORD_ERR_CLOUD_AUTH').catch((err: Error) => {
          throw new Error(`${c.name}: ${err.message} ${JSON.stringify(gw.logs.slice(-2))}`);
        });
        expect(String(line.err), c.name).toMatch(c.error);
        // Refused at every attempt, never connected.
        await new Promise((r) => setTimeout(r, 300));
        const s = await cloudStatus(gw);
        expect(s, c.name).toMatchObject({ connects: 0, lastErrorCode: 'COORD_ERR_CLOUD_AUTH' });
        expect(['connecting', 'offline'], c.name).toContain(s.state);
        expect(s.lastError, c.name).toMatch(c.error);
        // Warned once per distinct refusal, not at every retry.
        expect(gw.logs.filter((l) => l.code === 'COORD_ERR_CLOUD_AUTH').length, c.name).toBeLessThanOrEqual(2);
      }
      const text = await runCli(['cloud', 'status', '--socket', children[0]!.socket]);
      expect(text.stdout).toMatch(/last error {2}COORD_ERR_CLOUD_AUTH: .*certificate required/i);
      // The upstream's side of it.
      expect(upstream.logs.some((l) => l.code === 'COORD_ERR_DEVICE_CERT_REFUSED')).toBe(true);
      expect(upstream.logs.some((l) => l.code === 'COORD_ERR_DEVICE_NOT_AUTHORIZED' && l.thing === 'gw-other')).toBe(true);
    } finally {
      await Promise.all(children.map((c) => c.stop()));
    }
  }, 60_000);

  it('refuses to start with a missing or mismatched cloud TLS file (COORD_ERR_CLOUD_TLS); TLS files with mqtt:// are a config error', async () => {
    const files = tlsFilesOf(child);
    const start = (cloud: Record<string, unknown>): ReturnType<typeof runCli> =>
      runCli(['start', '--mqtt-port', '0', '--data-dir', tempDir('coord-badtls-'), '--config', childConfig('gw-child', { url: upstream.tlsUrl, ...cloud })], { timeoutMs: 30_000 });

    const missing = await start({ ...files, keyFile: '/nonexistent/key.pem' });
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/COORD_ERR_CLOUD_TLS: cannot read cloud\.keyFile \/nonexistent\/key\.pem/);

    const mismatched = await start({ ...files, keyFile: tlsFilesOf(other).keyFile });
    expect(mismatched.code).toBe(1);
    expect(mismatched.stderr).toMatch(/COORD_ERR_CLOUD_TLS: the key in cloud\.keyFile .* does not belong to the certificate/);

    const notPem = await start({ ...files, caFile: childConfig('x', {}) });
    expect(notPem.stderr).toMatch(/COORD_ERR_CLOUD_TLS: cloud\.caFile .* holds no PEM certificate/);

    const plain = await runCli(['config', 'check', childConfig('gw-child', { url: 'mqtt://127.0.0.1:1883', ...files })]);
    expect(plain.code).toBe(78);
    expect(plain.stdout + plain.stderr).toMatch(/cloud\.certFile.*needs an mqtts:\/\/ cloud\.url/);
  }, 60_000);
});

describe('the cloud link over mutual TLS to Mosquitto (require_certificate) + shadow-service', () => {
  it('a deployment written to the cloud shadow runs on the gateway; without its certificate the gateway stays out', async () => {
    const dir = tempDir('coord-mosq-tls-');
    const ca = await createTestCa();
    const file = (name: string, pem: string): string => {
      const path = join(dir, name);
      writeFileSync(path, pem, { mode: 0o600 });
      return path;
    };
    const server = await ca.issueServerCert();
    const gatewayCert = await ca.issueClientCert('gw-moss-tls');
    const serviceCert = await ca.issueClientCert('shadow-service');
    const fleetCert = await ca.issueClientCert('fleet-tool');
    const caFile = file('ca.pem', ca.certPem);
    const broker = await startMosquitto({ tls: { caFile, certFile: file('server.pem', server.certPem), keyFile: file('server.key', server.keyPem), requireCertificate: true } });
    const service = await startShadowService(broker.url, { args: ['--ca', caFile, '--cert', file('svc.pem', serviceCert.certPem), '--key', file('svc.key', serviceCert.keyPem)] });
    try {
      const cloud = { 'cloud.url': broker.url, 'cloud.caFile': caFile, 'cloud.reconnectMinMs': 50, 'cloud.reconnectMaxMs': 200, 'deployments.healthWindowMs': 200 };
      const { coordinator: gw } = await startInProcess({
        thingName: 'gw-moss-tls',
        ...cloud,
        'cloud.certFile': file('gw.pem', gatewayCert.certPem),
        'cloud.keyFile': file('gw.key', gatewayCert.keyPem),
      });
      const fleet = await connect(broker.url, { clientId: 'fleet-tool', ca: ca.certPem, cert: fleetCert.certPem, key: fleetCert.keyPem });
      const box = inbox(fleet);
      const prefix = '$aws/things/gw-moss-tls/shadow/name/deployment';
      await fleet.subscribeAsync(`${prefix}/update/documents`, { qos: 1 });
      const desired = deploymentDoc('mosq-tls-1', []);
      await fleet.publishAsync(`${prefix}/update`, JSON.stringify({ state: { desired }, clientToken: 'fleet-1' }), { qos: 1 });
      await box.next((t, p) => {
        const reported = (JSON.parse(p.toString()) as { current?: { state?: { reported?: { id?: string; status?: string } } } }).current?.state?.reported;
        return t === `${prefix}/update/documents` && reported?.id === 'mosq-tls-1' && reported.status === 'SUCCEEDED';
      }, 20_000);
      expect(gw.cloud!.status()).toMatchObject({ state: 'connected', lastError: null });
      await gw.stop();

      // The same gateway without a client certificate: Mosquitto ends the handshake; the link stays out.
      const { coordinator: bare } = await startInProcess({ thingName: 'gw-moss-bare', ...cloud });
      const s = await until('a refusal', () => {
        const st = bare.cloud!.status();
        return st.lastErrorCode === 'COORD_ERR_CLOUD_AUTH' ? st : undefined;
      });
      expect(s).toMatchObject({ connects: 0 });
      expect(s.state).not.toBe('connected');
      await bare.stop();
    } finally {
      await service.stop();
      await broker.stop();
    }
  }, 60_000);
});
