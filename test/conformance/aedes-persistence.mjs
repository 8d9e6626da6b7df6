// aedes-persistence's own conformance suite (abstract.js, run by node:test) against the durable
// persistence, each instance on a fresh database in a temp directory. Driven by
// test/unit/persistence-conformance.test.ts; needs the build in dist/.
import { test } from 'node:test';
import { mkdtempSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DurablePersistence } from '../../dist/broker/persistence.js';
import { Store } from '../../dist/store/database.js';

const require = createRequire(import.meta.url);
const abstract = require('aedes-persistence/abstract.js');

abstract({
  test,
  testAsync: true,
  persistence: () =>
    new DurablePersistence(
      Store.open(mkdtempSync(join(tmpdir(), 'coord-abs-')), (err) => {
        throw err;
      }),
      {
        maySubscribe: () => true,
        maxQueuedPerSession: Number.MAX_SAFE_INTEGER,
        onQueueFull: () => undefined,
        onRestoreError: (what, err) => {
          throw new Error(`restore failed: ${what}`, { cause: err });
        },
      },
    ),
});
