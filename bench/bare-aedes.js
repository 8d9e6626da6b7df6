/**
 * The baseline broker: aedes with its default in-memory persistence, no hooks, one TCP listener on
 * 127.0.0.1 and an OS-chosen port. Prints {"msg":"bare aedes listening","port":N} on stdout once bound;
 * exits on SIGTERM/SIGINT. Sockets get TCP_NODELAY like the coordinator's listener sets, so the two
 * differ only in what the coordinator adds on top of aedes.
 */
import { createServer } from 'node:net';
import { Aedes } from 'aedes';

const broker = await Aedes.createBroker();
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
