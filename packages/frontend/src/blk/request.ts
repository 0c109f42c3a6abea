/**
 * virtio-blk requests as the driver builds them (virtio 1.2 section 5.2.6):
 * a device-readable header {type u32, reserved/ioprio u32, sector u64}, the
 * data (device-readable for writes, discard and write-zeroes segments;
 * device-writable for reads and GET_ID), then one device-writable status byte.
 * Sectors are 512 bytes whatever the device's blk_size.
 *
 * Also: the data patterns the verifier writes and reads back (a function of
 * sector, word and generation, so a read returning another sector's data, a
 * stale generation or zeros is caught and located).
 */

export const SECTOR_SIZE = 512;
export const BLK_HEADER_SIZE = 16;
export const BLK_GET_ID_SIZE = 20;
export const BLK_SEGMENT_SIZE = 16;

export const VIRTIO_BLK_T_IN = 0;
export const VIRTIO_BLK_T_OUT = 1;
export const VIRTIO_BLK_T_FLUSH = 4;
export const VIRTIO_BLK_T_GET_ID = 8;
export const VIRTIO_BLK_T_DISCARD = 11;
export const VIRTIO_BLK_T_WRITE_ZEROES = 13;

export const VIRTIO_BLK_S_OK = 0;
export const VIRTIO_BLK_S_IOERR = 1;
export const VIRTIO_BLK_S_UNSUPP = 2;
/** Not a device value: what we pre-write into the status byte to detect a device that never wrote it. */
export const BLK_STATUS_UNSET = 0xff;

/** Flag of a write-zeroes segment: the device may deallocate. */
export const VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP = 1;

export type BlkOp = 'read' | 'write' | 'flush' | 'get-id' | 'discard' | 'write-zeroes';

/** A request at API level. */
export interface BlkRequestSpec {
  op: BlkOp;
  /** First 512-byte sector (read, write, discard, write-zeroes). */
  sector?: number;
  /** Data bytes for read/write (a multiple of 512), or sectors for discard/write-zeroes via `sectors`. */
  length?: number;
  /** Sector count for discard / write-zeroes. */
  sectors?: number;
  /** Write-zeroes: allow unmapping. */
  unmap?: boolean;
}

/** One descriptor of the chain a request becomes. */
export interface BlkSegmentPlan {
  role: 'header' | 'data' | 'status';
  len: number;
  /** Device-writable (VIRTQ_DESC_F_WRITE). */
  writable: boolean;
}

export function blkRequestType(op: BlkOp): number {
  switch (op) {
    case 'read': return VIRTIO_BLK_T_IN;
    case 'write': return VIRTIO_BLK_T_OUT;
    case 'flush': return VIRTIO_BLK_T_FLUSH;
    case 'get-id': return VIRTIO_BLK_T_GET_ID;
    case 'discard': return VIRTIO_BLK_T_DISCARD;
    case 'write-zeroes': return VIRTIO_BLK_T_WRITE_ZEROES;
    default: throw new RangeError(`unknown blk op ${String(op)}`);
  }
}

/**
 * The descriptor layout of a request: header (readable), data (direction by
 * op, omitted for flush), status (writable). Validates the spec.
 */
export function planBlkRequest(req: BlkRequestSpec): BlkSegmentPlan[] {
  const sector = req.sector ?? 0;
  if (!Number.isSafeInteger(sector) || sector < 0) throw new RangeError(`sector must be a non-negative integer, got ${sector}`);
  const out: BlkSegmentPlan[] = [{ role: 'header', len: BLK_HEADER_SIZE, writable: false }];
  switch (req.op) {
    case 'read':
    case 'write': {
      const len = req.length ?? SECTOR_SIZE;
      if (!Number.isInteger(len) || len <= 0 || len % SECTOR_SIZE !== 0 || len > 0xffff_ffff) {
        throw new RangeError(`${req.op} length must be a positive multiple of ${SECTOR_SIZE}, got ${len}`);
      }
      out.push({ role: 'data', len, writable: req.op === 'read' });
      break;
    }
    case 'get-id':
      out.push({ role: 'data', len: BLK_GET_ID_SIZE, writable: true });
      break;
    case 'discard':
    case 'write-zeroes': {
      const n = req.sectors ?? 1;
      if (!Number.isInteger(n) || n <= 0 || n > 0xffff_ffff) throw new RangeError(`sectors must be a u32 > 0, got ${n}`);
      out.push({ role: 'data', len: BLK_SEGMENT_SIZE, writable: false });
      break;
    }
    case 'flush':
      break;
    default:
      throw new RangeError(`unknown blk op ${String(req.op)}`);
  }
  out.push({ role: 'status', len: 1, writable: true });
  return out;
}

