/**
 * Tasks from a local folder (config tasks.dir, or --tasks-dir): every subfolder with a task.json
 * manifest is a task; its entry is bundled with esbuild. The development path, and until deployments
 * land the way tasks get installed; it feeds the same task registry deployments will use.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { CoordinatorError } from '../errors.js';
import { bundleTask, stopBundler } from './bundle.js';
import { taskSpecSchema, type TaskBundle, type TaskSpec } from './spec.js';

/** The manifest's file name inside a task folder. */
export const MANIFEST = 'task.json';

/** Reads and validates `<dir>/task.json`; throws COORD_ERR_TASK_MANIFEST listing every problem. */
export function readManifest(dir: string): TaskSpec {
  const file = join(dir, MANIFEST);
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(file, 'utf8')) as unknown;
  } catch (err) {
    throw new CoordinatorError('COORD_ERR_TASK_MANIFEST', `cannot read ${file}: ${(err as Error).message}`, { cause: err });
  }
  const parsed = taskSpecSchema.safeParse(raw);
  if (!parsed.success) {
    const problems = parsed.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`);
    throw new CoordinatorError('COORD_ERR_TASK_MANIFEST', `${file} is invalid: ${problems.join('; ')}`, { details: { file, problems } });
  }
  return parsed.data;
}

/** Bundles the task in folder `dir`. */
export async function loadTaskFolder(dir: string): Promise<TaskBundle> {
  const spec = readManifest(dir);
  const { code, sha256 } = await bundleTask(dir, spec.entry);
  return { spec, code, sha256 };
}

/** Every task folder under `root` (folders without task.json are skipped); names must be unique. */
export async function loadTasksDir(root: string): Promise<TaskBundle[]> {
  let names: string[];
  try {
    names = readdirSync(root).sort();
  } catch (err) {
    throw new CoordinatorError('COORD_ERR_TASK_MANIFEST', `cannot read the tasks folder ${root}: ${(err as Error).message}`, { cause: err });
  }
  const dirs = names.map((n) => join(root, n)).filter((d) => statSync(d).isDirectory() && statSync(join(d, MANIFEST), { throwIfNoEntry: false })?.isFile());
  let bundles: TaskBundle[];
  try {
    bundles = await Promise.all(dirs.map(loadTaskFolder));
  } finally {
    await stopBundler();
  }
  const seen = new Map<string, string>();
  for (const [i, b] of bundles.entries()) {
    const other = seen.get(b.spec.name);
    if (other) throw new CoordinatorError('COORD_ERR_TASK_MANIFEST', `two task folders are named ${b.spec.name}: ${other} and ${dirs[i]}`);
    seen.set(b.spec.name, dirs[i]!);
  }
  return bundles;
}
