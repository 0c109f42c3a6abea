/**
 * Message framing over one connected unix stream socket: the native
 * `recvmsg`/`sendmsg` (which carry SCM_RIGHTS fds, unlike Node's `net`) driven
 * by one native `Poller`.
 *
 * Reading takes exactly the 12-byte header, then exactly `size` payload bytes,
 * so the fds of message N+1 are never taken while message N is read (the
 * kernel attaches fds to the first byte of the sendmsg that carried them and
 * a read stops at that boundary). Messages are delivered one at a time: while
 * the handler's promise is pending the socket is not read at all, so requests
 * are processed strictly in order and a slow handler applies back-pressure.
 *
 * Any framing error (bad version, undefined flags, REPLY flag on the wrong
 * side, size above the maximum, a truncated message, more than 8 fds,
 * MSG_CTRUNC, a socket error) closes the channel: the reason is passed to
 * `onClose` exactly once and every fd the channel holds is closed.
 */
import { POLL_READABLE, POLL_WRITABLE, type NativeBinding, type Poller } from '@vhost-ts/native';
import type { Logger } from '../log.js';
import { HEADER_SIZE, MAX_FDS_PER_MESSAGE } from '../protocol/constants.js';
import { ProtocolError } from '../protocol/errors.js';
import { decodeHeader, validateHeader, type MessageHeader } from '../protocol/header.js';

/** One complete message as read from the socket. */
export interface ReceivedMessage {
  header: MessageHeader;
  /** Exactly `header.size` bytes (a private copy). */
  payload: Uint8Array;
  /**
   * The fds that arrived with the message. The handler owns them: it must
   * keep or close every one (the state machine closes those it refuses).
   */
  fds: number[];
}

export interface ChannelOptions {
  /** A connected, non-blocking unix stream socket. The channel owns it from now on. */
  fd: number;
  native: NativeBinding;
  logger: Logger;
  /**
   * Which side of the protocol the peer speaks: `false` on the main socket
   * (the peer sends requests, REPLY must be clear), `true` on the back-end
   * request channel (the peer sends replies, REPLY must be set).
   */
  peerSendsReplies: boolean;
  /**
   * Called for each message, one at a time. Returning a promise stops reading
   * until it settles; a rejection (or a throw) closes the channel with the
   * error's message as reason.
   */
  onMessage(message: ReceivedMessage): void | Promise<void>;
  /** Called once when the channel closes, after the fd is closed. */
  onClose(reason: string): void;
  /**
   * Back-pressure: while more than this many bytes wait to be sent (the peer
   * does not read), the channel stops reading requests. Default 64 KiB.
   */
  maxQueuedBytes?: number;
  /** The same bound in messages. Default 256. */
  maxQueuedMessages?: number;
  /**
   * How long reading may stay stopped for unsent replies before the channel
   * closes ("peer does not read its replies"), ms. Default 30000.
   */
  writeStallTimeoutMs?: number;
}

/** Default back-pressure bounds (see {@link ChannelOptions}). */
export const DEFAULT_MAX_QUEUED_BYTES = 64 * 1024;
export const DEFAULT_MAX_QUEUED_MESSAGES = 256;
export const DEFAULT_WRITE_STALL_TIMEOUT_MS = 30_000;

interface PendingWrite {
  data: Uint8Array;
  offset: number;
  /** Fds still to send with the first byte (empty once the first byte went out). */
  fds: number[];
}

/** Framing and buffered writing over one socket. */
export class MessageChannel {
  readonly fd: number;
  private readonly native: NativeBinding;
  private readonly options: ChannelOptions;
  private readonly poller: Poller;

  private readonly headerBytes = new Uint8Array(HEADER_SIZE);
  private headerGot = 0;
  private header: MessageHeader | null = null;
  private payload: Uint8Array | null = null;
  private payloadGot = 0;
  /** Fds received for the message being read. */
  private pendingFds: number[] = [];

  private handlerBusy = false;
  private readonly writes: PendingWrite[] = [];
  /** Bytes in `writes` not sent yet. */
  private queuedBytes = 0;
  /** Reading stopped because too much is unsent; the stall timer closes the channel if it lasts. */
  private writeBlocked = false;
  private stallTimer: ReturnType<typeof setTimeout> | null = null;
  private watching = 0;
  private closedReason: string | null = null;

