import { RingError } from './errors.js';
import { copyBytes, type GuestMemory } from './memory.js';

/** Copies inside one region up to this many bytes, word-aligned, use a word loop (copyTo). */
const SMALL_WORD_COPY = 128;

/**
 * One popped descriptor chain, described in place into preallocated typed
 * arrays: a device ring's pop() overwrites it, nothing is allocated per
 * descriptor. Segment i is bytes [segOffset[i], +segLen[i]) of region
 * segRegion[i] (`chain.mem.regions[segRegion[i]].u8`), at guest address
 * segGpa[i]. A descriptor whose buffer crosses into a GPA-contiguous next
 * region yields one segment per region. Zero-length descriptors yield no segment.
 *
 * With the default strict ordering the readable segments are [0, readableCount)
 * and the writable ones [readableCount, count).
 */
export class Chain {
  /** Split: head descriptor index. Packed: buffer id. Pass it to push(). */
  head = 0;
  /** Ring slots the chain occupied (packed rings skip this many on push). */
  descCount = 0;
  /** True when the chain came through an indirect table. */
  indirect = false;
  /** Number of segments. */
  count = 0;
  readableCount = 0;
  writableCount = 0;
  readableBytes = 0;
  writableBytes = 0;
  /** Memory the offsets refer to (set by pop). */
  mem: GuestMemory | null = null;

  segRegion: Uint32Array;
  segOffset: Float64Array;
  segGpa: Float64Array;
  segLen: Uint32Array;
  /** 1 when the segment is device-writable. */
  segWritable: Uint8Array;

  constructor(capacity = 64) {
    if (!Number.isInteger(capacity) || capacity < 1) throw new RangeError(`chain capacity ${capacity} must be a positive integer`);
    this.segRegion = new Uint32Array(capacity);
    this.segOffset = new Float64Array(capacity);
    this.segGpa = new Float64Array(capacity);
    this.segLen = new Uint32Array(capacity);
    this.segWritable = new Uint8Array(capacity);
  }

  get capacity(): number {
    return this.segLen.length;
  }

  /** Empties the chain (pop does this). */
  reset(mem: GuestMemory | null): void {
    this.mem = mem;
    this.head = 0;
    this.descCount = 0;
    this.indirect = false;
    this.count = 0;
    this.readableCount = 0;
    this.writableCount = 0;
    this.readableBytes = 0;
    this.writableBytes = 0;
  }

  /**
   * Fast path of a device ring's pop: makes this a chain of one descriptor
   * [gpa, +len) (len > 0) that lies inside one region, in place of reset() +
   * addBuffer(). Returns false, changing nothing, when the buffer is not inside
   * one region (the caller then takes the general path, which reports errors).
   */
  setSingle(mem: GuestMemory, head: number, gpa: number, len: number, writable: boolean): boolean {
    const r = mem.findRegion(gpa);
    if (r < 0) return false;
    const reg = mem.regions[r]!;
    if (gpa + len > reg.end) return false;
    this.mem = mem;
    this.head = head;
    this.descCount = 1;
    this.indirect = false;
    this.count = 1;
    this.segRegion[0] = r;
    this.segOffset[0] = gpa - reg.gpa;
    this.segGpa[0] = gpa;
    this.segLen[0] = len;
    if (writable) {
      this.segWritable[0] = 1;
      this.readableCount = 0;
      this.writableCount = 1;
      this.readableBytes = 0;
      this.writableBytes = len;
    } else {
      this.segWritable[0] = 0;
      this.readableCount = 1;
      this.writableCount = 0;
      this.readableBytes = len;
      this.writableBytes = 0;
    }
    return true;
  }

