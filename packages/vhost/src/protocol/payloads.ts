/**
 * Payload layouts ("Payload" section of vhost-user.rst) with named offsets and
 * sizes, and a typed encoder/decoder for each. Decoders check the exact size
 * and throw {@link ProtocolError}; encoders check value ranges and throw
 * `RangeError` (a programming error on our side).
 *
 * 64-bit fields are `bigint` so that nothing a front-end sends is rounded;
 * callers convert to `number` only after checking the value is a safe integer.
 */
import { checkUint, getU16, getU32, getU64, setU16, setU32, setU64, viewOf } from './bytes.js';
import {
  CONFIG_HEADER_SIZE,
  MAX_CONFIG_SIZE,
  MAX_MEM_TABLE_REGIONS,
  VRING_IDX_MASK,
  VRING_NOFD_MASK,
} from './constants.js';
import { ProtocolError } from './errors.js';

function expectSize(payload: Uint8Array, size: number, what: string): DataView {
  if (payload.byteLength !== size) {
    throw new ProtocolError(`${what} payload must be ${size} bytes, got ${payload.byteLength}`);
  }
  return viewOf(payload);
}

// ---- u64 ------------------------------------------------------------------------

/** "A single 64-bit integer". */
export const U64_SIZE = 8;

export function encodeU64(value: bigint): Uint8Array {
  const out = new Uint8Array(U64_SIZE);
  setU64(viewOf(out), 0, value);
  return out;
}
export function decodeU64(payload: Uint8Array): bigint {
  return getU64(expectSize(payload, U64_SIZE, 'u64'), 0);
}

// ---- vring state ------------------------------------------------------------------

/** "A vring state description": index u32, num u32. */
export const VRING_STATE_SIZE = 8;
export const VRING_STATE_INDEX_OFFSET = 0;
export const VRING_STATE_NUM_OFFSET = 4;

export interface VringState {
  /** Vring index. */
  index: number;
  /** Size (SET_VRING_NUM), base (SET/GET_VRING_BASE), 0/1 (SET_VRING_ENABLE). */
  num: number;
}

export function encodeVringState(state: VringState): Uint8Array {
  checkUint(state.index, 32, 'vring state index');
  checkUint(state.num, 32, 'vring state num');
  const out = new Uint8Array(VRING_STATE_SIZE);
  const v = viewOf(out);
  setU32(v, VRING_STATE_INDEX_OFFSET, state.index);
  setU32(v, VRING_STATE_NUM_OFFSET, state.num);
  return out;
}
export function decodeVringState(payload: Uint8Array): VringState {
  const v = expectSize(payload, VRING_STATE_SIZE, 'vring state');
  return { index: getU32(v, VRING_STATE_INDEX_OFFSET), num: getU32(v, VRING_STATE_NUM_OFFSET) };
}

// ---- vring address ------------------------------------------------------------------

/** "A vring address description": index u32, flags u32, desc u64, used u64, avail u64, log u64 (40 bytes). */
export const VRING_ADDR_SIZE = 40;
export const VRING_ADDR_INDEX_OFFSET = 0;
export const VRING_ADDR_FLAGS_OFFSET = 4;
export const VRING_ADDR_DESC_OFFSET = 8;
export const VRING_ADDR_USED_OFFSET = 16;
export const VRING_ADDR_AVAIL_OFFSET = 24;
export const VRING_ADDR_LOG_OFFSET = 32;

export interface VringAddr {
  index: number;
  /** Bit 0 = VHOST_VRING_F_LOG. */
  flags: number;
  /** Descriptor table: a front-end virtual address (an IOVA with IOMMU_PLATFORM). */
  desc: bigint;
  /** Used ring: a front-end virtual address. */
  used: bigint;
  /** Available ring (packed: driver event suppression area): a front-end virtual address. */
  avail: bigint;
  /** Guest-physical address at which used-ring writes are logged (VHOST_VRING_F_LOG). */
  log: bigint;
}

