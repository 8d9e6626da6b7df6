/**
 * Rewrites the code table of docs/errors.md from the registry (src/errors.ts, via dist/): one row per
 * code, in registry order. Run after `npm run build`: `npm run docs:errors`.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { ERRORS } from '../dist/errors.js';

const file = new URL('../docs/errors.md', import.meta.url);
const lines = readFileSync(file, 'utf8').split('\n');
const header = lines.findIndex((l) => l.startsWith('| code |'));
if (header < 0) throw new Error('docs/errors.md has no "| code |" table');
let end = header + 2;
while (end < lines.length && lines[end].startsWith('| `COORD_ERR_')) end++;
const rows = Object.entries(ERRORS).map(([code, spec]) => `| \`${code}\` | ${spec.meaning} | ${spec.remedy} |`);
lines.splice(header + 2, end - header - 2, ...rows);
writeFileSync(file, lines.join('\n'));
process.stdout.write(`docs/errors.md: ${rows.length} codes\n`);