  constructor(options: ChannelOptions) {
    this.options = options;
    this.fd = options.fd;
    this.native = options.native;
    this.poller = new this.native.Poller(this.fd, (events) => this.onEvents(events));
  }

  /** Starts reading. */
  start(): void {
    this.updateWatch();
  }

  /** True once closed. */
  get closed(): boolean {
    return this.closedReason !== null;
  }

  /** Why the channel closed, or null while open. */
  get closeReason(): string | null {
    return this.closedReason;
  }

  /**
   * Queues `data` (a whole encoded message) with `fds` for sending. The
   * channel takes ownership of `fds` and closes its copies once they are sent
   * (or when the channel closes). Returns false when the channel is closed.
   */
  send(data: Uint8Array, fds: readonly number[] = []): boolean {
    if (this.closed) {
      this.closeFds(fds);
      return false;
    }
    this.writes.push({ data, offset: 0, fds: [...fds] });
    this.queuedBytes += data.byteLength;
    if (this.writes.length === 1) this.flush();
    else this.checkBackPressure();
    return !this.closed;
  }

  /**
   * Closes the socket and everything the channel holds. Idempotent; only the
   * first reason is reported.
   */
  close(reason: string): void {
    if (this.closedReason !== null) return;
    this.closedReason = reason;
    if (this.stallTimer !== null) clearTimeout(this.stallTimer);
    this.stallTimer = null;
    this.poller.close();
    try {
      this.native.close(this.fd);
    } catch {
      // already gone: nothing to release
    }
    this.closeFds(this.pendingFds);
    this.pendingFds = [];
    for (const w of this.writes) this.closeFds(w.fds);
    this.writes.length = 0;
    this.queuedBytes = 0;
    this.options.onClose(reason);
  }

  // ---- events -------------------------------------------------------------------

  private onEvents(events: number): void {
    if (this.closed) return;
    if (events < 0) {
      this.close(`socket error (poll status ${events})`);
      return;
    }
    if ((events & POLL_WRITABLE) !== 0) this.flush();
    // Readable, disconnect or error: a read tells which (0 bytes = closed).
    if ((events & ~POLL_WRITABLE) !== 0) this.readMessages();
  }

  private updateWatch(): void {
    if (this.closed) return;
    const want = (this.handlerBusy || this.writeBlocked ? 0 : POLL_READABLE) | (this.writes.length > 0 ? POLL_WRITABLE : 0);
    if (want === this.watching) return;
    this.watching = want;
    if (want === 0) this.poller.stop();
    else this.poller.start(want);
  }

  // ---- reading ----------------------------------------------------------------------

  private readMessages(): void {
    while (!this.closed && !this.handlerBusy && !this.writeBlocked) {
      const message = this.readOne();
      if (message === null) return;
      this.dispatch(message);
    }
  }

  /** Reads as far as the socket allows; returns a complete message or null (would block / closed). */
  private readOne(): ReceivedMessage | null {
    try {
      if (this.header === null) {
        if (!this.readInto(this.headerBytes, this.headerGot, HEADER_SIZE - this.headerGot, 'header')) return null;
        this.headerGot = HEADER_SIZE;
        const header = decodeHeader(this.headerBytes);
        validateHeader(header, this.options.peerSendsReplies);
        this.header = header;
        this.payload = new Uint8Array(header.size);
        this.payloadGot = 0;
      }
      const header = this.header;
      const payload = this.payload!;
      if (this.payloadGot < header.size) {
        if (!this.readInto(payload, this.payloadGot, header.size - this.payloadGot, 'payload')) return null;
      }
      const message: ReceivedMessage = { header, payload, fds: this.pendingFds };
      this.pendingFds = [];
      this.header = null;
      this.payload = null;
      this.headerGot = 0;
      this.payloadGot = 0;
      return message;
    } catch (err) {
      this.close(describeReadError(err));
      return null;
    }
  }

