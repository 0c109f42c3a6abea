/**
 * Byte sizes and alignments of the ring areas a SET_VRING_ADDR names, used to
 * check that each area lies inside one memory region (virtio 1.1, 2.6 and 2.7).
 */

/** Descriptor size, split and packed. */
export const RING_DESC_SIZE = 16;
/** Descriptor table alignment (split and packed). */
export const RING_DESC_ALIGN = 16;
/** Split available ring alignment. */
export const SPLIT_AVAIL_ALIGN = 2;
/** Split used ring alignment. */
export const SPLIT_USED_ALIGN = 4;
/** Packed event suppression areas: {off_wrap u16, flags u16}, 4-byte aligned. */
export const PACKED_EVENT_AREA_SIZE = 4;
export const PACKED_EVENT_AREA_ALIGN = 4;
/** Split used ring: idx is the u16 at byte 2. */
export const SPLIT_USED_IDX_OFFSET = 2;

/** Sizes of the three areas of a ring of `size` entries. */
export interface RingAreaSizes {
  desc: number;
  avail: number;
  used: number;
}

/**
 * Split: desc 16 * N; avail flags, idx, ring[N] u16 (+ used_event with
 * EVENT_IDX); used flags, idx, ring[N] {id u32, len u32} (+ avail_event).
 * Packed: desc 16 * N; driver and device event suppression areas 4 bytes each.
 */
export function ringAreaSizes(size: number, packed: boolean, eventIdx: boolean): RingAreaSizes {
  if (packed) return { desc: RING_DESC_SIZE * size, avail: PACKED_EVENT_AREA_SIZE, used: PACKED_EVENT_AREA_SIZE };
  const event = eventIdx ? 2 : 0;
  return { desc: RING_DESC_SIZE * size, avail: 4 + 2 * size + event, used: 4 + 8 * size + event };
}

/** Required alignment of each area. */
export function ringAreaAlignments(packed: boolean): RingAreaSizes {
  return packed
    ? { desc: RING_DESC_ALIGN, avail: PACKED_EVENT_AREA_ALIGN, used: PACKED_EVENT_AREA_ALIGN }
    : { desc: RING_DESC_ALIGN, avail: SPLIT_AVAIL_ALIGN, used: SPLIT_USED_ALIGN };
}
