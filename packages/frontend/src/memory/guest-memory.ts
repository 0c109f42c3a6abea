/**
 * Guest memory of our front-end: memfds sized and mapped per a layout plan,
 * wrapped in the virtio package's GuestMemory (GPA -> region views), plus the
 * memory-table entries and fds SET_MEM_TABLE carries, GPA -> front-end VA
 * translation for SET_VRING_ADDR, and a GPA allocator.
 */
import { GuestMemory, type GuestRegionInit } from '@vhost-ts/virtio';
import type { MemoryRegionDesc } from '@vhost-ts/vhost/protocol';
import { native } from '../native.js';
import { GpaAllocator, planLayout, validatePlan, type LayoutOptions, type LayoutPlan } from './layout.js';

/** GuestMemory entries are at most this big (typed arrays cover at most 4 GiB on Node 20). */
const CHUNK = 1024 ** 3;

export class FrontendMemory {
  readonly plan: LayoutPlan;
  /** One memfd per planned file. */
  readonly fds: readonly number[];
  /** One mapping per planned region. */
  readonly sabs: readonly SharedArrayBuffer[];
  readonly memory: GuestMemory;
  readonly allocator: GpaAllocator;
  private closedFlag = false;

  private constructor(plan: LayoutPlan, fds: number[], sabs: SharedArrayBuffer[]) {
    this.plan = plan;
    this.fds = fds;
    this.sabs = sabs;
    const inits: GuestRegionInit[] = [];
    plan.regions.forEach((r, i) => {
      for (let off = 0; off < r.size; off += CHUNK) {
        inits.push({ gpa: r.guestPhysAddr + off, size: Math.min(CHUNK, r.size - off), sab: sabs[i]!, sabOffset: off });
      }
    });
    this.memory = new GuestMemory(inits);
    this.allocator = new GpaAllocator(this.memory.regions.map((r) => ({ guestPhysAddr: r.gpa, size: r.size })));
  }

  /** Creates the memfds (named `vhost-ts-guest`), sizes and maps them. Cleans up on failure. */
  static create(options: LayoutOptions | LayoutPlan = {}): FrontendMemory {
    const plan = 'regions' in options && Array.isArray(options.regions) ? (options as LayoutPlan) : planLayout(options as LayoutOptions);
    validatePlan(plan);
    const fds: number[] = [];
    const sabs: SharedArrayBuffer[] = [];
    try {
      for (const size of plan.files) {
        const fd = native.memfdCreate('vhost-ts-guest');
        fds.push(fd);
        native.ftruncate(fd, size);
      }
      for (const r of plan.regions) sabs.push(native.mmap(fds[r.file]!, r.mmapOffset, r.size));
      return new FrontendMemory(plan, fds, sabs);
    } catch (e) {
      for (const s of sabs) native.release(s);
      for (const fd of fds) native.close(fd);
      throw e;
    }
  }

  /** The SET_MEM_TABLE regions, in plan order. */
  memoryTable(): MemoryRegionDesc[] {
    return this.plan.regions.map((r) => ({
      guestPhysAddr: BigInt(r.guestPhysAddr),
      memorySize: BigInt(r.size),
      userspaceAddr: BigInt(r.userspaceAddr),
      mmapOffset: BigInt(r.mmapOffset),
    }));
  }

  /** The fds matching {@link memoryTable} one to one (the same fd may appear twice). */
  memoryTableFds(): number[] {
    return this.plan.regions.map((r) => this.fds[r.file]!);
  }

  /** The front-end VA of a GPA (what SET_VRING_ADDR carries). Throws for a GPA outside memory. */
  gpaToVa(gpa: number): number {
    for (const r of this.plan.regions) {
      if (gpa >= r.guestPhysAddr && gpa < r.guestPhysAddr + r.size) return r.userspaceAddr + (gpa - r.guestPhysAddr);
    }
    throw new RangeError(`GPA 0x${gpa.toString(16)} is not guest memory`);
  }

  /** The GuestMemory region holding [gpa, gpa + len) and the offset inside it; throws when it straddles or misses. */
  locate(gpa: number, len: number): { region: GuestMemory['regions'][number]; offset: number } {
    const i = this.memory.translate(gpa, len);
    if (i < 0) throw new RangeError(`[0x${gpa.toString(16)}, +${len}) is not inside one guest memory region`);
    const region = this.memory.regions[i]!;
    return { region, offset: gpa - region.gpa };
  }

  get closed(): boolean {
    return this.closedFlag;
  }

  /** Releases every mapping (pages freed now, address space at GC) and closes every memfd. Idempotent. */
  close(): void {
    if (this.closedFlag) return;
    this.closedFlag = true;
    for (const s of this.sabs) native.release(s);
    for (const fd of this.fds) native.close(fd);
  }
}
