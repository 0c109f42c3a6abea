import { MAX_GPA } from './constants.js';
import { RingError } from './errors.js';
import type { GuestMemory, GuestRegion } from './memory.js';

/** A ring area resolved to one region: bytes [offset, offset + bytes) of `region`. */
export interface RingArea {
  regionIndex: number;
  region: GuestRegion;
  offset: number;
}

/**
 * Resolves a ring area: it must lie inside one region (throws RingError
 * ADDR_RANGE) and be aligned (throws RingError RING_LAYOUT), including its
 * offset inside the region, so the region's Uint16Array covers its words.
 */
export function resolveArea(mem: GuestMemory, gpa: number, bytes: number, align: number, what: string): RingArea {
  if (!Number.isSafeInteger(gpa) || gpa < 0 || gpa + bytes > MAX_GPA) {
    throw new RingError('ADDR_RANGE', `${what} address ${gpa} is not a valid guest address`);
  }
  if (gpa % align !== 0) throw new RingError('RING_LAYOUT', `${what} at ${gpa} is not ${align}-byte aligned`);
  const i = mem.translate(gpa, bytes);
  if (i < 0) throw new RingError('ADDR_RANGE', `${what} [${gpa}, +${bytes}) does not lie inside one guest memory region`);
  const region = mem.regions[i]!;
  const offset = gpa - region.gpa;
  if (offset % 2 !== 0) throw new RingError('RING_LAYOUT', `${what} at ${gpa} is at an odd offset inside its region (region GPA ${region.gpa})`);
  return { regionIndex: i, region, offset };
}

/** Throws RingError RING_LAYOUT unless size is a valid queue size. */
export function checkQueueSize(size: number, powerOfTwo: boolean): void {
  if (!Number.isInteger(size) || size < 1 || size > 32768 || (powerOfTwo && (size & (size - 1)) !== 0)) {
    throw new RingError('RING_LAYOUT', `queue size ${size} invalid (1..32768${powerOfTwo ? ', power of 2' : ''})`);
  }
}
