/**
 * Schema migrations of the embedded database, applied in order at open; `PRAGMA user_version` records
 * how many have run. Append only: a released migration is never edited.
 */

/** SQL of each migration; index + 1 is the schema version it produces. */
export const MIGRATIONS: readonly string[] = [
  // 1: broker persistence — retained messages, persistent sessions (subscriptions, queued and
  // in-flight QoS 1/2 messages, inbound QoS 2 state) and wills of connected clients.
  `
  CREATE TABLE broker_retained (
    topic   TEXT PRIMARY KEY,
    payload BLOB NOT NULL,
    meta    TEXT NOT NULL
  ) WITHOUT ROWID;
  CREATE TABLE broker_subscriptions (
    client_id TEXT NOT NULL,
    topic     TEXT NOT NULL,
    meta      TEXT NOT NULL,
    PRIMARY KEY (client_id, topic)
  ) WITHOUT ROWID;
  CREATE TABLE broker_outgoing (
    seq            INTEGER PRIMARY KEY AUTOINCREMENT,
    client_id      TEXT NOT NULL,
    broker_id      TEXT NOT NULL,
    broker_counter INTEGER NOT NULL,
    message_id     INTEGER,
    topic          TEXT NOT NULL,
    payload        BLOB NOT NULL,
    meta           TEXT NOT NULL
  );
  CREATE INDEX broker_outgoing_packet ON broker_outgoing (client_id, broker_id, broker_counter);
  CREATE INDEX broker_outgoing_message ON broker_outgoing (client_id, message_id);
  CREATE TABLE broker_incoming (
    client_id  TEXT NOT NULL,
    message_id INTEGER NOT NULL,
    topic      TEXT NOT NULL,
    payload    BLOB NOT NULL,
    meta       TEXT NOT NULL,
    PRIMARY KEY (client_id, message_id)
  ) WITHOUT ROWID;
  CREATE TABLE broker_wills (
    client_id TEXT PRIMARY KEY,
    topic     TEXT NOT NULL,
    payload   BLOB NOT NULL,
    meta      TEXT NOT NULL
  ) WITHOUT ROWID;
  `,
  // 2: device shadows. A deleted shadow keeps its row with document NULL so its version continues.
  `
  CREATE TABLE shadows (
    thing    TEXT NOT NULL,
    name     TEXT NOT NULL,
    document TEXT,
    version  INTEGER NOT NULL,
    PRIMARY KEY (thing, name)
  ) WITHOUT ROWID;
  `,
  // 3: persistent per-task key-value state (ctx.state), values as JSON.
  `
  CREATE TABLE task_state (
    task  TEXT NOT NULL,
    key   TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (task, key)
  ) WITHOUT ROWID;
  `,
  // 4: deployments — every deployment the agent took up (history, status, the step it reached), and
  // which one runs now. `active` changes in the same transaction as the status that explains it.
  `
  CREATE TABLE deployments (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    id          TEXT NOT NULL,
    hash        TEXT NOT NULL,
    document    TEXT NOT NULL,
    status      TEXT NOT NULL,
    reason      TEXT NOT NULL,
    problems    TEXT,
    step        TEXT NOT NULL,
    attempts    INTEGER NOT NULL,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
  );
  CREATE INDEX deployments_id ON deployments (id, hash);
  CREATE TABLE deployment_pointers (
    name TEXT PRIMARY KEY,
    seq  INTEGER NOT NULL
  ) WITHOUT ROWID;
  `,
  // 5: the device registry — identity (certificate fingerprint, password hash), profile, attributes,
  // presence. A revoked device keeps its row (revoked_at) so its certificate stays refused.
  `
  CREATE TABLE devices (
    thing              TEXT PRIMARY KEY,
    profile            TEXT,
    attributes         TEXT NOT NULL,
    cert_fingerprint   TEXT UNIQUE,
    cert_not_after     TEXT,
    password_hash      TEXT,
    created_at         TEXT NOT NULL,
    last_seen          TEXT,
    connected          INTEGER NOT NULL DEFAULT 0,
    revoked_at         TEXT
  ) WITHOUT ROWID;
  `,
  // 6: the cloud spool — cloud-bound messages in order (AUTOINCREMENT: a seq is never reused, even once
  // the table was empty), small columns first so eviction reads sizes without touching payload pages;
  // one counters row changed in the same transaction as the rows it counts.
  `
  CREATE TABLE cloud_spool (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    bytes        INTEGER NOT NULL,
    qos          INTEGER NOT NULL CHECK (qos IN (0, 1)),
    enqueued_at  INTEGER NOT NULL,
    topic        TEXT NOT NULL,
    payload      BLOB NOT NULL
  );
  CREATE TABLE cloud_spool_counters (
    id        INTEGER PRIMARY KEY CHECK (id = 1),
    bytes     INTEGER NOT NULL,
    appended  INTEGER NOT NULL,
    acked     INTEGER NOT NULL,
    evicted   INTEGER NOT NULL
  );
  INSERT INTO cloud_spool_counters (id, bytes, appended, acked, evicted) VALUES (1, 0, 0, 0, 0);
  `,
  // 7: the shadow sync's marks — per synced shadow, the local and the cloud version last seen in sync, so a
  // reconnect (even after a restart) knows which side changed while they were apart.
  `
  CREATE TABLE cloud_sync (
    thing          TEXT NOT NULL,
    name           TEXT NOT NULL,
    local_version  INTEGER NOT NULL,
    cloud_version  INTEGER NOT NULL,
    PRIMARY KEY (thing, name)
  ) WITHOUT ROWID;
  `,
  // 8: the spool's dead letters — messages the upstream never accepted, set aside so the spool goes on
  // (src/cloud/reject-rule.ts); bounded by the spool, with their own counter.
  `
  CREATE TABLE cloud_spool_rejected (
    seq          INTEGER PRIMARY KEY,
    bytes        INTEGER NOT NULL,
    qos          INTEGER NOT NULL,
    enqueued_at  INTEGER NOT NULL,
    rejected_at  INTEGER NOT NULL,
    reason       TEXT NOT NULL,
    topic        TEXT NOT NULL,
    payload      BLOB NOT NULL
  );
  CREATE TABLE cloud_spool_rejected_counters (
    id        INTEGER PRIMARY KEY CHECK (id = 1),
    rejected  INTEGER NOT NULL
  );
  INSERT INTO cloud_spool_rejected_counters (id, rejected) VALUES (1, 0);
  `,
  // 9: the shadow journal — the accepted changes since the documents in `shadows` were last written, one
  // row per group commit (src/shadow/journal.ts); compaction folds them into `shadows` and deletes them.
  `
  CREATE TABLE shadow_journal (
    seq      INTEGER PRIMARY KEY,
    records  TEXT NOT NULL
  );
  `,
  // 10: journal rows a start-up could not replay exactly (src/shadow/journal.ts), kept for the operator
  // before compaction deletes them from the journal.
  `
  CREATE TABLE shadow_journal_damaged (
    seq       INTEGER PRIMARY KEY,
    records   TEXT NOT NULL,
    found_at  INTEGER NOT NULL
  );
  `,
];
