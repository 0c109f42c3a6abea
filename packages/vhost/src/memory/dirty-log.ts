/**
 * The dirty-page log of live migration (SET_LOG_BASE): "one bit per 4 KiB
 * guest page from GPA 0, set atomically: log[page / 8] |= 1 << page % 8".
 */
import type { NativeBinding } from '@vhost-ts/native';
import { check } from '../errors.js';
import type { Logger } from '../log.js';
import { VHOST_LOG_PAGE } from '../protocol/constants.js';
import type { LogDesc } from '../protocol/payloads.js';
import { mapFdArea, releaseMapping } from './mapping.js';

/** A mapped dirty log. */
export class DirtyLogArea {
  /** The mapping; the bitmap is `size` bytes from `offset`. */
  readonly sab: SharedArrayBuffer;
  readonly offset: number;
  readonly size: number;
  /** The bitmap bytes (Atomics.or on each). */
  readonly bitmap: Uint8Array;

  constructor(sab: SharedArrayBuffer, offset: number, size: number) {
    this.sab = sab;
    this.offset = offset;
    this.size = size;
    this.bitmap = new Uint8Array(sab, offset, size);
  }

  /** Guest bytes the bitmap covers from GPA 0. */
  get coveredBytes(): number {
    return this.size * 8 * VHOST_LOG_PAGE;
  }

  /**
   * Marks the pages of [gpa, gpa + len) dirty. Returns false (and logs
   * nothing past the end) when the range reaches beyond the bitmap.
   */
  logRange(gpa: number, len: number): boolean {
    if (len <= 0) return true;
    if (!Number.isSafeInteger(gpa) || !Number.isSafeInteger(len) || gpa < 0) return false;
    const first = Math.floor(gpa / VHOST_LOG_PAGE);
    const last = Math.floor((gpa + len - 1) / VHOST_LOG_PAGE);
    for (let page = first; page <= last; page++) {
      const byte = Math.floor(page / 8);
      if (byte >= this.size) return false;
      Atomics.or(this.bitmap, byte, 1 << (page % 8));
    }
    return true;
  }
}

/**
 * Maps the log area of SET_LOG_BASE. The size and offset come from the
 * front-end: both are checked (no zero size, no 64-bit wrap — the shape of
 * CVE-2020-10722 — and the fd must hold offset + size bytes) before mapping.
 */
export function mapDirtyLog(native: NativeBinding, fd: number, desc: LogDesc, options: { sealShrink: boolean; requireSealed?: boolean; logger: Logger }): DirtyLogArea {
  check(desc.mmapSize > 0n, 'SET_LOG_BASE: zero-sized log');
  check(desc.mmapSize + desc.mmapOffset <= BigInt(Number.MAX_SAFE_INTEGER), () =>
    `SET_LOG_BASE: mmap_size 0x${desc.mmapSize.toString(16)} + mmap_offset 0x${desc.mmapOffset.toString(16)} overflows`);
  const size = Number(desc.mmapSize);
  const offset = Number(desc.mmapOffset);
  const mapping = mapFdArea(native, fd, offset, size, { ...options, what: 'SET_LOG_BASE log area' });
  return new DirtyLogArea(mapping.sab, mapping.delta, size);
}

/** Releases a log's mapping now. */
export function releaseDirtyLog(native: NativeBinding, log: DirtyLogArea): void {
  releaseMapping(native, log.sab);
}
