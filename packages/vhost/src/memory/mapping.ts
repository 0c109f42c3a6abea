/**
 * Mapping one fd-backed area (a memory region, the dirty log, the inflight
 * area) into a SharedArrayBuffer safely.
 *
 * Two rules keep the process alive when the front-end misbehaves:
 * - the fd must be at least `offset + size` bytes long (touching a page past
 *   EOF raises SIGBUS, which JavaScript cannot catch);
 * - when the fd is a sealable memfd, F_SEAL_SHRINK is added first so the
 *   front-end cannot shrink it after the check.
 * `mmap` offsets must be page aligned: the mapping starts at the aligned-down
 * offset and the returned `delta` is where the requested bytes begin.
 */
import { F_SEAL_SEAL, F_SEAL_SHRINK, type NativeBinding } from '@vhost-ts/native';
import { check } from '../errors.js';
import type { Logger } from '../log.js';

/** Options for {@link mapFdArea}. */
export interface MapFdOptions {
  /** Add F_SEAL_SHRINK to sealable memfds that lack it (default true). */
  sealShrink: boolean;
  /**
   * Refuse an fd that is not sealed against shrinking once sealing was tried
   * (the driver's `requireSealedMemory`). Default false: such an fd is mapped
   * after the size check only.
   */
  requireSealed?: boolean;
  /** What is mapped, for errors and log lines (e.g. `region 2`). */
  what: string;
  logger: Logger;
}

/** A mapped area. */
export interface FdMapping {
  /** The mapping: [alignedOffset, offset + size) of the fd. */
  sab: SharedArrayBuffer;
  /** Byte offset in `sab` where the requested area starts (offset - aligned offset). */
  delta: number;
  /** Whether the fd is now sealed against shrinking. */
  sealed: boolean;
}

/** Result of trying to seal an fd against shrinking. */
export type SealOutcome = 'sealed' | 'already-sealed' | 'not-sealable';

/**
 * Adds F_SEAL_SHRINK when the fd supports seals and F_SEAL_SEAL is not set.
 * Never throws: an fd that cannot be sealed is reported as `not-sealable`.
 */
export function sealAgainstShrink(native: NativeBinding, fd: number): SealOutcome {
  let seals: number;
  try {
    seals = native.getSeals(fd);
  } catch {
    return 'not-sealable'; // EINVAL: not a memfd (or a file system without seals)
  }
  if ((seals & F_SEAL_SHRINK) !== 0) return 'already-sealed';
  if ((seals & F_SEAL_SEAL) !== 0) return 'not-sealable';
  try {
    native.addSeals(fd, F_SEAL_SHRINK);
    return 'sealed';
  } catch {
    return 'not-sealable';
  }
}

/** True when the fd carries F_SEAL_SHRINK. */
function isSealedAgainstShrink(native: NativeBinding, fd: number): boolean {
  try {
    return (native.getSeals(fd) & F_SEAL_SHRINK) !== 0;
  } catch {
    return false;
  }
}

/** Why an fd could not be sealed, for log lines and refusals. */
function sealState(native: NativeBinding, fd: number): string {
  let seals: number;
  try {
    seals = native.getSeals(fd);
  } catch {
    return 'not a file that supports seals';
  }
  return (seals & F_SEAL_SEAL) !== 0 ? 'F_SEAL_SEAL is set without F_SEAL_SHRINK' : `seals 0x${seals.toString(16)}`;
}

/**
 * Maps `size` bytes at `offset` of `fd` after the seal and size checks.
 * Throws a VhostRequestError (refusal) when the fd is too short or mmap fails.
 * The fd is not closed (the caller closes it; the mapping stays valid).
 */
export function mapFdArea(native: NativeBinding, fd: number, offset: number, size: number, options: MapFdOptions): FdMapping {
  check(Number.isSafeInteger(size) && size > 0, `${options.what}: size ${size} must be positive`);
  check(Number.isSafeInteger(offset) && offset >= 0 && Number.isSafeInteger(offset + size), `${options.what}: offset ${offset} + size ${size} is out of range`);
  let sealed = false;
  if (options.sealShrink) {
    const outcome = sealAgainstShrink(native, fd);
    sealed = outcome !== 'not-sealable';
  } else {
    sealed = isSealedAgainstShrink(native, fd);
  }
  if (!sealed) {
    check(
      options.requireSealed !== true,
      () => `${options.what}: fd is not sealed against shrinking and cannot be sealed (${sealState(native, fd)}); refused because requireSealedMemory is set`,
    );
    options.logger.info(`${options.what}: fd cannot be sealed against shrinking (${sealState(native, fd)}); relying on the size check`);
  }
  let fileSize: number;
  try {
    fileSize = native.fstatSize(fd);
  } catch (err) {
    check(false, `${options.what}: fstat failed: ${(err as Error).message}`);
  }
  check(fileSize >= offset + size, () => `${options.what}: fd is ${fileSize} bytes, shorter than mmap_offset ${offset} + size ${size}`);
  const page = native.pageSize;
  const aligned = offset - (offset % page);
  const delta = offset - aligned;
  let sab: SharedArrayBuffer;
  try {
    sab = native.mmap(fd, aligned, delta + size);
  } catch (err) {
    check(false, `${options.what}: mmap of ${delta + size} bytes at ${aligned} failed: ${(err as Error).message}`);
  }
  return { sab, delta, sealed };
}

/** Releases a mapping made by {@link mapFdArea} now (guest pages freed; stale views read zeros). */
export function releaseMapping(native: NativeBinding, sab: SharedArrayBuffer): void {
  try {
    native.release(sab);
  } catch {
    // already released
  }
}
