/**
 * Admin routes of the device registry, used by `coordinator devices ...`. Adding a device happens in
 * the running coordinator because it holds the CA key; the key and certificate travel back over the
 * owner-only admin socket and are written into the bundle by the CLI.
 */
import { hostname } from 'node:os';
import type { AdminRoutes } from '../admin/server.js';
import { THING_NAME_PATTERN, type CoordinatorConfig } from '../config/schema.js';
import { CoordinatorError } from '../errors.js';
import { generatePassword, hashPassword } from './passwords.js';
import { pkiFiles } from './pki-files.js';
import { compilePolicy } from './policy.js';
import type { DeviceRecord, DeviceRegistry } from './registry.js';

/** A device as the CLI shows it: the password hash never leaves the coordinator. */
export type DeviceView = Omit<DeviceRecord, 'passwordHash'> & { hasPassword: boolean };

/** Where devices reach the TLS listener (written into the bundle's device.json). */
export interface Endpoint {
  readonly host: string;
  readonly port: number;
}

/** What `POST /v1/devices` answers: the registered device and its bundle contents. */
export interface AddedDevice {
  readonly device: DeviceView;
  readonly certPem: string;
  readonly keyPem: string;
  readonly caPem: string;
  readonly endpoint: Endpoint;
  /** The development password, only in this answer (only its hash is stored). */
  readonly password?: string;
}

const ATTRIBUTE_NAME = /^[A-Za-z0-9_.-]{1,64}$/;
const MAX_ATTRIBUTE_VALUE = 256;

function view(d: DeviceRecord): DeviceView {
  const { passwordHash, ...rest } = d;
  return { ...rest, hasPassword: passwordHash !== null };
}

function invalid(message: string): CoordinatorError {
  return new CoordinatorError('COORD_ERR_DEVICE_INVALID', message);
}

/** Checks a thing name as AWS IoT does (1–128 bytes of [a-zA-Z0-9:_-]). */
export function checkThingName(thing: unknown): string {
  if (typeof thing !== 'string' || thing.length === 0 || Buffer.byteLength(thing) > 128 || !THING_NAME_PATTERN.test(thing)) {
    throw invalid(`thing name ${JSON.stringify(thing)} must be 1–128 characters of [a-zA-Z0-9:_-] (an AWS IoT thing name)`);
  }
  return thing;
}

function checkAttributes(attributes: unknown): Record<string, string> {
  if (attributes === undefined) return {};
  if (typeof attributes !== 'object' || attributes === null || Array.isArray(attributes)) throw invalid('attributes must be an object of strings');
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(attributes)) {
    if (!ATTRIBUTE_NAME.test(k)) throw invalid(`attribute name ${JSON.stringify(k)} must be 1–64 characters of [A-Za-z0-9_.-]`);
    if (typeof v !== 'string' || v.length > MAX_ATTRIBUTE_VALUE) throw invalid(`attribute ${k} must be a string of at most ${MAX_ATTRIBUTE_VALUE} characters`);
    out[k] = v;
  }
  return out;
}

function thingOf(value: unknown): string {
  if (typeof value !== 'string' || value.length === 0) throw new CoordinatorError('COORD_ERR_ADMIN_REQUEST', 'a thing name is required');
  return value;
}

/** The routes: add (issue certificate, optional password), list, show, revoke. */
export function deviceRoutes(registry: DeviceRegistry, config: CoordinatorConfig, endpoint: () => Endpoint, profiles?: ReadonlySet<string>): AdminRoutes {
  const require = (thing: string): DeviceRecord => {
    const d = registry.get(thing);
    if (!d) throw new CoordinatorError('COORD_ERR_DEVICE_UNKNOWN', `no device named ${thing} is registered`);
    return d;
  };
  return {
    'POST /v1/devices': async ({ body }) => {
      const b = (typeof body === 'object' && body !== null ? body : {}) as Record<string, unknown>;
      const thing = checkThingName(b.thing);
      const attributes = checkAttributes(b.attributes);
      if (b.profile !== undefined && b.profile !== null && typeof b.profile !== 'string') throw new CoordinatorError('COORD_ERR_ADMIN_REQUEST', 'profile must be a string');
      const profile = typeof b.profile === 'string' && b.profile.length > 0 ? b.profile : null;
      if (profile !== null && profiles && !profiles.has(profile)) {
        throw new CoordinatorError('COORD_ERR_DEVICE_PROFILE', `no device profile named ${profile} is loaded (have: ${[...profiles].join(', ') || 'none'})`);
      }
      const days = b.days === undefined ? config.devices.certDays : Number(b.days);
      if (!Number.isInteger(days) || days < 1 || days > 3650) throw new CoordinatorError('COORD_ERR_ADMIN_REQUEST', 'days must be an integer from 1 to 3650');
      if (registry.get(thing)) throw new CoordinatorError('COORD_ERR_DEVICE_EXISTS', `device ${thing} is already registered`);
      // The X.509 library is loaded the first time a device is added, not at start-up.
      const { loadDeviceCa } = await import('./pki.js');
      const ca = await loadDeviceCa(pkiFiles(config.dataDir));
      const issued = await ca.issueDevice(thing, { days });
      const password = b.password === true ? generatePassword() : undefined;
      const record = await registry.add({
        thing,
        profile,
        attributes,
        certFingerprint: issued.fingerprint,
        certNotAfter: issued.notAfter,
        passwordHash: password === undefined ? null : await hashPassword(password),
      });
      const answer: AddedDevice = { device: view(record), certPem: issued.certPem, keyPem: issued.keyPem, caPem: ca.certPem, endpoint: endpoint(), ...(password ? { password } : {}) };
      return answer;
    },
    'GET /v1/devices': () => ({ devices: registry.list().map(view) }),
    'GET /v1/devices/show': ({ query }) => {
      const d = require(thingOf(query.get('thing')));
      const policy = compilePolicy(config.devices.policies, d);
      return {
        ...view(d),
        policy: { connect: policy.connect, groups: policy.groups, publish: policy.publish, subscribe: policy.subscribe, receive: policy.receive },
      };
    },
    'POST /v1/devices/revoke': async ({ body }) => {
      const thing = thingOf((body as { thing?: unknown } | undefined)?.thing);
      require(thing);
      return view(await registry.revoke(thing));
    },
  };
}

/** The address devices use for the TLS listener: its bound address, or this host's name when bound to all interfaces. */
export function tlsEndpoint(config: CoordinatorConfig, bound: { host: string; port: number } | undefined): Endpoint {
  const host = bound?.host ?? config.listeners.mqtts.host;
  const port = bound?.port ?? config.listeners.mqtts.port;
  return { host: host === '0.0.0.0' || host === '::' ? hostname() : host, port };
}
