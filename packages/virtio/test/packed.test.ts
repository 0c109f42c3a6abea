import { describe, expect, it } from 'vitest';
import {
  Chain,
  PackedDeviceRing,
  PackedDriverRing,
  RING_EVENT_FLAGS_DESC,
  RING_EVENT_FLAGS_DISABLE,
  RingError,
  createUsedBuffer,
  decodePackedBase,
  encodePackedBase,
} from '../src/index.js';
import { BUF_HIGH, BUF_LOW, BUF_MID2, MID2, bytes, makeMemory, packedLayout, readU16 } from './helpers.js';

function pair(size: number, opts: { eventIdx?: boolean; indirect?: boolean; inOrder?: boolean } = {}) {
  const t = makeMemory();
  const cfg = packedLayout(size, opts.eventIdx ?? false);
  const drv = new PackedDriverRing<string>(t.mem, cfg, {
    indirectPool: opts.indirect ? { gpa: MID2.gpa + 0x80000, maxEntries: 8 } : null,
    inOrder: opts.inOrder ?? false,
  });
  const dev = new PackedDeviceRing(t.mem, cfg, { vringBase: drv.vringBase });
  return { ...t, cfg, drv, dev };
}

describe('packed ring: device vs driver', () => {
  it('moves a chain both ways', () => {
    const { mem, drv, dev, checkCanaries } = pair(8);
    const out = bytes(64, 4);
    mem.write(BUF_LOW, out, 0, 64);
    const id = drv.add([BUF_LOW, BUF_HIGH], [64, 256], 1, 1, 'p1');
    const c = new Chain();
    expect(dev.pop(c)).toBe(false); // head flags not yet stored
    drv.publish();
    expect(dev.pop(c)).toBe(true);
    expect(c.head).toBe(id);
    expect(c.descCount).toBe(2);
    expect(c.readableBytes).toBe(64);
    expect(c.writableBytes).toBe(256);
    const got = new Uint8Array(64);
    c.read(0, got, 0, 64);
    expect(got).toEqual(out);
    c.write(0, got, 0, 64);
    dev.push(c.head, 64);
    const u = createUsedBuffer<string>();
    expect(drv.getUsed(u)).toBe(false);
    dev.flush();
    expect(drv.getUsed(u)).toBe(true);
    expect(u).toEqual({ id, len: 64, token: 'p1' });
    expect(drv.numFree).toBe(8);
    checkCanaries();
  });

  it('runs many laps of a non-power-of-2 ring with chains across the ring end', () => {
    const { drv, dev } = pair(5);
    const c = new Chain();
    const u = createUsedBuffer<string>();
    for (let n = 0; n < 200; n++) {
      const segs = 1 + (n % 3);
      const addrs = [BUF_LOW, BUF_MID2, BUF_HIGH].slice(0, segs);
      const lens = [10, 20, 30].slice(0, segs);
      const id = drv.add(addrs, lens, segs - 1, 1, `L${n}`);
      expect(id).toBeGreaterThanOrEqual(0);
      drv.publish();
      expect(dev.pop(c)).toBe(true);
      expect(c.head).toBe(id);
      expect(c.count).toBe(segs);
      dev.push(c.head, n % 7);
      dev.flush();
      expect(drv.getUsed(u)).toBe(true);
      expect(u.token).toBe(`L${n}`);
      expect(u.len).toBe(n % 7);
    }
    expect(drv.numFree).toBe(5);
  });

  it('completes out of order: used descriptors go at the used position, skipping by list length', () => {
    const { drv, dev } = pair(8);
    const ids = [
      drv.add([BUF_LOW, BUF_HIGH], [8, 8], 1, 1, 'a'), // slots 0-1
      drv.add([BUF_LOW, BUF_LOW, BUF_HIGH], [8, 8, 8], 2, 1, 'b'), // slots 2-4
      drv.add([BUF_HIGH], [8], 0, 1, 'c'), // slot 5
    ];
    drv.publish();
    const cs = [new Chain(), new Chain(), new Chain()];
    expect(dev.popBurst(cs, 3)).toBe(3);
    expect(cs.map((c) => c.head)).toEqual(ids);
    dev.push(cs[2]!.head, 3);
    dev.push(cs[0]!.head, 1);
    dev.push(cs[1]!.head, 2);
    dev.flush();
    const u = createUsedBuffer<string>();
    const seen: string[] = [];
    while (drv.getUsed(u)) seen.push(`${u.token}:${u.len}`);
    expect(seen).toEqual(['c:3', 'a:1', 'b:2']);
    expect(drv.numFree).toBe(8);
    // The ring keeps working after the reordering.
    for (let i = 0; i < 20; i++) {
      drv.add([BUF_LOW, BUF_HIGH], [8, 8], 1, 1, `r${i}`);
      drv.publish();
      expect(dev.pop(cs[0]!)).toBe(true);
      dev.pushChain(cs[0]!, 8);
      dev.flush();
      expect(drv.getUsed(u)).toBe(true);
      expect(u.token).toBe(`r${i}`);
    }
  });

  it('publishes a batch of chains at once and used descriptors at once', () => {
    const { drv, dev } = pair(16);
    for (let i = 0; i < 6; i++) drv.add([BUF_LOW + i * 32], [32], 0, 1, `b${i}`);
    const cs = Array.from({ length: 8 }, () => new Chain());
    expect(dev.popBurst(cs, 8)).toBe(0);
    drv.publish();
    expect(dev.popBurst(cs, 8)).toBe(6);
    for (let i = 0; i < 6; i++) dev.push(cs[i]!.head, i);
    const u = createUsedBuffer<string>();
    expect(drv.getUsed(u)).toBe(false); // first used descriptor's flags not stored yet
    dev.flush();
    let n = 0;
    while (drv.getUsed(u)) expect(u.len).toBe(n++);
    expect(n).toBe(6);
    for (let i = 0; i < 3; i++) drv.add([BUF_LOW + i * 32], [32], 0, 1, `c${i}`);
    drv.publish();
    expect(dev.popBurst(cs, 8)).toBe(3);
    dev.pushBatch([cs[2]!.head, cs[0]!.head, cs[1]!.head], [12, 10, 11], 3);
    const got: string[] = [];
    while (drv.getUsed(u)) got.push(`${u.token}:${u.len}`);
    expect(got).toEqual(['c2:12', 'c0:10', 'c1:11']);
  });

  it('follows an indirect descriptor', () => {
    const { drv, dev, mem } = pair(4, { indirect: true });
    const id = drv.add([BUF_LOW, BUF_MID2, BUF_HIGH], [16, 32, 64], 2, 1, 'ind', true);
    drv.publish();
    const c = new Chain(1);
    expect(dev.pop(c)).toBe(true);
    expect(c.head).toBe(id);
    expect(c.indirect).toBe(true);
    expect(c.descCount).toBe(1);
    expect(Array.from(c.segLen.subarray(0, c.count))).toEqual([16, 32, 64]);
    expect(c.writableBytes).toBe(64);
    c.write(0, bytes(64, 1), 0, 64);
    const back = new Uint8Array(64);
    mem.read(BUF_HIGH, back, 0, 64);
    expect(back).toEqual(bytes(64, 1));
    dev.push(id, 64);
    dev.flush();
    const u = createUsedBuffer<string>();
    expect(drv.getUsed(u)).toBe(true);
    expect(u.token).toBe('ind');
    expect(drv.numFree).toBe(4);
  });

  it('in-order: one used descriptor for a batch', () => {
    const { drv, dev } = pair(8, { inOrder: true });
    for (let i = 0; i < 5; i++) drv.add([BUF_LOW, BUF_HIGH + i * 64], [4, 64], 1, 1, `o${i}`);
    drv.publish();
    // 5 chains x 2 slots > 8: only 4 fit.
    expect(drv.numFree).toBe(0);
    const cs = Array.from({ length: 4 }, () => new Chain());
    expect(dev.popBurst(cs, 4)).toBe(4);
    dev.pushInOrder(cs[2]!.head, 7, 3);
    dev.pushInOrder(cs[3]!.head, 9, 1);
    dev.flush();
    const u = createUsedBuffer<string>();
    const got: string[] = [];
    while (drv.getUsed(u)) got.push(`${u.token}:${u.len}`);
    expect(got).toEqual(['o0:64', 'o1:64', 'o2:7', 'o3:9']);
    expect(drv.numFree).toBe(8);
  });

  it('encodes and decodes GET/SET_VRING_BASE (bits 0-14/15 avail, 16-30/31 used)', () => {
    expect(encodePackedBase(0, 1, 0, 1)).toBe(0x80008000);
    expect(encodePackedBase(5, 0, 3, 1)).toBe(0x80030005);
    expect(decodePackedBase(0x80030005)).toEqual({ availIdx: 5, availWrap: 0, usedIdx: 3, usedWrap: 1 });
    // DPDK virtio-user sends only the low 16 bits for a fresh ring: 0 | 1 << 15.
    expect(decodePackedBase(1 << 15)).toEqual({ availIdx: 0, availWrap: 1, usedIdx: 0, usedWrap: 1 });
    const { drv, dev, cfg, mem } = pair(6);
    const c = new Chain();
    const u = createUsedBuffer<string>();
    for (let i = 0; i < 8; i++) {
      expect(drv.add([BUF_LOW], [8], 1, 0, `x${i}`)).toBeGreaterThanOrEqual(0);
      drv.publish();
      expect(dev.pop(c)).toBe(true);
      if (i < 7) {
        dev.push(c.head, 0);
        dev.flush();
        expect(drv.getUsed(u)).toBe(true);
      }
    }
    // avail at slot 2 of lap 2 (wrap 0); used at slot 1 (wrap 0).
    expect(decodePackedBase(dev.vringBase)).toEqual({ availIdx: 2, availWrap: 0, usedIdx: 1, usedWrap: 0 });
    const dev2 = new PackedDeviceRing(mem, cfg, { vringBase: dev.vringBase });
    expect(dev2.vringBase).toBe(dev.vringBase);
    expect(() => (dev2.lastAvailIdx = 6)).toThrow(RingError);
  });
});

