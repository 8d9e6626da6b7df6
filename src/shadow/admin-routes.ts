/** Admin routes of the shadow service, used by `coordinator shadow ...`. */
import type { AdminRoutes } from '../admin/server.js';
import { CoordinatorError } from '../errors.js';
import { isJsonObject, ShadowRequestError } from './document.js';
import { parseUpdateRequest, type ShadowLimits } from './request.js';
import type { ShadowId, ShadowService } from './service.js';

function idFrom(source: { get(name: string): string | null } | Record<string, unknown>): ShadowId {
  const read = (k: string): unknown => ('get' in source && typeof source.get === 'function' ? (source.get as (n: string) => string | null)(k) : (source as Record<string, unknown>)[k]);
  const thing = read('thing');
  const name = read('name');
  if (typeof thing !== 'string' || thing === '') throw new CoordinatorError('COORD_ERR_ADMIN_REQUEST', 'a thing name is required');
  return typeof name === 'string' && name !== '' ? { thing, name } : { thing };
}

/** Runs `fn`, turning a shadow rejection into a coded admin error that keeps AWS's status and message. */
async function shadowCall<T>(fn: () => T | Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    if (err instanceof ShadowRequestError) {
      throw new CoordinatorError('COORD_ERR_SHADOW_REJECTED', `${err.code} ${err.message}`, { details: { status: err.code } });
    }
    throw err;
  }
}

/** The routes: list, get, update, delete, export (documents with their ids). */
export function shadowRoutes(shadows: ShadowService, limits: ShadowLimits): AdminRoutes {
  return {
    'GET /v1/shadows': ({ query }) => ({ shadows: shadows.list(query.get('thing') ?? undefined) }),
    'GET /v1/shadow': ({ query }) => shadowCall(() => shadows.get(idFrom(query))),
    'POST /v1/shadow/update': ({ body }) =>
      shadowCall(async () => {
        if (!isJsonObject(body) || !isJsonObject(body.request)) throw new CoordinatorError('COORD_ERR_ADMIN_REQUEST', 'body must be {thing, name?, request}');
        const result = await shadows.update(idFrom(body), parseUpdateRequest(Buffer.from(JSON.stringify(body.request)), limits));
        return result.accepted;
      }),
    'POST /v1/shadow/delete': ({ body }) =>
      shadowCall(() => {
        if (!isJsonObject(body)) throw new CoordinatorError('COORD_ERR_ADMIN_REQUEST', 'body must be {thing, name?}');
        return shadows.delete(idFrom(body));
      }),
    'GET /v1/shadows/export': () => ({
      shadows: shadows.list().map((id) => ({ id, document: shadows.document(id) })),
    }),
  };
}
