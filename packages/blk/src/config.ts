/**
 * The blk device's geometry and limits, the feature set it offers, and its
 * config space (struct virtio_blk_config, little-endian, virtio 1.2 5.2.4).
 */
import {
  VHOST_USER_F_PROTOCOL_FEATURES,
  VIRTIO_BLK_F_BLK_SIZE,
  VIRTIO_BLK_F_CONFIG_WCE,
  VIRTIO_BLK_F_DISCARD,
  VIRTIO_BLK_F_FLUSH,
  VIRTIO_BLK_F_MQ,
  VIRTIO_BLK_F_RO,
  VIRTIO_BLK_F_SEG_MAX,
  VIRTIO_BLK_F_SIZE_MAX,
  VIRTIO_BLK_F_TOPOLOGY,
  VIRTIO_BLK_F_WRITE_ZEROES,
  VIRTIO_F_EVENT_IDX,
  VIRTIO_F_INDIRECT_DESC,
  VIRTIO_F_RING_PACKED,
  VIRTIO_F_VERSION_1,
  BLK_SECTOR_SIZE as SECTOR_SIZE,
  encodeBlkConfig as encodeVirtioBlkConfig,
  featureMask,
} from '@vhost-ts/virtio';
import { BLK_CONFIG_BYTES } from './protocol.js';

/** Largest segment (one descriptor's buffer) the guest may use: 1 MiB. */
export const DEFAULT_SIZE_MAX = 1 << 20;
/**
 * Segments per request. QEMU's default queue-size is 128 and Linux needs two
 * more descriptors (header, status) than data segments without INDIRECT_DESC.
 */
export const DEFAULT_SEG_MAX = 126;
/** Discard is a validated hint (nothing to deallocate without fallocate): any size per segment. */
export const DEFAULT_MAX_DISCARD_SECTORS = 0x3fffff;
/** Write-zeroes writes zeros: at most 16 MiB per request so one request never stalls a queue long. */
export const DEFAULT_MAX_WRITE_ZEROES_SECTORS = (16 << 20) / SECTOR_SIZE;
/** One segment per discard / write-zeroes request, as QEMU. */
export const DEFAULT_MAX_DWZ_SEG = 1;

/** Everything the config space and the request module need to agree on. */
export interface BlkGeometry {
  /** Device size in bytes (a multiple of the logical block size; the tail of a file is not exposed). */
  capacityBytes: number;
  /** Logical block size (512, 1024, 2048 or 4096). */
  blockSize: number;
  /** Request queues (num_queues). */
  numQueues: number;
  readOnly: boolean;
  /** Write-back cache on (CONFIG_WCE writeback = 1): FLUSH makes writes durable. Off: every write is synced. */
  writeback: boolean;
  sizeMax: number;
  segMax: number;
  maxDiscardSectors: number;
  maxDiscardSeg: number;
  maxWriteZeroesSectors: number;
  maxWriteZeroesSeg: number;
}

export const SUPPORTED_BLOCK_SIZES: readonly number[] = [512, 1024, 2048, 4096];

/** Checks a logical block size; throws RangeError. */
export function checkBlockSize(blockSize: number): void {
  if (!SUPPORTED_BLOCK_SIZES.includes(blockSize)) {
    throw new RangeError(`block size ${blockSize} not supported (one of ${SUPPORTED_BLOCK_SIZES.join(', ')})`);
  }
}

/** Capacity exposed for a backing store of `bytes`: rounded down to whole logical blocks. */
export function exposedCapacity(bytes: number, blockSize: number): number {
  return Math.floor(bytes / blockSize) * blockSize;
}

/** A geometry with the defaults filled in. */
export function blkGeometry(init: Pick<BlkGeometry, 'capacityBytes'> & Partial<BlkGeometry>): BlkGeometry {
  const blockSize = init.blockSize ?? SECTOR_SIZE;
  checkBlockSize(blockSize);
  const numQueues = init.numQueues ?? 1;
  if (!Number.isInteger(numQueues) || numQueues < 1 || numQueues > 0xffff) throw new RangeError(`numQueues ${numQueues} outside 1..65535`);
  if (!Number.isSafeInteger(init.capacityBytes) || init.capacityBytes < 0) throw new RangeError(`capacity ${init.capacityBytes} is not a byte count`);
  return {
    capacityBytes: exposedCapacity(init.capacityBytes, blockSize),
    blockSize,
    numQueues,
    readOnly: init.readOnly ?? false,
    writeback: init.writeback ?? true,
    sizeMax: init.sizeMax ?? DEFAULT_SIZE_MAX,
    segMax: init.segMax ?? DEFAULT_SEG_MAX,
    maxDiscardSectors: init.maxDiscardSectors ?? DEFAULT_MAX_DISCARD_SECTORS,
    maxDiscardSeg: init.maxDiscardSeg ?? DEFAULT_MAX_DWZ_SEG,
    maxWriteZeroesSectors: init.maxWriteZeroesSectors ?? DEFAULT_MAX_WRITE_ZEROES_SECTORS,
    maxWriteZeroesSeg: init.maxWriteZeroesSeg ?? DEFAULT_MAX_DWZ_SEG,
  };
}

