/**
 * Server mode: a listening unix socket (created at a path, or inherited with
 * `--fd=N`) that accepts front-ends as they come.
 */
import { lstatSync, unlinkSync } from 'node:fs';
import { POLL_READABLE, type NativeBinding, type Poller } from '@vhost-ts/native';
import type { Logger } from '../log.js';
import { errorMessage } from './channel.js';

/**
 * Removes `path` if it is a socket nothing listens on (a leftover of a dead
 * back-end). Throws if something listens, or if the path is not a socket.
 */
export function removeStaleSocket(native: NativeBinding, path: string, logger: Logger): void {
  let isSocket: boolean;
  try {
    isSocket = lstatSync(path).isSocket();
  } catch {
    return; // nothing there
  }
  if (!isSocket) throw new Error(`${path} exists and is not a socket; refusing to replace it`);
  let probe = -1;
  try {
    probe = native.unixConnect(path);
  } catch (err) {
    const code = (err as { code?: string }).code;
    if (code === 'ECONNREFUSED') {
      logger.info(`removing stale socket ${path} (nothing listens on it)`);
      unlinkSync(path);
      return;
    }
    if (code === 'ENOENT') return;
    throw new Error(`cannot probe existing socket ${path}: ${errorMessage(err)}`);
  }
  native.close(probe);
  throw new Error(`${path} is in use: another back-end is listening on it`);
}

export interface ListenerOptions {
  native: NativeBinding;
  logger: Logger;
  /** Create the socket at this path (a stale socket file is removed first). */
  path?: string;
  /** Or use this inherited, already-listening socket fd. */
  fd?: number;
  /** Called with each accepted, non-blocking connection fd (the callee owns it). */
  onConnection(fd: number): void;
}

/** First and longest delay before retrying a failed accept, ms. */
const MIN_RETRY_MS = 10;
const MAX_RETRY_MS = 1000;

/** A listening socket and its accept loop. */
export class UnixListener {
  private readonly options: ListenerOptions;
  private listenFd = -1;
  private poller: Poller | null = null;
  /** True when we created the socket file (and so remove it on close). */
  private ownsPath = false;
  /** While accept fails for lack of fds: the retry timer, its delay, and the episode's failures. */
  private retryTimer: ReturnType<typeof setTimeout> | null = null;
  private retryDelayMs = 0;
  private failedAccepts = 0;

  constructor(options: ListenerOptions) {
    this.options = options;
  }

  /** Listens (throws if the path is in use or listen fails) and starts accepting. */
  start(): void {
    const { native, path, fd } = this.options;
    if (fd !== undefined) {
      native.setNonBlocking(fd, true);
      this.listenFd = fd;
    } else if (path !== undefined) {
      removeStaleSocket(native, path, this.options.logger);
      this.listenFd = native.unixListen(path, 16);
      this.ownsPath = true;
    } else {
      throw new Error('a listener needs a path or an fd');
    }
    this.poller = new native.Poller(this.listenFd, (events) => this.onReadable(events));
    this.poller.start(POLL_READABLE);
  }

  private onReadable(events: number): void {
    if (events < 0) {
      this.options.logger.error(`listening socket error (poll status ${events}); still listening`);
      return;
    }
    this.acceptAll();
  }

  /** Accepts every waiting connection; on a failure (EMFILE, ENFILE, ENOMEM...) backs off. */
  private acceptAll(): void {
    for (;;) {
      let fd: number;
      try {
        fd = this.options.native.unixAccept(this.listenFd);
      } catch (err) {
        this.backOff(err);
        return;
      }
      this.recovered();
      if (fd < 0) break;
      this.options.onConnection(fd);
    }
  }

  /**
   * accept4 failed (at the fd limit the connection stays in the backlog, so the
   * level-triggered poller would call us again at once): stop watching the
   * socket and retry after a delay doubling from 10 ms up to 1 s. One log line
   * per episode, one more when it ends.
   */
  private backOff(err: unknown): void {
    this.failedAccepts++;
    if (this.retryDelayMs === 0) {
      this.options.logger.warn(`accept failed: ${errorMessage(err)}; not accepting, retrying with back-off up to ${MAX_RETRY_MS} ms`);
      this.retryDelayMs = MIN_RETRY_MS;
    } else {
      this.retryDelayMs = Math.min(this.retryDelayMs * 2, MAX_RETRY_MS);
    }
    this.poller?.stop();
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      if (this.listenFd < 0 || this.poller === null) return;
      this.poller.start(POLL_READABLE);
      this.acceptAll();
    }, this.retryDelayMs);
  }

  private recovered(): void {
    if (this.retryDelayMs === 0) return;
    this.options.logger.info(`accepting again after ${this.failedAccepts} failed accept(s)`);
    this.retryDelayMs = 0;
    this.failedAccepts = 0;
  }

  /** Stops accepting, closes the socket and removes the socket file we created. */
  close(): void {
    if (this.retryTimer !== null) clearTimeout(this.retryTimer);
    this.retryTimer = null;
    this.poller?.close();
    this.poller = null;
    if (this.listenFd >= 0) {
      try {
        this.options.native.close(this.listenFd);
      } catch {
        // already closed
      }
    }
    this.listenFd = -1;
    if (this.ownsPath && this.options.path !== undefined) {
      try {
        unlinkSync(this.options.path);
      } catch {
        // already removed
      }
      this.ownsPath = false;
    }
  }
}
