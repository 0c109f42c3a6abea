import type { Chain } from './chain.js';
import { TWO_POW_32 } from './constants.js';

/**
 * virtio-blk requests (virtio 1.2 section 5.2.6): struct virtio_blk_req {
 * le32 type; le32 reserved; le64 sector; u8 data[]; u8 status; }. "The sector
 * number indicates the offset (multiplied by 512) where the read or write is to
 * occur." The status byte is the last device-writable byte; used len = bytes written.
 */
export const VIRTIO_BLK_T_IN = 0;
export const VIRTIO_BLK_T_OUT = 1;
export const VIRTIO_BLK_T_FLUSH = 4;
export const VIRTIO_BLK_T_GET_ID = 8;
export const VIRTIO_BLK_T_GET_LIFETIME = 10;
export const VIRTIO_BLK_T_DISCARD = 11;
export const VIRTIO_BLK_T_WRITE_ZEROES = 13;
export const VIRTIO_BLK_T_SECURE_ERASE = 14;

export const VIRTIO_BLK_S_OK = 0;
export const VIRTIO_BLK_S_IOERR = 1;
export const VIRTIO_BLK_S_UNSUPP = 2;

export const BLK_SECTOR_SIZE = 512;
export const BLK_SECTOR_SHIFT = 9;
/** GET_ID answers "a 20-byte string" (not NUL-terminated when 20 long). */
export const VIRTIO_BLK_ID_BYTES = 20;

export const BLK_REQ_TYPE = 0;
export const BLK_REQ_RESERVED = 4;
export const BLK_REQ_SECTOR = 8;
export const BLK_REQ_HDR_SIZE = 16;
export const BLK_STATUS_SIZE = 1;

/** struct virtio_blk_discard_write_zeroes { le64 sector; le32 num_sectors; le32 flags (bit 0 unmap); } */
export const BLK_DWZ_SECTOR = 0;
export const BLK_DWZ_NUM_SECTORS = 8;
export const BLK_DWZ_FLAGS = 12;
export const BLK_DWZ_SIZE = 16;
export const VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP = 1;

// struct virtio_blk_config offsets.
export const BLK_CFG_CAPACITY = 0; // le64, 512-byte sectors
export const BLK_CFG_SIZE_MAX = 8; // le32
export const BLK_CFG_SEG_MAX = 12; // le32
export const BLK_CFG_GEOMETRY_CYLINDERS = 16; // le16
export const BLK_CFG_GEOMETRY_HEADS = 18; // u8
export const BLK_CFG_GEOMETRY_SECTORS = 19; // u8
export const BLK_CFG_BLK_SIZE = 20; // le32
export const BLK_CFG_PHYSICAL_BLOCK_EXP = 24; // u8
export const BLK_CFG_ALIGNMENT_OFFSET = 25; // u8
export const BLK_CFG_MIN_IO_SIZE = 26; // le16
export const BLK_CFG_OPT_IO_SIZE = 28; // le32
export const BLK_CFG_WRITEBACK = 32; // u8
export const BLK_CFG_NUM_QUEUES = 34; // le16
export const BLK_CFG_MAX_DISCARD_SECTORS = 36; // le32
export const BLK_CFG_MAX_DISCARD_SEG = 40; // le32
export const BLK_CFG_DISCARD_SECTOR_ALIGNMENT = 44; // le32
export const BLK_CFG_MAX_WRITE_ZEROES_SECTORS = 48; // le32
export const BLK_CFG_MAX_WRITE_ZEROES_SEG = 52; // le32
export const BLK_CFG_WRITE_ZEROES_MAY_UNMAP = 56; // u8
export const BLK_CFG_MAX_SECURE_ERASE_SECTORS = 60; // le32
export const BLK_CFG_MAX_SECURE_ERASE_SEG = 64; // le32
export const BLK_CFG_SECURE_ERASE_SECTOR_ALIGNMENT = 68; // le32
export const BLK_CFG_SIZE = 72;

/** Fields of virtio_blk_config; absent fields encode as 0. */
export interface BlkConfig {
  capacity: number;
  sizeMax?: number;
  segMax?: number;
  cylinders?: number;
  heads?: number;
  sectors?: number;
  blkSize?: number;
  physicalBlockExp?: number;
  alignmentOffset?: number;
  minIoSize?: number;
  optIoSize?: number;
  writeback?: number;
  numQueues?: number;
  maxDiscardSectors?: number;
  maxDiscardSeg?: number;
  discardSectorAlignment?: number;
  maxWriteZeroesSectors?: number;
  maxWriteZeroesSeg?: number;
  writeZeroesMayUnmap?: number;
}

