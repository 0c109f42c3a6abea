import { describe, expect, it } from 'vitest';
import {
  BLK_CFG_CAPACITY,
  BLK_CFG_NUM_QUEUES,
  BLK_CFG_SEG_MAX,
  BLK_CFG_SIZE,
  BlkRequest,
  Chain,
  InflightQueue,
  NetHeader,
  SplitDeviceRing,
  SplitDriverRing,
  VIRTIO_BLK_S_OK,
  VIRTIO_BLK_T_IN,
  VIRTIO_BLK_T_OUT,
  VIRTIO_F_EVENT_IDX,
  VIRTIO_F_VERSION_1,
  VIRTIO_NET_F_MRG_RXBUF,
  VIRTIO_NET_HDR_GSO_TCPV4,
  createUsedBuffer,
  encodeBlkConfig,
  featureBits,
  featureMask,
  featuresFromHalves,
  featuresToHalves,
  hasFeature,
  inflightQueueBytes,
  inflightTotalBytes,
  netHdrSize,
  parseBlkRequest,
  parseNetHdrFromChain,
  setNumBuffers,
  withFeature,
  withoutFeature,
  writeBlkStatus,
  writeNetHdrToChain,
} from '../src/index.js';
import { BUF_HIGH, BUF_LOW, MID2, makeMemory, splitLayout } from './helpers.js';

describe('features', () => {
  it('handles 64-bit masks as bigint', () => {
    const f = featureMask(VIRTIO_F_VERSION_1, VIRTIO_F_EVENT_IDX, 63);
    expect(hasFeature(f, 32)).toBe(true);
    expect(hasFeature(f, 29)).toBe(true);
    expect(hasFeature(f, 34)).toBe(false);
    expect(featureBits(withoutFeature(withFeature(f, 34), 63))).toEqual([29, 32, 34]);
    expect(featuresToHalves(f)).toEqual([1 << 29, 0x80000001]);
    expect(featuresFromHalves(1 << 29, 0x80000001)).toBe(f);
    expect(() => hasFeature(f, 64)).toThrow(RangeError);
  });
});

function ringPair() {
  const t = makeMemory();
  const cfg = splitLayout(8);
  return { ...t, drv: new SplitDriverRing<number>(t.mem, cfg), dev: new SplitDeviceRing(t.mem, cfg) };
}

describe('net header', () => {
  it('sizes by features', () => {
    expect(netHdrSize(0n)).toBe(10);
    expect(netHdrSize(featureMask(VIRTIO_F_VERSION_1))).toBe(12);
    expect(netHdrSize(featureMask(VIRTIO_NET_F_MRG_RXBUF))).toBe(12);
  });

  it('parses from a chain (fast path and split header) and writes into one', () => {
    const { mem, drv, dev } = ringPair();
    const raw = Uint8Array.of(1, VIRTIO_NET_HDR_GSO_TCPV4, 54, 0, 0xb4, 0x05, 34, 0, 16, 0, 3, 0);
    mem.write(BUF_LOW, raw, 0, 12);
    mem.write(MID2.gpa - 5, raw, 0, 12); // header split across two regions
    drv.add([BUF_LOW], [60], 1, 0, 1);
    drv.add([MID2.gpa - 5], [12], 1, 0, 2);
    drv.add([BUF_LOW + 100, BUF_HIGH], [4, 4], 1, 1, 3); // too short
    drv.publish();
    const c = new Chain();
    const h = new NetHeader();
    for (let k = 0; k < 2; k++) {
      expect(dev.pop(c)).toBe(true);
      h.clear();
      expect(parseNetHdrFromChain(c, 12, h)).toBe(true);
      expect(h).toMatchObject({ flags: 1, gsoType: 1, hdrLen: 54, gsoSize: 1460, csumStart: 34, csumOffset: 16, numBuffers: 3 });
    }
    expect(dev.pop(c)).toBe(true);
    expect(parseNetHdrFromChain(c, 12, h)).toBe(false);
    expect(writeNetHdrToChain(c, 12, h)).toBe(false);
    // RX: write a header and num_buffers into a writable chain.
    drv.add([BUF_HIGH + 64], [1500], 0, 1, 4);
    drv.publish();
    expect(dev.pop(c)).toBe(true);
    h.clear();
    h.gsoType = 0;
    expect(writeNetHdrToChain(c, 12, h)).toBe(true);
    expect(setNumBuffers(c, 2)).toBe(true);
    const back = new Uint8Array(12);
    mem.read(BUF_HIGH + 64, back, 0, 12);
    expect(Array.from(back)).toEqual([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0]);
  });
});

