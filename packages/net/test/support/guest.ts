/**
 * A guest for the net tests: plain SharedArrayBuffer guest memory and
 * virtio's driver-side rings (split or packed), playing the virtio-net driver:
 * it posts frames with a virtio_net_hdr on TX and empty buffers on RX, and
 * collects used buffers with their lengths.
 */
import { native } from '@vhost-ts/native';
import {
  GuestMemory,
  PackedDriverRing,
  SplitDriverRing,
  createUsedBuffer,
  packedDescBytes,
  splitAvailBytes,
  splitDescBytes,
  splitUsedBytes,
  type DriverRing,
  type UsedBuffer,
} from '@vhost-ts/virtio';
import type { RegionSpec, RingSpec } from '@vhost-ts/workers';

/** Guest memory: one region at `gpa` with a bump allocator. */
export class TestGuest {
  readonly sab: SharedArrayBuffer;
  readonly gpa: number;
  readonly mem: GuestMemory;
  private next: number;

  constructor(bytes = 8 << 20, gpa = 0x100000) {
    this.sab = new SharedArrayBuffer(bytes);
    this.gpa = gpa;
    this.mem = new GuestMemory([{ gpa, size: bytes, sab: this.sab, sabOffset: 0 }]);
    this.next = gpa;
  }

  alloc(bytes: number, align = 16): number {
    const at = Math.ceil(this.next / align) * align;
    this.next = at + bytes;
    if (this.next > this.gpa + this.sab.byteLength) throw new RangeError('test guest memory exhausted');
    return at;
  }

  get u8(): Uint8Array {
    return this.mem.regions[0]!.u8;
  }

  write(gpa: number, bytes: Uint8Array): void {
    this.u8.set(bytes, gpa - this.gpa);
  }

  read(gpa: number, len: number): Uint8Array {
    const o = gpa - this.gpa;
    return this.u8.slice(o, o + len);
  }

  regions(): RegionSpec[] {
    return [{ gpa: this.gpa, size: this.sab.byteLength, sab: this.sab }];
  }
}

export interface TestRingOptions {
  kind?: 'split' | 'packed';
  size?: number;
  eventIdx?: boolean;
  /** Real kick/call eventfds (for worker tests); default false. */
  eventfds?: boolean;
}

/** A used buffer as the guest sees it. */
export interface Used {
  token: number;
  len: number;
}

/** One driver-side ring and the buffers posted on it. */
export class TestRing {
  readonly driver: DriverRing<number>;
  readonly kind: 'split' | 'packed';
  readonly size: number;
  readonly descGpa: number;
  readonly driverGpa: number;
  readonly deviceGpa: number;
  readonly kickFd: number | null;
  readonly callFd: number | null;
  /** token -> the buffers of the chain (gpa, len, writable). */
  readonly posted = new Map<number, { gpa: number; len: number }[]>();
  private seq = 0;
  private readonly used: UsedBuffer<number> = createUsedBuffer<number>();

  constructor(
    readonly guest: TestGuest,
    readonly index: number,
    opts: TestRingOptions = {},
  ) {
    const kind = (this.kind = opts.kind ?? 'split');
    const size = (this.size = opts.size ?? 256);
    const eventIdx = opts.eventIdx ?? false;
    if (kind === 'split') {
      this.descGpa = guest.alloc(splitDescBytes(size), 16);
      this.driverGpa = guest.alloc(splitAvailBytes(size), 2);
      this.deviceGpa = guest.alloc(splitUsedBytes(size), 4);
      this.driver = new SplitDriverRing<number>(guest.mem, { size, descGpa: this.descGpa, availGpa: this.driverGpa, usedGpa: this.deviceGpa, eventIdx });
    } else {
      this.descGpa = guest.alloc(packedDescBytes(size), 16);
      this.driverGpa = guest.alloc(4, 4);
      this.deviceGpa = guest.alloc(4, 4);
      this.driver = new PackedDriverRing<number>(guest.mem, { size, descGpa: this.descGpa, driverEventGpa: this.driverGpa, deviceEventGpa: this.deviceGpa, eventIdx });
    }
    this.kickFd = opts.eventfds === true ? native.eventfdCreate(0) : null;
    this.callFd = opts.eventfds === true ? native.eventfdCreate(0) : null;
  }

  spec(): RingSpec {
    return {
      index: this.index,
      kind: this.kind,
      size: this.size,
      descGpa: this.descGpa,
      driverGpa: this.driverGpa,
      deviceGpa: this.deviceGpa,
      lastAvailIdx: this.kind === 'split' ? this.driver.vringBase : 0,
      kickFd: this.kickFd,
      callFd: this.callFd,
    };
  }

  /** Adds one chain of buffers (out = device-readable, in = device-writable); returns its token or -1 when full. */
  add(bufs: { gpa: number; len: number }[], outCount: number): number {
    const token = this.seq++;
    const id = this.driver.add(
      bufs.map((b) => b.gpa),
      bufs.map((b) => b.len),
      outCount,
      bufs.length - outCount,
      token,
    );
    if (id < 0) {
      this.seq--;
      return -1;
    }
    this.posted.set(token, bufs);
    return token;
  }

