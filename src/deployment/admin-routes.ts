/** Admin routes of the deployment agent, used by `coordinator deploy` and `coordinator deployment ...`. */
import type { AdminRoutes } from '../admin/server.js';
import { CoordinatorError } from '../errors.js';
import { isJsonObject } from '../shadow/document.js';
import type { DeploymentAgent } from './agent.js';
import type { DeploymentRecord, DeploymentRecords } from './records.js';

/** Stores a bundle's code; returns its digest and URL. */
export type BundleUpload = (code: string) => { sha256: string; url: string };

export function deploymentRoutes(agent: DeploymentAgent, records: DeploymentRecords, upload: BundleUpload): AdminRoutes {
  return {
    'GET /v1/deployment': () => {
      const s = agent.status();
      return { desired: s.desired, reported: s.reported, active: s.active ? summary(s.active) : null, inProgress: s.inProgress };
    },
    'GET /v1/deployments': ({ query }) => {
      const limit = Math.min(1000, Math.max(1, Number(query.get('limit') ?? 20) || 20));
      return { deployments: records.history(limit).map(summary) };
    },
    'POST /v1/deployment': async ({ body }) => {
      if (!isJsonObject(body) || !isJsonObject(body.document)) throw new CoordinatorError('COORD_ERR_ADMIN_REQUEST', 'body must be {document}');
      await agent.request(body.document);
      return { requested: body.document.id ?? null };
    },
    'POST /v1/deployment/rollback': async () => ({ requested: await agent.rollback() }),
    'POST /v1/bundles': ({ body }) => {
      if (!isJsonObject(body) || typeof body.code !== 'string') throw new CoordinatorError('COORD_ERR_ADMIN_REQUEST', 'body must be {code}');
      return upload(body.code);
    },
  };
}

function summary(r: DeploymentRecord): Record<string, unknown> {
  return { seq: r.seq, id: r.id, status: r.status, reason: r.reason, problems: r.problems, step: r.step, attempts: r.attempts, createdAt: r.createdAt, updatedAt: r.updatedAt };
}