/** Writes the 16-byte request header at `off`. `sector` < 2^53. */
export function encodeBlkHeader(dv: DataView, off: number, type: number, sector: number, ioprio = 0): void {
  dv.setUint32(off, type, true);
  dv.setUint32(off + 4, ioprio, true);
  dv.setUint32(off + 8, sector >>> 0, true);
  dv.setUint32(off + 12, Math.floor(sector / 4294967296), true);
}

/** Reads back a header (for tests and for back-end-side tools). */
export function decodeBlkHeader(dv: DataView, off: number): { type: number; ioprio: number; sector: number } {
  return {
    type: dv.getUint32(off, true),
    ioprio: dv.getUint32(off + 4, true),
    sector: dv.getUint32(off + 8, true) + dv.getUint32(off + 12, true) * 4294967296,
  };
}

/** Writes one discard / write-zeroes segment {sector u64, num_sectors u32, flags u32}. */
export function encodeBlkSegment(dv: DataView, off: number, sector: number, numSectors: number, flags = 0): void {
  dv.setUint32(off, sector >>> 0, true);
  dv.setUint32(off + 4, Math.floor(sector / 4294967296), true);
  dv.setUint32(off + 8, numSectors, true);
  dv.setUint32(off + 12, flags, true);
}

/** The pattern word `k` (0..127) of 512-byte sector `sector` in generation `gen`. Never 0 (so zeros are caught). */
export function patternWord(sector: number, k: number, gen: number): number {
  let x = (Math.imul(sector >>> 0, 0x9e3779b1) ^ Math.imul((sector / 4294967296) >>> 0, 0x7feb352d)) >>> 0;
  x = (x + Math.imul(gen, 0x85ebca77) + Math.imul(k + 1, 0xc2b2ae3d)) >>> 0;
  x ^= x >>> 15;
  x = Math.imul(x, 0x2c1b3c6d) >>> 0;
  x ^= x >>> 12;
  return x === 0 ? 1 : x >>> 0;
}

/** Fills `sectors` sectors starting at byte `off` with the pattern of (firstSector.., gen). */
export function fillPattern(dv: DataView, off: number, firstSector: number, sectors: number, gen: number): void {
  for (let s = 0; s < sectors; s++) {
    const base = off + s * SECTOR_SIZE;
    for (let k = 0; k < SECTOR_SIZE / 4; k++) dv.setUint32(base + 4 * k, patternWord(firstSector + s, k, gen), true);
  }
}

/**
 * Checks the pattern. Returns -1 when every sector matches, else the index
 * (relative to `firstSector`) of the first mismatching sector.
 * `gen` = -1 expects zeros (after discard/write-zeroes).
 */
export function checkPattern(dv: DataView, off: number, firstSector: number, sectors: number, gen: number): number {
  for (let s = 0; s < sectors; s++) {
    const base = off + s * SECTOR_SIZE;
    for (let k = 0; k < SECTOR_SIZE / 4; k++) {
      const want = gen < 0 ? 0 : patternWord(firstSector + s, k, gen);
      if (dv.getUint32(base + 4 * k, true) !== want) return s;
    }
  }
  return -1;
}

/** The blk config fields a driver reads (virtio 1.2 5.2.4), from a GET_CONFIG payload (little-endian). */
export interface BlkConfig {
  capacity: number;
  sizeMax: number;
  segMax: number;
  blkSize: number;
  numQueues: number;
  maxDiscardSectors: number;
  maxDiscardSeg: number;
  discardSectorAlignment: number;
  maxWriteZeroesSectors: number;
  maxWriteZeroesSeg: number;
  writeZeroesMayUnmap: number;
}

/** Decodes what is present of a blk config space (fields past the end read as 0). */
export function decodeBlkConfig(bytes: Uint8Array): BlkConfig {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const u32 = (o: number): number => (o + 4 <= bytes.byteLength ? dv.getUint32(o, true) : 0);
  const u16 = (o: number): number => (o + 2 <= bytes.byteLength ? dv.getUint16(o, true) : 0);
  const u8 = (o: number): number => (o + 1 <= bytes.byteLength ? dv.getUint8(o) : 0);
  return {
    capacity: u32(0) + u32(4) * 4294967296,
    sizeMax: u32(8),
    segMax: u32(12),
    blkSize: u32(20),
    numQueues: u16(34),
    maxDiscardSectors: u32(36),
    maxDiscardSeg: u32(40),
    discardSectorAlignment: u32(44),
    maxWriteZeroesSectors: u32(48),
    maxWriteZeroesSeg: u32(52),
    writeZeroesMayUnmap: u8(56),
  };
}