  /**
   * Appends one descriptor's buffer [gpa, +len), split at GPA-contiguous region
   * boundaries. Throws RingError ADDR_RANGE when any byte is outside guest memory
   * (including a crossing from a region end into a gap), WRITE_BEFORE_READ when
   * a readable buffer follows a writable one and `strictOrder` is set.
   */
  addBuffer(mem: GuestMemory, gpa: number, len: number, writable: boolean, strictOrder: boolean): void {
    if (!writable && strictOrder && this.writableCount !== 0) {
      throw new RingError('WRITE_BEFORE_READ', `device-readable buffer at ${gpa} follows a device-writable one`);
    }
    if (len === 0) return;
    let r = mem.findRegion(gpa);
    if (r < 0) throw new RingError('ADDR_RANGE', `buffer [${gpa}, +${len}) not in guest memory`);
    const regions = mem.regions;
    for (;;) {
      const reg = regions[r]!;
      const avail = reg.end - gpa;
      const n = len <= avail ? len : avail;
      this.pushSegment(r, gpa - reg.gpa, gpa, n, writable);
      len -= n;
      if (len === 0) return;
      const next = regions[r + 1];
      if (next === undefined || next.gpa !== reg.end) {
        throw new RingError('ADDR_RANGE', `buffer crosses the end of region [${reg.gpa}, ${reg.end}) into a gap`);
      }
      gpa = reg.end;
      r++;
    }
  }

  private pushSegment(region: number, offset: number, gpa: number, len: number, writable: boolean): void {
    const i = this.count;
    if (i === this.segLen.length) this.grow();
    this.segRegion[i] = region;
    this.segOffset[i] = offset;
    this.segGpa[i] = gpa;
    this.segLen[i] = len;
    this.segWritable[i] = writable ? 1 : 0;
    this.count = i + 1;
    if (writable) {
      this.writableCount++;
      this.writableBytes += len;
    } else {
      this.readableCount++;
      this.readableBytes += len;
    }
  }

  /** Rare path: a chain with more segments than the capacity (doubling). */
  private grow(): void {
    const cap = this.segLen.length * 2;
    const r = new Uint32Array(cap);
    r.set(this.segRegion);
    this.segRegion = r;
    const o = new Float64Array(cap);
    o.set(this.segOffset);
    this.segOffset = o;
    const g = new Float64Array(cap);
    g.set(this.segGpa);
    this.segGpa = g;
    const l = new Uint32Array(cap);
    l.set(this.segLen);
    this.segLen = l;
    const w = new Uint8Array(cap);
    w.set(this.segWritable);
    this.segWritable = w;
  }

  /**
   * Copies up to `len` bytes of the device-readable part, starting `skip` bytes
   * into it, to dst[dstOff..]. Returns the bytes copied (less when the readable
   * part is shorter).
   */
  read(skip: number, dst: Uint8Array, dstOff: number, len: number): number {
    const mem = this.mem;
    if (mem === null) return 0;
    checkLocal(dst, dstOff, len);
    const regions = mem.regions;
    let done = 0;
    for (let i = 0; i < this.count && done < len; i++) {
      if (this.segWritable[i] !== 0) continue;
      const sl = this.segLen[i]!;
      if (skip >= sl) {
        skip -= sl;
        continue;
      }
      const n = Math.min(sl - skip, len - done);
      copyBytes(dst, dstOff + done, regions[this.segRegion[i]!]!.u8, this.segOffset[i]! + skip, n);
      skip = 0;
      done += n;
    }
    return done;
  }

  /**
   * Copies up to `len` bytes from src[srcOff..] into the device-writable part,
   * starting `skip` bytes into it; logs dirty pages when the memory has a log.
   * Returns the bytes written.
   */
  write(skip: number, src: Uint8Array, srcOff: number, len: number): number {
    const mem = this.mem;
    if (mem === null) return 0;
    checkLocal(src, srcOff, len);
    const regions = mem.regions;
    const log = mem.log;
    let done = 0;
    for (let i = 0; i < this.count && done < len; i++) {
      if (this.segWritable[i] === 0) continue;
      const sl = this.segLen[i]!;
      if (skip >= sl) {
        skip -= sl;
        continue;
      }
      const n = Math.min(sl - skip, len - done);
      copyBytes(regions[this.segRegion[i]!]!.u8, this.segOffset[i]! + skip, src, srcOff + done, n);
      if (log !== null) log.logRange(this.segGpa[i]! + skip, n);
      skip = 0;
      done += n;
    }
    return done;
  }

