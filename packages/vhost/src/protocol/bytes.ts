/**
 * Byte-level helpers for the codec. "All numbers are in the machine native
 * byte order": the codec reads and writes in the host's order.
 */

/** True on little-endian hosts (every platform vhost-user runs on in practice). */
export const NATIVE_LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** A DataView over exactly the bytes of `bytes` (which may be a window on a larger buffer). */
export function viewOf(bytes: Uint8Array): DataView {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

export function getU16(v: DataView, offset: number): number {
  return v.getUint16(offset, NATIVE_LITTLE_ENDIAN);
}
export function getU32(v: DataView, offset: number): number {
  return v.getUint32(offset, NATIVE_LITTLE_ENDIAN);
}
export function getU64(v: DataView, offset: number): bigint {
  return v.getBigUint64(offset, NATIVE_LITTLE_ENDIAN);
}
export function setU16(v: DataView, offset: number, value: number): void {
  v.setUint16(offset, value, NATIVE_LITTLE_ENDIAN);
}
export function setU32(v: DataView, offset: number, value: number): void {
  v.setUint32(offset, value, NATIVE_LITTLE_ENDIAN);
}
/** Writes a u64; `value` is reduced modulo 2^64 after a range check (negative or >= 2^64 throws). */
export function setU64(v: DataView, offset: number, value: bigint): void {
  if (value < 0n || value > 0xffff_ffff_ffff_ffffn) throw new RangeError(`u64 out of range: ${value}`);
  v.setBigUint64(offset, value, NATIVE_LITTLE_ENDIAN);
}

/** Checks that `value` is an integer in [0, 2^bitsWide). */
export function checkUint(value: number, bitsWide: 8 | 16 | 32, what: string): void {
  if (!Number.isInteger(value) || value < 0 || value >= 2 ** bitsWide) {
    throw new RangeError(`${what} must be a u${bitsWide}, got ${value}`);
  }
}