export function encodeVringAddr(addr: VringAddr): Uint8Array {
  checkUint(addr.index, 32, 'vring addr index');
  checkUint(addr.flags, 32, 'vring addr flags');
  const out = new Uint8Array(VRING_ADDR_SIZE);
  const v = viewOf(out);
  setU32(v, VRING_ADDR_INDEX_OFFSET, addr.index);
  setU32(v, VRING_ADDR_FLAGS_OFFSET, addr.flags);
  setU64(v, VRING_ADDR_DESC_OFFSET, addr.desc);
  setU64(v, VRING_ADDR_USED_OFFSET, addr.used);
  setU64(v, VRING_ADDR_AVAIL_OFFSET, addr.avail);
  setU64(v, VRING_ADDR_LOG_OFFSET, addr.log);
  return out;
}
export function decodeVringAddr(payload: Uint8Array): VringAddr {
  const v = expectSize(payload, VRING_ADDR_SIZE, 'vring address');
  return {
    index: getU32(v, VRING_ADDR_INDEX_OFFSET),
    flags: getU32(v, VRING_ADDR_FLAGS_OFFSET),
    desc: getU64(v, VRING_ADDR_DESC_OFFSET),
    used: getU64(v, VRING_ADDR_USED_OFFSET),
    avail: getU64(v, VRING_ADDR_AVAIL_OFFSET),
    log: getU64(v, VRING_ADDR_LOG_OFFSET),
  };
}

// ---- memory regions --------------------------------------------------------------------

/** One region: guest_phys_addr, memory_size, userspace_addr, mmap_offset (u64 each). */
export const MEMORY_REGION_SIZE = 32;
export const MEMORY_REGION_GPA_OFFSET = 0;
export const MEMORY_REGION_SIZE_OFFSET = 8;
export const MEMORY_REGION_UADDR_OFFSET = 16;
export const MEMORY_REGION_MMAP_OFFSET_OFFSET = 24;

/** A memory region as the front-end describes it. */
export interface MemoryRegionDesc {
  /** First guest-physical address of the region. */
  guestPhysAddr: bigint;
  /** Length in bytes. */
  memorySize: bigint;
  /** The front-end's own virtual address of the region (ring addresses are expressed in these). */
  userspaceAddr: bigint;
  /** Offset of the region's first byte in the fd. */
  mmapOffset: bigint;
}

function writeRegion(v: DataView, at: number, r: MemoryRegionDesc): void {
  setU64(v, at + MEMORY_REGION_GPA_OFFSET, r.guestPhysAddr);
  setU64(v, at + MEMORY_REGION_SIZE_OFFSET, r.memorySize);
  setU64(v, at + MEMORY_REGION_UADDR_OFFSET, r.userspaceAddr);
  setU64(v, at + MEMORY_REGION_MMAP_OFFSET_OFFSET, r.mmapOffset);
}
function readRegion(v: DataView, at: number): MemoryRegionDesc {
  return {
    guestPhysAddr: getU64(v, at + MEMORY_REGION_GPA_OFFSET),
    memorySize: getU64(v, at + MEMORY_REGION_SIZE_OFFSET),
    userspaceAddr: getU64(v, at + MEMORY_REGION_UADDR_OFFSET),
    mmapOffset: getU64(v, at + MEMORY_REGION_MMAP_OFFSET_OFFSET),
  };
}

/** Memory table header: nregions u32, padding u32; regions follow. */
export const MEMORY_TABLE_HEADER_SIZE = 8;
export const MEMORY_TABLE_NREGIONS_OFFSET = 0;
export const MEMORY_TABLE_REGIONS_OFFSET = 8;
/** Size of a memory table payload with `n` regions (front-ends send exactly the regions in use). */
export function memoryTableSize(n: number): number {
  return MEMORY_TABLE_HEADER_SIZE + n * MEMORY_REGION_SIZE;
}

export function encodeMemoryTable(regions: readonly MemoryRegionDesc[]): Uint8Array {
  if (regions.length > MAX_MEM_TABLE_REGIONS) throw new RangeError(`at most ${MAX_MEM_TABLE_REGIONS} regions`);
  const out = new Uint8Array(memoryTableSize(regions.length));
  const v = viewOf(out);
  setU32(v, MEMORY_TABLE_NREGIONS_OFFSET, regions.length);
  regions.forEach((r, i) => writeRegion(v, MEMORY_TABLE_REGIONS_OFFSET + i * MEMORY_REGION_SIZE, r));
  return out;
}
/**
 * Decodes a memory table. Refuses nregions > 8 and a size other than
 * 8 + 32 * nregions (the fd count is checked by the caller against nregions).
 */
export function decodeMemoryTable(payload: Uint8Array): MemoryRegionDesc[] {
  if (payload.byteLength < MEMORY_TABLE_HEADER_SIZE) {
    throw new ProtocolError(`memory table payload must be at least ${MEMORY_TABLE_HEADER_SIZE} bytes, got ${payload.byteLength}`);
  }
  const v = viewOf(payload);
  const n = getU32(v, MEMORY_TABLE_NREGIONS_OFFSET);
  if (n > MAX_MEM_TABLE_REGIONS) throw new ProtocolError(`memory table has ${n} regions, at most ${MAX_MEM_TABLE_REGIONS} allowed`);
  if (payload.byteLength !== memoryTableSize(n)) {
    throw new ProtocolError(`memory table with ${n} regions must be ${memoryTableSize(n)} bytes, got ${payload.byteLength}`);
  }
  const regions: MemoryRegionDesc[] = [];
  for (let i = 0; i < n; i++) regions.push(readRegion(v, MEMORY_TABLE_REGIONS_OFFSET + i * MEMORY_REGION_SIZE));
  return regions;
}

