/**
 * Raw message mode: a vhost-user client that sends exactly what it is told
 * (any request code, flags, size field, payload bytes and fds) and reads
 * whatever comes back. For bad-input and fuzz tests of back-ends.
 *
 * @example
 * ```ts
 * const c = await RawVhostClient.connect('/tmp/vhost.sock');
 * await c.send({ request: FrontendRequest.GET_FEATURES });
 * const reply = await c.readReply(1000);              // { request, flags, size, payload, fds }
 * await c.send({ request: 9999, flags: 0x1 | 0x8 });  // an unknown request with NEED_REPLY
 * const how = await c.waitClosed(1000);              // { by: 'peer' } when the back-end hung up
 * c.close();
 * ```
 * Every fd received in a reply is owned by the caller (see {@link RawVhostClient.closeFds}).
 */
import { encodeHeader, FrontendRequest, HEADER_SIZE, requestFlags } from '@vhost-ts/vhost/protocol';
import { closeFds, VhostConnection, type CloseInfo, type VhostMessage } from './control/connection.js';
import { acceptUnix, connectUnix } from './control/socket.js';

export interface RawSendOptions {
  /** Request code (any u32, known or not). */
  request: number;
  /** Flags word (default: version 1, i.e. 0x1). Set 0x8 for NEED_REPLY, anything else to test rejection. */
  flags?: number;
  /** Payload bytes (default none). */
  payload?: Uint8Array;
  /** The header's size field (default payload length): lie about it to test framing. */
  size?: number;
  /** Fds to attach (SCM_RIGHTS, at most 8 per message; they stay open and owned by the caller). */
  fds?: readonly number[];
  /**
   * Send only these bytes of the encoded message (header + payload), e.g. a
   * truncated header; the fds travel with the first byte.
   */
  truncateTo?: number;
}

/** A received message; `fds` belong to the caller. */
export type RawMessage = VhostMessage;

export interface RawClientOptions {
  /** Default timeout of readReply / connect / accept (ms, default 5000). */
  timeoutMs?: number;
  /** Largest payload accepted from the back-end (default 64 KiB); a larger one closes the connection. */
  maxPayload?: number;
}

/** Encodes a header (any values; u32 fields) plus payload into one buffer. */
export function encodeRawMessage(opts: RawSendOptions): Uint8Array {
  const payload = opts.payload ?? new Uint8Array(0);
  const out = new Uint8Array(HEADER_SIZE + payload.byteLength);
  encodeHeader({ request: opts.request >>> 0, flags: (opts.flags ?? requestFlags()) >>> 0, size: (opts.size ?? payload.byteLength) >>> 0 }, out, 0);
  out.set(payload, HEADER_SIZE);
  if (opts.truncateTo !== undefined) {
    if (opts.truncateTo < 0 || opts.truncateTo > out.byteLength) throw new RangeError(`truncateTo ${opts.truncateTo} outside the message`);
    return out.subarray(0, opts.truncateTo);
  }
  return out;
}

export class RawVhostClient {
  readonly connection: VhostConnection;
  readonly timeoutMs: number;

  private constructor(connection: VhostConnection, timeoutMs: number) {
    this.connection = connection;
    this.timeoutMs = timeoutMs;
  }

  /** Connects to a listening back-end (retrying ENOENT/ECONNREFUSED until the timeout). */
  static async connect(path: string, options: RawClientOptions = {}): Promise<RawVhostClient> {
    const timeoutMs = options.timeoutMs ?? 5000;
    const fd = await connectUnix(path, timeoutMs);
    return RawVhostClient.fromFd(fd, options);
  }

  /** Listens on `path` and accepts one back-end (a back-end in client mode). */
  static async accept(path: string, options: RawClientOptions & { onListening?: () => void } = {}): Promise<RawVhostClient> {
    const timeoutMs = options.timeoutMs ?? 5000;
    const fd = await acceptUnix(path, timeoutMs, options.onListening);
    return RawVhostClient.fromFd(fd, options);
  }

  /** Wraps a connected stream socket fd (e.g. one end of native.socketpair()); takes ownership of it. */
  static fromFd(fd: number, options: RawClientOptions = {}): RawVhostClient {
    const conn = new VhostConnection(fd, options.maxPayload !== undefined ? { maxPayload: options.maxPayload } : {});
    return new RawVhostClient(conn, options.timeoutMs ?? 5000);
  }

  /** Resolves (never rejects) when the connection ends: `{ by: 'peer' }` when the back-end hung up. */
  get closed(): Promise<CloseInfo> {
    return this.connection.closed;
  }

  get isClosed(): boolean {
    return this.connection.isClosed;
  }

  /** Sends one crafted message. Rejects with ConnectionClosedError if the back-end is gone. */
  send(opts: RawSendOptions): Promise<void> {
    return this.connection.send(encodeRawMessage(opts), opts.fds ?? []);
  }

  /** Sends raw bytes (no header is added) with optional fds. */
  sendBytes(bytes: Uint8Array, fds: readonly number[] = []): Promise<void> {
    return this.connection.send(bytes, fds);
  }

  /**
   * The next message from the back-end. Rejects with ReplyTimeoutError when
   * nothing arrives in time, ConnectionClosedError when the back-end closes.
   */
  readReply(timeoutMs = this.timeoutMs): Promise<RawMessage> {
    return this.connection.receive(timeoutMs);
  }

  /** send() then readReply(). */
  async request(opts: RawSendOptions, timeoutMs = this.timeoutMs): Promise<RawMessage> {
    await this.send(opts);
    return this.readReply(timeoutMs);
  }

  /**
   * Resolves with the close info when the back-end closes within `timeoutMs`,
   * or null if it is still open then. Messages that arrive meanwhile stay queued.
   */
  async waitClosed(timeoutMs = this.timeoutMs): Promise<CloseInfo | null> {
    let timer: NodeJS.Timeout | undefined;
    const t = new Promise<null>((r) => (timer = setTimeout(() => r(null), timeoutMs)));
    try {
      return await Promise.race([this.connection.closed, t]);
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * True when the back-end still answers: sends GET_FEATURES and waits for its
   * reply within `timeoutMs` (use after a message the back-end should have
   * ignored or refused). False when it closed or did not answer in time.
   * Any message queued before is discarded first (its fds closed).
   */
  async isAlive(timeoutMs = this.timeoutMs): Promise<boolean> {
    if (this.connection.isClosed) return false;
    while (this.connection.pending > 0) closeFds((await this.readReply(0)).fds);
    try {
      await this.send({ request: FrontendRequest.GET_FEATURES });
      const m = await this.readReply(timeoutMs);
      closeFds(m.fds);
      return m.request === FrontendRequest.GET_FEATURES;
    } catch {
      return false; // closed, or no answer in time
    }
  }

  /** Closes fds received in a message. */
  static closeFds(fds: readonly number[]): void {
    closeFds(fds);
  }

  /** Closes the socket (and fds of unread messages). Idempotent. */
  close(): void {
    this.connection.close();
  }
}
