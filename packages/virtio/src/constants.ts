/**
 * Virtio constants: feature bits, device status bits, descriptor flags, ring
 * layout offsets and sizes. Every magic number of the ring code lives here.
 * Sources: virtio 1.2 spec (split-ring.tex, packed-ring.tex, content.tex) and
 * Linux include/uapi/linux/virtio_ring.h / virtio_net.h / virtio_blk.h.
 */

// ---------------------------------------------------------------------------
// Transport feature bits (bit numbers, not masks).
export const VIRTIO_F_NOTIFY_ON_EMPTY = 24;
export const VIRTIO_F_ANY_LAYOUT = 27;
export const VIRTIO_F_INDIRECT_DESC = 28;
export const VIRTIO_F_EVENT_IDX = 29;
/** vhost-user: VHOST_USER_F_PROTOCOL_FEATURES shares bit 30 of the feature word. */
export const VHOST_USER_F_PROTOCOL_FEATURES = 30;
/** vhost: VHOST_F_LOG_ALL (dirty logging for live migration). */
export const VHOST_F_LOG_ALL = 26;
export const VIRTIO_F_VERSION_1 = 32;
export const VIRTIO_F_ACCESS_PLATFORM = 33;
export const VIRTIO_F_RING_PACKED = 34;
export const VIRTIO_F_IN_ORDER = 35;
export const VIRTIO_F_ORDER_PLATFORM = 36;
export const VIRTIO_F_SR_IOV = 37;
export const VIRTIO_F_NOTIFICATION_DATA = 38;
export const VIRTIO_F_RING_RESET = 40;

// ---------------------------------------------------------------------------
// Device status bits (values, they are a byte).
export const VIRTIO_STATUS_ACKNOWLEDGE = 1;
export const VIRTIO_STATUS_DRIVER = 2;
export const VIRTIO_STATUS_DRIVER_OK = 4;
export const VIRTIO_STATUS_FEATURES_OK = 8;
export const VIRTIO_STATUS_NEEDS_RESET = 64;
export const VIRTIO_STATUS_FAILED = 128;

// ---------------------------------------------------------------------------
// Descriptor flags (split and packed share NEXT/WRITE/INDIRECT).
export const VIRTQ_DESC_F_NEXT = 1;
export const VIRTQ_DESC_F_WRITE = 2;
export const VIRTQ_DESC_F_INDIRECT = 4;
/** Packed only: "#define VIRTQ_DESC_F_AVAIL (1 << 7)". */
export const VIRTQ_DESC_F_AVAIL = 1 << 7;
/** Packed only: "#define VIRTQ_DESC_F_USED (1 << 15)". */
export const VIRTQ_DESC_F_USED = 1 << 15;

/** Split avail.flags: "#define VIRTQ_AVAIL_F_NO_INTERRUPT 1". */
export const VIRTQ_AVAIL_F_NO_INTERRUPT = 1;
/** Split used.flags: "#define VIRTQ_USED_F_NO_NOTIFY 1". */
export const VIRTQ_USED_F_NO_NOTIFY = 1;

/** Packed event suppression flags. */
export const RING_EVENT_FLAGS_ENABLE = 0;
export const RING_EVENT_FLAGS_DISABLE = 1;
/** "Only valid if VIRTIO_F_RING_EVENT_IDX has been negotiated." */
export const RING_EVENT_FLAGS_DESC = 2;
/** Bit 15 of off_wrap is the wrap counter. */
export const RING_EVENT_WRAP_SHIFT = 15;
export const RING_EVENT_OFF_MASK = 0x7fff;

// ---------------------------------------------------------------------------
// Queue sizes. "The maximum Queue Size value is 32768" (split, power of 2);
// "Packed virtqueues support up to 2^15 entries each" (any size).
export const VIRTQ_MAX_SIZE = 32768;

