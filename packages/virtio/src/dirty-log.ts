import { VHOST_LOG_PAGE } from './constants.js';

/**
 * The vhost dirty-page log: "one bit per 4 KiB guest page from GPA 0, set
 * atomically: log[page >> 3] |= 1 << (page & 7)" (vhost-user SET_LOG_BASE).
 * The bitmap lives in a SharedArrayBuffer the front-end reads concurrently, so
 * every bit is set with Atomics.or on its byte.
 */
export class DirtyLog {
  readonly bitmap: Uint8Array;
  /** Pages that fell beyond the bitmap (not logged; the front-end sized the log too small). */
  outOfRange = 0;

  constructor(sab: SharedArrayBuffer, offset = 0, size: number = sab.byteLength - offset) {
    if (!Number.isInteger(offset) || !Number.isInteger(size) || offset < 0 || size < 0 || offset + size > sab.byteLength) {
      throw new RangeError(`dirty log [${offset}, +${size}) outside its SharedArrayBuffer of ${sab.byteLength} bytes`);
    }
    this.bitmap = new Uint8Array(sab, offset, size);
  }

  /** Number of guest bytes the bitmap covers (from GPA 0). */
  get coveredBytes(): number {
    return this.bitmap.length * 8 * VHOST_LOG_PAGE;
  }

  /** Marks every page touched by [gpa, gpa + len) dirty. len 0 logs nothing. */
  logRange(gpa: number, len: number): void {
    if (len <= 0) return;
    const bm = this.bitmap;
    // Addresses may exceed 2^32: divide, never shift, the address itself.
    const first = Math.floor(gpa / VHOST_LOG_PAGE);
    const last = Math.floor((gpa + len - 1) / VHOST_LOG_PAGE);
    for (let page = first; page <= last; page++) {
      const byte = Math.floor(page / 8);
      if (byte >= bm.length) {
        this.outOfRange += last - page + 1;
        return;
      }
      Atomics.or(bm, byte, 1 << (page & 7));
    }
  }

  /** True when the page holding `gpa` is marked dirty. */
  isDirty(gpa: number): boolean {
    const page = Math.floor(gpa / VHOST_LOG_PAGE);
    const byte = Math.floor(page / 8);
    if (byte >= this.bitmap.length) return false;
    return (Atomics.load(this.bitmap, byte) & (1 << (page & 7))) !== 0;
  }

  /** GPAs of the dirty pages' starts, ascending (test and debug helper; allocates). */
  dirtyPages(): number[] {
    const out: number[] = [];
    const bm = this.bitmap;
    for (let i = 0; i < bm.length; i++) {
      const b = Atomics.load(bm, i);
      if (b === 0) continue;
      for (let bit = 0; bit < 8; bit++) if (b & (1 << bit)) out.push((i * 8 + bit) * VHOST_LOG_PAGE);
    }
    return out;
  }
}
