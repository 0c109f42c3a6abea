/**
 * A fake guest for the worker tests: plain SharedArrayBuffer guest memory and
 * virtio's driver-side split ring, with real eventfds for kick and call.
 */
import { native } from '@vhost-ts/native';
import {
  GuestMemory,
  PackedDriverRing,
  SplitDriverRing,
  createUsedBuffer,
  decodePackedBase,
  packedDescBytes,
  splitAvailBytes,
  splitDescBytes,
  splitUsedBytes,
  type UsedBuffer,
} from '@vhost-ts/virtio';
import type { RegionSpec, RingSpec } from '@vhost-ts/workers';

/** Guest memory: one region of `bytes` at `gpa`, with a bump allocator. */
export class FakeGuestMemory {
  readonly sab: SharedArrayBuffer;
  readonly gpa: number;
  readonly mem: GuestMemory;
  private next: number;

  constructor(bytes = 4 << 20, gpa = 0x100000, sab?: SharedArrayBuffer) {
    this.sab = sab ?? new SharedArrayBuffer(bytes);
    this.gpa = gpa;
    this.mem = new GuestMemory([{ gpa, size: bytes, sab: this.sab, sabOffset: 0 }]);
    this.next = gpa;
  }

  alloc(bytes: number, align = 16): number {
    const at = Math.ceil(this.next / align) * align;
    this.next = at + bytes;
    if (this.next > this.gpa + this.sab.byteLength) throw new RangeError('fake guest memory exhausted');
    return at;
  }

  /** Region specs for the manager. `copy` gives a new SAB with the same bytes (a "remapping"). */
  regions(): RegionSpec[] {
    return [{ gpa: this.gpa, size: this.sab.byteLength, sab: this.sab }];
  }
}

export interface FakeRingOptions {
  size?: number;
  bufSize?: number;
  eventIdx?: boolean;
  /** false: polling mode (no kick fd). */
  kick?: boolean;
  /** false: no call fd. */
  call?: boolean;
  /** Ring layout (default split). */
  kind?: 'split' | 'packed';
}

/** One guest-side ring with its buffers and eventfds. */
export class FakeGuestRing {
  readonly driver: SplitDriverRing<number> | PackedDriverRing<number>;
  readonly kind: 'split' | 'packed';
  readonly size: number;
  readonly bufSize: number;
  readonly bufGpa: number;
  readonly kickFd: number | null;
  readonly callFd: number | null;
  readonly descGpa: number;
  /** Split: avail ring. Packed: driver event suppression area. */
  readonly availGpa: number;
  /** Split: used ring. Packed: device event suppression area. */
  readonly usedGpa: number;
  /** Tokens posted and not yet returned. */
  readonly outstanding = new Set<number>();
  posted = 0;
  returned = 0;
  kicks = 0;
  private seq = 0;
  private readonly used: UsedBuffer<number> = createUsedBuffer<number>();
  private readonly addrs = [0, 0];
  private readonly lens = [0, 0];

  constructor(
    readonly guest: FakeGuestMemory,
    readonly index: number,
    opts: FakeRingOptions = {},
  ) {
    const size = (this.size = opts.size ?? 256);
    this.bufSize = opts.bufSize ?? 2048;
    this.kind = opts.kind ?? 'split';
    const eventIdx = opts.eventIdx ?? false;
    if (this.kind === 'split') {
      this.descGpa = guest.alloc(splitDescBytes(size), 16);
      this.availGpa = guest.alloc(splitAvailBytes(size), 2);
      this.usedGpa = guest.alloc(splitUsedBytes(size), 4);
      this.driver = new SplitDriverRing<number>(guest.mem, { size, descGpa: this.descGpa, availGpa: this.availGpa, usedGpa: this.usedGpa, eventIdx });
    } else {
      this.descGpa = guest.alloc(packedDescBytes(size), 16);
      this.availGpa = guest.alloc(4, 4);
      this.usedGpa = guest.alloc(4, 4);
      this.driver = new PackedDriverRing<number>(guest.mem, {
        size,
        descGpa: this.descGpa,
        driverEventGpa: this.availGpa,
        deviceEventGpa: this.usedGpa,
        eventIdx,
      });
    }
    this.bufGpa = guest.alloc(size * this.bufSize, 64);
    this.kickFd = opts.kick === false ? null : native.eventfdCreate(0);
    this.callFd = opts.call === false ? null : native.eventfdCreate(0);
  }

  spec(): RingSpec {
    const base = this.kind === 'split' ? { lastAvailIdx: this.driver.vringBase } : packedBase(this.driver.vringBase);
    return {
      index: this.index,
      kind: this.kind,
      size: this.size,
      descGpa: this.descGpa,
      driverGpa: this.availGpa,
      deviceGpa: this.usedGpa,
      ...base,
      kickFd: this.kickFd,
      callFd: this.callFd,
    };
  }

  /**
   * Posts up to `n` chains of one readable buffer of `len` bytes filled with
   * `fill` (first byte: `first`, default fill), publishes and kicks if needed.
   * Returns how many were posted (limited by free slots).
   */
  post(n: number, len = 64, fill = 0x11, first = fill): number {
    const u8 = this.guest.mem.regions[0]!.u8;
    let k = 0;
    for (; k < n; k++) {
      if (this.driver.numFree < 1) break;
      const token = this.seq++;
      const slot = token % this.size;
      const gpa = this.bufGpa + slot * this.bufSize;
      const off = gpa - this.guest.gpa;
      u8.fill(fill, off, off + len);
      u8[off] = first;
      this.addrs[0] = gpa;
      this.lens[0] = len;
      if (this.driver.add(this.addrs, this.lens, 1, 0, token) < 0) {
        this.seq--;
        break;
      }
      this.outstanding.add(token);
      this.posted++;
    }
    if (this.driver.needsKick()) this.kick();
    return k;
  }

  kick(): void {
    this.kicks++;
    if (this.kickFd !== null) native.eventfdWrite(this.kickFd, 1);
  }

  /** Collects used buffers; throws on a token returned twice or never posted. */
  reap(): number {
    let n = 0;
    while (this.driver.getUsed(this.used)) {
      const t = this.used.token!;
      if (!this.outstanding.delete(t)) throw new Error(`token ${t} returned twice or never posted`);
      n++;
    }
    this.returned += n;
    return n;
  }

  /** Reads (and clears) the call eventfd counter. */
  calls(): number {
    return this.callFd === null ? 0 : native.eventfdRead(this.callFd);
  }

  close(): void {
    if (this.kickFd !== null) native.close(this.kickFd);
    if (this.callFd !== null) native.close(this.callFd);
  }
}

/** RingSpec position fields from a packed GET_VRING_BASE value. */
export function packedBase(vringBase: number): Pick<RingSpec, 'lastAvailIdx' | 'availWrap' | 'lastUsedIdx' | 'usedWrap'> {
  const b = decodePackedBase(vringBase);
  return { lastAvailIdx: b.availIdx, availWrap: b.availWrap === 1, lastUsedIdx: b.usedIdx, usedWrap: b.usedWrap === 1 };
}

/** Polls until `check` passes or the timeout expires (returns the last result). */
export async function until(check: () => boolean, timeoutMs = 5000, stepMs = 2): Promise<boolean> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    if (check()) return true;
    if (Date.now() > end) return false;
    await new Promise((r) => setTimeout(r, stepMs));
  }
}
