/**
 * The baseline broker: aedes with its default in-memory persistence, no hooks, one TCP listener on
 * 127.0.0.1 and an OS-chosen port. Prints {"msg":"bare aedes listening","port":N} on stdout once bound;
 * exits on SIGTERM/SIGINT. Sockets get TCP_NODELAY like the coordinator's listener sets, so the two
 * differ only in what the coordinator adds on top of aedes.
 *
 * With `--append-echo DIR` it is also the baseline of the shadow benchmark: the cheapest durable
 * acknowledgement of a shadow update over the same broker. Every request on
 * `$aws/things/+/shadow/update` is parsed (for its clientToken), appended as one line to DIR/append.log,
 * and answered on `.../update/accepted` (QoS 1, `{state, version, timestamp, clientToken}`) once an
 * fdatasync that began after its append has returned. Appends of one event-loop turn share one write;
 * one fdatasync runs at a time in libuv's pool and every append made meanwhile shares the next one —
 * the same pipelined group commit as the coordinator's store, minus everything else (no shadow rules,
 * no database, no authorization, no /update/documents).
 */
import { closeSync, fdatasync, openSync, writeSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { Aedes } from 'aedes';

const broker = await Aedes.createBroker();
const appendDir = process.argv.indexOf('--append-echo') >= 0 ? process.argv[process.argv.indexOf('--append-echo') + 1] : undefined;
if (appendDir) await attachAppendEcho(appendDir);

async function attachAppendEcho(dir) {
  const fd = openSync(join(dir, 'append.log'), 'a');
  process.once('exit', () => closeSync(fd));
  let lines = [];
  let unsynced = [];
  let syncing = false;
  let scheduled = false;
  const versions = new Map();
  const answer = (r) =>
    broker.publish(
      {
        cmd: 'publish',
        topic: `${r.prefix}/update/accepted`,
        payload: Buffer.from(JSON.stringify({ state: r.state, version: r.version, timestamp: r.timestamp, clientToken: r.clientToken })),
        qos: 1,
        retain: false,
        dup: false,
      },
      () => {},
    );
  const sync = () => {
    if (syncing || unsynced.length === 0) return;
    const group = unsynced;
    unsynced = [];
    syncing = true;
    fdatasync(fd, (err) => {
      syncing = false;
      if (err) throw err;
      for (const r of group) answer(r);
      sync();
    });
  };
  const flush = () => {
    scheduled = false;
    const buf = Buffer.from(lines.map((r) => r.line).join(''));
    for (const r of lines) unsynced.push(r);
    lines = [];
    let off = 0;
    while (off < buf.length) off += writeSync(fd, buf, off, buf.length - off);
    sync();
  };
  const handle = (packet, done) => {
    done();
    const prefix = packet.topic.slice(0, -'/update'.length);
    let request;
    try {
      request = JSON.parse(packet.payload.toString('utf8'));
    } catch {
      return;
    }
    const version = (versions.get(prefix) ?? 0) + 1;
    versions.set(prefix, version);
    lines.push({ prefix, line: `${prefix} ${version} ${packet.payload.toString('utf8')}\n`, state: request.state, version, timestamp: Math.floor(Date.now() / 1000), clientToken: request.clientToken });
    if (!scheduled) {
      scheduled = true;
      setImmediate(flush);
    }
  };
  await new Promise((resolve) => broker.subscribe('$aws/things/+/shadow/update', handle, resolve));
}
const sockets = new Set();
const server = createServer({ noDelay: true }, (socket) => {
  sockets.add(socket);
  socket.once('close', () => sockets.delete(socket));
  broker.handle(socket);
});

server.listen({ host: '127.0.0.1', port: 0 }, () => {
  const { port } = server.address();
  process.stdout.write(`${JSON.stringify({ msg: 'bare aedes listening', port, pid: process.pid })}\n`);
});

let stopping = false;
function shutdown() {
  if (stopping) return;
  stopping = true;
  const force = setTimeout(() => process.exit(0), 1000);
  broker.close(() => {
    server.close(() => {
      clearTimeout(force);
      process.exit(0);
    });
    for (const s of sockets) s.destroy();
  });
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
