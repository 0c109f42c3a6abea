/**
 * Getting a vhost-user socket: connect as a client (retrying while the
 * back-end is not listening yet) or, in server mode, listen and accept one
 * back-end. Both asynchronous, with a timeout.
 */
import { lstatSync, unlinkSync } from 'node:fs';
import { POLL_READABLE } from '@vhost-ts/native';
import { native } from '../native.js';
import { ReplyTimeoutError } from './connection.js';

const RETRYABLE = new Set(['ENOENT', 'ECONNREFUSED', 'EAGAIN']);

/** Connects to `path`; retries ENOENT/ECONNREFUSED every 20 ms until `timeoutMs` (0 = one attempt). */
export async function connectUnix(path: string, timeoutMs: number): Promise<number> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    try {
      return native.unixConnect(path);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code ?? '';
      if (!RETRYABLE.has(code) || Date.now() >= end) {
        throw new Error(`cannot connect to the vhost-user socket ${path}: ${(e as Error).message}`, { cause: e });
      }
    }
    await new Promise((r) => setTimeout(r, 20));
  }
}

/**
 * unixListen, but a stale socket file at `path` (nobody accepts on it) is
 * removed first; a live one (or a non-socket) is an error.
 */
function listenReplacingStale(path: string): number {
  try {
    return native.unixListen(path, 1);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EADDRINUSE') throw e;
    if (!lstatSync(path).isSocket()) throw new Error(`${path} exists and is not a socket`, { cause: e });
    let fd = -1;
    try {
      fd = native.unixConnect(path);
    } catch {
      unlinkSync(path); // stale: nobody listening
      return native.unixListen(path, 1);
    }
    native.close(fd);
    throw new Error(`${path}: something is already listening on this socket`, { cause: e });
  }
}

/**
 * Listens on `path` (a stale socket file there is replaced), accepts exactly one connection,
 * then closes the listening socket and removes the path. `onListening` runs
 * once the socket exists (a test starts the back-end then).
 */
export function acceptUnix(path: string, timeoutMs: number, onListening?: () => void): Promise<number> {
  const listenFd = listenReplacingStale(path);
  return new Promise<number>((resolve, reject) => {
    let done = false;
    const finish = (fd: number, err: Error | null): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      poller.close();
      native.close(listenFd);
      try {
        unlinkSync(path);
      } catch {
        // already gone
      }
      if (err) reject(err);
      else resolve(fd);
    };
    const poller = new native.Poller(listenFd, (events) => {
      if (events < 0) return finish(-1, new Error(`poll error ${events} on the listening socket ${path}`));
      try {
        const fd = native.unixAccept(listenFd);
        if (fd >= 0) finish(fd, null);
      } catch (e) {
        finish(-1, e as Error);
      }
    });
    const timer = setTimeout(
      () => finish(-1, new ReplyTimeoutError(`no back-end connected to ${path} within ${timeoutMs} ms`)),
      timeoutMs,
    );
    poller.start(POLL_READABLE);
    onListening?.();
  });
}
