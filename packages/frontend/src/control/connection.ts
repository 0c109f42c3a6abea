/**
 * Message framing over a non-blocking AF_UNIX stream socket, driven by the
 * native Poller (never blocks the event loop).
 *
 * Receive: exactly the 12-byte header first, then exactly `size` payload bytes,
 * so the fds of message N+1 are never taken while reading message N; fds that
 * arrive with any byte of a message belong to it. Send: header + payload in one
 * sendmsg with the fds; a short write or EAGAIN parks the rest until the socket
 * is writable (the fds went with the first byte).
 */
import { POLL_DISCONNECT, POLL_READABLE, POLL_WRITABLE, type Poller } from '@vhost-ts/native';
import { decodeHeader, HEADER_SIZE } from '@vhost-ts/vhost/protocol';
import { native } from '../native.js';

/** One message read from the socket. The receiver owns `fds` (close them). */
export interface VhostMessage {
  request: number;
  flags: number;
  /** The header's size field (equals payload.byteLength). */
  size: number;
  payload: Uint8Array;
  fds: number[];
}

/** How a connection ended. */
export interface CloseInfo {
  /** `peer`: the other side closed or reset it; `local`: close() was called; `error`: a socket or framing error. */
  by: 'peer' | 'local' | 'error';
  error?: Error;
}

export class ConnectionClosedError extends Error {
  override readonly name = 'ConnectionClosedError';
  readonly info: CloseInfo;
  constructor(message: string, info: CloseInfo) {
    super(message);
    this.info = info;
  }
}

export class ReplyTimeoutError extends Error {
  override readonly name = 'ReplyTimeoutError';
}

interface Waiter {
  resolve: (m: VhostMessage) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout | undefined;
}

interface PendingSend {
  bytes: Uint8Array;
  offset: number;
  fds: readonly number[];
  resolve: () => void;
  reject: (e: Error) => void;
}

export interface ConnectionOptions {
  /** Largest payload accepted from the peer; a larger header closes the connection (default 64 KiB). */
  maxPayload?: number;
  /** Called for every message nobody is waiting for (e.g. unsolicited traffic); default: queue it. */
  onUnsolicited?: (m: VhostMessage) => void;
}

export function closeFds(fds: readonly number[]): void {
  for (const fd of fds) {
    try {
      native.close(fd);
    } catch {
      // already closed: nothing to do
    }
  }
}

/** A framed vhost-user socket. Owns the fd (close() closes it). */
export class VhostConnection {
  readonly fd: number;
  /** Resolves once when the connection ends, never rejects. */
  readonly closed: Promise<CloseInfo>;
  private resolveClosed!: (i: CloseInfo) => void;
  private closeInfo: CloseInfo | null = null;
  private readonly poller: Poller;
  private readonly maxPayload: number;
  private readonly onUnsolicited: ((m: VhostMessage) => void) | undefined;

  // receive state
  private readonly hdr = new Uint8Array(HEADER_SIZE);
  private hdrGot = 0;
  private payload: Uint8Array | null = null;
  private payloadGot = 0;
  private fdsInFlight: number[] = [];
  private readonly inbox: VhostMessage[] = [];
  private readonly waiters: Waiter[] = [];

  // send state
  private readonly outbox: PendingSend[] = [];
  private pollMask = 0;

  constructor(fd: number, options: ConnectionOptions = {}) {
    this.fd = fd;
    this.maxPayload = options.maxPayload ?? 65536;
    this.onUnsolicited = options.onUnsolicited;
    this.closed = new Promise((r) => (this.resolveClosed = r));
    this.poller = new native.Poller(fd, (events) => this.onEvents(events));
    this.setPoll(POLL_READABLE | POLL_DISCONNECT);
  }

  get isClosed(): boolean {
    return this.closeInfo !== null;
  }

  /** Messages received and not yet taken. */
  get pending(): number {
    return this.inbox.length;
  }

  private setPoll(mask: number): void {
    if (mask === this.pollMask || this.closeInfo !== null) return;
    this.pollMask = mask;
    this.poller.start(mask);
  }

  private onEvents(events: number): void {
    if (this.closeInfo !== null) return;
    if (events < 0) {
      this.shutdown({ by: 'error', error: new Error(`poll error ${events} on the vhost-user socket`) });
      return;
    }
    if (events & POLL_WRITABLE) this.flushOutbox();
    if (events & (POLL_READABLE | POLL_DISCONNECT)) this.readAvailable();
  }

