/**
 * The backing store: a regular file or a block device. Its size is the
 * device's capacity (rounded down to whole logical blocks).
 */
import { closeSync, fstatSync, openSync, readFileSync, type Stats } from 'node:fs';

/** Size in bytes of an open file or block device. */
export function backingSize(fd: number): number {
  return sizeOf(fstatSync(fd));
}

function sizeOf(st: Stats): number {
  if (st.isFile()) return st.size;
  if (st.isBlockDevice()) {
    // fstat reports 0 for block devices; sysfs has the size in 512-byte sectors.
    const major = Number((BigInt(st.rdev) >> 8n) & 0xfffn) | Number((BigInt(st.rdev) >> 32n) & ~0xfffn);
    const minor = Number(BigInt(st.rdev) & 0xffn) | Number((BigInt(st.rdev) >> 12n) & ~0xffn);
    const text = readFileSync(`/sys/dev/block/${major}:${minor}/size`, 'utf8');
    const sectors = Number(text.trim());
    if (!Number.isSafeInteger(sectors)) throw new Error(`cannot read the size of block device ${major}:${minor}`);
    return sectors * 512;
  }
  throw new Error('the backing store must be a regular file or a block device');
}

/** Opens the backing store (read-only or read-write) and returns its fd and size. Throws with a readable message. */
export function openBacking(path: string, readOnly: boolean): { fd: number; size: number; blockDevice: boolean } {
  const fd = openSync(path, readOnly ? 'r' : 'r+');
  try {
    const st = fstatSync(fd);
    return { fd, size: sizeOf(st), blockDevice: st.isBlockDevice() };
  } catch (e) {
    closeSync(fd);
    throw e;
  }
}

/** Size of the backing store at `path` (opens and closes it). */
export function backingSizeOf(path: string): number {
  const fd = openSync(path, 'r');
  try {
    return backingSize(fd);
  } finally {
    closeSync(fd);
  }
}
