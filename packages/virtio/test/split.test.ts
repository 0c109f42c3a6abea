import { describe, expect, it } from 'vitest';
import {
  Chain,
  GuestMemory,
  RingError,
  SplitDeviceRing,
  SplitDriverRing,
  createUsedBuffer,
  splitAvailEventOffset,
  splitUsedEventOffset,
  vringNeedEvent,
} from '../src/index.js';
import { BUF_HIGH, BUF_LOW, BUF_MID2, HIGH, MID1, MID2, bytes, makeMemory, readU16, splitLayout } from './helpers.js';

function pair(size: number, opts: { eventIdx?: boolean; startIdx?: number; indirect?: boolean; inOrder?: boolean } = {}) {
  const t = makeMemory();
  const cfg = splitLayout(size, opts.eventIdx ?? false);
  const drv = new SplitDriverRing<string>(t.mem, cfg, {
    startIdx: opts.startIdx ?? 0,
    indirectPool: opts.indirect ? { gpa: MID2.gpa + 0x80000, maxEntries: 8 } : null,
    inOrder: opts.inOrder ?? false,
  });
  const dev = new SplitDeviceRing(t.mem, cfg, { lastAvailIdx: opts.startIdx ?? 0 });
  return { ...t, cfg, drv, dev };
}

describe('split ring: device vs driver', () => {
  it('moves a chain with readable and writable parts both ways', () => {
    const { mem, drv, dev, checkCanaries } = pair(8);
    const out = bytes(100, 1);
    mem.write(BUF_LOW, out, 0, 100);
    const head = drv.add([BUF_LOW, BUF_HIGH], [100, 300], 1, 1, 'req-1');
    expect(head).toBeGreaterThanOrEqual(0);
    const chain = new Chain(4);
    expect(dev.pop(chain)).toBe(false); // not published yet
    drv.publish();
    expect(dev.pop(chain)).toBe(true);
    expect(chain.head).toBe(head);
    expect(chain.count).toBe(2);
    expect(chain.readableCount).toBe(1);
    expect(chain.writableCount).toBe(1);
    expect(chain.readableBytes).toBe(100);
    expect(chain.writableBytes).toBe(300);
    expect(chain.segGpa[1]).toBe(BUF_HIGH);
    expect(chain.segRegion[1]).toBe(3);
    expect(chain.segOffset[1]).toBe(BUF_HIGH - HIGH.gpa);
    const got = new Uint8Array(100);
    expect(chain.read(0, got, 0, 100)).toBe(100);
    expect(got).toEqual(out);
    // Echo it back reversed into the writable part.
    got.reverse();
    expect(chain.write(0, got, 0, 100)).toBe(100);
    dev.push(chain.head, 100);
    const used = createUsedBuffer<string>();
    expect(drv.getUsed(used)).toBe(false); // staged, not flushed
    dev.flush();
    expect(drv.getUsed(used)).toBe(true);
    expect(used).toEqual({ id: head, len: 100, token: 'req-1' });
    const back = new Uint8Array(100);
    mem.read(BUF_HIGH, back, 0, 100);
    expect(back).toEqual(got);
    expect(drv.numFree).toBe(8);
    expect(drv.getUsed(used)).toBe(false);
    checkCanaries();
  });

  it('fills the ring, refuses when full, and recycles descriptors', () => {
    const { drv, dev } = pair(4);
    for (let i = 0; i < 4; i++) expect(drv.add([BUF_LOW + i * 64], [64], 0, 1, `t${i}`)).toBeGreaterThanOrEqual(0);
    expect(drv.add([BUF_LOW], [64], 0, 1, 'over')).toBe(-1);
    drv.publish();
    const chains = [new Chain(), new Chain(), new Chain(), new Chain(), new Chain()];
    expect(dev.popBurst(chains, 5)).toBe(4);
    // Complete out of order.
    for (const k of [2, 0, 3, 1]) dev.pushChain(chains[k]!, k);
    dev.flush();
    const used = createUsedBuffer<string>();
    const seen: string[] = [];
    while (drv.getUsed(used)) {
      seen.push(used.token!);
      expect(used.len).toBe(Number(used.token!.slice(1)));
    }
    expect(seen).toEqual(['t2', 't0', 't3', 't1']);
    expect(drv.numFree).toBe(4);
  });

  it('wraps avail and used indices at 65536', () => {
    const start = 65530;
    const { drv, dev, cfg, mem } = pair(8, { startIdx: start });
    const chain = new Chain();
    const used = createUsedBuffer<string>();
    for (let n = 0; n < 20; n++) {
      const head = drv.add([BUF_LOW + n * 16, BUF_MID2], [16, 32], 1, 1, `w${n}`);
      drv.publish();
      expect(dev.pop(chain)).toBe(true);
      expect(chain.head).toBe(head);
      dev.push(chain.head, n);
      dev.flush();
      expect(drv.getUsed(used)).toBe(true);
      expect(used.token).toBe(`w${n}`);
      expect(used.len).toBe(n);
    }
    expect(dev.lastAvailIdx).toBe((start + 20) & 0xffff);
    expect(dev.lastUsedIdx).toBe((start + 20) & 0xffff);
    expect(readU16(mem, cfg.usedGpa + 2)).toBe((start + 20) & 0xffff);
    expect(readU16(mem, cfg.availGpa + 2)).toBe((start + 20) & 0xffff);
  });

  it('batches used entries: one used.idx store per flush', () => {
    const { drv, dev, cfg, mem } = pair(16);
    for (let i = 0; i < 10; i++) drv.add([BUF_LOW + i * 64], [64], 0, 1, `b${i}`);
    drv.publish();
    const chains = Array.from({ length: 16 }, () => new Chain());
    expect(dev.popBurst(chains, 16)).toBe(10);
    for (let i = 0; i < 10; i++) dev.push(chains[i]!.head, 64);
    expect(readU16(mem, cfg.usedGpa + 2)).toBe(0);
    expect(dev.pendingUsed).toBe(10);
    dev.flush();
    expect(readU16(mem, cfg.usedGpa + 2)).toBe(10);
    // pushBatch: stage and publish in one call.
    for (let i = 0; i < 3; i++) drv.add([BUF_LOW + i * 64], [64], 0, 1, `c${i}`);
    drv.publish();
    expect(dev.popBurst(chains, 16)).toBe(3);
    dev.pushBatch(Uint16Array.from(chains.slice(0, 3).map((c) => c.head)), Uint32Array.of(5, 6, 7), 3);
    expect(readU16(mem, cfg.usedGpa + 2)).toBe(13);
    const used = createUsedBuffer<string>();
    const lens: number[] = [];
    while (drv.getUsed(used)) lens.push(used.len);
    expect(lens.slice(-3)).toEqual([5, 6, 7]);
  });

  it('follows an indirect table', () => {
    const { drv, dev, mem } = pair(8, { indirect: true });
    const head = drv.add([BUF_LOW, BUF_LOW + 0x100, BUF_HIGH, BUF_MID2], [10, 20, 30, 40], 2, 2, 'ind', true);
    expect(drv.numFree).toBe(7);
    drv.publish();
    const chain = new Chain(2); // grows on demand
    expect(dev.pop(chain)).toBe(true);
    expect(chain.head).toBe(head);
    expect(chain.indirect).toBe(true);
    expect(chain.count).toBe(4);
    expect(Array.from(chain.segLen.subarray(0, 4))).toEqual([10, 20, 30, 40]);
    expect(chain.readableBytes).toBe(30);
    expect(chain.writableBytes).toBe(70);
    // The writable part spans two segments in two regions.
    const src = bytes(70, 9);
    expect(chain.write(0, src, 0, 70)).toBe(70);
    const a = new Uint8Array(30);
    const b = new Uint8Array(40);
    mem.read(BUF_HIGH, a, 0, 30);
    mem.read(BUF_MID2, b, 0, 40);
    expect(a).toEqual(src.subarray(0, 30));
    expect(b).toEqual(src.subarray(30));
    dev.push(head, 70);
    dev.flush();
    const used = createUsedBuffer<string>();
    expect(drv.getUsed(used)).toBe(true);
    expect(used.token).toBe('ind');
    expect(drv.numFree).toBe(8);
  });

  it('accepts direct descriptors followed by one indirect descriptor', async () => {
    const { mem, dev, cfg } = pair(8);
    const { writeSplitDesc, writeU16 } = await import('./helpers.js');
    const table = MID2.gpa + 0x1000;
    writeSplitDesc(mem, table, 0, BUF_LOW + 64, 8, 0, 0);
    writeSplitDesc(mem, cfg.descGpa, 3, BUF_LOW, 4, 1 /* NEXT */, 5);
    writeSplitDesc(mem, cfg.descGpa, 5, table, 16, 4 /* INDIRECT */, 0);
    writeU16(mem, cfg.availGpa + 4, 3);
    writeU16(mem, cfg.availGpa + 2, 1);
    const c = new Chain();
    expect(dev.pop(c)).toBe(true);
    expect(c.count).toBe(2);
    expect(Array.from(c.segGpa.subarray(0, 2))).toEqual([BUF_LOW, BUF_LOW + 64]);
  });

  it('splits a buffer that crosses into a GPA-contiguous region, and copies across it', () => {
    const { mem, drv, dev } = pair(8);
    const start = MID2.gpa - 40; // 40 bytes in MID1, 60 in MID2
    const data = bytes(100, 3);
    mem.write(start, data, 0, 100);
    drv.add([start], [100], 1, 0, 'x');
    drv.publish();
    const c = new Chain();
    expect(dev.pop(c)).toBe(true);
    expect(c.count).toBe(2);
    expect(Array.from(c.segRegion.subarray(0, 2))).toEqual([1, 2]);
    expect(Array.from(c.segLen.subarray(0, 2))).toEqual([40, 60]);
    expect(c.segOffset[0]).toBe(MID1.size - 40);
    expect(c.segOffset[1]).toBe(0);
    const got = new Uint8Array(100);
    expect(c.read(0, got, 0, 100)).toBe(100);
    expect(got).toEqual(data);
    // Partial reads with skip across the boundary.
    const part = new Uint8Array(30);
    expect(c.read(25, part, 0, 30)).toBe(30);
    expect(part).toEqual(data.subarray(25, 55));
  });

  it('copies chain to chain (guest to guest)', () => {
    const { mem, drv, dev } = pair(8);
    const data = bytes(200, 5);
    mem.write(BUF_LOW, data, 0, 200);
    drv.add([BUF_LOW, BUF_LOW + 100], [100, 100], 2, 0, 'tx');
    drv.add([MID2.gpa - 50, BUF_HIGH], [50, 500], 0, 2, 'rx');
    drv.publish();
    const tx = new Chain();
    const rx = new Chain();
    expect(dev.pop(tx)).toBe(true);
    expect(dev.pop(rx)).toBe(true);
    expect(tx.copyTo(rx, 1000)).toBe(200);
    const got = new Uint8Array(200);
    mem.read(MID2.gpa - 50, got, 0, 50);
    mem.read(BUF_HIGH, got.subarray(50), 0, 150);
    expect(got).toEqual(data);
    expect(tx.copyTo(rx, 30, 10, 5)).toBe(30);
    const g2 = new Uint8Array(30);
    mem.read(MID2.gpa - 45, g2, 0, 30);
    expect(g2).toEqual(data.subarray(10, 40));
  });

  it('in-order completion: one used entry for a batch', () => {
    const { drv, dev, cfg, mem } = pair(16, { inOrder: true });
    for (let i = 0; i < 5; i++) drv.add([BUF_LOW + i * 64, BUF_HIGH + i * 64], [8, 64], 1, 1, `o${i}`);
    drv.publish();
    const chains = Array.from({ length: 5 }, () => new Chain());
    expect(dev.popBurst(chains, 5)).toBe(5);
    dev.pushInOrder(chains[2]!.head, 7, 3);
    dev.pushInOrder(chains[4]!.head, 9, 2);
    dev.flush();
    expect(readU16(mem, cfg.usedGpa + 2)).toBe(5);
    const used = createUsedBuffer<string>();
    const got: [string, number][] = [];
    while (drv.getUsed(used)) got.push([used.token!, used.len]);
    expect(got).toEqual([['o0', 64], ['o1', 64], ['o2', 7], ['o3', 64], ['o4', 9]]);
    expect(drv.numFree).toBe(16);
  });

  it('reports GET/SET_VRING_BASE values and reads used.idx from the ring', () => {
    const { mem, cfg, drv } = pair(8);
    for (let i = 0; i < 3; i++) drv.add([BUF_LOW], [4], 1, 0, 'v');
    drv.publish();
    const dev = new SplitDeviceRing(mem, cfg, { lastAvailIdx: 0 });
    const c = new Chain();
    dev.pop(c);
    dev.push(c.head, 0);
    dev.flush();
    expect(dev.vringBase).toBe(1);
    // A new back-end instance resumes: SET_VRING_BASE(1), used.idx read from guest memory.
    const dev2 = new SplitDeviceRing(mem, cfg, { lastAvailIdx: dev.vringBase });
    expect(dev2.lastUsedIdx).toBe(1);
    expect(dev2.pop(c)).toBe(true);
    expect(dev2.pop(c)).toBe(true);
    expect(dev2.pop(c)).toBe(false);
    dev2.vringBase = 1;
    expect(dev2.lastAvailIdx).toBe(1);
    expect(dev2.hasWork()).toBe(true);
  });

  it('rejects bad ring geometry with a clear error', () => {
    const { mem } = makeMemory();
    const base = splitLayout(8);
    const code = (f: () => unknown) => {
      try {
        f();
      } catch (e) {
        return (e as RingError).code;
      }
      return 'none';
    };
    expect(code(() => new SplitDeviceRing(mem, { ...base, size: 12 }))).toBe('RING_LAYOUT');
    expect(code(() => new SplitDeviceRing(mem, { ...base, size: 65536 }))).toBe('RING_LAYOUT');
    expect(code(() => new SplitDeviceRing(mem, { ...base, descGpa: base.descGpa + 8 }))).toBe('RING_LAYOUT');
    expect(code(() => new SplitDeviceRing(mem, { ...base, availGpa: base.availGpa + 1 }))).toBe('RING_LAYOUT');
    expect(code(() => new SplitDeviceRing(mem, { ...base, usedGpa: base.usedGpa + 2 }))).toBe('RING_LAYOUT');
    expect(code(() => new SplitDeviceRing(mem, { ...base, usedGpa: 0xb0000 }))).toBe('ADDR_RANGE'); // in the gap
    // Used ring straddling the end of LOW (640 KiB) into the gap.
    expect(code(() => new SplitDeviceRing(mem, { ...base, usedGpa: 640 * 1024 - 32 }))).toBe('ADDR_RANGE');
    // Straddling two contiguous regions is also refused: each area lies inside one region.
    expect(code(() => new SplitDeviceRing(mem, { ...base, descGpa: MID2.gpa - 64 }))).toBe('ADDR_RANGE');
  });
});