/** "Single memory region description" (ADD_MEM_REG / REM_MEM_REG): padding u64, then a region. */
export const SINGLE_REGION_SIZE = 8 + MEMORY_REGION_SIZE;
export const SINGLE_REGION_REGION_OFFSET = 8;

export function encodeSingleRegion(region: MemoryRegionDesc): Uint8Array {
  const out = new Uint8Array(SINGLE_REGION_SIZE);
  writeRegion(viewOf(out), SINGLE_REGION_REGION_OFFSET, region);
  return out;
}
export function decodeSingleRegion(payload: Uint8Array): MemoryRegionDesc {
  return readRegion(expectSize(payload, SINGLE_REGION_SIZE, 'single memory region'), SINGLE_REGION_REGION_OFFSET);
}

// ---- log ---------------------------------------------------------------------------------

/** "Log description": mmap_size u64, mmap_offset u64. */
export const LOG_SIZE = 16;
export const LOG_MMAP_SIZE_OFFSET = 0;
export const LOG_MMAP_OFFSET_OFFSET = 8;

export interface LogDesc {
  /** Size of the log area in bytes. */
  mmapSize: bigint;
  /** Offset of the log area in the fd ("where guest address 0 would be logged"). */
  mmapOffset: bigint;
}
export function encodeLog(log: LogDesc): Uint8Array {
  const out = new Uint8Array(LOG_SIZE);
  const v = viewOf(out);
  setU64(v, LOG_MMAP_SIZE_OFFSET, log.mmapSize);
  setU64(v, LOG_MMAP_OFFSET_OFFSET, log.mmapOffset);
  return out;
}
export function decodeLog(payload: Uint8Array): LogDesc {
  const v = expectSize(payload, LOG_SIZE, 'log');
  return { mmapSize: getU64(v, LOG_MMAP_SIZE_OFFSET), mmapOffset: getU64(v, LOG_MMAP_OFFSET_OFFSET) };
}

// ---- config space ----------------------------------------------------------------------------

export const CONFIG_OFFSET_OFFSET = 0;
export const CONFIG_SIZE_OFFSET = 4;
export const CONFIG_FLAGS_OFFSET = 8;
export const CONFIG_PAYLOAD_OFFSET = CONFIG_HEADER_SIZE;

/** "Virtio device config space": offset u32, size u32, flags u32, then `size` bytes. */
export interface ConfigPayload {
  /** Offset in the device config space. */
  offset: number;
  /** Flags: 0 writable fields, 1 live migration. */
  flags: number;
  /** The config bytes (length = the size field, at most 256). */
  data: Uint8Array;
}
export function encodeConfig(config: ConfigPayload): Uint8Array {
  checkUint(config.offset, 32, 'config offset');
  checkUint(config.flags, 32, 'config flags');
  if (config.data.byteLength > MAX_CONFIG_SIZE) throw new RangeError(`config data at most ${MAX_CONFIG_SIZE} bytes`);
  const out = new Uint8Array(CONFIG_HEADER_SIZE + config.data.byteLength);
  const v = viewOf(out);
  setU32(v, CONFIG_OFFSET_OFFSET, config.offset);
  setU32(v, CONFIG_SIZE_OFFSET, config.data.byteLength);
  setU32(v, CONFIG_FLAGS_OFFSET, config.flags);
  out.set(config.data, CONFIG_PAYLOAD_OFFSET);
  return out;
}
/** Decodes a config payload; the size field must be <= 256 and match the bytes that follow. */
export function decodeConfig(payload: Uint8Array): ConfigPayload {
  if (payload.byteLength < CONFIG_HEADER_SIZE) {
    throw new ProtocolError(`config payload must be at least ${CONFIG_HEADER_SIZE} bytes, got ${payload.byteLength}`);
  }
  const v = viewOf(payload);
  const size = getU32(v, CONFIG_SIZE_OFFSET);
  if (size > MAX_CONFIG_SIZE) throw new ProtocolError(`config size ${size} exceeds ${MAX_CONFIG_SIZE}`);
  if (payload.byteLength !== CONFIG_HEADER_SIZE + size) {
    throw new ProtocolError(`config payload of size field ${size} must be ${CONFIG_HEADER_SIZE + size} bytes, got ${payload.byteLength}`);
  }
  return {
    offset: getU32(v, CONFIG_OFFSET_OFFSET),
    flags: getU32(v, CONFIG_FLAGS_OFFSET),
    data: payload.slice(CONFIG_PAYLOAD_OFFSET),
  };
}

