/**
 * The AWS IoT Device Shadow document rules, as pure functions: partial updates, `null` deletions,
 * per-leaf metadata, versions, delta and the response documents. Both faces of the shadow service (MQTT
 * and in-process) apply updates through `applyUpdate`, so they cannot disagree.
 *
 * Reference: docs.aws.amazon.com/iot/latest/developerguide/device-shadow-document.html and
 * device-shadow-data-flow.html. Deliberate choices where AWS is silent are listed in docs/shadows.md.
 */

/** A JSON value. */
export type Json = null | boolean | number | string | Json[] | JsonObject;
/** A JSON object. */
export interface JsonObject {
  [key: string]: Json;
}

/** Metadata mirrors state: `{timestamp}` at each leaf, an array of them for an array value. */
export type Metadata = { timestamp: number } | Metadata[] | { [key: string]: Metadata };
/** Metadata of an object node. */
export type MetadataObject = { [key: string]: Metadata };

/** A stored shadow document. */
export interface ShadowDocument {
  state: { desired?: JsonObject; reported?: JsonObject };
  metadata: { desired?: MetadataObject; reported?: MetadataObject };
  /** +1 on every accepted update; continues across a delete. */
  version: number;
  /** Epoch seconds of the last change. */
  timestamp: number;
}

/** A validated update request (see ./request.ts). */
export interface UpdateRequest {
  state: { desired?: JsonObject | null; reported?: JsonObject | null };
  version?: number;
  clientToken?: string;
}

/** Everything an accepted update produces. */
export interface UpdateResult {
  document: ShadowDocument;
  /** Payload of /update/accepted: the request's state and its metadata. */
  accepted: Record<string, unknown>;
  /** Payload of /update/delta, when the update touched desired and desired differs from reported. */
  delta?: Record<string, unknown>;
  /** Payload of /update/documents. */
  documents: Record<string, unknown>;
}

/** A rule of the protocol was broken; `code` and `message` are AWS's. */
export class ShadowRequestError extends Error {
  constructor(
    readonly code: number,
    message: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
    this.name = 'ShadowRequestError';
  }
}

