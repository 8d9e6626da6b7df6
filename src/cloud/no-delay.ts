/** Turns off Nagle's algorithm on an MQTT.js client's socket (TCP or TLS), once it is connected. */
import type { MqttClient } from 'mqtt';

export function noDelay(client: MqttClient): void {
  const stream = client.stream as { setNoDelay?: (on: boolean) => unknown } | undefined;
  stream?.setNoDelay?.(true);
}
