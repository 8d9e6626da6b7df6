/** The deployment document: schema, semantic rules, maximum grants, local documents. */
import { describe, expect, it } from 'vitest';
import { compileCoordinatorOptions } from '../../src/config/load.js';
import { deploymentJsonSchema, parseDeployment, type Deployment } from '../../src/deployment/document.js';
import { filterCovers, outsideGrants } from '../../src/deployment/grants.js';
import { compactSpec } from '../../src/deployment/local.js';
import { documentHash } from '../../src/deployment/records.js';
import { checkDeployment } from '../../src/deployment/validate.js';
import { taskSpecSchema } from '../../src/tasks/spec.js';

const SHA = 'a'.repeat(64);
const config = (over: Record<string, unknown> = {}) =>
  compileCoordinatorOptions({ env: {}, overrides: Object.entries(over).map(([path, value]) => ({ path, value, source: 'test' })) });

const task = (name: string, extra: Record<string, unknown> = {}) => ({ name, version: '1.0.0', bundle: { url: 'https://bundles.example/x.js', sha256: SHA }, ...extra });

function valid(doc: unknown): Deployment {
  const parsed = parseDeployment(doc);
  if (!parsed.ok) throw new Error(JSON.stringify(parsed.problems));
  return parsed.deployment;
}

describe('filterCovers', () => {
  it.each([
    ['#', 'a/b/c', true],
    ['#', '#', true],
    ['a/#', 'a', true],
    ['a/#', 'a/+/c', true],
    ['a/#', 'b/c', false],
    ['a/+', 'a/b', true],
    ['a/+', 'a/+', true],
    ['a/+', 'a/#', false],
    ['a/+', 'a/b/c', false],
    ['a/b', 'a/+', false],
    ['a/b', 'a/b', true],
    ['+/x', 'devices/x', true],
    ['devices/+/set', 'devices/#', false],
  ])('%s covers %s: %s', (grant, filter, expected) => {
    expect(filterCovers(grant, filter)).toBe(expected);
  });

  it('lists what no grant covers', () => {
    expect(outsideGrants(['sensors/#', 'devices/+/set'], ['sensors/a', 'devices/x/set', 'devices/x/get', '#'])).toEqual(['devices/x/get', '#']);
  });
});

describe('deployment schema', () => {
  it('accepts a minimal document and fills the task defaults', () => {
    const d = valid({ schema: 1, id: 'd1', tasks: [task('t')] });
    expect(d.routes).toEqual([]);
    expect(d.tasks[0]!.limits.memoryMb).toBe(32);
    expect(d.tasks[0]!.lifecycle).toBe('on-demand');
  });

  it.each([
    ['no schema', { id: 'd', tasks: [] }, 'schema'],
    ['unknown schema version', { schema: 2, id: 'd', tasks: [] }, 'schema'],
    ['bad id', { schema: 1, id: '-x', tasks: [] }, 'id'],
    ['unknown top-level key', { schema: 1, id: 'd', tasks: [], extra: 1 }, '(root)'],
    ['tasks not an array', { schema: 1, id: 'd', tasks: { t: task('t') } }, 'tasks'],
    ['bad digest', { schema: 1, id: 'd', tasks: [task('t', { bundle: { url: 'https://x/y', sha256: 'ABC' } })] }, 'tasks.0.bundle.sha256'],
    ['bad topic filter', { schema: 1, id: 'd', tasks: [task('t', { triggers: [{ topic: 'a/#/b' }] })] }, 'tasks.0.triggers.0'],
    ['local-folder entry field', { schema: 1, id: 'd', tasks: [task('t', { entry: 'index.ts' })] }, 'tasks.0'],
  ])('rejects %s with a path', (_name, doc, path) => {
    const parsed = parseDeployment(doc);
    expect(parsed.ok).toBe(false);
    if (!parsed.ok) expect(parsed.problems.map((p) => p.path).some((p) => p.startsWith(path))).toBe(true);
  });

  it('exports a JSON Schema', () => {
    const schema = deploymentJsonSchema();
    expect(schema.type).toBe('object');
    expect(Object.keys(schema.properties as object)).toEqual(expect.arrayContaining(['schema', 'id', 'tasks', 'routes']));
  });
});

describe('semantic rules', () => {
  it('passes a good document', async () => {
    const d = valid({ schema: 1, id: 'd', tasks: [task('a', { triggers: [{ cron: '*/5 * * * * *' }] }), task('b')], routes: [{ source: 'task:a', filter: 'x/#', target: 'task:b' }] });
    expect(await checkDeployment(d, config())).toEqual([]);
  });

  it('collects every problem, each with its path', async () => {
    const d = valid({
      schema: 1,
      id: 'd',
      tasks: [
        task('a', { triggers: [{ cron: 'not a cron' }], routes: [{ source: 'device:*', filter: 'x', target: 'task:ghost' }] }),
        task('a', { bundle: { url: 'http://insecure/x.js', sha256: SHA }, permissions: { publish: ['secret/#'] } }),
        task('c', { triggers: [{ cron: '* * * * *', timezone: 'Mars/Olympus' }, { topic: 'q', source: 'task:nobody' }], limits: { memoryMb: 1000, concurrency: 2 } }),
      ],
      routes: [{ source: 'task:ghost2', filter: 'y', target: 'broker' }],
    });
    const problems = await checkDeployment(d, config({ 'deployments.maxGrants.publish': ['devices/#'], 'deployments.requireSignatures': true }));
    const paths = problems.map((p) => p.path);
    expect(paths).toEqual(
      expect.arrayContaining([
        'tasks.1.name',
        'tasks.0.triggers.0',
        'tasks.0.routes.0.target',
        'tasks.1.bundle.url',
        'tasks.1.permissions.publish',
        'tasks.2.triggers.0',
        'tasks.2.triggers.1.source',
        'routes.0.source',
        'tasks',
        'tasks.0.bundle.signature',
      ]),
    );
    expect(problems.find((p) => p.path === 'tasks')!.message).toMatch(/over the budget of 1024 MB/);
  });
});

describe('local documents', () => {
  it('keeps only what differs from the manifest defaults', () => {
    const spec = taskSpecSchema.parse({ name: 't', version: '1.2.3', limits: { memoryMb: 8 }, permissions: { publish: ['a/#'] } });
    expect(compactSpec(spec)).toEqual({ name: 't', version: '1.2.3', limits: { memoryMb: 8 }, permissions: { publish: ['a/#'] } });
  });

  it('hashes documents whatever the key order', () => {
    expect(documentHash({ a: 1, b: [{ c: 1, d: 2 }] })).toBe(documentHash({ b: [{ d: 2, c: 1 }], a: 1 }));
    expect(documentHash({ a: 1 })).not.toBe(documentHash({ a: 2 }));
  });
});

describe('docs/deployment.schema.json', () => {
  it('is the JSON Schema of the document (regenerate with npm run docs:schema)', async () => {
    const { readFileSync } = await import('node:fs');
    const file = new URL('../../docs/deployment.schema.json', import.meta.url);
    expect(JSON.parse(readFileSync(file, 'utf8'))).toEqual(deploymentJsonSchema());
  });
});