// ---- inflight -----------------------------------------------------------------------------------

/**
 * "Inflight description": mmap_size u64, mmap_offset u64, num_queues u16,
 * queue_size u16. C front-ends send sizeof() of the struct, 24 bytes with the
 * tail padding; a packed encoding is 20 bytes. Both are accepted; we send 24.
 */
export const INFLIGHT_SIZE = 24;
export const INFLIGHT_PACKED_SIZE = 20;
export const INFLIGHT_MMAP_SIZE_OFFSET = 0;
export const INFLIGHT_MMAP_OFFSET_OFFSET = 8;
export const INFLIGHT_NUM_QUEUES_OFFSET = 16;
export const INFLIGHT_QUEUE_SIZE_OFFSET = 18;

export interface InflightDesc {
  mmapSize: bigint;
  mmapOffset: bigint;
  numQueues: number;
  queueSize: number;
}
export function encodeInflight(d: InflightDesc): Uint8Array {
  checkUint(d.numQueues, 16, 'inflight num_queues');
  checkUint(d.queueSize, 16, 'inflight queue_size');
  const out = new Uint8Array(INFLIGHT_SIZE);
  const v = viewOf(out);
  setU64(v, INFLIGHT_MMAP_SIZE_OFFSET, d.mmapSize);
  setU64(v, INFLIGHT_MMAP_OFFSET_OFFSET, d.mmapOffset);
  setU16(v, INFLIGHT_NUM_QUEUES_OFFSET, d.numQueues);
  setU16(v, INFLIGHT_QUEUE_SIZE_OFFSET, d.queueSize);
  return out;
}
export function decodeInflight(payload: Uint8Array): InflightDesc {
  if (payload.byteLength !== INFLIGHT_SIZE && payload.byteLength !== INFLIGHT_PACKED_SIZE) {
    throw new ProtocolError(`inflight payload must be ${INFLIGHT_SIZE} (or ${INFLIGHT_PACKED_SIZE}) bytes, got ${payload.byteLength}`);
  }
  const v = viewOf(payload);
  return {
    mmapSize: getU64(v, INFLIGHT_MMAP_SIZE_OFFSET),
    mmapOffset: getU64(v, INFLIGHT_MMAP_OFFSET_OFFSET),
    numQueues: getU16(v, INFLIGHT_NUM_QUEUES_OFFSET),
    queueSize: getU16(v, INFLIGHT_QUEUE_SIZE_OFFSET),
  };
}

// ---- vring fd (SET_VRING_KICK / CALL / ERR) -------------------------------------------------------

/** The u64 of SET_VRING_KICK/CALL/ERR: bits 0-7 vring index, bit 8 "no fd" (poll instead). */
export interface VringFdPayload {
  index: number;
  /** True when bit 8 is set: no fd in the ancillary data. */
  noFd: boolean;
}
export function encodeVringFd(p: VringFdPayload): Uint8Array {
  if (!Number.isInteger(p.index) || p.index < 0 || p.index > VRING_IDX_MASK) throw new RangeError('vring fd index must be 0..255');
  return encodeU64(BigInt(p.index | (p.noFd ? VRING_NOFD_MASK : 0)));
}
/** Decodes the vring fd u64; bits above 8 must be zero. */
export function decodeVringFd(payload: Uint8Array): VringFdPayload {
  const value = decodeU64(payload);
  if ((value & ~BigInt(VRING_IDX_MASK | VRING_NOFD_MASK)) !== 0n) {
    throw new ProtocolError(`vring fd payload 0x${value.toString(16)} has bits set above bit 8`);
  }
  const n = Number(value);
  return { index: n & VRING_IDX_MASK, noFd: (n & VRING_NOFD_MASK) !== 0 };
}

// ---- RARP --------------------------------------------------------------------------------------------

/** SEND_RARP: "The first 6 bytes of the payload contain the mac address of the guest". */
export function encodeRarp(mac: Uint8Array): Uint8Array {
  if (mac.byteLength !== 6) throw new RangeError('MAC must be 6 bytes');
  const out = new Uint8Array(U64_SIZE);
  out.set(mac, 0);
  return out;
}
export function decodeRarp(payload: Uint8Array): Uint8Array {
  expectSize(payload, U64_SIZE, 'SEND_RARP');
  return payload.slice(0, 6);
}

