import { describe, expect, it } from 'vitest';
import { FOUR_GIB, GpaAllocator, planLayout, validatePlan } from '@vhost-ts/frontend/memory/layout';

const MiB = 1024 * 1024;

describe('guest memory layouts', () => {
  it('dpdk: one region whose GPA equals its front-end VA', () => {
    const p = planLayout({ kind: 'dpdk', size: 32 * MiB });
    expect(p.files).toEqual([32 * MiB]);
    expect(p.regions).toHaveLength(1);
    expect(p.regions[0]!.guestPhysAddr).toBe(p.regions[0]!.userspaceAddr);
    expect(p.regions[0]!.mmapOffset).toBe(0);
    validatePlan(p);
  });

  it('qemu: one fd, GPA 0 and GPA 4 GiB with an mmap offset, VA != GPA', () => {
    const p = planLayout({ kind: 'qemu', size: 64 * MiB });
    validatePlan(p);
    expect(p.files).toEqual([64 * MiB]);
    const [low, high] = p.regions;
    expect(low).toMatchObject({ guestPhysAddr: 0, size: 32 * MiB, mmapOffset: 0, file: 0 });
    expect(high).toMatchObject({ guestPhysAddr: FOUR_GIB, size: 32 * MiB, mmapOffset: 32 * MiB, file: 0 });
    for (const r of p.regions) expect(r.userspaceAddr).not.toBe(r.guestPhysAddr);
    expect(high!.userspaceAddr - low!.userspaceAddr).toBe(32 * MiB);
  });

  it('multi: separate fds with GPA holes and VAs unrelated to GPAs', () => {
    const p = planLayout({ kind: 'multi', size: 24 * MiB, regions: 3 });
    validatePlan(p);
    expect(p.files).toEqual([8 * MiB, 8 * MiB, 8 * MiB]);
    for (let i = 1; i < 3; i++) {
      const a = p.regions[i - 1]!;
      const b = p.regions[i]!;
      expect(b.guestPhysAddr).toBeGreaterThan(a.guestPhysAddr + a.size); // a hole
      expect(b.file).toBe(i);
      expect(b.userspaceAddr - a.userspaceAddr).not.toBe(b.guestPhysAddr - a.guestPhysAddr);
    }
  });

  it('rejects bad sizes and region counts', () => {
    expect(() => planLayout({ size: 1000 })).toThrow(RangeError);
    expect(() => planLayout({ kind: 'multi', size: 8 * MiB, regions: 9 })).toThrow(RangeError);
    expect(() => planLayout({ kind: 'multi', size: 4096, regions: 2 })).toThrow(RangeError);
    expect(() => planLayout({ kind: 'qemu', size: 8 * MiB, lowMemSize: 4097 })).toThrow(RangeError);
  });

  it('validatePlan catches overlaps', () => {
    const p = planLayout({ kind: 'multi', size: 8 * MiB, regions: 2 });
    p.regions[1]!.guestPhysAddr = p.regions[0]!.guestPhysAddr + 4096;
    expect(() => validatePlan(p)).toThrow(/overlap/);
  });
});

describe('GpaAllocator', () => {
  it('aligns, never straddles a region, and moves to the next region when one is full', () => {
    const p = planLayout({ kind: 'qemu', size: 2 * MiB });
    const a = new GpaAllocator(p.regions);
    const x = a.alloc(100, 4096);
    expect(x).toEqual({ gpa: 0, size: 100, region: 0 });
    const y = a.alloc(16, 16);
    expect(y.gpa).toBe(112);
    const big = a.alloc(MiB - 2048, 4096); // 4096 + MiB - 2048 > MiB: does not fit in region 0
    expect(big.region).toBe(1);
    expect(big.gpa).toBe(FOUR_GIB);
    expect(() => a.alloc(2 * MiB)).toThrow(/exhausted/);
    expect(() => a.alloc(10, 3)).toThrow(RangeError);
  });
});
