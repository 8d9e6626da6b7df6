/** Admin routes of the task runtime, used by `coordinator tasks ...` and `coordinator invoke`. */
import type { AdminRoutes } from '../admin/server.js';
import { CoordinatorError } from '../errors.js';
import { isJsonObject } from '../shadow/document.js';
import type { TaskRuntime } from './runtime.js';

function nameOf(query: URLSearchParams): string {
  const name = query.get('name');
  if (!name) throw new CoordinatorError('COORD_ERR_ADMIN_REQUEST', 'a task name is required');
  return name;
}

/** The routes: list, show, logs (after a sequence number), invoke. */
export function taskRoutes(runtime: TaskRuntime): AdminRoutes {
  return {
    'GET /v1/tasks': () => ({ tasks: runtime.list() }),
    'GET /v1/task': ({ query }) => runtime.show(nameOf(query)),
    'GET /v1/task/logs': ({ query }) => {
      const after = Number(query.get('after') ?? '0');
      return { lines: runtime.logs(nameOf(query), Number.isFinite(after) ? after : 0) };
    },
    'POST /v1/task/invoke': async ({ body }) => {
      if (!isJsonObject(body) || typeof body.name !== 'string') throw new CoordinatorError('COORD_ERR_ADMIN_REQUEST', 'body must be {name, payload?}');
      const started = performance.now();
      const result = await runtime.invoke(body.name, { type: 'invoke', payload: body.payload ?? null });
      return { result, ms: Math.round((performance.now() - started) * 1000) / 1000 };
    },
  };
}
