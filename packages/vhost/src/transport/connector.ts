/**
 * Client mode: the back-end connects to a front-end listening at a path
 * (QEMU `server=on`, DPDK virtio-user `server=1`). With `reconnect`, it keeps
 * retrying until the front-end is there, and again after it goes away
 * (DPDK's RTE_VHOST_USER_CLIENT with reconnect).
 */
import type { NativeBinding } from '@vhost-ts/native';
import type { Logger } from '../log.js';
import { errorMessage } from './channel.js';

export interface ConnectorOptions {
  native: NativeBinding;
  logger: Logger;
  path: string;
  reconnect: boolean;
  /** First retry delay; doubles up to `maxRetryMs` (defaults 100 and 1000 ms). */
  minRetryMs?: number;
  maxRetryMs?: number;
  /** Called with each connected, non-blocking fd (the callee owns it). */
  onConnection(fd: number): void;
}

export class UnixConnector {
  private readonly options: ConnectorOptions;
  private timer: ReturnType<typeof setTimeout> | null = null;
  private delay: number;
  private closed = false;
  private lastError = '';

  constructor(options: ConnectorOptions) {
    this.options = options;
    this.delay = options.minRetryMs ?? 100;
  }

  /**
   * Connects once now. Without `reconnect` a failure throws; with it, retries
   * are scheduled and start() returns.
   */
  start(): void {
    if (this.tryConnect()) return;
    if (!this.options.reconnect) throw new Error(`cannot connect to ${this.options.path}: ${this.lastError}`);
    this.options.logger.info(`${this.options.path}: front-end not there yet (${this.lastError}); retrying`);
    this.schedule();
  }

  /** The connection ended: with `reconnect`, connect again. */
  connectionEnded(): void {
    if (this.closed || !this.options.reconnect) return;
    this.delay = this.options.minRetryMs ?? 100;
    this.schedule();
  }

  /** Stops retrying. */
  close(): void {
    this.closed = true;
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
  }

  private schedule(): void {
    if (this.closed || this.timer !== null) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      if (this.closed) return;
      if (!this.tryConnect()) {
        this.delay = Math.min(this.delay * 2, this.options.maxRetryMs ?? 1000);
        this.schedule();
      }
    }, this.delay);
  }

  private tryConnect(): boolean {
    let fd: number;
    try {
      fd = this.options.native.unixConnect(this.options.path);
    } catch (err) {
      this.lastError = errorMessage(err);
      return false;
    }
    this.options.onConnection(fd);
    return true;
  }
}