describe('blk request', () => {
  it('parses header, payload and status positions, and writes the status', () => {
    const { mem, drv, dev } = ringPair();
    const hdr = new Uint8Array(16);
    const dv = new DataView(hdr.buffer);
    dv.setUint32(0, VIRTIO_BLK_T_IN, true);
    dv.setUint32(8, 0x12345678, true);
    dv.setUint32(12, 0x1, true);
    mem.write(BUF_LOW, hdr, 0, 16);
    drv.add([BUF_LOW, BUF_HIGH, BUF_HIGH + 4096], [16, 4096, 1], 1, 2, 1);
    dv.setUint32(0, VIRTIO_BLK_T_OUT, true);
    mem.write(BUF_LOW + 64, hdr, 0, 16);
    drv.add([BUF_LOW + 64, BUF_LOW + 128, BUF_HIGH + 8192], [16, 512, 1], 2, 1, 2);
    drv.add([BUF_LOW + 64], [8], 1, 0, 3); // no status byte, short header
    drv.publish();
    const c = new Chain();
    const r = new BlkRequest();
    expect(dev.pop(c) && parseBlkRequest(c, r)).toBe(true);
    expect(r).toMatchObject({ type: VIRTIO_BLK_T_IN, sector: 0x1_12345678, dataLen: 4096, dataSkip: 0, statusSkip: 4096 });
    expect(writeBlkStatus(c, r, VIRTIO_BLK_S_OK, 4096)).toBe(4097);
    dev.pushChain(c, 4097);
    expect(dev.pop(c) && parseBlkRequest(c, r)).toBe(true);
    expect(r).toMatchObject({ type: VIRTIO_BLK_T_OUT, dataLen: 512, dataSkip: 16, statusSkip: 0 });
    mem.fill(BUF_HIGH + 8192, 0xee, 1);
    writeBlkStatus(c, r, 2);
    const s = new Uint8Array(1);
    mem.read(BUF_HIGH + 8192, s, 0, 1);
    expect(s[0]).toBe(2);
    expect(dev.pop(c) && parseBlkRequest(c, r)).toBe(false);
  });

  it('encodes the config space', () => {
    const b = encodeBlkConfig({ capacity: 2 ** 33 + 5, segMax: 126, numQueues: 4 });
    expect(b.length).toBe(BLK_CFG_SIZE);
    const dv = new DataView(b.buffer);
    expect(dv.getUint32(BLK_CFG_CAPACITY, true)).toBe(5);
    expect(dv.getUint32(BLK_CFG_CAPACITY + 4, true)).toBe(2);
    expect(dv.getUint32(BLK_CFG_SEG_MAX, true)).toBe(126);
    expect(dv.getUint16(BLK_CFG_NUM_QUEUES, true)).toBe(4);
  });
});

describe('inflight tracking (split)', () => {
  it('has the documented layout sizes', () => {
    expect(inflightQueueBytes(256)).toBe(4160); // 16*256+16 = 4112 -> 4160
    expect(inflightQueueBytes(128)).toBe(2112);
    expect(inflightQueueBytes(1)).toBe(64);
    expect(inflightTotalBytes(2, 256)).toBe(8320);
  });

  it('marks, clears and resubmits in pop order after a reconnect', () => {
    const { mem, drv, dev } = ringPair();
    const area = new SharedArrayBuffer(inflightTotalBytes(1, 8));
    const inf = new InflightQueue(area, 0, 8);
    inf.init(featureMask(VIRTIO_F_VERSION_1));
    expect(inf.version).toBe(1);
    expect(inf.descNum).toBe(8);
    for (let i = 0; i < 5; i++) drv.add([BUF_LOW + i * 16], [16], 1, 0, i);
    drv.publish();
    const chains = Array.from({ length: 5 }, () => new Chain());
    expect(dev.popBurst(chains, 5)).toBe(5);
    for (const c of chains) inf.markInflight(c.head);
    // Complete chain 1, then chain 3 whose used.idx store happens but the back-end dies before postPush.
    inf.prePush(chains[1]!.head);
    dev.pushChain(chains[1]!, 0);
    dev.flush();
    inf.postPush(chains[1]!.head, dev.lastUsedIdx);
    inf.prePush(chains[3]!.head);
    dev.pushChain(chains[3]!, 0);
    dev.flush();
    // Crash. A new back-end opens the same area (SET_INFLIGHT_FD) and reads used->idx (2).
    const again = new InflightQueue(area, 0, 8);
    const dev2 = new SplitDeviceRing(mem, splitLayout(8));
    const rec = again.recover(dev2.lastUsedIdx);
    expect(rec.resubmit).toEqual([chains[0]!.head, chains[2]!.head, chains[4]!.head]);
    expect(rec.lastAvailIdx).toBe(5);
    expect(again.usedIdx).toBe(2);
    dev2.lastAvailIdx = rec.lastAvailIdx;
    const c = new Chain();
    for (const h of rec.resubmit) {
      dev2.describeHead(c, h);
      expect(c.readableBytes).toBe(16);
      dev2.pushChain(c, 0);
    }
    dev2.flush();
    const u = createUsedBuffer<number>();
    const tokens: number[] = [];
    while (drv.getUsed(u)) tokens.push(u.token!);
    expect(tokens).toEqual([1, 3, 0, 2, 4]);
    expect(dev2.hasWork()).toBe(false);
    // A later mark continues the counter after the highest recovered one.
    again.markInflight(chains[0]!.head);
    expect(again.counterOf(chains[0]!.head)).toBe(6);
  });
});

