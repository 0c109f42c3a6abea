/**
 * A malformed ring or guest buffer. Raised by ring code when the other side
 * (guest driver, or device for the driver-side rings) breaks the spec; the
 * worker catches it and puts the device in NEEDS_RESET. Never thrown for a
 * caller's programming error (those are RangeError/TypeError).
 */
export type RingErrorCode =
  /** A descriptor index (head or next) is >= the queue or indirect table size. */
  | 'DESC_INDEX'
  /** A chain visits more descriptors than exist: a loop. */
  | 'CHAIN_LOOP'
  /** A chain is longer than the device allows (queue size or configured max). */
  | 'CHAIN_LENGTH'
  /** An indirect descriptor inside an indirect table. */
  | 'NESTED_INDIRECT'
  /** An indirect table length that is zero or not a multiple of 16. */
  | 'INDIRECT_LEN'
  /** A descriptor with INDIRECT and NEXT both set (forbidden by the spec). */
  | 'INDIRECT_NEXT'
  /** An address/length outside guest memory or crossing a region end into a gap. */
  | 'ADDR_RANGE'
  /** avail.idx moved more than the queue size ahead of the last seen index. */
  | 'AVAIL_IDX'
  /** A device-writable descriptor followed by a device-readable one. */
  | 'WRITE_BEFORE_READ'
  /** Packed ring: a chain descriptor whose AVAIL/USED bits do not match the wrap counter. */
  | 'PACKED_WRAP'
  /** Driver side: a used element with an id that is not an outstanding buffer. */
  | 'USED_ID'
  /** Driver side: used.idx moved past what was made available. */
  | 'USED_IDX'
  /** Ring geometry from the front-end is invalid: queue size, alignment. */
  | 'RING_LAYOUT'
  /** The ring already failed once; it stays broken until reset. */
  | 'BROKEN';

export class RingError extends Error {
  readonly code: RingErrorCode;
  constructor(code: RingErrorCode, message: string) {
    super(`${code}: ${message}`);
    this.name = 'RingError';
    this.code = code;
  }
}

/** True for a RingError (works across realms/bundles by checking name and code). */
export function isRingError(e: unknown): e is RingError {
  return e instanceof RingError || (e instanceof Error && e.name === 'RingError' && typeof (e as { code?: unknown }).code === 'string');
}
