/**
 * A Mosquitto broker for the benchmarks, wrapped in a node process so lib.js manages it like the others
 * (spawnScript: stopped by cleanup). `node bench/mosquitto.js PORT DIR` writes a config (loopback only,
 * anonymous, persistence in DIR so persistent sessions survive a restart), starts /usr/sbin/mosquitto,
 * prints {"port":PORT} once it accepts connections, and stops it on SIGTERM/SIGINT or when its own
 * parent goes away.
 */
import { spawn } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { userInfo } from 'node:os';
import { join } from 'node:path';

const [port, dir] = [Number(process.argv[2]), process.argv[3]];
const binary = existsSync('/usr/sbin/mosquitto') ? '/usr/sbin/mosquitto' : 'mosquitto';
const conf = join(dir, 'mosquitto.conf');
writeFileSync(
  conf,
  [`listener ${port} 127.0.0.1`, 'allow_anonymous true', `user ${userInfo().username}`, 'max_queued_messages 0', 'max_inflight_messages 0', 'set_tcp_nodelay true', 'persistence true', `persistence_location ${dir}/`, 'log_dest stderr', 'log_type error', ''].join('\n'),
);
const child = spawn(binary, ['-c', conf], { stdio: ['ignore', 'ignore', 'inherit'] });
const stop = () => {
  child.kill('SIGTERM');
};
for (const s of ['SIGTERM', 'SIGINT']) process.once(s, stop);
process.stdin.on?.('end', stop);
child.once('exit', (code) => process.exit(code ?? 0));

const accepts = () =>
  new Promise((resolve) => {
    const s = connect(port, '127.0.0.1');
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
const deadline = Date.now() + 10_000;
while (!(await accepts())) {
  if (Date.now() > deadline) {
    stop();
    throw new Error(`mosquitto did not accept connections on ${port}`);
  }
  await new Promise((r) => setTimeout(r, 50));
}
process.stdout.write(`${JSON.stringify({ port })}\n`);