  private readAvailable(): void {
    for (;;) {
      if (this.closeInfo !== null) return;
      let r;
      try {
        if (this.payload === null) {
          r = native.recvmsg(this.fd, this.hdr, this.hdrGot, HEADER_SIZE - this.hdrGot);
        } else {
          r = native.recvmsg(this.fd, this.payload, this.payloadGot, this.payload.byteLength - this.payloadGot);
        }
      } catch (e) {
        const err = e as NodeJS.ErrnoException;
        const peer = err.code === 'ECONNRESET' || err.code === 'EPIPE';
        this.shutdown(peer ? { by: 'peer', error: err } : { by: 'error', error: err });
        return;
      }
      if (r.fds.length > 0) for (const fd of r.fds) this.fdsInFlight.push(fd);
      if (r.bytes < 0) return; // EAGAIN: wait for the next readable event
      if (r.bytes === 0) {
        const partial = this.hdrGot > 0 || this.payload !== null;
        this.shutdown(partial ? { by: 'peer', error: new Error('peer closed in the middle of a message') } : { by: 'peer' });
        return;
      }
      if (this.payload === null) {
        this.hdrGot += r.bytes;
        if (this.hdrGot < HEADER_SIZE) continue;
        const size = decodeHeader(this.hdr).size;
        if (size > this.maxPayload) {
          this.shutdown({ by: 'error', error: new Error(`peer announced a ${size}-byte payload (limit ${this.maxPayload})`) });
          return;
        }
        this.payload = new Uint8Array(size);
        this.payloadGot = 0;
        if (size > 0) continue;
      } else {
        this.payloadGot += r.bytes;
        if (this.payloadGot < this.payload.byteLength) continue;
      }
      const h = decodeHeader(this.hdr);
      const msg: VhostMessage = { request: h.request, flags: h.flags, size: h.size, payload: this.payload, fds: this.fdsInFlight };
      this.hdrGot = 0;
      this.payload = null;
      this.fdsInFlight = [];
      this.deliver(msg);
    }
  }

  private deliver(msg: VhostMessage): void {
    const w = this.waiters.shift();
    if (w !== undefined) {
      if (w.timer) clearTimeout(w.timer);
      w.resolve(msg);
    } else if (this.onUnsolicited) {
      this.onUnsolicited(msg);
    } else {
      this.inbox.push(msg);
    }
  }

  /**
   * The next message (queued or arriving), or a rejection: ReplyTimeoutError
   * after `timeoutMs`, ConnectionClosedError when the connection ends first.
   */
  receive(timeoutMs: number): Promise<VhostMessage> {
    const queued = this.inbox.shift();
    if (queued !== undefined) return Promise.resolve(queued);
    if (this.closeInfo !== null) return Promise.reject(this.closedError());
    return new Promise<VhostMessage>((resolve, reject) => {
      const w: Waiter = { resolve, reject, timer: undefined };
      if (Number.isFinite(timeoutMs)) {
        w.timer = setTimeout(() => {
          const i = this.waiters.indexOf(w);
          if (i >= 0) this.waiters.splice(i, 1);
          reject(new ReplyTimeoutError(`no message from the back-end within ${timeoutMs} ms`));
        }, timeoutMs);
      }
      this.waiters.push(w);
    });
  }

  /** Sends bytes (a whole message) with fds. Resolves when every byte is in the kernel. */
  send(bytes: Uint8Array, fds: readonly number[] = []): Promise<void> {
    if (this.closeInfo !== null) return Promise.reject(this.closedError());
    if (bytes.byteLength === 0 && fds.length > 0) return Promise.reject(new RangeError('fds need at least one byte to travel with'));
    return new Promise<void>((resolve, reject) => {
      this.outbox.push({ bytes, offset: 0, fds, resolve, reject });
      if (this.outbox.length === 1) this.flushOutbox();
    });
  }

  private flushOutbox(): void {
    while (this.outbox.length > 0 && this.closeInfo === null) {
      const s = this.outbox[0]!;
      if (s.bytes.byteLength === 0) {
        this.outbox.shift();
        s.resolve();
        continue;
      }
      let n: number;
      try {
        n = native.sendmsg(this.fd, s.bytes, s.offset, s.bytes.byteLength - s.offset, s.offset === 0 ? s.fds : undefined);
      } catch (e) {
        const err = e as NodeJS.ErrnoException;
        const peer = err.code === 'EPIPE' || err.code === 'ECONNRESET';
        this.shutdown(peer ? { by: 'peer', error: err } : { by: 'error', error: err });
        return;
      }
      if (n < 0) {
        this.setPoll(POLL_READABLE | POLL_DISCONNECT | POLL_WRITABLE);
        return;
      }
      s.offset += n;
      if (s.offset >= s.bytes.byteLength) {
        this.outbox.shift();
        s.resolve();
      }
    }
    this.setPoll(POLL_READABLE | POLL_DISCONNECT);
  }

  private closedError(): ConnectionClosedError {
    const info = this.closeInfo ?? { by: 'local' as const };
    const why = info.by === 'peer' ? 'the back-end closed the connection' : info.by === 'local' ? 'the connection was closed' : 'connection error';
    return new ConnectionClosedError(info.error ? `${why}: ${info.error.message}` : why, info);
  }

  private shutdown(info: CloseInfo): void {
    if (this.closeInfo !== null) return;
    this.closeInfo = info;
    this.poller.close();
    try {
      native.close(this.fd);
    } catch {
      // nothing more to do
    }
    closeFds(this.fdsInFlight);
    this.fdsInFlight = [];
    this.payload = null;
    const err = this.closedError();
    for (const w of this.waiters.splice(0)) {
      if (w.timer) clearTimeout(w.timer);
      w.reject(err);
    }
    for (const s of this.outbox.splice(0)) s.reject(err);
    this.resolveClosed(info);
  }

  /** Closes the socket and every fd still queued in unread messages. Idempotent. */
  close(): void {
    for (const m of this.inbox.splice(0)) closeFds(m.fds);
    this.shutdown({ by: 'local' });
  }
}
