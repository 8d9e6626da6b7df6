/**
 * Compatibility (issue 6, acceptance 1): the AWS IoT Device SDK v2 for JavaScript, unchanged, connects
 * over mutual TLS with a certificate the coordinator issued (`devices add`) — built exactly as for AWS
 * IoT Core, with AwsIotMqttConnectionConfigBuilder.new_mtls_builder and the bundle's CA — and uses its
 * shadow client on the device's own shadow.
 */
import { iot, iotshadow, mqtt } from 'aws-iot-device-sdk-v2';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { addDevice, deviceInfo, startTlsCoordinator, type Bundle, type TlsCoordinator } from '../helpers/devices.js';

describe('AWS IoT Device SDK v2 over mutual TLS with an issued certificate', () => {
  let c: TlsCoordinator;
  let bundle: Bundle;
  let connection: mqtt.MqttClientConnection;
  let shadow: iotshadow.IotShadowClientv2;

  beforeAll(async () => {
    c = await startTlsCoordinator();
    bundle = await addDevice(c, 'sdk-thermostat');
  });

  afterAll(async () => {
    shadow?.close();
    if (connection) await connection.disconnect();
    await c?.stop();
  });

  it('connects with the bundle and updates, gets and deletes its shadow through IotShadowClientv2', async () => {
    const config = iot.AwsIotMqttConnectionConfigBuilder.new_mtls_builder(bundle.cert, bundle.key)
      .with_certificate_authority(bundle.ca)
      .with_endpoint(bundle.deviceJson.endpoint.host)
      .with_port(bundle.deviceJson.endpoint.port)
      .with_client_id(bundle.thing)
      .with_clean_session(true)
      .with_keep_alive_seconds(30)
      .build();
    connection = new mqtt.MqttClient().new_connection(config);
    await connection.connect();
    expect((await deviceInfo(c, bundle.thing)).connected).toBe(true);

    shadow = iotshadow.IotShadowClientv2.newFromMqtt311(connection, { maxRequestResponseSubscriptions: 4, maxStreamingSubscriptions: 2, operationTimeoutInSeconds: 5 });
    const thingName = bundle.thing;
    const updated = await shadow.updateShadow({ thingName, state: { reported: { temperatureC: 20.5 } } });
    expect(updated).toMatchObject({ state: { reported: { temperatureC: 20.5 } }, version: 1 });
    const got = await shadow.getShadow({ thingName });
    expect(got).toMatchObject({ state: { reported: { temperatureC: 20.5 } }, version: 1 });
    const named = await shadow.updateNamedShadow({ thingName, shadowName: 'schedule', state: { desired: { at: '06:30' } } });
    expect(named.version).toBe(1);
    const deleted = await shadow.deleteShadow({ thingName });
    expect(deleted.version).toBe(1);
  });
});
