/**
 * Where the admin socket lives and whether another coordinator already answers on it. The socket doubles
 * as the data directory's lock: two coordinators on one database would corrupt each other's view.
 */
import { unlinkSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import type { CoordinatorConfig } from '../config/schema.js';
import { CoordinatorError } from '../errors.js';

/** File name of the admin socket inside the data directory. */
export const ADMIN_SOCKET_FILE = 'coordinator.sock';
// sun_path is 108 bytes on Linux, 104 on macOS, including the terminating NUL.
const MAX_SOCKET_PATH_BYTES = process.platform === 'linux' ? 107 : 103;

/** The admin socket path for a configuration. */
export function adminSocketPath(config: Pick<CoordinatorConfig, 'dataDir' | 'admin'>): string {
  return config.admin.socketPath ?? join(config.dataDir, ADMIN_SOCKET_FILE);
}

/** Throws COORD_ERR_ADMIN_SOCKET_PATH when the OS cannot bind a Unix socket at `path`. */
export function checkSocketPath(path: string): void {
  if (Buffer.byteLength(path) > MAX_SOCKET_PATH_BYTES) {
    throw new CoordinatorError(
      'COORD_ERR_ADMIN_SOCKET_PATH',
      `admin socket path is ${Buffer.byteLength(path)} bytes, the limit is ${MAX_SOCKET_PATH_BYTES}: ${path}`,
    );
  }
}

function answers(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ path });
    const done = (alive: boolean): void => {
      socket.destroy();
      resolve(alive);
    };
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
    // A coordinator busy starting up may be slow to accept; only a refusal proves the file is stale.
    socket.setTimeout(5000, () => done(true));
  });
}

/**
 * Binds `listen` to the socket path, which is the data directory's lock: binding is atomic, so of two
 * coordinators starting together exactly one wins. A file left by a killed coordinator (nothing answers
 * on it) is removed and the bind retried once; a live one is COORD_ERR_DATA_DIR_IN_USE.
 */
export async function bindSocketPath<T>(path: string, listen: () => Promise<T>): Promise<T> {
  checkSocketPath(path);
  try {
    return await listen();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EADDRINUSE') {
      throw new CoordinatorError('COORD_ERR_ADMIN_LISTEN', `cannot create admin socket ${path}: ${(err as Error).message}`, { cause: err });
    }
  }
  if (await answers(path)) {
    throw new CoordinatorError('COORD_ERR_DATA_DIR_IN_USE', `another coordinator is running and answering on ${path}`);
  }
  unlinkSync(path);
  try {
    return await listen();
  } catch (err) {
    const inUse = (err as NodeJS.ErrnoException).code === 'EADDRINUSE';
    throw new CoordinatorError(
      inUse ? 'COORD_ERR_DATA_DIR_IN_USE' : 'COORD_ERR_ADMIN_LISTEN',
      inUse ? `another coordinator took ${path} while this one was starting` : `cannot create admin socket ${path}: ${(err as Error).message}`,
      { cause: err },
    );
  }
}
