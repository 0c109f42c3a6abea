/**
 * Guest-memory layout planning: which memfds to create, how big, and which
 * memory-table entries (GPA, size, front-end VA, mmap offset) describe them.
 *
 * The front-end VA (`userspace_addr`) we announce is fictitious: the back-end
 * only uses it to translate the ring addresses of SET_VRING_ADDR, so any
 * consistent value works, and choosing it lets us exercise both address
 * classes the way real front-ends do:
 * - `dpdk`: one region, guest_phys_addr == userspace_addr (DPDK virtio-user).
 * - `qemu`: one memfd split like a PC: the part below the 3 GiB PCI hole at GPA 0,
 *   the rest at GPA 4 GiB with a non-zero mmap_offset into the same fd;
 *   userspace_addr far from the GPA (a typical QEMU heap address), with a gap.
 * - `multi`: N separate memfds at GPAs with holes between them, VAs unrelated to GPAs.
 * Pure planning: no syscalls here (see guest-memory.ts).
 */

export type LayoutKind = 'dpdk' | 'qemu' | 'multi';

/** One memory-table entry, plus which planned file it maps. */
export interface PlannedRegion {
  guestPhysAddr: number;
  size: number;
  userspaceAddr: number;
  mmapOffset: number;
  /** Index into {@link LayoutPlan.files}. */
  file: number;
}

export interface LayoutPlan {
  kind: LayoutKind;
  /** Sizes of the memfds to create. */
  files: number[];
  regions: PlannedRegion[];
}

export interface LayoutOptions {
  kind?: LayoutKind;
  /** Total guest memory in bytes (multiple of the page size). Default 64 MiB. */
  size?: number;
  /** Regions for `multi` (1..8). Default 2. For `qemu`, where the low part ends (default: half of size, at most 3 GiB). */
  regions?: number;
  lowMemSize?: number;
}

export const PAGE_SIZE = 4096;
/** Where our fictitious QEMU-like VAs start (a typical x86-64 mmap area address). */
export const QEMU_VA_BASE = 0x7f3a_0000_0000;
/** Where our DPDK-like layouts start (DPDK's --no-huge memory lives at a VA like this). */
export const DPDK_VA_BASE = 0x1_0000_0000;
export const FOUR_GIB = 0x1_0000_0000;
/** Largest region count a SET_MEM_TABLE can carry. */
export const MAX_REGIONS = 8;

function alignUp(v: number, a: number): number {
  return Math.ceil(v / a) * a;
}

/** Plans a layout; throws RangeError on impossible requests. */
export function planLayout(options: LayoutOptions = {}): LayoutPlan {
  const kind = options.kind ?? 'dpdk';
  const size = options.size ?? 64 * 1024 * 1024;
  if (!Number.isSafeInteger(size) || size <= 0 || size % PAGE_SIZE !== 0) {
    throw new RangeError(`guest memory size must be a positive multiple of ${PAGE_SIZE}, got ${size}`);
  }
  switch (kind) {
    case 'dpdk':
      return {
        kind,
        files: [size],
        regions: [{ guestPhysAddr: DPDK_VA_BASE, size, userspaceAddr: DPDK_VA_BASE, mmapOffset: 0, file: 0 }],
      };
    case 'qemu': {
      const low = options.lowMemSize ?? Math.min(alignUp(size / 2, PAGE_SIZE), 3 * 1024 ** 3);
      if (low <= 0 || low % PAGE_SIZE !== 0 || low > size || low > 3 * 1024 ** 3) {
        throw new RangeError(`qemu low memory must be a page multiple in (0, min(size, 3 GiB)], got ${low}`);
      }
      const regions: PlannedRegion[] = [{ guestPhysAddr: 0, size: low, userspaceAddr: QEMU_VA_BASE, mmapOffset: 0, file: 0 }];
      if (size > low) {
        // Same fd, second part: GPA 4 GiB, VA continues right after the low part (as one QEMU RAM block would).
        regions.push({ guestPhysAddr: FOUR_GIB, size: size - low, userspaceAddr: QEMU_VA_BASE + low, mmapOffset: low, file: 0 });
      }
      return { kind, files: [size], regions };
    }
    case 'multi': {
      const n = options.regions ?? 2;
      if (!Number.isInteger(n) || n < 1 || n > MAX_REGIONS) throw new RangeError(`regions must be 1..${MAX_REGIONS}, got ${n}`);
      const pages = size / PAGE_SIZE;
      if (pages < n) throw new RangeError(`${size} bytes cannot make ${n} regions`);
      const files: number[] = [];
      const regions: PlannedRegion[] = [];
      let gpa = 0x10_0000; // start at 1 MiB, as if the first MiB were ROM
      let va = QEMU_VA_BASE + 0x4000_0000;
      for (let i = 0; i < n; i++) {
        const p = Math.floor(pages / n) + (i < pages % n ? 1 : 0);
        const bytes = p * PAGE_SIZE;
        files.push(bytes);
        regions.push({ guestPhysAddr: gpa, size: bytes, userspaceAddr: va, mmapOffset: 0, file: i });
        // Holes of 1 MiB (GPA) and 64 MiB (VA) between regions; VAs descend to decorrelate them from GPAs.
        gpa = alignUp(gpa + bytes + 0x10_0000, 0x10_0000);
        va = va - alignUp(bytes, 0x10_0000) - 0x400_0000;
        if (va < 0x1000_0000) throw new RangeError('multi layout: guest memory too large for the VA plan');
      }
      return { kind, files, regions };
    }
    default:
      throw new RangeError(`unknown layout ${String(kind)} (dpdk|qemu|multi)`);
  }
}

