/**
 * The guest memory table: mapped regions with their guest-physical range,
 * front-end virtual range and SharedArrayBuffer views; translation of
 * descriptor addresses (GPA) and ring addresses (front-end VA).
 */
import type { NativeBinding } from '@vhost-ts/native';
import { check } from '../errors.js';
import type { Logger } from '../log.js';
import type { MemoryRegionDesc } from '../protocol/payloads.js';
import { mapFdArea, releaseMapping } from './mapping.js';

/**
 * Largest span one view covers (2 GiB). Node 20 typed arrays cover at most
 * 4 GiB; 2 GiB keeps every view index a positive int32. Regions above this are
 * split into several views over the same SAB.
 */
export const MAX_VIEW_BYTES = 2 ** 31;

/**
 * A piece of guest memory that one typed array can cover: `size` bytes of
 * guest-physical memory from `gpa`, at byte `sabOffset` of `sab`. Shaped like
 * `GuestRegionInit` of `@vhost-ts/virtio`, so a list of views builds a
 * `GuestMemory` directly.
 */
export interface MemoryView {
  gpa: number;
  size: number;
  sab: SharedArrayBuffer;
  sabOffset: number;
}

/** One memory-table entry, mapped. All addresses are safe integers. */
export interface MemoryRegion {
  /** First guest-physical address. */
  readonly guestPhysAddr: number;
  /** Length in bytes. */
  readonly size: number;
  /** First front-end virtual address (userspace_addr). */
  readonly userspaceAddr: number;
  /** Offset of the region in the front-end's fd. */
  readonly mmapOffset: number;
  /** The mapping (starts at the page-aligned-down mmap offset). */
  readonly sab: SharedArrayBuffer;
  /** Where the region's first byte is in `sab`. */
  readonly sabOffset: number;
  /** Views of at most {@link MAX_VIEW_BYTES} each, ascending GPA, covering the region. */
  readonly views: readonly MemoryView[];
  /** True when the fd was sealed against shrinking. */
  readonly sealed: boolean;
}

/** Result of a GPA translation. */
export interface GpaTranslation {
  region: MemoryRegion;
  /** The view holding the whole range. */
  view: MemoryView;
  /** Byte offset of the GPA inside `view` (add `view.sabOffset` for the SAB offset). */
  offset: number;
}

const MAX_SAFE = Number.MAX_SAFE_INTEGER;

/** Converts a u64 from the wire to a number, refusing values that are not safe integers. */
export function safeNumber(value: bigint, what: string): number {
  check(value <= BigInt(MAX_SAFE), () => `${what} 0x${value.toString(16)} is beyond 2^53`);
  return Number(value);
}

/** The numeric, validated form of a region description. */
export interface RegionRange {
  guestPhysAddr: number;
  size: number;
  userspaceAddr: number;
  mmapOffset: number;
}

/** Checks a region description (non-zero size, no 64-bit wrap, safe integers). */
export function validateRegionDesc(desc: MemoryRegionDesc, what: string): RegionRange {
  check(desc.memorySize > 0n, `${what}: zero-length region`);
  check(desc.guestPhysAddr + desc.memorySize <= BigInt(MAX_SAFE), `${what}: guest range [0x${desc.guestPhysAddr.toString(16)}, +0x${desc.memorySize.toString(16)}) is beyond 2^53`);
  check(desc.userspaceAddr + desc.memorySize <= BigInt(MAX_SAFE), `${what}: front-end range [0x${desc.userspaceAddr.toString(16)}, +0x${desc.memorySize.toString(16)}) is beyond 2^53`);
  check(desc.mmapOffset + desc.memorySize <= BigInt(MAX_SAFE), `${what}: mmap_offset + size is beyond 2^53`);
  // The spec sets no alignment for mmap_offset, but ring index words are read
  // as 16-bit atomics through views of the mapping, which need an even byte
  // offset; real front-ends use page-aligned offsets. Refuse odd ones here
  // rather than acknowledge a region the queue workers cannot map.
  check((desc.mmapOffset & 1n) === 0n, `${what}: mmap_offset 0x${desc.mmapOffset.toString(16)} is odd (vhost-ts maps regions at even offsets only)`);
  return {
    guestPhysAddr: Number(desc.guestPhysAddr),
    size: Number(desc.memorySize),
    userspaceAddr: Number(desc.userspaceAddr),
    mmapOffset: Number(desc.mmapOffset),
  };
}

