/**
 * Simulated thin devices for the demo, the tests and the benchmarks: each connects like a real device
 * (MQTT.js, its own certificate over mutual TLS, client id = thing name), sends telemetry, follows its
 * shadow and answers its profile's requests:
 *
 * - smart-plug: follows desired.power of its classic shadow, reports power and watts;
 * - relay-board: switches on devices/<thing>/relay/set, answers devices/<thing>/relay/get on
 *   devices/<thing>/relay/state, and reports its channels in its shadow;
 * - env-sensor: answers devices/<thing>/read on devices/<thing>/reading, takes devices/<thing>/config,
 *   and publishes devices/<thing>/temperature periodically.
 *
 * Every device stays inside the default device policy (its own shadow and devices/<thing>/#).
 */
import mqtt, { type MqttClient } from 'mqtt';

/** A device's credentials and where to connect. */
export interface SimulatedDeviceOptions {
  readonly thing: string;
  readonly profile: string;
  /** mqtts://host:port (mutual TLS) or mqtt://host:port (development password). */
  readonly url: string;
  readonly caPem?: string;
  readonly certPem?: string;
  readonly keyPem?: string;
  readonly password?: string;
  /** Telemetry period; 0 = none. */
  readonly telemetryMs?: number;
  readonly connectTimeoutMs?: number;
}

type Json = Record<string, unknown>;

const parse = (payload: Buffer): Json | undefined => {
  try {
    const v = JSON.parse(payload.toString('utf8')) as unknown;
    return v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Json) : undefined;
  } catch {
    return undefined;
  }
};

/** One simulated device. */
export class SimulatedDevice {
  readonly thing: string;
  readonly profile: string;
  readonly client: MqttClient;
  /** What the device believes its state is (what it reports). */
  readonly state: Json = {};
  #timer: NodeJS.Timeout | undefined;
  #seq = 0;

  private constructor(options: SimulatedDeviceOptions, client: MqttClient) {
    this.thing = options.thing;
    this.profile = options.profile;
    this.client = client;
  }

  /** Connects, subscribes to what its profile needs, reports its initial state. */
  static async start(options: SimulatedDeviceOptions): Promise<SimulatedDevice> {
    const client = await new Promise<MqttClient>((resolve, reject) => {
      const c = mqtt.connect(options.url, {
        clientId: options.thing,
        clean: true,
        reconnectPeriod: 1000,
        connectTimeout: options.connectTimeoutMs ?? 10_000,
        ...(options.caPem ? { ca: options.caPem, rejectUnauthorized: true } : {}),
        ...(options.certPem ? { cert: options.certPem, key: options.keyPem } : {}),
        ...(options.password !== undefined ? { username: options.thing, password: options.password } : {}),
      });
      c.once('connect', () => resolve(c));
      c.once('error', (err) => {
        c.end(true);
        reject(err);
      });
    });
    const device = new SimulatedDevice(options, client);
    await device.#setUp(options.telemetryMs ?? 0);
    return device;
  }

  get #shadow(): string {
    return `$aws/things/${this.thing}/shadow`;
  }

  async #setUp(telemetryMs: number): Promise<void> {
    const t = this.thing;
    const c = this.client;
    c.on('message', (topic, payload) => this.#onMessage(topic, payload));
    if (this.profile === 'smart-plug') {
      Object.assign(this.state, { power: 'off', watts: 0 });
      await c.subscribeAsync([`${this.#shadow}/update/delta`, `${this.#shadow}/get/accepted`], { qos: 1 });
      await this.#report();
      // A delta that arrived while the plug was away is in the shadow: ask for it.
      await c.publishAsync(`${this.#shadow}/get`, '', { qos: 1 });
    } else if (this.profile === 'relay-board') {
      Object.assign(this.state, { channels: { 1: false, 2: false, 3: false, 4: false } });
      await c.subscribeAsync([`devices/${t}/relay/set`, `devices/${t}/relay/get`], { qos: 1 });
      await this.#report();
    } else if (this.profile === 'env-sensor') {
      Object.assign(this.state, { temperatureC: 20.5, humidity: 40, intervalS: telemetryMs / 1000 });
      await c.subscribeAsync([`devices/${t}/read`, `devices/${t}/config`, `devices/${t}/reboot`], { qos: 1 });
      await this.#report();
    }
    if (telemetryMs > 0) {
      this.#timer = setInterval(() => this.#telemetry(), telemetryMs);
      this.#timer.unref();
    }
  }

  #report(): Promise<unknown> {
    return this.client.publishAsync(`${this.#shadow}/update`, JSON.stringify({ state: { reported: this.state } }), { qos: 1 });
  }

  #telemetry(): void {
    const t = this.thing;
    if (this.profile === 'env-sensor') {
      // A slow drift, so a thermostat sees temperatures move.
      this.state.temperatureC = Math.round((20 + 3 * Math.sin(++this.#seq / 10)) * 10) / 10;
      void this.client.publishAsync(`devices/${t}/temperature`, JSON.stringify({ temperatureC: this.state.temperatureC }), { qos: 0 }).catch(() => undefined);
    } else {
      void this.client.publishAsync(`devices/${t}/telemetry`, JSON.stringify({ seq: ++this.#seq, ...this.state }), { qos: 0 }).catch(() => undefined);
    }
  }

  #onMessage(topic: string, payload: Buffer): void {
    const t = this.thing;
    const msg = parse(payload);
    if (topic === `${this.#shadow}/update/delta` || topic === `${this.#shadow}/get/accepted`) {
      const desired = (topic.endsWith('/delta') ? msg?.state : (msg?.state as Json | undefined)?.delta) as Json | undefined;
      if (desired && (desired.power === 'on' || desired.power === 'off')) {
        this.state.power = desired.power;
        this.state.watts = desired.power === 'on' ? 1800 : 0;
        void this.#report().catch(() => undefined);
      }
      return;
    }
    if (topic === `devices/${t}/relay/set` && msg) {
      const channels = this.state.channels as Record<string, boolean>;
      const ch = String(msg.channel);
      if (ch in channels) {
        channels[ch] = msg.on === true;
        void this.client.publishAsync(`devices/${t}/relay/state`, JSON.stringify({ channels }), { qos: 1 }).catch(() => undefined);
        void this.#report().catch(() => undefined);
      }
      return;
    }
    if (topic === `devices/${t}/relay/get`) {
      void this.client.publishAsync(`devices/${t}/relay/state`, JSON.stringify({ id: msg?.id, channels: this.state.channels }), { qos: 1 }).catch(() => undefined);
      return;
    }
    if (topic === `devices/${t}/read`) {
      const reading = { id: msg?.id, temperatureC: this.state.temperatureC, humidity: this.state.humidity };
      void this.client.publishAsync(`devices/${t}/reading`, JSON.stringify(reading), { qos: 1 }).catch(() => undefined);
      return;
    }
    if (topic === `devices/${t}/config` && typeof msg?.intervalS === 'number') {
      this.state.intervalS = msg.intervalS;
      void this.#report().catch(() => undefined);
    }
  }

  /** Disconnects (a clean DISCONNECT). */
  async stop(): Promise<void> {
    clearInterval(this.#timer);
    await this.client.endAsync();
  }
}