describe('split ring: notification suppression', () => {
  it('vringNeedEvent matches the spec formula at the edges', () => {
    expect(vringNeedEvent(0, 1, 0)).toBe(true); // used_event 0: notify after the first buffer
    expect(vringNeedEvent(0, 2, 1)).toBe(false);
    expect(vringNeedEvent(5, 6, 5)).toBe(true);
    expect(vringNeedEvent(5, 5, 4)).toBe(false); // event not yet passed
    expect(vringNeedEvent(5, 10, 0)).toBe(true); // event inside a batch
    expect(vringNeedEvent(65535, 0, 65535)).toBe(true); // across the wrap
    expect(vringNeedEvent(65535, 3, 65534)).toBe(true);
    expect(vringNeedEvent(65533, 3, 65534)).toBe(false); // event before old
    expect(vringNeedEvent(7, 7, 7)).toBe(false); // nothing new
  });

  it('EVENT_IDX: the device notifies only when used_event is crossed', () => {
    const { drv, dev } = pair(16, { eventIdx: true, startIdx: 65533 });
    const c = new Chain();
    for (let i = 0; i < 8; i++) drv.add([BUF_LOW + i * 8], [8], 0, 1, `e${i}`);
    drv.publish();
    // First check: no notification recorded before, always notify.
    expect(drv.enableCallbacks()).toBe(false); // used_event = 65533
    dev.pop(c);
    dev.push(c.head, 1);
    expect(dev.needsNotify()).toBe(true); // used.idx 65533 -> 65534 passes used_event 65533
    dev.pop(c);
    dev.push(c.head, 1);
    expect(dev.needsNotify()).toBe(false); // driver has not re-armed
    // Driver consumes two and re-arms at 65535.
    const u = createUsedBuffer<string>();
    expect(drv.getUsed(u) && drv.getUsed(u)).toBe(true);
    expect(drv.enableCallbacks()).toBe(false);
    // A batch of 3 across the 65536 wrap contains 65535: notify.
    for (let i = 0; i < 3; i++) {
      dev.pop(c);
      dev.push(c.head, 1);
    }
    expect(dev.needsNotify()).toBe(true);
    expect(dev.lastUsedIdx).toBe(2);
    // Nothing new: no notification.
    expect(dev.needsNotify()).toBe(false);
    // Driver disables callbacks: used_event half a ring away.
    drv.disableCallbacks();
    dev.pop(c);
    dev.push(c.head, 1);
    expect(dev.needsNotify()).toBe(false);
  });

  it('EVENT_IDX: the driver kicks only when avail_event is crossed', () => {
    const { drv, dev } = pair(16, { eventIdx: true, startIdx: 65534 });
    const c = new Chain();
    expect(dev.enableNotifications()).toBe(false); // avail_event = 65534
    drv.add([BUF_LOW], [8], 0, 1, 'k0');
    expect(drv.needsKick()).toBe(true); // avail.idx 65534 -> 65535
    drv.add([BUF_LOW], [8], 0, 1, 'k1');
    expect(drv.needsKick()).toBe(false); // device did not re-arm
    // Device drains, re-arms at 0 (after the wrap).
    expect(dev.pop(c) && dev.pop(c)).toBe(true);
    expect(dev.lastAvailIdx).toBe(0);
    expect(dev.enableNotifications()).toBe(false);
    drv.add([BUF_LOW], [8], 0, 1, 'k2');
    drv.add([BUF_LOW], [8], 0, 1, 'k3');
    expect(drv.needsKick()).toBe(true); // batch 0 -> 2 contains avail_event 0
    // Work arrived before re-arming: enableNotifications reports it.
    expect(dev.enableNotifications()).toBe(true);
  });

  it('flags: NO_NOTIFY and NO_INTERRUPT suppress kicks and calls', () => {
    const { drv, dev, cfg, mem } = pair(8);
    const c = new Chain();
    drv.add([BUF_LOW], [8], 0, 1, 'f0');
    expect(drv.needsKick()).toBe(true);
    dev.disableNotifications();
    expect(readU16(mem, cfg.usedGpa)).toBe(1);
    drv.add([BUF_LOW], [8], 0, 1, 'f1');
    expect(drv.needsKick()).toBe(false);
    expect(dev.enableNotifications()).toBe(true); // work pending
    expect(readU16(mem, cfg.usedGpa)).toBe(0);
    drv.add([BUF_LOW], [8], 0, 1, 'f2');
    expect(drv.needsKick()).toBe(true);
    expect(drv.needsKick()).toBe(false); // nothing new added
    // Calls.
    dev.pop(c);
    dev.push(c.head, 0);
    expect(dev.needsNotify()).toBe(true);
    expect(dev.needsNotify()).toBe(false); // nothing new
    drv.disableCallbacks();
    expect(readU16(mem, cfg.availGpa)).toBe(1);
    dev.pop(c);
    dev.push(c.head, 0);
    expect(dev.needsNotify()).toBe(false);
    expect(drv.enableCallbacks()).toBe(true); // two used pending
    dev.pop(c);
    dev.push(c.head, 0);
    expect(dev.needsNotify()).toBe(true);
  });

  it('enableNotifications writes avail_event at the end of the used ring', () => {
    const { dev, cfg, mem } = pair(8, { eventIdx: true, startIdx: 300 });
    dev.enableNotifications();
    expect(readU16(mem, cfg.usedGpa + splitAvailEventOffset(8))).toBe(300);
    expect(readU16(mem, cfg.usedGpa)).toBe(0); // flags stay 0 with EVENT_IDX
    expect(splitUsedEventOffset(8)).toBe(4 + 16);
  });
});

