/** The error registry, docs/errors.md and the source agree (DESIGN.md §5). */
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ERRORS } from '../../src/errors.js';

const root = new URL('../../', import.meta.url).pathname;

function documented(): Map<string, { meaning: string; remedy: string }> {
  const rows = new Map<string, { meaning: string; remedy: string }>();
  for (const line of readFileSync(join(root, 'docs/errors.md'), 'utf8').split('\n')) {
    const m = /^\| `(COORD_ERR_[A-Z_]+)` \| (.*) \| (.*) \|$/.exec(line);
    if (m) rows.set(m[1]!, { meaning: m[2]!, remedy: m[3]! });
  }
  return rows;
}

function sourceFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    return statSync(path).isDirectory() ? sourceFiles(path) : path.endsWith('.ts') ? [path] : [];
  });
}

describe('error registry', () => {
  it('docs/errors.md documents exactly the registered codes, with the same meaning and remedy', () => {
    const docs = documented();
    expect([...docs.keys()].sort()).toEqual(Object.keys(ERRORS).sort());
    for (const [code, spec] of Object.entries(ERRORS)) expect(docs.get(code), code).toEqual({ meaning: spec.meaning, remedy: spec.remedy });
  });

  it('the source raises and logs only registered codes', () => {
    const used = new Set<string>();
    for (const file of sourceFiles(join(root, 'src'))) {
      for (const m of readFileSync(file, 'utf8').matchAll(/COORD_ERR_[A-Z_]+(?![A-Z_*])/g)) used.add(m[0]);
    }
    const unregistered = [...used].filter((c) => !(c in ERRORS));
    expect(unregistered).toEqual([]);
  });

  it('codes follow COORD_ERR_<AREA>_<WHAT> (COORD_ERR_INTERNAL has no area)', () => {
    for (const code of Object.keys(ERRORS)) expect(code).toMatch(/^COORD_ERR_(INTERNAL|[A-Z]+_[A-Z]+(_[A-Z]+)*)$/);
  });
});
