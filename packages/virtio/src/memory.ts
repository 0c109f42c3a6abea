import { MAX_GPA } from './constants.js';
import type { DirtyLog } from './dirty-log.js';
import { RingError } from './errors.js';

/**
 * One guest memory region as the control plane maps it: `size` bytes of guest
 * physical memory from `gpa`, backed by `sab` from byte `sabOffset`. A large
 * mapping may be split by the caller into several entries (each at most what one
 * typed array covers, 2 GiB is safe): entries with contiguous GPAs behave as one.
 */
export interface GuestRegionInit {
  gpa: number;
  size: number;
  sab: SharedArrayBuffer;
  sabOffset: number;
  /**
   * Front-end virtual address of the region's first byte (SET_MEM_TABLE
   * userspace_addr), so vaToGpa() can translate SET_VRING_ADDR ring addresses.
   */
  userAddr?: number;
}

/** Largest chunk chunkRegion() makes by default: 2 GiB (one typed array each). */
export const DEFAULT_REGION_CHUNK = 2 ** 31;

/**
 * Splits one mapped region into GPA- (and VA-) contiguous chunks of at most
 * `maxChunk` bytes over the same SharedArrayBuffer, so each chunk's views fit a
 * typed array. Chains crossing chunk boundaries are split into segments.
 */
export function chunkRegion(init: GuestRegionInit, maxChunk: number = DEFAULT_REGION_CHUNK): GuestRegionInit[] {
  if (!Number.isSafeInteger(maxChunk) || maxChunk < 2 || maxChunk % 2 !== 0) throw new RangeError(`chunk size ${maxChunk} must be an even integer >= 2`);
  const out: GuestRegionInit[] = [];
  for (let off = 0; off < init.size; off += maxChunk) {
    const c: GuestRegionInit = { gpa: init.gpa + off, size: Math.min(maxChunk, init.size - off), sab: init.sab, sabOffset: init.sabOffset + off };
    if (init.userAddr !== undefined) c.userAddr = init.userAddr + off;
    out.push(c);
  }
  return out;
}

/** A region with its views, built once. */
export class GuestRegion {
  readonly gpa: number;
  readonly size: number;
  /** Exclusive end GPA. */
  readonly end: number;
  readonly sab: SharedArrayBuffer;
  readonly sabOffset: number;
  /** Front-end VA of byte 0, or null when not given. */
  readonly userAddr: number | null;
  /** Bytes of the region: index 0 is `gpa`. */
  readonly u8: Uint8Array;
  /** Little-endian field access: use getUint32(o, true) etc. */
  readonly dv: DataView;
  /** 16-bit words for Atomics on ring index/flag words: word i is bytes [2i, 2i+2) of the region. */
  readonly u16: Uint16Array;
  /** 32-bit words (word i is bytes [4i, 4i+4)) for small word copies; null when sabOffset is not a multiple of 4. */
  readonly u32: Uint32Array | null;

  constructor(init: GuestRegionInit) {
    const { gpa, size, sab, sabOffset } = init;
    if (!(sab instanceof SharedArrayBuffer)) throw new TypeError('guest region: sab must be a SharedArrayBuffer');
    if (!Number.isSafeInteger(gpa) || gpa < 0) throw new RangeError(`guest region: gpa ${gpa} is not a non-negative safe integer`);
    if (!Number.isSafeInteger(size) || size <= 0) throw new RangeError(`guest region: size ${size} must be a positive integer`);
    if (gpa + size > MAX_GPA) throw new RangeError(`guest region: [${gpa}, +${size}) reaches beyond 2^53`);
    if (!Number.isSafeInteger(sabOffset) || sabOffset < 0 || sabOffset + size > sab.byteLength) {
      throw new RangeError(`guest region: [sabOffset ${sabOffset}, +${size}) outside its SharedArrayBuffer of ${sab.byteLength} bytes`);
    }
    if (sabOffset % 2 !== 0) throw new RangeError(`guest region: sabOffset ${sabOffset} must be even (16-bit ring words)`);
    this.gpa = gpa;
    this.size = size;
    this.end = gpa + size;
    this.sab = sab;
    this.sabOffset = sabOffset;
    if (init.userAddr !== undefined && (!Number.isSafeInteger(init.userAddr) || init.userAddr < 0)) {
      throw new RangeError(`guest region: userAddr ${init.userAddr} is not a non-negative safe integer`);
    }
    this.userAddr = init.userAddr ?? null;
    this.u8 = new Uint8Array(sab, sabOffset, size);
    this.dv = new DataView(sab, sabOffset, size);
    this.u16 = new Uint16Array(sab, sabOffset, Math.floor(size / 2));
    this.u32 = sabOffset % 4 === 0 ? new Uint32Array(sab, sabOffset, Math.floor(size / 4)) : null;
  }
}