// ---------------------------------------------------------------------------
// Descriptor layout: split {addr u64 @0, len u32 @8, flags u16 @12, next u16 @14};
// packed {addr u64 @0, len u32 @8, id u16 @12, flags u16 @14}.
export const DESC_SIZE = 16;
export const DESC_ADDR = 0;
export const DESC_LEN = 8;
export const SPLIT_DESC_FLAGS = 12;
export const SPLIT_DESC_NEXT = 14;
export const PACKED_DESC_ID = 12;
export const PACKED_DESC_FLAGS = 14;

// Split ring alignments ("Descriptor Table 16, Available Ring 2, Used Ring 4").
export const SPLIT_DESC_ALIGN = 16;
export const SPLIT_AVAIL_ALIGN = 2;
export const SPLIT_USED_ALIGN = 4;

// Split avail ring {flags u16, idx u16, ring[N] u16, used_event u16}.
export const AVAIL_FLAGS = 0;
export const AVAIL_IDX = 2;
export const AVAIL_RING = 4;
export const AVAIL_ELEM_SIZE = 2;
// Split used ring {flags u16, idx u16, ring[N] {id u32, len u32}, avail_event u16}.
export const USED_FLAGS = 0;
export const USED_IDX = 2;
export const USED_RING = 4;
export const USED_ELEM_SIZE = 8;
export const USED_ELEM_ID = 0;
export const USED_ELEM_LEN = 4;

/** Bytes of the split descriptor table: 16 * N. */
export function splitDescBytes(size: number): number {
  return DESC_SIZE * size;
}
/** Bytes of the split available ring including used_event: 6 + 2 * N. */
export function splitAvailBytes(size: number): number {
  return 6 + AVAIL_ELEM_SIZE * size;
}
/** Bytes of the split used ring including avail_event: 6 + 8 * N. */
export function splitUsedBytes(size: number): number {
  return 6 + USED_ELEM_SIZE * size;
}
/** Offset of used_event inside the avail ring: 4 + 2 * N. */
export function splitUsedEventOffset(size: number): number {
  return AVAIL_RING + AVAIL_ELEM_SIZE * size;
}
/** Offset of avail_event inside the used ring: 4 + 8 * N. */
export function splitAvailEventOffset(size: number): number {
  return USED_RING + USED_ELEM_SIZE * size;
}

// Packed ring: descriptor ring 16-aligned (16 * N), driver and device event
// suppression areas 4-aligned, 4 bytes {off_wrap u16 @0, flags u16 @2}.
export const PACKED_DESC_ALIGN = 16;
export const PACKED_EVENT_ALIGN = 4;
export const PACKED_EVENT_BYTES = 4;
export const PACKED_EVENT_OFF_WRAP = 0;
export const PACKED_EVENT_FLAGS = 2;
export function packedDescBytes(size: number): number {
  return DESC_SIZE * size;
}

// ---------------------------------------------------------------------------
// vhost-user SET_VRING_BASE / GET_VRING_BASE encoding for packed rings:
// bits 0-14 avail idx, bit 15 avail wrap, bits 16-30 used idx, bit 31 used wrap.
export const PACKED_BASE_IDX_MASK = 0x7fff;
export const PACKED_BASE_AVAIL_WRAP = 1 << 15;
export const PACKED_BASE_USED_SHIFT = 16;

// vhost-user vring addr flags: bit 0 = VHOST_VRING_F_LOG.
export const VHOST_VRING_F_LOG = 1;
/** Dirty log page: "one bit per 4 KiB guest page from GPA 0". */
export const VHOST_LOG_PAGE = 4096;
export const VHOST_LOG_PAGE_SHIFT = 12;

/** Largest address the ring code accepts: addresses are JS numbers below 2^53. */
export const MAX_GPA = 2 ** 53;
/** 2^32, to combine u64 halves: lo + hi * TWO_POW_32. */
export const TWO_POW_32 = 2 ** 32;
/** Upper half of a u64 address must stay below this (2^21) so lo + hi * 2^32 < 2^53. */
export const MAX_ADDR_HI = 2 ** 21;