// ---- IOTLB ---------------------------------------------------------------------------------------------

/** struct vhost_iotlb_msg: iova u64, size u64, uaddr u64, perm u8, type u8 (+6 bytes padding = 32). */
export const IOTLB_SIZE = 32;
export const IOTLB_IOVA_OFFSET = 0;
export const IOTLB_SIZE_OFFSET = 8;
export const IOTLB_UADDR_OFFSET = 16;
export const IOTLB_PERM_OFFSET = 24;
export const IOTLB_TYPE_OFFSET = 25;

export interface IotlbMsg {
  iova: bigint;
  size: bigint;
  uaddr: bigint;
  /** 0 none, 1 read, 2 write, 3 read/write. */
  perm: number;
  /** {@link IotlbType}. */
  type: number;
}
export function encodeIotlb(m: IotlbMsg): Uint8Array {
  checkUint(m.perm, 8, 'iotlb perm');
  checkUint(m.type, 8, 'iotlb type');
  const out = new Uint8Array(IOTLB_SIZE);
  const v = viewOf(out);
  setU64(v, IOTLB_IOVA_OFFSET, m.iova);
  setU64(v, IOTLB_SIZE_OFFSET, m.size);
  setU64(v, IOTLB_UADDR_OFFSET, m.uaddr);
  v.setUint8(IOTLB_PERM_OFFSET, m.perm);
  v.setUint8(IOTLB_TYPE_OFFSET, m.type);
  return out;
}
export function decodeIotlb(payload: Uint8Array): IotlbMsg {
  const v = expectSize(payload, IOTLB_SIZE, 'IOTLB');
  return {
    iova: getU64(v, IOTLB_IOVA_OFFSET),
    size: getU64(v, IOTLB_SIZE_OFFSET),
    uaddr: getU64(v, IOTLB_UADDR_OFFSET),
    perm: v.getUint8(IOTLB_PERM_OFFSET),
    type: v.getUint8(IOTLB_TYPE_OFFSET),
  };
}

// ---- vring area (back-end VRING_HOST_NOTIFIER_MSG) ---------------------------------------------------------

/** "Vring area description": u64 (vring index and flags), size u64, offset u64. */
export const VRING_AREA_SIZE = 24;
export interface VringArea {
  u64: bigint;
  size: bigint;
  offset: bigint;
}
export function encodeVringArea(a: VringArea): Uint8Array {
  const out = new Uint8Array(VRING_AREA_SIZE);
  const v = viewOf(out);
  setU64(v, 0, a.u64);
  setU64(v, 8, a.size);
  setU64(v, 16, a.offset);
  return out;
}
export function decodeVringArea(payload: Uint8Array): VringArea {
  const v = expectSize(payload, VRING_AREA_SIZE, 'vring area');
  return { u64: getU64(v, 0), size: getU64(v, 8), offset: getU64(v, 16) };
}

// ---- packed ring base encoding --------------------------------------------------------------------------------

/**
 * Packed-ring SET/GET_VRING_BASE `num`: bits 0-14 last avail index, bit 15
 * avail wrap counter, bits 16-30 last used index, bit 31 used wrap counter.
 * DPDK sends only the low 16 bits (used = avail, used wrap = avail wrap).
 */
export interface PackedVringBase {
  availIdx: number;
  availWrap: boolean;
  usedIdx: number;
  usedWrap: boolean;
}
export function encodePackedBase(b: PackedVringBase): number {
  if (b.availIdx < 0 || b.availIdx > 0x7fff || b.usedIdx < 0 || b.usedIdx > 0x7fff) throw new RangeError('packed index must be < 32768');
  return (b.availIdx | (b.availWrap ? 0x8000 : 0) | (b.usedIdx << 16) | (b.usedWrap ? 0x8000_0000 : 0)) >>> 0;
}
/** Decodes a packed base; when the high 16 bits are all zero the used side mirrors the avail side (DPDK's encoding). */
export function decodePackedBase(num: number): PackedVringBase {
  const availIdx = num & 0x7fff;
  const availWrap = (num & 0x8000) !== 0;
  if (num >>> 16 === 0) return { availIdx, availWrap, usedIdx: availIdx, usedWrap: availWrap };
  return { availIdx, availWrap, usedIdx: (num >>> 16) & 0x7fff, usedWrap: (num & 0x8000_0000) !== 0 };
}
