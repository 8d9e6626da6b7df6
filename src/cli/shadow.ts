/** `coordinator shadow get|update|delete|list|export`: the running coordinator's shadows, over the admin socket. */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { adminRequest } from '../admin/client.js';
import { adminSocketPath } from '../admin/socket.js';
import { CoordinatorError } from '../errors.js';
import type { ShadowDocument } from '../shadow/document.js';
import { seedFileName, type SeedFile } from '../shadow/seeds.js';
import type { ShadowId } from '../shadow/service.js';
import { configFromFlags, type ConfigFlags } from './common.js';

/** Flags of the shadow commands. */
export type ShadowFlags = ConfigFlags & { socket?: string; name?: string; state?: string; file?: string; version?: string; thing?: string };

function socketOf(flags: ShadowFlags): string {
  return flags.socket ?? adminSocketPath(configFromFlags(flags));
}

function print(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}

function parseJsonFlag(text: string, what: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch (err) {
    throw new CoordinatorError('COORD_ERR_CLI_USAGE', `${what} is not valid JSON: ${(err as Error).message}`);
  }
}

/** Prints a shadow document (desired, reported, delta, metadata, version). */
export async function runShadowGet(thing: string, flags: ShadowFlags): Promise<void> {
  const query = new URLSearchParams({ thing, ...(flags.name ? { name: flags.name } : {}) });
  print(await adminRequest(socketOf(flags), 'GET', `/v1/shadow?${query.toString()}`));
}

/** Updates a shadow with `--state '{"desired":{...}}'` or a request document in `--file`. */
export async function runShadowUpdate(thing: string, flags: ShadowFlags): Promise<void> {
  let request: unknown;
  if (flags.file !== undefined) request = parseJsonFlag(readFileSync(flags.file, 'utf8'), flags.file);
  else if (flags.state !== undefined) request = { state: parseJsonFlag(flags.state, '--state') };
  else throw new CoordinatorError('COORD_ERR_CLI_USAGE', 'give the change as --state JSON or --file FILE');
  if (flags.version !== undefined) {
    if (!/^\d+$/.test(flags.version)) throw new CoordinatorError('COORD_ERR_CLI_USAGE', '--version must be a non-negative integer');
    request = { ...(request as object), version: Number(flags.version) };
  }
  print(await adminRequest(socketOf(flags), 'POST', '/v1/shadow/update', { thing, name: flags.name, request }));
}

/** Deletes a shadow. */
export async function runShadowDelete(thing: string, flags: ShadowFlags): Promise<void> {
  print(await adminRequest(socketOf(flags), 'POST', '/v1/shadow/delete', { thing, name: flags.name }));
}

/** Lists shadows, one `thing` or `thing/name` per line. */
export async function runShadowList(flags: ShadowFlags): Promise<void> {
  const query = flags.thing ? `?${new URLSearchParams({ thing: flags.thing }).toString()}` : '';
  const { shadows } = await adminRequest<{ shadows: ShadowId[] }>(socketOf(flags), 'GET', `/v1/shadows${query}`);
  process.stdout.write(shadows.map((s) => (s.name === undefined ? s.thing : `${s.thing}/${s.name}`)).join('\n') + (shadows.length ? '\n' : ''));
}

/** Writes one JSON file per shadow into `dir`, in the seed format (so an export can seed another gateway). */
export async function runShadowExport(dir: string, flags: ShadowFlags): Promise<void> {
  const { shadows } = await adminRequest<{ shadows: { id: ShadowId; document: ShadowDocument }[] }>(socketOf(flags), 'GET', '/v1/shadows/export');
  mkdirSync(dir, { recursive: true });
  for (const { id, document } of shadows) {
    const file: SeedFile & { version: number; metadata: unknown } = {
      thingName: id.thing,
      ...(id.name === undefined ? {} : { shadowName: id.name }),
      state: document.state,
      metadata: document.metadata,
      version: document.version,
    };
    writeFileSync(join(dir, seedFileName(id.thing, id.name)), `${JSON.stringify(file, null, 2)}\n`);
  }
  process.stdout.write(`exported ${shadows.length} shadow(s) to ${dir}\n`);
}
