/**
 * The inflight I/O tracking area (INFLIGHT_SHMFD): a memfd the back-end
 * allocates on GET_INFLIGHT_FD and the front-end hands back on
 * SET_INFLIGHT_FD after a reconnect. One queue region after another.
 *
 * Split queue region (QueueRegionSplit): features u64 @0, version u16 @8,
 * desc_num u16 @10, last_batch_head u16 @12, used_idx u16 @14, then
 * desc_num DescStateSplit of 16 bytes {inflight u8 @0, padding[5], next u16 @6,
 * counter u64 @8}.
 *
 * Packed queue region (QueueRegionPacked): features u64 @0, version u16 @8,
 * desc_num u16 @10, free_head u16 @12, old_free_head u16 @14, used_idx u16 @16,
 * old_used_idx u16 @18, used_wrap_counter u8 @20, old_used_wrap_counter u8 @21,
 * padding to 32, then desc_num DescStatePacked of 32 bytes {inflight u8 @0,
 * padding u8, next u16 @2, last u16 @4, num u16 @6, counter u64 @8, id u16 @16,
 * flags u16 @18, len u32 @20, addr u64 @24}.
 *
 * Each queue region is padded to a multiple of 64 bytes (DPDK's and QEMU's
 * INFLIGHT_ALIGNMENT), so queue i starts at i * queueRegionSize.
 */
import type { NativeBinding } from '@vhost-ts/native';
import { check } from '../errors.js';
import type { Logger } from '../log.js';
import { NATIVE_LITTLE_ENDIAN } from '../protocol/bytes.js';
import { MAX_VRING_SIZE } from '../protocol/constants.js';
import { mapFdArea, releaseMapping } from './mapping.js';

export const INFLIGHT_ALIGNMENT = 64;
export const INFLIGHT_SPLIT_HEADER_SIZE = 16;
export const INFLIGHT_SPLIT_DESC_SIZE = 16;
export const INFLIGHT_PACKED_HEADER_SIZE = 32;
export const INFLIGHT_PACKED_DESC_SIZE = 32;
/** Field offsets used to initialise a packed region. */
export const INFLIGHT_PACKED_USED_WRAP_OFFSET = 20;
export const INFLIGHT_PACKED_OLD_USED_WRAP_OFFSET = 21;
export const INFLIGHT_PACKED_DESC_NEXT_OFFSET = 2;

function alignUp(n: number, a: number): number {
  return Math.ceil(n / a) * a;
}

/** Bytes of one queue's region: ALIGN_UP(header + desc * queue_size, 64). */
export function inflightQueueRegionSize(queueSize: number, packed: boolean): number {
  return packed
    ? alignUp(INFLIGHT_PACKED_HEADER_SIZE + INFLIGHT_PACKED_DESC_SIZE * queueSize, INFLIGHT_ALIGNMENT)
    : alignUp(INFLIGHT_SPLIT_HEADER_SIZE + INFLIGHT_SPLIT_DESC_SIZE * queueSize, INFLIGHT_ALIGNMENT);
}

/** A mapped inflight area. */
export class InflightArea {
  /** The mapping; the area is `size` bytes from `offset`. */
  readonly sab: SharedArrayBuffer;
  readonly offset: number;
  readonly size: number;
  readonly numQueues: number;
  readonly queueSize: number;
  /** Packed-ring layout (else split). */
  readonly packed: boolean;
  /** Bytes per queue region. */
  readonly queueRegionSize: number;

  constructor(init: { sab: SharedArrayBuffer; offset: number; size: number; numQueues: number; queueSize: number; packed: boolean }) {
    this.sab = init.sab;
    this.offset = init.offset;
    this.size = init.size;
    this.numQueues = init.numQueues;
    this.queueSize = init.queueSize;
    this.packed = init.packed;
    this.queueRegionSize = inflightQueueRegionSize(init.queueSize, init.packed);
  }

  /** Byte offset in `sab` of queue `index`'s region. */
  queueRegionOffset(index: number): number {
    if (!Number.isInteger(index) || index < 0 || index >= this.numQueues) throw new RangeError(`inflight queue ${index} out of range`);
    return this.offset + index * this.queueRegionSize;
  }
}