/** Checks that no two regions overlap in GPA or in VA space and that all addresses are safe integers. */
export function validatePlan(plan: LayoutPlan): void {
  const check = (key: 'guestPhysAddr' | 'userspaceAddr'): void => {
    const sorted = [...plan.regions].sort((a, b) => a[key] - b[key]);
    for (let i = 0; i < sorted.length; i++) {
      const r = sorted[i]!;
      if (!Number.isSafeInteger(r[key] + r.size)) throw new RangeError(`${key} of region beyond 2^53`);
      const n = sorted[i + 1];
      if (n && r[key] + r.size > n[key]) throw new RangeError(`regions overlap in ${key}`);
    }
  };
  check('guestPhysAddr');
  check('userspaceAddr');
  for (const r of plan.regions) {
    const f = plan.files[r.file];
    if (f === undefined || r.mmapOffset + r.size > f) throw new RangeError('region beyond the end of its file');
    if (r.mmapOffset % PAGE_SIZE !== 0) throw new RangeError('mmap offset not page aligned');
  }
}

/** A GPA range handed out by {@link GpaAllocator}. */
export interface Allocation {
  gpa: number;
  size: number;
  /** Index of the region holding it. */
  region: number;
}

/**
 * Bump allocator over the regions of a plan: rings, buffers and request
 * headers get GPA ranges that never straddle a region (a back-end may only
 * translate within one region). Frees nothing: a front-end lays its memory
 * out once per device start.
 */
export class GpaAllocator {
  private readonly cursors: number[];
  constructor(private readonly regions: readonly { guestPhysAddr: number; size: number }[]) {
    this.cursors = regions.map((r) => r.guestPhysAddr);
  }

  /** Allocates `size` bytes aligned to `align` (a power of two) from the first region with room. */
  alloc(size: number, align = 16): Allocation {
    if (!Number.isSafeInteger(size) || size <= 0) throw new RangeError(`allocation size must be positive, got ${size}`);
    if (align <= 0 || (align & (align - 1)) !== 0) throw new RangeError(`alignment must be a power of two, got ${align}`);
    for (let i = 0; i < this.regions.length; i++) {
      const r = this.regions[i]!;
      const start = alignUp(this.cursors[i]!, align);
      if (start + size <= r.guestPhysAddr + r.size) {
        this.cursors[i] = start + size;
        return { gpa: start, size, region: i };
      }
    }
    throw new RangeError(`guest memory exhausted: cannot allocate ${size} bytes (align ${align}); use a larger --memory`);
  }

  /** Bytes still free (sum over regions, ignoring alignment losses). */
  get free(): number {
    let f = 0;
    for (let i = 0; i < this.regions.length; i++) f += this.regions[i]!.guestPhysAddr + this.regions[i]!.size - this.cursors[i]!;
    return f;
  }
}
