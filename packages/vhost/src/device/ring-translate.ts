/**
 * Translation of SET_VRING_ADDR's ring addresses. "a ring address is an IOVA
 * if VIRTIO_F_IOMMU_PLATFORM has been negotiated. Otherwise it is a user
 * address": a front-end virtual address, mapped through each region's
 * userspace_addr. Each area must be aligned and lie inside one region (and
 * inside one of its views, so the data plane can index it with one array).
 */
import { VIRTIO_F_EVENT_IDX, VIRTIO_F_RING_PACKED } from '../features.js';
import { check } from '../errors.js';
import { NATIVE_LITTLE_ENDIAN } from '../protocol/bytes.js';
import { hasBit } from '../protocol/constants.js';
import { SPLIT_USED_IDX_OFFSET, ringAreaAlignments, ringAreaSizes } from './ring-layout.js';
import type { DeviceState } from './state.js';
import type { RingAddresses, Vring } from './vring.js';

const AREAS = ['desc', 'avail', 'used'] as const;

/** The result of translating a ring's addresses. */
export interface RingTranslation {
  packed: boolean;
  desc: number;
  avail: number;
  used: number;
  /** Split rings: the guest's used->idx; null for packed rings. */
  usedIdx: number | null;
}

/**
 * Translates `addrs` for vring `v` (whose size must be set). Throws a refusal
 * naming the failing area; changes nothing.
 */
export function computeRingTranslation(st: DeviceState, v: Vring, addrs: RingAddresses): RingTranslation {
  const memory = st.memory;
  check(memory !== null, `vring ${v.index}: no memory table yet`);
  check(v.size > 0, `vring ${v.index}: ring size not set (SET_VRING_NUM first)`);
  const packed = hasBit(st.features, VIRTIO_F_RING_PACKED);
  const sizes = ringAreaSizes(v.size, packed, hasBit(st.features, VIRTIO_F_EVENT_IDX));
  const aligns = ringAreaAlignments(packed);
  const gpas = { desc: -1, avail: -1, used: -1 };
  for (const area of AREAS) {
    const uva = addrs[area];
    check(uva % aligns[area] === 0, () => `vring ${v.index}: ${area} address 0x${uva.toString(16)} is not ${aligns[area]}-byte aligned`);
    const gpa = memory.uvaToGpa(uva, sizes[area]);
    check(gpa >= 0, () => `vring ${v.index}: ${area} area [0x${uva.toString(16)}, +${sizes[area]}) is outside every memory region`);
    check(memory.translateGpa(gpa, sizes[area]) !== null, () => `vring ${v.index}: ${area} area straddles two views of a region`);
    gpas[area] = gpa;
  }
  return { packed, ...gpas, usedIdx: packed ? null : readUsedIdx(st, gpas.used) };
}

/** Stores a translation in the vring; split rings take their last used index from the guest's used->idx. */
export function applyRingTranslation(v: Vring, t: RingTranslation): void {
  v.packed = t.packed;
  v.descGpa = t.desc;
  v.availGpa = t.avail;
  v.usedGpa = t.used;
  if (t.usedIdx !== null) v.lastUsedIdx = t.usedIdx;
}

/** Translates and applies (used after a memory or size change). Throws a refusal; then `v` is unchanged. */
export function translateRingAddresses(ctx: { state: DeviceState }, v: Vring, addrs: RingAddresses): void {
  applyRingTranslation(v, computeRingTranslation(ctx.state, v, addrs));
}

/** Reads the split used ring's idx (only the back-end writes it, so a plain read is exact). */
function readUsedIdx(st: DeviceState, usedGpa: number): number {
  const t = st.memory!.translateGpa(usedGpa + SPLIT_USED_IDX_OFFSET, 2)!;
  return new DataView(t.view.sab, t.view.sabOffset + t.offset, 2).getUint16(0, NATIVE_LITTLE_ENDIAN);
}
