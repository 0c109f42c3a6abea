/**
 * The back-end -> front-end request channel (SET_BACKEND_REQ_FD): the
 * back-end sends requests such as CONFIG_CHANGE_MSG and, with NEED_REPLY,
 * waits for the front-end's u64 answer. One request at a time.
 */
import type { NativeBinding } from '@vhost-ts/native';
import type { Logger } from '../log.js';
import { backendRequestName, type BackendRequest } from '../protocol/constants.js';
import { encodeMessage, requestFlags } from '../protocol/header.js';
import { U64_SIZE, decodeU64 } from '../protocol/payloads.js';
import { MessageChannel, type ReceivedMessage } from '../transport/channel.js';

interface Pending {
  request: number;
  resolve(value: bigint): void;
  reject(err: Error): void;
  timer: ReturnType<typeof setTimeout>;
}

export class BackendChannel {
  private readonly channel: MessageChannel;
  private readonly logger: Logger;
  private readonly native: NativeBinding;
  private pending: Pending | null = null;
  private queue: Promise<unknown> = Promise.resolve();

  constructor(fd: number, native: NativeBinding, logger: Logger) {
    this.logger = logger;
    this.native = native;
    this.channel = new MessageChannel({
      fd,
      native,
      logger,
      peerSendsReplies: true,
      onMessage: (m) => this.onReply(m),
      onClose: (reason) => {
        this.logger.info(`back-end request channel closed: ${reason}`);
        this.pending?.reject(new Error(`back-end request channel closed: ${reason}`));
      },
    });
    this.channel.start();
  }

  get closed(): boolean {
    return this.channel.closed;
  }

  /**
   * Sends `request`; with `needReply`, resolves with the front-end's u64
   * (0 = success), otherwise with 0n once queued. Rejects when the channel
   * closes or no reply comes within `timeoutMs`.
   */
  request(request: BackendRequest, payload: Uint8Array, needReply: boolean, timeoutMs: number): Promise<bigint> {
    const run = () => this.send(request, payload, needReply, timeoutMs);
    const result = this.queue.then(run, run);
    this.queue = result.catch(() => undefined);
    return result;
  }

  private send(request: BackendRequest, payload: Uint8Array, needReply: boolean, timeoutMs: number): Promise<bigint> {
    const name = backendRequestName(request);
    if (this.channel.closed) return Promise.reject(new Error(`${name}: back-end request channel is closed`));
    if (!needReply) {
      this.channel.send(encodeMessage(request, requestFlags(false), payload));
      return Promise.resolve(0n);
    }
    return new Promise<bigint>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending = null;
        reject(new Error(`${name}: no reply from the front-end within ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending = {
        request,
        resolve: (v) => {
          clearTimeout(timer);
          this.pending = null;
          resolve(v);
        },
        reject: (e) => {
          clearTimeout(timer);
          this.pending = null;
          reject(e);
        },
        timer,
      };
      this.channel.send(encodeMessage(request, requestFlags(true), payload));
    });
  }

  private onReply(message: ReceivedMessage): void {
    for (const fd of message.fds) this.closeQuietly(fd);
    const pending = this.pending;
    if (pending === null || message.header.request !== pending.request || message.header.size !== U64_SIZE) {
      this.channel.close(`unexpected reply ${backendRequestName(message.header.request)} (size ${message.header.size}) on the back-end request channel`);
      return;
    }
    pending.resolve(decodeU64(message.payload));
  }

  /** Fds are never expected on replies: close any that came. */
  private closeQuietly(fd: number): void {
    try {
      this.native.close(fd);
    } catch {
      // already closed
    }
  }

  /** Closes the channel (idempotent). */
  close(reason: string): void {
    this.channel.close(reason);
  }
}