/**
 * Guest physical memory: a sorted set of non-overlapping regions, GPA
 * translation with full bounds checks, and bounds-checked copies. Optional dirty
 * logging of every write made through the copy helpers.
 */
export class GuestMemory {
  readonly regions: readonly GuestRegion[];
  /** Dirty log; when set, writes through write()/fill()/chain helpers are logged. */
  log: DirtyLog | null = null;
  private last = 0;

  constructor(regions: readonly GuestRegionInit[]) {
    const rs = regions.map((r) => new GuestRegion(r)).sort((a, b) => a.gpa - b.gpa);
    for (let i = 1; i < rs.length; i++) {
      const prev = rs[i - 1]!;
      const cur = rs[i]!;
      if (cur.gpa < prev.end) throw new RangeError(`guest regions overlap: [${prev.gpa}, ${prev.end}) and [${cur.gpa}, ${cur.end})`);
    }
    this.regions = rs;
  }

  /** Attaches (or with null detaches) the dirty log. */
  setDirtyLog(log: DirtyLog | null): void {
    this.log = log;
  }

  /** Index of the region holding `gpa`, or -1. Last-hit cache, then binary search. */
  findRegion(gpa: number): number {
    const rs = this.regions;
    const c = rs[this.last];
    if (c !== undefined && gpa >= c.gpa && gpa < c.end) return this.last;
    let lo = 0;
    let hi = rs.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      const r = rs[mid]!;
      if (gpa < r.gpa) hi = mid - 1;
      else if (gpa >= r.end) lo = mid + 1;
      else {
        this.last = mid;
        return mid;
      }
    }
    return -1;
  }

  /**
   * Index of the one region that holds all of [gpa, gpa + len), or -1. The offset
   * inside it is `gpa - regions[i].gpa`. len 0 needs only gpa inside a region.
   */
  translate(gpa: number, len: number): number {
    if (!(gpa >= 0) || !(len >= 0)) return -1;
    const i = this.findRegion(gpa);
    if (i < 0) return -1;
    return gpa + len <= this.regions[i]!.end ? i : -1;
  }

  /**
   * True when [gpa, gpa + len) is all guest memory, possibly across
   * GPA-contiguous regions.
   */
  isValidRange(gpa: number, len: number): boolean {
    if (!(gpa >= 0) || !(len >= 0) || gpa + len > MAX_GPA) return false;
    let i = this.findRegion(gpa);
    if (i < 0) return false;
    const endGpa = gpa + len;
    for (;;) {
      const r = this.regions[i]!;
      if (endGpa <= r.end) return true;
      const n = this.regions[i + 1];
      if (n === undefined || n.gpa !== r.end) return false;
      i++;
    }
  }

  /**
   * Front-end VA -> GPA (SET_VRING_ADDR ring addresses are VAs): the GPA of `va`
   * when [va, va + len) lies in regions given with userAddr, else -1. Control
   * path (linear scan).
   */
  vaToGpa(va: number, len = 1): number {
    for (const r of this.regions) {
      if (r.userAddr === null || va < r.userAddr || va >= r.userAddr + r.size) continue;
      const gpa = r.gpa + (va - r.userAddr);
      return this.isValidRange(gpa, len) ? gpa : -1;
    }
    return -1;
  }

  /** Copies guest [gpa, gpa + len) into dst[dstOff..]. Throws RingError ADDR_RANGE if not all guest memory. */
  read(gpa: number, dst: Uint8Array, dstOff: number, len: number): void {
    checkLocal(dst, dstOff, len);
    if (!this.isValidRange(gpa, len)) throw new RingError('ADDR_RANGE', `read [${gpa}, +${len}) outside guest memory`);
    let i = this.findRegion(gpa);
    while (len > 0) {
      const r = this.regions[i]!;
      const off = gpa - r.gpa;
      const n = Math.min(len, r.end - gpa);
      copyBytes(dst, dstOff, r.u8, off, n);
      gpa += n;
      dstOff += n;
      len -= n;
      i++;
    }
  }

  /** Copies src[srcOff, +len) into guest [gpa, +len), logging dirty pages. Throws RingError ADDR_RANGE. */
  write(gpa: number, src: Uint8Array, srcOff: number, len: number): void {
    checkLocal(src, srcOff, len);
    if (!this.isValidRange(gpa, len)) throw new RingError('ADDR_RANGE', `write [${gpa}, +${len}) outside guest memory`);
    if (this.log !== null) this.log.logRange(gpa, len);
    let i = this.findRegion(gpa);
    while (len > 0) {
      const r = this.regions[i]!;
      const off = gpa - r.gpa;
      const n = Math.min(len, r.end - gpa);
      copyBytes(r.u8, off, src, srcOff, n);
      gpa += n;
      srcOff += n;
      len -= n;
      i++;
    }
  }

  /** Fills guest [gpa, +len) with `value`, logging dirty pages. Throws RingError ADDR_RANGE. */
  fill(gpa: number, value: number, len: number): void {
    if (!this.isValidRange(gpa, len)) throw new RingError('ADDR_RANGE', `fill [${gpa}, +${len}) outside guest memory`);
    if (this.log !== null) this.log.logRange(gpa, len);
    let i = this.findRegion(gpa);
    while (len > 0) {
      const r = this.regions[i]!;
      const off = gpa - r.gpa;
      const n = Math.min(len, r.end - gpa);
      r.u8.fill(value, off, off + n);
      gpa += n;
      len -= n;
      i++;
    }
  }

  /** Logs a guest write made by other means (e.g. directly through a region view). */
  logWrite(gpa: number, len: number): void {
    if (this.log !== null) this.log.logRange(gpa, len);
  }

  /** Total bytes of guest memory. */
  get totalBytes(): number {
    let t = 0;
    for (const r of this.regions) t += r.size;
    return t;
  }
}

function checkLocal(buf: Uint8Array, off: number, len: number): void {
  if (!Number.isInteger(off) || !Number.isInteger(len) || off < 0 || len < 0 || off + len > buf.length) {
    throw new RangeError(`local buffer range [${off}, +${len}) outside a buffer of ${buf.length} bytes`);
  }
}

/** Below this many bytes a plain loop beats allocating a subarray view for set(). */
const SMALL_COPY = 64;

/**
 * Copies n bytes from src[srcOff..] to dst[dstOff..]. Callers have checked both
 * ranges (copyWithin and set would clamp or throw silently otherwise).
 * Same array: copyWithin (no allocation). Small copies: a byte loop. Else
 * set(subarray) (one view allocation per call).
 */
export function copyBytes(dst: Uint8Array, dstOff: number, src: Uint8Array, srcOff: number, n: number): void {
  if (dst === src) {
    dst.copyWithin(dstOff, srcOff, srcOff + n);
  } else if (n <= SMALL_COPY) {
    for (let k = 0; k < n; k++) dst[dstOff + k] = src[srcOff + k]!;
  } else {
    dst.set(src.subarray(srcOff, srcOff + n), dstOff);
  }
}