describe('packed ring: event suppression', () => {
  it('flags: DISABLE and ENABLE in both directions', () => {
    const { drv, dev, cfg, mem } = pair(8);
    const c = new Chain();
    drv.add([BUF_LOW], [8], 0, 1, 'a');
    expect(drv.needsKick()).toBe(true);
    dev.disableNotifications();
    expect(readU16(mem, cfg.deviceEventGpa + 2)).toBe(RING_EVENT_FLAGS_DISABLE);
    drv.add([BUF_LOW], [8], 0, 1, 'b');
    expect(drv.needsKick()).toBe(false);
    expect(dev.enableNotifications()).toBe(true);
    drv.add([BUF_LOW], [8], 0, 1, 'c');
    expect(drv.needsKick()).toBe(true);
    expect(drv.needsKick()).toBe(false); // nothing new
    dev.pop(c);
    dev.push(c.head, 0);
    expect(dev.needsNotify()).toBe(true);
    expect(dev.needsNotify()).toBe(false);
    drv.disableCallbacks();
    dev.pop(c);
    dev.push(c.head, 0);
    expect(dev.needsNotify()).toBe(false);
    expect(drv.enableCallbacks()).toBe(true);
    dev.pop(c);
    dev.push(c.head, 0);
    expect(dev.needsNotify()).toBe(true);
  });

  it('EVENT_IDX (DESC): notifications at the requested descriptor, across wraps', () => {
    const size = 5;
    const { drv, dev, cfg, mem } = pair(size, { eventIdx: true });
    const c = new Chain();
    const u = createUsedBuffer<string>();
    let kicks = 0;
    let calls = 0;
    // Device armed; driver armed: each side notifies once per re-arm.
    for (let lap = 0; lap < 12; lap++) {
      expect(dev.enableNotifications()).toBe(false);
      expect(readU16(mem, cfg.deviceEventGpa + 2)).toBe(RING_EVENT_FLAGS_DESC);
      expect(drv.enableCallbacks()).toBe(false);
      drv.add([BUF_LOW], [8], 0, 1, 'x');
      if (drv.needsKick()) kicks++;
      drv.add([BUF_LOW, BUF_HIGH], [8, 8], 1, 1, 'y');
      if (drv.needsKick()) kicks++; // device not re-armed: no kick
      expect(dev.pop(c)).toBe(true);
      dev.push(c.head, 1);
      if (dev.needsNotify()) calls++;
      expect(dev.pop(c)).toBe(true);
      dev.push(c.head, 1);
      if (dev.needsNotify()) calls++; // driver not re-armed: no call
      expect(drv.getUsed(u) && drv.getUsed(u)).toBe(true);
    }
    expect(kicks).toBe(12);
    // The first check is always a notification (no previous state); then one per lap.
    expect(calls).toBe(12);
  });
});