  /**
   * Copies up to `len` bytes of this chain's readable part (from `skip`) into
   * `dst`'s writable part (from `dstSkip`), guest to guest, logging dirty pages
   * of `dst`'s memory. Returns the bytes copied. Allocation-free when both
   * segments are in the same region (copyWithin).
   */
  copyTo(dst: Chain, len: number, skip = 0, dstSkip = 0): number {
    const sm = this.mem;
    const dm = dst.mem;
    if (sm === null || dm === null) return 0;
    const log = dm.log;
    let si = 0;
    let di = 0;
    let done = 0;
    // Advance to the first readable byte at `skip` and the first writable byte at `dstSkip`.
    let sOff = -1;
    let sLeft = 0;
    let dOff = -1;
    let dLeft = 0;
    while (done < len) {
      while (sLeft === 0) {
        if (si >= this.count) return done;
        if (this.segWritable[si] === 0) {
          const sl = this.segLen[si]!;
          if (skip >= sl) skip -= sl;
          else {
            sOff = this.segOffset[si]! + skip;
            sLeft = sl - skip;
            skip = 0;
            break;
          }
        }
        si++;
      }
      while (dLeft === 0) {
        if (di >= dst.count) return done;
        if (dst.segWritable[di] !== 0) {
          const dl = dst.segLen[di]!;
          if (dstSkip >= dl) dstSkip -= dl;
          else {
            dOff = dst.segOffset[di]! + dstSkip;
            dLeft = dl - dstSkip;
            dstSkip = 0;
            break;
          }
        }
        di++;
      }
      const n = Math.min(sLeft, dLeft, len - done);
      const sReg = sm.regions[this.segRegion[si]!]!;
      const dReg = dm.regions[dst.segRegion[di]!]!;
      const w = sReg.u32;
      if (n <= SMALL_WORD_COPY && sReg === dReg && w !== null && ((sOff | dOff | n) & 3) === 0) {
        // Short word-aligned copy inside one region (a 64-byte frame): a word loop
        // beats copyWithin's fixed cost on a SharedArrayBuffer by about 2x.
        const s4 = sOff >>> 2;
        const d4 = dOff >>> 2;
        const n4 = n >>> 2;
        for (let k = 0; k < n4; k++) w[d4 + k] = w[s4 + k]!;
      } else {
        copyBytes(dReg.u8, dOff, sReg.u8, sOff, n);
      }
      if (log !== null) log.logRange(dReg.gpa + dOff, n);
      done += n;
      sOff += n;
      sLeft -= n;
      dOff += n;
      dLeft -= n;
      if (sLeft === 0) si++;
      if (dLeft === 0) di++;
    }
    return done;
  }

  /** Copies this chain's description into `other` (same memory). */
  copyInto(other: Chain): void {
    other.reset(this.mem);
    other.head = this.head;
    other.descCount = this.descCount;
    other.indirect = this.indirect;
    while (other.capacity < this.count) other.grow();
    other.segRegion.set(this.segRegion.subarray(0, this.count));
    other.segOffset.set(this.segOffset.subarray(0, this.count));
    other.segGpa.set(this.segGpa.subarray(0, this.count));
    other.segLen.set(this.segLen.subarray(0, this.count));
    other.segWritable.set(this.segWritable.subarray(0, this.count));
    other.count = this.count;
    other.readableCount = this.readableCount;
    other.writableCount = this.writableCount;
    other.readableBytes = this.readableBytes;
    other.writableBytes = this.writableBytes;
  }

  /** A view of segment i (allocates a subarray; for convenience outside hot loops). */
  segment(i: number): Uint8Array {
    const mem = this.mem;
    if (mem === null || i < 0 || i >= this.count) throw new RangeError(`segment ${i} of ${this.count}`);
    const off = this.segOffset[i]!;
    return mem.regions[this.segRegion[i]!]!.u8.subarray(off, off + this.segLen[i]!);
  }
}

function checkLocal(buf: Uint8Array, off: number, len: number): void {
  if (!Number.isInteger(off) || !Number.isInteger(len) || off < 0 || len < 0 || off + len > buf.length) {
    throw new RangeError(`local buffer range [${off}, +${len}) outside a buffer of ${buf.length} bytes`);
  }
}