  /** Publishes and kicks (when the device wants a kick and there is a kick fd). */
  publish(): void {
    if (this.driver.needsKick() && this.kickFd !== null) native.eventfdWrite(this.kickFd, 1);
  }

  /** Takes every used buffer. */
  reap(): Used[] {
    const out: Used[] = [];
    while (this.driver.getUsed(this.used)) {
      const token = this.used.token!;
      if (!this.posted.has(token)) throw new Error(`token ${token} returned twice or never posted`);
      out.push({ token, len: this.used.len });
    }
    return out;
  }

  /** Forgets a returned chain's buffers (after the test read them). */
  buffers(token: number): { gpa: number; len: number }[] {
    const b = this.posted.get(token);
    if (b === undefined) throw new Error(`unknown token ${token}`);
    return b;
  }

  close(): void {
    if (this.kickFd !== null) native.close(this.kickFd);
    if (this.callFd !== null) native.close(this.callFd);
  }
}

/**
 * A virtio-net guest: one queue pair (RX ring 2i, TX ring 2i+1) with helpers
 * to send frames (header + frame, optionally split over two descriptors) and
 * to post receive buffers and read what was received.
 */
export class NetGuest {
  readonly rx: TestRing;
  readonly tx: TestRing;
  /** RX token -> buffer gpa. */
  private readonly txBufs: number[] = [];
  private txNext = 0;

  constructor(
    readonly guest: TestGuest,
    readonly pair: number,
    readonly hdrLen: number,
    opts: TestRingOptions & { txSlotBytes?: number } = {},
  ) {
    this.rx = new TestRing(guest, 2 * pair, opts);
    this.tx = new TestRing(guest, 2 * pair + 1, opts);
    const slot = opts.txSlotBytes ?? 2048;
    for (let i = 0; i < this.tx.size; i++) this.txBufs.push(guest.alloc(slot, 64));
    this.txSlotBytes = slot;
  }

  readonly txSlotBytes: number;

  /**
   * Sends `frame` with header `hdr` (default zeros): one descriptor with both,
   * or two (`split`). Returns the TX token, or -1 when the TX ring is full.
   */
  send(frame: Uint8Array, opts: { hdr?: Uint8Array; split?: boolean; publish?: boolean } = {}): number {
    const hdr = opts.hdr ?? new Uint8Array(this.hdrLen);
    if (hdr.length !== this.hdrLen) throw new Error(`header must be ${this.hdrLen} bytes`);
    if (hdr.length + frame.length > this.txSlotBytes) throw new Error('frame larger than a TX slot');
    const gpa = this.txBufs[this.txNext++ % this.txBufs.length]!;
    this.guest.write(gpa, hdr);
    this.guest.write(gpa + hdr.length, frame);
    const bufs = opts.split === true
      ? [{ gpa, len: hdr.length }, { gpa: gpa + hdr.length, len: frame.length }]
      : [{ gpa, len: hdr.length + frame.length }];
    const t = this.tx.add(bufs, bufs.length);
    if (opts.publish !== false) this.tx.publish();
    return t;
  }

  /** Posts `n` RX chains of one writable buffer of `bytes` each; returns how many were posted. */
  postRx(n: number, bytes: number): number {
    let k = 0;
    for (; k < n; k++) {
      const gpa = this.guest.alloc(bytes, 64);
      if (this.rx.add([{ gpa, len: bytes }], 0) < 0) break;
    }
    this.rx.publish();
    return k;
  }

  /** The bytes a used RX chain holds (its first `len` writable bytes, across its buffers). */
  rxBytes(u: Used): Uint8Array {
    const out = new Uint8Array(u.len);
    let at = 0;
    for (const b of this.rx.buffers(u.token)) {
      const n = Math.min(b.len, u.len - at);
      if (n <= 0) break;
      out.set(this.guest.read(b.gpa, n), at);
      at += n;
    }
    return out;
  }

  close(): void {
    this.rx.close();
    this.tx.close();
  }
}

/** A test frame: dst, src, EtherType 0x88b5 (local experimental), payload bytes i & 0xff ^ seed. */
export function testFrame(len: number, seed = 0, dst = [2, 0, 0, 0, 0, 2], src = [2, 0, 0, 0, 0, 1]): Uint8Array {
  const f = new Uint8Array(len);
  f.set(dst, 0);
  f.set(src, 6);
  f[12] = 0x88;
  f[13] = 0xb5;
  for (let i = 14; i < len; i++) f[i] = (i ^ seed) & 0xff;
  return f;
}

/** A v1 header with num_buffers and offload fields read back. */
export function parseHeader(b: Uint8Array): { flags: number; gsoType: number; csumStart: number; csumOffset: number; numBuffers: number } {
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  return {
    flags: b[0]!,
    gsoType: b[1]!,
    csumStart: dv.getUint16(6, true),
    csumOffset: dv.getUint16(8, true),
    numBuffers: b.length >= 12 ? dv.getUint16(10, true) : 1,
  };
}

/** Polls until `check` passes or the timeout expires. */
export async function until(check: () => boolean, timeoutMs = 5000, stepMs = 2): Promise<boolean> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    if (check()) return true;
    if (Date.now() > end) return false;
    await new Promise((r) => setTimeout(r, stepMs));
  }
}