function checkGeometry(numQueues: number, queueSize: number, maxQueues: number, what: string): void {
  check(numQueues >= 1 && numQueues <= maxQueues, `${what}: num_queues ${numQueues} must be 1..${maxQueues}`);
  check(queueSize >= 1 && queueSize <= MAX_VRING_SIZE, `${what}: queue_size ${queueSize} must be 1..${MAX_VRING_SIZE}`);
}

/**
 * Allocates a fresh area for GET_INFLIGHT_FD: a sealed memfd of the right
 * size, mapped and initialised (packed regions get their free list and wrap
 * counters; split regions start zeroed, version 0 = "uninitialized buffer").
 * Returns the area and the memfd (the caller sends it, then closes it).
 */
export function createInflightArea(
  native: NativeBinding,
  geometry: { numQueues: number; queueSize: number; packed: boolean; maxQueues: number },
  logger: Logger,
): { area: InflightArea; fd: number } {
  checkGeometry(geometry.numQueues, geometry.queueSize, geometry.maxQueues, 'GET_INFLIGHT_FD');
  const size = geometry.numQueues * inflightQueueRegionSize(geometry.queueSize, geometry.packed);
  const fd = native.memfdCreate('vhost-ts-inflight');
  try {
    native.ftruncate(fd, size);
    const mapping = mapFdArea(native, fd, 0, size, { sealShrink: true, logger, what: 'inflight area' });
    const area = new InflightArea({ sab: mapping.sab, offset: mapping.delta, size, numQueues: geometry.numQueues, queueSize: geometry.queueSize, packed: geometry.packed });
    if (geometry.packed) initPacked(area);
    return { area, fd };
  } catch (err) {
    native.close(fd);
    throw err;
  }
}

function initPacked(area: InflightArea): void {
  const u8 = new Uint8Array(area.sab);
  const dv = new DataView(area.sab);
  for (let q = 0; q < area.numQueues; q++) {
    const base = area.queueRegionOffset(q);
    u8[base + INFLIGHT_PACKED_USED_WRAP_OFFSET] = 1;
    u8[base + INFLIGHT_PACKED_OLD_USED_WRAP_OFFSET] = 1;
    for (let j = 0; j < area.queueSize; j++) {
      dv.setUint16(base + INFLIGHT_PACKED_HEADER_SIZE + j * INFLIGHT_PACKED_DESC_SIZE + INFLIGHT_PACKED_DESC_NEXT_OFFSET, j + 1, NATIVE_LITTLE_ENDIAN);
    }
  }
}

/**
 * Maps the area the front-end returns with SET_INFLIGHT_FD, after checking
 * that mmap_size covers num_queues regions of queue_size descriptors.
 */
export function mapInflightArea(
  native: NativeBinding,
  fd: number,
  desc: { mmapSize: bigint; mmapOffset: bigint; numQueues: number; queueSize: number },
  options: { packed: boolean; maxQueues: number; sealShrink: boolean; requireSealed?: boolean; logger: Logger },
): InflightArea {
  checkGeometry(desc.numQueues, desc.queueSize, options.maxQueues, 'SET_INFLIGHT_FD');
  const needed = desc.numQueues * inflightQueueRegionSize(desc.queueSize, options.packed);
  check(desc.mmapSize >= BigInt(needed), () => `SET_INFLIGHT_FD: mmap_size ${desc.mmapSize} is smaller than ${needed} bytes for ${desc.numQueues} queues of ${desc.queueSize}`);
  check(desc.mmapSize + desc.mmapOffset <= BigInt(Number.MAX_SAFE_INTEGER), 'SET_INFLIGHT_FD: mmap_size + mmap_offset overflows');
  const size = Number(desc.mmapSize);
  const mapping = mapFdArea(native, fd, Number(desc.mmapOffset), size, { sealShrink: options.sealShrink, requireSealed: options.requireSealed ?? false, logger: options.logger, what: 'SET_INFLIGHT_FD area' });
  return new InflightArea({ sab: mapping.sab, offset: mapping.delta, size, numQueues: desc.numQueues, queueSize: desc.queueSize, packed: options.packed });
}

/** Releases an inflight area's mapping now. */
export function releaseInflightArea(native: NativeBinding, area: InflightArea): void {
  releaseMapping(native, area.sab);
}