  /**
   * Reads into `buf[offset, offset + length)` until full; returns false when
   * the socket would block (progress is kept in headerGot / payloadGot).
   */
  private readInto(buf: Uint8Array, offset: number, length: number, what: 'header' | 'payload'): boolean {
    let got = 0;
    while (got < length) {
      const r = this.native.recvmsg(this.fd, buf, offset + got, length - got);
      if (r.fds.length > 0) {
        this.pendingFds.push(...r.fds);
        if (this.pendingFds.length > MAX_FDS_PER_MESSAGE) {
          throw new ProtocolError(`too many fds: ${this.pendingFds.length} received with one message (at most ${MAX_FDS_PER_MESSAGE})`);
        }
      }
      if (r.bytes === -1) {
        if (what === 'header') this.headerGot = offset + got;
        else this.payloadGot = offset + got;
        return false;
      }
      if (r.bytes === 0) {
        const midMessage = what === 'payload' || offset + got > 0;
        if (!midMessage) throw new PeerClosed('peer closed the connection');
        const total = what === 'header' ? `${offset + got} of ${HEADER_SIZE} header bytes` : `${offset + got} of ${length + offset} payload bytes`;
        throw new ProtocolError(`truncated message: peer closed after ${total}`, this.header?.request);
      }
      got += r.bytes;
    }
    return true;
  }

  private dispatch(message: ReceivedMessage): void {
    let result: void | Promise<void>;
    try {
      result = this.options.onMessage(message);
    } catch (err) {
      this.close(errorMessage(err));
      return;
    }
    if (result === undefined || typeof (result as Promise<void>).then !== 'function') return;
    this.handlerBusy = true;
    this.updateWatch();
    (result as Promise<void>).then(
      () => {
        this.handlerBusy = false;
        if (this.closed) return;
        this.updateWatch();
        this.readMessages();
      },
      (err: unknown) => {
        this.handlerBusy = false;
        this.close(errorMessage(err));
      },
    );
  }

  // ---- writing -----------------------------------------------------------------------

  private flush(): void {
    try {
      while (this.writes.length > 0) {
        const w = this.writes[0]!;
        const n = this.native.sendmsg(this.fd, w.data, w.offset, w.data.byteLength - w.offset, w.fds);
        if (n === -1) break; // EAGAIN: wait for POLL_WRITABLE
        if (w.fds.length > 0) {
          this.closeFds(w.fds); // the kernel holds its own references now
          w.fds = [];
        }
        w.offset += n;
        this.queuedBytes -= n;
        if (w.offset < w.data.byteLength) continue;
        this.writes.shift();
      }
    } catch (err) {
      this.close(`send failed: ${errorMessage(err)}`);
      return;
    }
    this.checkBackPressure();
  }

  /**
   * Stops reading while too much is unsent (a peer that never reads its
   * replies must not grow us without bound), resumes once the queue drained
   * to half the bound, and closes the connection if it stays stopped for
   * `writeStallTimeoutMs`. Updates the poller either way.
   */
  private checkBackPressure(): void {
    if (this.closed) return;
    const maxBytes = this.options.maxQueuedBytes ?? DEFAULT_MAX_QUEUED_BYTES;
    const maxMessages = this.options.maxQueuedMessages ?? DEFAULT_MAX_QUEUED_MESSAGES;
    if (!this.writeBlocked) {
      if (this.queuedBytes > maxBytes || this.writes.length > maxMessages) {
        this.writeBlocked = true;
        const ms = this.options.writeStallTimeoutMs ?? DEFAULT_WRITE_STALL_TIMEOUT_MS;
        this.options.logger.debug(`${this.queuedBytes} bytes in ${this.writes.length} message(s) unsent: not reading until the peer reads`);
        this.stallTimer = setTimeout(() => {
          this.stallTimer = null;
          this.close(`the peer does not read: ${this.queuedBytes} bytes in ${this.writes.length} message(s) unsent for ${ms} ms`);
        }, ms);
      }
    } else if (this.queuedBytes <= maxBytes / 2 && this.writes.length <= maxMessages / 2) {
      this.writeBlocked = false;
      if (this.stallTimer !== null) clearTimeout(this.stallTimer);
      this.stallTimer = null;
      // Level-triggered: POLL_READABLE fires again at once for requests already waiting.
      this.updateWatch();
      return;
    }
    this.updateWatch();
  }

  private closeFds(fds: readonly number[]): void {
    for (const fd of fds) {
      try {
        this.native.close(fd);
      } catch {
        // already closed
      }
    }
  }
}

/** The peer closed the socket between two messages (a normal disconnect). */
class PeerClosed extends Error {}

function describeReadError(err: unknown): string {
  if (err instanceof PeerClosed || err instanceof ProtocolError) return err.message;
  const code = (err as { code?: unknown }).code;
  if (code === 'ECTRUNC') return 'too many fds: ancillary data truncated (MSG_CTRUNC)';
  return `receive failed: ${errorMessage(err)}`;
}

export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