describe('GuestMemory', () => {
  it('translates with bounds checks and a last-hit cache', () => {
    const { mem } = makeMemory();
    expect(mem.findRegion(0)).toBe(0);
    expect(mem.findRegion(640 * 1024 - 1)).toBe(0);
    expect(mem.findRegion(640 * 1024)).toBe(-1);
    expect(mem.findRegion(MID2.gpa)).toBe(2);
    expect(mem.findRegion(HIGH.gpa + HIGH.size - 1)).toBe(3);
    expect(mem.findRegion(HIGH.gpa + HIGH.size)).toBe(-1);
    expect(mem.findRegion(2 ** 53)).toBe(-1);
    expect(mem.translate(MID1.gpa + MID1.size - 8, 8)).toBe(1);
    expect(mem.translate(MID1.gpa + MID1.size - 8, 9)).toBe(-1);
    expect(mem.isValidRange(MID1.gpa + MID1.size - 8, 9)).toBe(true); // contiguous
    expect(mem.isValidRange(MID2.gpa + MID2.size - 8, 9)).toBe(false); // gap after MID2
    expect(mem.translate(-1, 1)).toBe(-1);
    expect(mem.translate(Number.NaN, 1)).toBe(-1);
  });

  it('copies across contiguous regions and refuses gaps', () => {
    const { mem, checkCanaries } = makeMemory();
    const d = bytes(64, 2);
    mem.write(MID2.gpa - 32, d, 0, 64);
    const g = new Uint8Array(64);
    mem.read(MID2.gpa - 32, g, 0, 64);
    expect(g).toEqual(d);
    expect(() => mem.write(640 * 1024 - 4, d, 0, 8)).toThrow(RingError);
    expect(() => mem.read(HIGH.gpa + HIGH.size - 4, g, 0, 8)).toThrow(RingError);
    expect(() => mem.read(0, g, 60, 8)).toThrow(RangeError); // local buffer too short
    mem.fill(MID2.gpa - 2, 0xff, 4);
    mem.read(MID2.gpa - 2, g, 0, 4);
    expect(Array.from(g.subarray(0, 4))).toEqual([0xff, 0xff, 0xff, 0xff]);
    checkCanaries();
  });

  it('rejects overlapping or invalid regions', () => {
    const sab = new SharedArrayBuffer(8192);
    expect(() => new GuestMemory([{ gpa: 0, size: 4096, sab, sabOffset: 0 }, { gpa: 2048, size: 4096, sab, sabOffset: 0 }])).toThrow(/overlap/);
    expect(() => new GuestMemory([{ gpa: 0, size: 8193, sab, sabOffset: 0 }])).toThrow(RangeError);
    expect(() => new GuestMemory([{ gpa: 0, size: 100, sab, sabOffset: 1 }])).toThrow(RangeError);
    expect(() => new GuestMemory([{ gpa: 2 ** 53 - 10, size: 100, sab, sabOffset: 0 }])).toThrow(RangeError);
    // Many chunks of one mapping, given out of order, are sorted.
    const m = new GuestMemory(
      Array.from({ length: 8 }, (_, i) => ({ gpa: (7 - i) * 1024, size: 1024, sab, sabOffset: (7 - i) * 1024 })),
    );
    expect(m.regions.map((r) => r.gpa)).toEqual([0, 1024, 2048, 3072, 4096, 5120, 6144, 7168]);
    expect(m.isValidRange(100, 8000)).toBe(true);
  });
});