/** Encodes the config space (GET_CONFIG payload; control path, allocates). */
export function encodeBlkConfig(c: BlkConfig): Uint8Array {
  const b = new Uint8Array(BLK_CFG_SIZE);
  const dv = new DataView(b.buffer);
  if (!Number.isSafeInteger(c.capacity) || c.capacity < 0) throw new RangeError(`capacity ${c.capacity}`);
  dv.setUint32(BLK_CFG_CAPACITY, c.capacity % TWO_POW_32, true);
  dv.setUint32(BLK_CFG_CAPACITY + 4, Math.floor(c.capacity / TWO_POW_32), true);
  dv.setUint32(BLK_CFG_SIZE_MAX, c.sizeMax ?? 0, true);
  dv.setUint32(BLK_CFG_SEG_MAX, c.segMax ?? 0, true);
  dv.setUint16(BLK_CFG_GEOMETRY_CYLINDERS, c.cylinders ?? 0, true);
  dv.setUint8(BLK_CFG_GEOMETRY_HEADS, c.heads ?? 0);
  dv.setUint8(BLK_CFG_GEOMETRY_SECTORS, c.sectors ?? 0);
  dv.setUint32(BLK_CFG_BLK_SIZE, c.blkSize ?? 0, true);
  dv.setUint8(BLK_CFG_PHYSICAL_BLOCK_EXP, c.physicalBlockExp ?? 0);
  dv.setUint8(BLK_CFG_ALIGNMENT_OFFSET, c.alignmentOffset ?? 0);
  dv.setUint16(BLK_CFG_MIN_IO_SIZE, c.minIoSize ?? 0, true);
  dv.setUint32(BLK_CFG_OPT_IO_SIZE, c.optIoSize ?? 0, true);
  dv.setUint8(BLK_CFG_WRITEBACK, c.writeback ?? 0);
  dv.setUint16(BLK_CFG_NUM_QUEUES, c.numQueues ?? 0, true);
  dv.setUint32(BLK_CFG_MAX_DISCARD_SECTORS, c.maxDiscardSectors ?? 0, true);
  dv.setUint32(BLK_CFG_MAX_DISCARD_SEG, c.maxDiscardSeg ?? 0, true);
  dv.setUint32(BLK_CFG_DISCARD_SECTOR_ALIGNMENT, c.discardSectorAlignment ?? 0, true);
  dv.setUint32(BLK_CFG_MAX_WRITE_ZEROES_SECTORS, c.maxWriteZeroesSectors ?? 0, true);
  dv.setUint32(BLK_CFG_MAX_WRITE_ZEROES_SEG, c.maxWriteZeroesSeg ?? 0, true);
  dv.setUint8(BLK_CFG_WRITE_ZEROES_MAY_UNMAP, c.writeZeroesMayUnmap ?? 0);
  return b;
}

/** A parsed request; reuse one per worker. */
export class BlkRequest {
  type = 0;
  sector = 0;
  /** Payload bytes: OUT = readable after the header; IN/GET_ID = writable before the status byte. */
  dataLen = 0;
  /** Offset of the payload inside the readable (OUT) or writable (IN) part. */
  dataSkip = 0;
  /** Offset of the status byte inside the writable part. */
  statusSkip = 0;
}

const hdr = new Uint8Array(BLK_REQ_HDR_SIZE);
const hdv = new DataView(hdr.buffer);
const one = new Uint8Array(1);

/**
 * Parses a request chain: 16-byte header at the start of the readable part,
 * status byte at the end of the writable part. Returns false when the chain is
 * too short for either (the device cannot even report an error: treat as a
 * broken request).
 */
export function parseBlkRequest(chain: Chain, out: BlkRequest): boolean {
  if (chain.readableBytes < BLK_REQ_HDR_SIZE || chain.writableBytes < BLK_STATUS_SIZE) return false;
  chain.read(0, hdr, 0, BLK_REQ_HDR_SIZE);
  out.type = hdv.getUint32(BLK_REQ_TYPE, true);
  const lo = hdv.getUint32(BLK_REQ_SECTOR, true);
  const hi = hdv.getUint32(BLK_REQ_SECTOR + 4, true);
  // Sectors beyond 2^53 cannot be represented: report them as such (callers range-check against capacity).
  out.sector = hi >= 2 ** 21 ? Number.MAX_SAFE_INTEGER : lo + hi * TWO_POW_32;
  out.statusSkip = chain.writableBytes - BLK_STATUS_SIZE;
  if (out.type === VIRTIO_BLK_T_OUT || out.type === VIRTIO_BLK_T_DISCARD || out.type === VIRTIO_BLK_T_WRITE_ZEROES || out.type === VIRTIO_BLK_T_SECURE_ERASE) {
    out.dataSkip = BLK_REQ_HDR_SIZE;
    out.dataLen = chain.readableBytes - BLK_REQ_HDR_SIZE;
  } else {
    out.dataSkip = 0;
    out.dataLen = chain.writableBytes - BLK_STATUS_SIZE;
  }
  return true;
}

/** Writes the status byte (last writable byte); returns the used len for a request that wrote `dataWritten` bytes. */
export function writeBlkStatus(chain: Chain, req: BlkRequest, status: number, dataWritten = 0): number {
  one[0] = status;
  chain.write(req.statusSkip, one, 0, 1);
  return dataWritten + BLK_STATUS_SIZE;
}