describe('memory-table changes', () => {
  it('chunkRegion splits a mapping into contiguous chunks; vaToGpa translates ring VAs', async () => {
    const { GuestMemory, chunkRegion } = await import('../src/index.js');
    const sab = new SharedArrayBuffer(10 * 4096);
    const chunks = chunkRegion({ gpa: 0x100000, size: 9 * 4096, sab, sabOffset: 4096, userAddr: 0x7f0000000000 }, 4 * 4096);
    expect(chunks.map((c) => [c.gpa, c.size, c.sabOffset, c.userAddr])).toEqual([
      [0x100000, 16384, 4096, 0x7f0000000000],
      [0x104000, 16384, 20480, 0x7f0000004000],
      [0x108000, 4096, 36864, 0x7f0000008000],
    ]);
    const mem = new GuestMemory(chunks);
    expect(mem.vaToGpa(0x7f0000004010, 16)).toBe(0x104010);
    expect(mem.vaToGpa(0x7f0000003ff0, 64)).toBe(0x103ff0); // across chunks
    expect(mem.vaToGpa(0x7f0000009000, 1)).toBe(-1);
    expect(mem.vaToGpa(0x7f0000008ff0, 32)).toBe(-1); // runs off the end
    const data = Uint8Array.from({ length: 100 }, (_, i) => i);
    mem.write(0x104000 - 50, data, 0, 100);
    const back = new Uint8Array(100);
    mem.read(0x104000 - 50, back, 0, 100);
    expect(back).toEqual(data);
  });

  it('remap keeps split and packed ring state, including a chain in flight', async () => {
    const { GuestMemory, PackedDeviceRing, PackedDriverRing } = await import('../src/index.js');
    const { packedLayout } = await import('./helpers.js');
    for (const kind of ['split', 'packed'] as const) {
      const t = makeMemory();
      const drv =
        kind === 'split' ? new SplitDriverRing<number>(t.mem, splitLayout(8)) : new PackedDriverRing<number>(t.mem, packedLayout(5));
      const dev = kind === 'split' ? new SplitDeviceRing(t.mem, splitLayout(8)) : new PackedDeviceRing(t.mem, packedLayout(5), { vringBase: drv.vringBase });
      const c = new Chain();
      const u = createUsedBuffer<number>();
      for (let i = 0; i < 7; i++) {
        drv.add([BUF_LOW, BUF_HIGH], [8, 8], 1, 1, i);
        drv.publish();
        expect(dev.pop(c)).toBe(true);
        dev.pushChain(c, 8);
        dev.flush();
        expect(drv.getUsed(u)).toBe(true);
      }
      // A 3-descriptor chain is popped, then the memory table changes (same pages, new chunking).
      drv.add([BUF_LOW, BUF_LOW + 8, BUF_HIGH], [8, 8, 8], 2, 1, 100);
      drv.publish();
      expect(dev.pop(c)).toBe(true);
      const head = c.head;
      const inits = t.inits.flatMap((r) => (r.size > 4096 * 4 ? [{ ...r, size: 65536 }, { ...r, gpa: r.gpa + 65536, size: r.size - 65536, sabOffset: r.sabOffset + 65536 }] : [r]));
      const mem2 = new GuestMemory(inits);
      dev.remap(mem2);
      expect(dev.mem).toBe(mem2);
      dev.push(head, 3);
      dev.flush();
      expect(drv.getUsed(u)).toBe(true);
      expect(u.token).toBe(100);
      expect(u.len).toBe(3);
      drv.add([BUF_LOW], [8], 1, 0, 101);
      drv.publish();
      expect(dev.pop(c)).toBe(true);
      expect(c.mem).toBe(mem2);
      dev.pushChain(c, 0);
      dev.flush();
      expect(drv.getUsed(u) && u.token === 101).toBe(true);
      expect(drv.numFree).toBe(drv.size);
    }
  });
});

describe('Chain', () => {
  it('grows past its capacity, copies its description, and exposes segment views', async () => {
    const { isRingError, RingError } = await import('../src/index.js');
    const { mem, drv, dev } = ringPair();
    const addrs = Array.from({ length: 8 }, (_, i) => BUF_LOW + i * 100);
    drv.add(addrs, new Array(8).fill(10), 4, 4, 1);
    drv.publish();
    const c = new Chain(1);
    expect(dev.pop(c)).toBe(true);
    expect(c.capacity).toBeGreaterThanOrEqual(8);
    expect(c.count).toBe(8);
    const d = new Chain(1);
    c.copyInto(d);
    expect(d.count).toBe(8);
    expect(d.head).toBe(c.head);
    expect(Array.from(d.segGpa.subarray(0, 8))).toEqual(addrs);
    expect(d.readableBytes).toBe(40);
    mem.write(BUF_LOW + 300, Uint8Array.of(9, 8, 7), 0, 3);
    expect(Array.from(d.segment(3).subarray(0, 3))).toEqual([9, 8, 7]);
    expect(() => d.segment(8)).toThrow(RangeError);
    expect(isRingError(new RingError('ADDR_RANGE', 'x'))).toBe(true);
    expect(isRingError(new Error('x'))).toBe(false);
  });
});
