/**
 * Writes docs/deployment.schema.json, the JSON Schema of the deployment document, from the zod schema
 * (src/deployment/document.ts, via dist/). Run after `npm run build`: `npm run docs:schema`.
 */
import { writeFileSync } from 'node:fs';
import { deploymentJsonSchema } from '../dist/deployment/document.js';

const file = new URL('../docs/deployment.schema.json', import.meta.url);
writeFileSync(file, `${JSON.stringify(deploymentJsonSchema(), null, 2)}\n`);
process.stdout.write('docs/deployment.schema.json written\n');