/**
 * The virtio features the device offers: VERSION_1, SIZE_MAX, SEG_MAX,
 * BLK_SIZE, FLUSH, TOPOLOGY, CONFIG_WCE, MQ, INDIRECT_DESC, EVENT_IDX,
 * RING_PACKED and vhost-user's bit 30; DISCARD and WRITE_ZEROES on a
 * writable device, RO on a read-only one.
 */
export function blkDeviceFeatures(geometry: Pick<BlkGeometry, 'readOnly'>, options: { packed?: boolean } = {}): bigint {
  let f = featureMask(
    VIRTIO_F_VERSION_1,
    VHOST_USER_F_PROTOCOL_FEATURES,
    VIRTIO_F_INDIRECT_DESC,
    VIRTIO_F_EVENT_IDX,
    VIRTIO_BLK_F_SIZE_MAX,
    VIRTIO_BLK_F_SEG_MAX,
    VIRTIO_BLK_F_BLK_SIZE,
    VIRTIO_BLK_F_FLUSH,
    VIRTIO_BLK_F_TOPOLOGY,
    VIRTIO_BLK_F_CONFIG_WCE,
    VIRTIO_BLK_F_MQ,
  );
  if (options.packed ?? true) f |= featureMask(VIRTIO_F_RING_PACKED);
  f |= geometry.readOnly ? featureMask(VIRTIO_BLK_F_RO) : featureMask(VIRTIO_BLK_F_DISCARD, VIRTIO_BLK_F_WRITE_ZEROES);
  return f;
}

/**
 * Encodes the config space. Fields of features the device does not offer
 * (e.g. discard limits on a read-only device) stay zero, as do geometry
 * (VIRTIO_BLK_F_GEOMETRY is not offered) and write_zeroes_may_unmap (a write
 * zeroes request never deallocates here).
 */
export function encodeBlkConfig(g: BlkGeometry): Uint8Array {
  const writable = !g.readOnly;
  return encodeVirtioBlkConfig({
    capacity: g.capacityBytes / SECTOR_SIZE,
    sizeMax: g.sizeMax,
    segMax: g.segMax,
    blkSize: g.blockSize,
    // Topology: physical block = logical block, no alignment offset, min I/O one block, no optimum.
    physicalBlockExp: 0,
    alignmentOffset: 0,
    minIoSize: 1,
    optIoSize: 0,
    writeback: g.writeback ? 1 : 0,
    numQueues: g.numQueues,
    maxDiscardSectors: writable ? g.maxDiscardSectors : 0,
    maxDiscardSeg: writable ? g.maxDiscardSeg : 0,
    discardSectorAlignment: writable ? g.blockSize / SECTOR_SIZE : 0,
    maxWriteZeroesSectors: writable ? g.maxWriteZeroesSectors : 0,
    maxWriteZeroesSeg: writable ? g.maxWriteZeroesSeg : 0,
    writeZeroesMayUnmap: 0,
  }).subarray(0, BLK_CONFIG_BYTES);
}

/** The module options (strings, see modules/blk.ts) that carry a geometry to the queue workers. */
export function geometryOptions(g: BlkGeometry): Record<string, string> {
  return {
    capacity: String(g.capacityBytes),
    blockSize: String(g.blockSize),
    readOnly: g.readOnly ? '1' : '0',
    writeback: g.writeback ? '1' : '0',
    maxDiscardSectors: String(g.maxDiscardSectors),
    maxDiscardSeg: String(g.maxDiscardSeg),
    maxWriteZeroesSectors: String(g.maxWriteZeroesSectors),
    maxWriteZeroesSeg: String(g.maxWriteZeroesSeg),
  };
}
