/**
 * Validation of shadow requests with AWS's codes and messages (device-shadow-error-messages.html): every
 * request is checked completely before anything is stored, so bad input changes no state.
 */
import { isUtf8 } from 'node:buffer';
import { isJsonObject, ShadowRequestError, type Json, type UpdateRequest } from './document.js';

/** Limits of the shadow service (AWS IoT's defaults). */
export interface ShadowLimits {
  /** Largest state document (desired + reported, without metadata), in bytes; AWS: 8 KB. */
  readonly maxStateBytes: number;
  /** Deepest nesting inside desired or reported; AWS: 6. */
  readonly maxDepth: number;
}

/** AWS IoT's shadow limits. */
export const AWS_SHADOW_LIMITS: ShadowLimits = { maxStateBytes: 8192, maxDepth: 6 };

const NAME = /^[a-zA-Z0-9:_-]+$/;
const MAX_CLIENT_TOKEN_BYTES = 64;
// A request is parsed only if it could plausibly hold a valid state: metadata-free state plus room for
// clientToken and version. Anything bigger is refused before JSON.parse spends memory on it.
const ENVELOPE_BYTES = 1024;
/** Room a request may take beyond its state (clientToken, version, keys): tasks' requests are sized with it. */
export const SHADOW_ENVELOPE_BYTES = ENVELOPE_BYTES;

/** Checks a thing name (1–128 bytes) and an optional shadow name (1–64 bytes), AWS's character set. */
export function checkNames(thingName: string, shadowName?: string): void {
  if (!NAME.test(thingName) || Buffer.byteLength(thingName) > 128) throw new ShadowRequestError(400, 'Invalid thing name');
  if (shadowName !== undefined && (!NAME.test(shadowName) || Buffer.byteLength(shadowName) > 64)) {
    throw new ShadowRequestError(400, 'Invalid shadow name');
  }
}

function parseJson(payload: Buffer, limits: ShadowLimits): unknown {
  if (payload.length > limits.maxStateBytes + ENVELOPE_BYTES) throw new ShadowRequestError(413, 'The payload exceeds the maximum size allowed');
  if (!isUtf8(payload)) throw new ShadowRequestError(415, 'Unsupported documented encoding; supported encoding is UTF-8');
  const text = payload.toString('utf8');
  try {
    return JSON.parse(text) as unknown;
  } catch {
    throw new ShadowRequestError(400, 'Invalid JSON');
  }
}

function readClientToken(body: Record<string, unknown>): string | undefined {
  const token = body.clientToken;
  if (token === undefined) return undefined;
  if (typeof token !== 'string' || Buffer.byteLength(token) > MAX_CLIENT_TOKEN_BYTES) throw new ShadowRequestError(400, 'Invalid clientToken');
  return token;
}

/** The clientToken of a request that failed validation, if one can be read, so /rejected can echo it. */
export function salvageClientToken(payload: Buffer): string | undefined {
  try {
    const body = JSON.parse(payload.toString('utf8')) as unknown;
    if (isJsonObject(body) && typeof body.clientToken === 'string' && Buffer.byteLength(body.clientToken) <= MAX_CLIENT_TOKEN_BYTES) {
      return body.clientToken;
    }
  } catch {
    // unreadable: nothing to echo
  }
  return undefined;
}

function depthOf(value: Json): number {
  if (typeof value !== 'object' || value === null) return 0;
  let max = 0;
  if (Array.isArray(value)) {
    for (const v of value) max = Math.max(max, depthOf(v));
    return max;
  }
  for (const key of Object.keys(value)) max = Math.max(max, depthOf(value[key]!));
  return 1 + max;
}

/** Parses and validates the payload of a get or delete request: an empty payload or an object. */
export function parseSimpleRequest(payload: Buffer, limits: ShadowLimits): { clientToken?: string } {
  if (payload.length === 0) return {};
  const body = parseJson(payload, limits);
  if (!isJsonObject(body)) throw new ShadowRequestError(400, 'Invalid JSON');
  const clientToken = readClientToken(body);
  return clientToken === undefined ? {} : { clientToken };
}

/** Parses and validates an update request. Throws ShadowRequestError with AWS's code and message. */
export function parseUpdateRequest(payload: Buffer, limits: ShadowLimits): UpdateRequest {
  const body = parseJson(payload, limits);
  if (!isJsonObject(body)) throw new ShadowRequestError(400, 'Invalid JSON');
  const clientToken = readClientToken(body);

  if (body.version !== undefined && (typeof body.version !== 'number' || !Number.isSafeInteger(body.version) || body.version < 0)) {
    throw new ShadowRequestError(400, 'Invalid version');
  }
  if (!('state' in body)) throw new ShadowRequestError(400, 'Missing required node: state');
  const state = body.state;
  if (!isJsonObject(state)) throw new ShadowRequestError(400, 'State node must be an object');

  const request: UpdateRequest = { state: {} };
  for (const key of Object.keys(state)) {
    const value = state[key];
    if (key !== 'desired' && key !== 'reported') throw new ShadowRequestError(400, 'State contains an invalid node');
    if (value !== null && !isJsonObject(value)) {
      throw new ShadowRequestError(400, key === 'desired' ? 'Desired node must be an object' : 'Reported node must be an object');
    }
    if (value !== null && depthOf(value) > limits.maxDepth) {
      throw new ShadowRequestError(400, `JSON contains too many levels of nesting; maximum is ${limits.maxDepth}`);
    }
    request.state[key] = value;
  }
  // A payload within the limit passes as received (AWS counts the bytes it receives), so the usual small
  // update is not serialized again; a larger payload passes if its state, serialized, is within it.
  if (payload.length > limits.maxStateBytes && Buffer.byteLength(JSON.stringify(state)) > limits.maxStateBytes) {
    throw new ShadowRequestError(413, 'The payload exceeds the maximum size allowed');
  }
  if (body.version !== undefined) request.version = body.version;
  if (clientToken !== undefined) request.clientToken = clientToken;
  return request;
}
