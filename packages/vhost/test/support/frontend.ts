/**
 * A scripted vhost-user front-end for tests: raw messages with real fds over
 * the native socket API, plus memfd guest memory and eventfds. It speaks the
 * wire format through the codec (`@vhost-ts/vhost/protocol`) but can also send
 * arbitrary bytes for bad-input tests.
 */
import { native } from '@vhost-ts/native';
import {
  FLAG_NEED_REPLY,
  FrontendRequest,
  HEADER_SIZE,
  PROTOCOL_VERSION,
  decodeHeader,
  decodeU64,
  encodeHeader,
  encodeMemoryTable,
  encodeU64,
  encodeVringAddr,
  encodeVringFd,
  encodeVringState,
  type MemoryRegionDesc,
  type MessageHeader,
} from '@vhost-ts/vhost/protocol';

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** A message read back from the back-end. */
export interface Reply {
  header: MessageHeader;
  payload: Uint8Array;
  fds: number[];
}

export interface SendOptions {
  fds?: readonly number[];
  needReply?: boolean;
  /** Raw flags word (overrides needReply). */
  flags?: number;
  /** Header size field (defaults to the payload length). */
  size?: number;
}

/** The test side of one connection. */
export class ScriptedFrontend {
  readonly fd: number;
  private closed = false;

  constructor(fd: number) {
    this.fd = fd;
  }

  /** Connects to a listening back-end. */
  static connect(path: string): ScriptedFrontend {
    return new ScriptedFrontend(native.unixConnect(path));
  }

  /** Sends one message (header + payload in one sendmsg, fds attached). */
  send(request: number, payload: Uint8Array = new Uint8Array(0), options: SendOptions = {}): void {
    const flags = options.flags ?? (PROTOCOL_VERSION | (options.needReply === true ? FLAG_NEED_REPLY : 0));
    const bytes = new Uint8Array(HEADER_SIZE + payload.byteLength);
    encodeHeader({ request, flags, size: options.size ?? payload.byteLength }, bytes);
    bytes.set(payload, HEADER_SIZE);
    this.sendRaw(bytes, options.fds ?? []);
  }

  /** Sends raw bytes (blocking until all are written). */
  sendRaw(bytes: Uint8Array, fds: readonly number[] = []): void {
    let off = 0;
    let first = true;
    while (off < bytes.byteLength) {
      const n = native.sendmsg(this.fd, bytes, off, bytes.byteLength - off, first ? fds : []);
      if (n === -1) continue;
      first = false;
      off += n;
    }
  }

  /** Reads exactly `length` bytes (or returns null if the peer closes first). */
  private async readExact(length: number, timeoutMs: number, fds: number[]): Promise<Uint8Array | null> {
    const buf = new Uint8Array(length);
    let got = 0;
    const end = Date.now() + timeoutMs;
    while (got < length) {
      const r = native.recvmsg(this.fd, buf, got, length - got);
      fds.push(...r.fds);
      if (r.bytes === 0) return null;
      if (r.bytes > 0) {
        got += r.bytes;
        continue;
      }
      if (Date.now() > end) throw new Error(`no reply within ${timeoutMs} ms (got ${got} of ${length} bytes)`);
      await sleep(2);
    }
    return buf;
  }

  /** Reads one message; throws if none comes in time or the back-end closes. */
  async recv(timeoutMs = 3000): Promise<Reply> {
    const fds: number[] = [];
    const head = await this.readExact(HEADER_SIZE, timeoutMs, fds);
    if (head === null) throw new Error('back-end closed the connection');
    const header = decodeHeader(head);
    const payload = header.size === 0 ? new Uint8Array(0) : await this.readExact(header.size, timeoutMs, fds);
    if (payload === null) throw new Error('back-end closed mid-reply');
    return { header, payload, fds };
  }

  /** Sends a request and reads its reply. */
  async request(request: number, payload?: Uint8Array, options: SendOptions = {}): Promise<Reply> {
    this.send(request, payload, options);
    const reply = await this.recv();
    if (reply.header.request !== request) throw new Error(`reply to ${request} carries request ${reply.header.request}`);
    return reply;
  }