/** True for a JSON object (not an array, not null). */
export function isJsonObject(value: unknown): value is JsonObject {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** True when `o` has an own key; unlike Object.keys(o).length, allocates nothing. */
function hasKeys(o: object): boolean {
  for (const key in o) if (Object.hasOwn(o, key)) return true;
  return false;
}

/**
 * The metadata of an object node (not a leaf `{timestamp}`, not an array). A state key may itself be
 * called "timestamp", so a node is a leaf only when its `timestamp` is a number, never an object.
 */
function isMetadataObject(m: Metadata | undefined): m is MetadataObject {
  return typeof m === 'object' && !Array.isArray(m) && typeof (m as { timestamp?: unknown }).timestamp !== 'number';
}

function leafMetadata(value: Json, timestamp: number): Metadata {
  // AWS: an array's metadata is an array with one {timestamp} per element.
  if (Array.isArray(value)) return value.map((v) => leafMetadata(v, timestamp));
  if (isJsonObject(value)) return metadataFor(value, timestamp);
  return { timestamp };
}

/** Metadata for every leaf of `value`, all stamped `timestamp`. */
export function metadataFor(value: JsonObject, timestamp: number): MetadataObject {
  const meta: MetadataObject = {};
  for (const key of Object.keys(value)) {
    const v = value[key]!;
    meta[key] = v === null ? { timestamp } : leafMetadata(v, timestamp);
  }
  return meta;
}

/**
 * Merges `patch` into `target` and `meta` without changing them: objects merge key by key, `null`
 * deletes a key, anything else — arrays included — replaces the value whole. Only the nodes on a
 * patched path are copied; the rest is shared with the previous document (documents are immutable once
 * built, see applyUpdate). An object left without keys is removed, as AWS drops empty nodes.
 */
function merge(target: JsonObject, meta: MetadataObject, patch: JsonObject, timestamp: number): { state: JsonObject; meta: MetadataObject } {
  const state: JsonObject = { ...target };
  const metadata: MetadataObject = { ...meta };
  for (const key of Object.keys(patch)) {
    const value = patch[key]!;
    if (value === null) {
      delete state[key];
      delete metadata[key];
    } else if (isJsonObject(value)) {
      const existing = state[key];
      const existingMeta = metadata[key];
      const childMeta: MetadataObject = isJsonObject(existing) && isMetadataObject(existingMeta) ? existingMeta : {};
      const child = merge(isJsonObject(existing) ? existing : {}, childMeta, value, timestamp);
      if (!hasKeys(child.state)) {
        delete state[key];
        delete metadata[key];
      } else {
        state[key] = child.state;
        metadata[key] = child.meta;
      }
    } else {
      state[key] = value;
      metadata[key] = leafMetadata(value, timestamp);
    }
  }
  return { state, meta: metadata };
}

/** Deep equality of JSON values (arrays by position, objects by key set). */
export function jsonEqual(a: Json | undefined, b: Json | undefined): boolean {
  if (a === b) return true;
  if (Array.isArray(a) || Array.isArray(b)) {
    return Array.isArray(a) && Array.isArray(b) && a.length === b.length && a.every((x, i) => jsonEqual(x, b[i]));
  }
  if (isJsonObject(a) && isJsonObject(b)) {
    const keys = Object.keys(a);
    return keys.length === Object.keys(b).length && keys.every((k) => k in b && jsonEqual(a[k], b[k]));
  }
  return false;
}

/**
 * The delta: every desired value that differs from reported, nested objects compared key by key with
 * their full path kept, arrays compared and copied whole. Undefined when there is no difference.
 */
export function computeDelta(desired: JsonObject | undefined, reported: JsonObject | undefined): JsonObject | undefined {
  if (!desired) return undefined;
  const delta: JsonObject = {};
  for (const key of Object.keys(desired)) {
    const want = desired[key]!;
    const have = reported?.[key];
    if (isJsonObject(want) && isJsonObject(have)) {
      const inner = computeDelta(want, have);
      if (inner) delta[key] = inner;
    } else if (!jsonEqual(want, have)) {
      delta[key] = want; // shared: documents are immutable
    }
  }
  return hasKeys(delta) ? delta : undefined;
}

/** The metadata of the delta's keys, taken from the desired section's metadata. */
export function deltaMetadata(delta: JsonObject, desiredMeta: MetadataObject | undefined): MetadataObject {
  const meta: MetadataObject = {};
  for (const key of Object.keys(delta)) {
    const value = delta[key]!;
    const m = desiredMeta?.[key];
    if (m === undefined) continue;
    meta[key] = isJsonObject(value) && isMetadataObject(m) ? deltaMetadata(value, m) : m;
  }
  return meta;
}

function snapshot(doc: ShadowDocument): Record<string, unknown> {
  return { state: doc.state, metadata: doc.metadata, version: doc.version };
}

function withToken(payload: Record<string, unknown>, clientToken: string | undefined): Record<string, unknown> {
  return clientToken === undefined ? payload : { ...payload, clientToken };
}

const SECTIONS = ['desired', 'reported'] as const;

/**
 * Applies a validated update. `current` is the stored document (undefined when the shadow does not
 * exist); `lastVersion` is the version it had, or had when it was deleted (0 if it never existed), so
 * versions continue across a delete. Throws ShadowRequestError 409 on a version mismatch.
 *
 * Documents and payloads are immutable values that share structure: the new document reuses every node
 * of `current` the update did not touch and the request's own values, and the payloads reuse both. So
 * the request must not be changed after this call, and nobody may change what it returns (the shadow
 * service hands out copies where a caller could).
 */
export function applyUpdate(current: ShadowDocument | undefined, lastVersion: number, request: UpdateRequest, now: number): UpdateResult {
  const currentVersion = current?.version ?? lastVersion;
  // AWS shadow: 409 "Version conflict" when the request names a version other than the current one.
  if (request.version !== undefined && request.version !== currentVersion) throw new ShadowRequestError(409, 'Version conflict');

  const state: ShadowDocument['state'] = { ...current?.state };
  const metadata: ShadowDocument['metadata'] = { ...current?.metadata };
  const acceptedMeta: Record<string, unknown> = {};
  for (const section of SECTIONS) {
    const patch = request.state[section];
    if (patch === undefined) continue;
    if (patch === null) {
      // `desired: null` / `reported: null` removes the whole section.
      delete state[section];
      delete metadata[section];
      acceptedMeta[section] = { timestamp: now };
      continue;
    }
    const merged = merge(state[section] ?? {}, metadata[section] ?? {}, patch, now);
    if (!hasKeys(merged.state)) {
      delete state[section];
      delete metadata[section];
    } else {
      state[section] = merged.state;
      metadata[section] = merged.meta;
    }
    acceptedMeta[section] = metadataFor(patch, now);
  }
  const document: ShadowDocument = { state, metadata, version: currentVersion + 1, timestamp: now };

  const token = request.clientToken;
  const accepted: Record<string, unknown> = { state: request.state, metadata: acceptedMeta, version: document.version, timestamp: now };
  if (token !== undefined) accepted.clientToken = token;
  const documents: Record<string, unknown> = current
    ? { previous: snapshot(current), current: snapshot(document), timestamp: now }
    : { current: snapshot(document), timestamp: now };
  if (token !== undefined) documents.clientToken = token;
  const result: UpdateResult = { document, accepted, documents };

  const delta = request.state.desired ? computeDelta(document.state.desired, document.state.reported) : undefined;
  if (delta) {
    result.delta = withToken(
      { state: delta, metadata: deltaMetadata(delta, document.metadata.desired), version: document.version, timestamp: now },
      request.clientToken,
    );
  }
  return result;
}

/**
 * The JSON text of an update's /update/accepted payload, given its state's JSON: the very text
 * JSON.stringify(result.accepted) gives (same keys, same order as applyUpdate builds them), made so that
 * the state's text can also go to the shadow journal without serializing it twice.
 */
export function acceptedJson(result: UpdateResult, stateJson: string): string {
  const a = result.accepted;
  const token = a.clientToken === undefined ? '' : `,"clientToken":${JSON.stringify(a.clientToken)}`;
  return `{"state":${stateJson},"metadata":${JSON.stringify(a.metadata)},"version":${String(a.version)},"timestamp":${String(a.timestamp)}${token}}`;
}

/** Payload of /get/accepted: desired, reported and delta with their metadata. */
export function getResponse(doc: ShadowDocument, now: number, clientToken?: string): Record<string, unknown> {
  const delta = computeDelta(doc.state.desired, doc.state.reported);
  return withToken(
    {
      state: { ...doc.state, ...(delta ? { delta } : {}) },
      metadata: doc.metadata,
      version: doc.version,
      timestamp: now,
    },
    clientToken,
  );
}

/** Payload of /delete/accepted. */
export function deleteResponse(version: number, now: number, clientToken?: string): Record<string, unknown> {
  return withToken({ version, timestamp: now }, clientToken);
}