/** Refuses ranges whose guest-physical spans overlap. */
export function checkNoOverlap(ranges: readonly RegionRange[]): void {
  const sorted = [...ranges].sort((a, b) => a.guestPhysAddr - b.guestPhysAddr);
  for (let i = 1; i < sorted.length; i++) {
    const prev = sorted[i - 1]!;
    const cur = sorted[i]!;
    check(cur.guestPhysAddr >= prev.guestPhysAddr + prev.size, () =>
      `overlapping regions: GPA [0x${prev.guestPhysAddr.toString(16)}, +0x${prev.size.toString(16)}) and [0x${cur.guestPhysAddr.toString(16)}, +0x${cur.size.toString(16)})`);
  }
}

/** Splits a mapped region into views of at most {@link MAX_VIEW_BYTES}. */
export function regionViews(gpa: number, size: number, sab: SharedArrayBuffer, sabOffset: number): MemoryView[] {
  const views: MemoryView[] = [];
  for (let done = 0; done < size; done += MAX_VIEW_BYTES) {
    views.push({ gpa: gpa + done, size: Math.min(MAX_VIEW_BYTES, size - done), sab, sabOffset: sabOffset + done });
  }
  return views;
}

/** Options for {@link mapRegion}. */
export interface MapRegionOptions {
  sealShrink: boolean;
  requireSealed?: boolean;
  logger: Logger;
  what: string;
}

/** Maps one region from its fd (which the caller closes afterwards). Throws a refusal. */
export function mapRegion(native: NativeBinding, range: RegionRange, fd: number, options: MapRegionOptions): MemoryRegion {
  const mapping = mapFdArea(native, fd, range.mmapOffset, range.size, options);
  return {
    ...range,
    sab: mapping.sab,
    sabOffset: mapping.delta,
    views: regionViews(range.guestPhysAddr, range.size, mapping.sab, mapping.delta),
    sealed: mapping.sealed,
  };
}

/** Releases a region's mapping now. */
export function releaseRegion(native: NativeBinding, region: MemoryRegion): void {
  releaseMapping(native, region.sab);
}

/** An immutable set of mapped regions (a new table replaces it on every change). */
export class MemoryTable {
  /** Regions in the order the front-end listed them. */
  readonly regions: readonly MemoryRegion[];
  /** Every view of every region, ascending GPA (the input of virtio's `GuestMemory`). */
  readonly views: readonly MemoryView[];

  constructor(regions: readonly MemoryRegion[]) {
    this.regions = regions;
    this.views = regions.flatMap((r) => r.views).sort((a, b) => a.gpa - b.gpa);
  }

  /** Highest guest-physical address + 1 (what a dirty log must cover). */
  get guestEnd(): number {
    let end = 0;
    for (const r of this.regions) end = Math.max(end, r.guestPhysAddr + r.size);
    return end;
  }

  /** The region and view holding all of [gpa, gpa + len), or null. */
  translateGpa(gpa: number, len: number): GpaTranslation | null {
    if (!Number.isSafeInteger(gpa) || !Number.isSafeInteger(len) || gpa < 0 || len < 0) return null;
    for (const region of this.regions) {
      if (gpa < region.guestPhysAddr || gpa + len > region.guestPhysAddr + region.size) continue;
      const inRegion = gpa - region.guestPhysAddr;
      const view = region.views[Math.floor(inRegion / MAX_VIEW_BYTES)];
      if (view === undefined) return null;
      const offset = gpa - view.gpa;
      if (offset + len > view.size) return null; // straddles two views of one region
      return { region, view, offset };
    }
    return null;
  }

  /**
   * The GPA of front-end virtual address `uva` when [uva, uva + len) lies in
   * one region, else -1. Ring addresses of SET_VRING_ADDR are translated so.
   */
  uvaToGpa(uva: number, len: number): number {
    if (!Number.isSafeInteger(uva) || !Number.isSafeInteger(len) || uva < 0 || len < 0) return -1;
    for (const region of this.regions) {
      if (uva >= region.userspaceAddr && uva + len <= region.userspaceAddr + region.size) {
        return region.guestPhysAddr + (uva - region.userspaceAddr);
      }
    }
    return -1;
  }

  /** Releases every region's mapping. */
  release(native: NativeBinding): void {
    for (const r of this.regions) releaseRegion(native, r);
  }
}