  /** Sends a request with NEED_REPLY and returns the REPLY_ACK u64 (0 = ok). */
  async ack(request: number, payload?: Uint8Array, options: SendOptions = {}): Promise<bigint> {
    const reply = await this.request(request, payload, { ...options, needReply: true });
    return decodeU64(reply.payload);
  }

  /** Resolves true when the back-end closes the connection within the timeout (replies in between are discarded). */
  async waitClosed(timeoutMs = 3000): Promise<boolean> {
    const buf = new Uint8Array(512);
    const end = Date.now() + timeoutMs;
    while (Date.now() < end) {
      let r;
      try {
        r = native.recvmsg(this.fd, buf, 0, buf.length);
      } catch {
        return true; // ECONNRESET
      }
      for (const fd of r.fds) native.close(fd);
      if (r.bytes === 0) return true;
      if (r.bytes < 0) await sleep(5);
    }
    return false;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    native.close(this.fd);
  }

  // ---- typed helpers -------------------------------------------------------------------

  async getU64(request: FrontendRequest): Promise<bigint> {
    return decodeU64((await this.request(request)).payload);
  }

  setU64(request: FrontendRequest, value: bigint, needReply = false): void {
    this.send(request, encodeU64(value), { needReply });
  }

  setMemTable(regions: readonly MemoryRegionDesc[], fds: readonly number[], needReply = false): void {
    this.send(FrontendRequest.SET_MEM_TABLE, encodeMemoryTable(regions), { fds, needReply });
  }

  vringState(request: FrontendRequest, index: number, num: number, needReply = false): void {
    this.send(request, encodeVringState({ index, num }), { needReply });
  }

  vringAddr(index: number, addr: { desc: bigint; avail: bigint; used: bigint; flags?: number; log?: bigint }, needReply = false): void {
    this.send(FrontendRequest.SET_VRING_ADDR, encodeVringAddr({ index, flags: addr.flags ?? 0, desc: addr.desc, used: addr.used, avail: addr.avail, log: addr.log ?? 0n }), { needReply });
  }

  vringFd(request: FrontendRequest.SET_VRING_KICK | FrontendRequest.SET_VRING_CALL | FrontendRequest.SET_VRING_ERR, index: number, fd: number | null, needReply = false): void {
    this.send(request, encodeVringFd({ index, noFd: fd === null }), { fds: fd === null ? [] : [fd], needReply });
  }
}

/** Guest memory for tests: a memfd mapped into this process (the front-end's view). */
export class TestMemory {
  readonly fd: number;
  readonly size: number;
  readonly sab: SharedArrayBuffer;
  readonly bytes: Uint8Array;
  readonly view: DataView;

  constructor(size: number, name = 'test-guest') {
    this.fd = native.memfdCreate(name);
    native.ftruncate(this.fd, size);
    this.size = size;
    this.sab = native.mmap(this.fd, 0, size);
    this.bytes = new Uint8Array(this.sab);
    this.view = new DataView(this.sab);
  }

  /** A dup of the memfd to send (the back-end closes its copy). */
  dupFd(): number {
    return native.dup(this.fd);
  }

  release(): void {
    native.release(this.sab);
    native.close(this.fd);
  }
}

/** Front-end virtual base and GPA base of the standard test region. */
export const TEST_UVA = 0x7f00_0000_0000n;
export const TEST_GPA = 0n;

/** The layout of ring `i` (size 256) in the standard test memory: 16 KiB per ring from 64 KiB. */
export function ringLayout(i: number, size = 256): { desc: bigint; avail: bigint; used: bigint; descOff: number; availOff: number; usedOff: number } {
  const base = 0x10000 + i * 0x4000 * Math.ceil(size / 256);
  const descOff = base;
  const availOff = base + 16 * size;
  const usedOff = (availOff + 4 + 2 * size + 2 + 3) & ~3;
  return { desc: TEST_UVA + BigInt(descOff), avail: TEST_UVA + BigInt(availOff), used: TEST_UVA + BigInt(usedOff), descOff, availOff, usedOff };
}

/** An eventfd pair of (kick, call) to send; the test keeps the originals. */
export function eventfd(): number {
  return native.eventfdCreate(0);
}
