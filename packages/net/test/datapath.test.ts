import { describe, expect, it } from 'vitest';
import {
  VIRTIO_F_VERSION_1,
  VIRTIO_NET_F_GUEST_CSUM,
  VIRTIO_NET_F_MRG_RXBUF,
  featureMask,
} from '@vhost-ts/virtio';
import {
  NetQueuePair,
  RX_DONE,
  RX_DROPPED,
  RX_PENDING,
  VIRTIO_NET_HDR_F_NEEDS_CSUM,
  completeChecksum,
  internetChecksum,
  netHeaderLength,
} from '@vhost-ts/net';
import { NetGuest, TestGuest, parseHeader, testFrame } from './support/guest.js';
import { LocalContext } from './support/queue.js';

const V1 = featureMask(VIRTIO_F_VERSION_1);
const V1_MRG = featureMask(VIRTIO_F_VERSION_1, VIRTIO_NET_F_MRG_RXBUF);

/** A guest queue pair and the device-side NetQueuePair over it, in this thread. */
function setup(features: bigint, kind: 'split' | 'packed' = 'split', size = 64) {
  const guest = new TestGuest();
  const hdrLen = netHeaderLength(features);
  const g = new NetGuest(guest, 0, hdrLen, { kind, size });
  const ctx = new LocalContext(guest.mem, features, g.rx, g.tx);
  const [pair] = NetQueuePair.fromContext(ctx);
  if (pair === undefined) throw new Error('no pair');
  return { guest, g, ctx, pair, hdrLen };
}

/** Echo one TX frame through the pair, as the echo module does. */
function echoOne(s: ReturnType<typeof setup>): number {
  expect(s.pair.popTx()).toBe(true);
  const r = s.pair.rxFromTx();
  s.ctx.flush();
  return r;
}

describe('header length', () => {
  it('is 12 bytes with VERSION_1 or MRG_RXBUF, else 10', () => {
    expect(netHeaderLength(0n)).toBe(10);
    expect(netHeaderLength(V1)).toBe(12);
    expect(netHeaderLength(featureMask(VIRTIO_NET_F_MRG_RXBUF))).toBe(12);
    expect(netHeaderLength(V1_MRG)).toBe(12);
  });

  for (const [name, features] of [['legacy (10 B)', 0n], ['VERSION_1 (12 B)', V1]] as const) {
    it(`echoes with the ${name} header: used length = header + frame`, () => {
      const s = setup(features);
      const frame = testFrame(100, 7);
      s.g.send(frame);
      s.g.postRx(1, 2048);
      expect(echoOne(s)).toBe(RX_DONE);
      const used = s.g.rx.reap();
      expect(used).toHaveLength(1);
      expect(used[0]!.len).toBe(s.hdrLen + 100);
      const bytes = s.g.rxBytes(used[0]!);
      expect(bytes.subarray(s.hdrLen)).toEqual(frame);
      if (s.hdrLen === 12) expect(parseHeader(bytes.subarray(0, 12)).numBuffers).toBe(1);
      const txUsed = s.g.tx.reap();
      expect(txUsed).toEqual([{ token: 0, len: 0 }]);
      expect(s.pair.txPackets).toBe(1);
      expect(s.pair.rxPackets).toBe(1);
      expect(s.pair.rxBytes).toBe(100);
    });
  }

  it('counts past 2^32 exactly (counters are float64 slots, not small-integer fields)', () => {
    const s = setup(V1);
    s.pair.txBytes = 2 ** 40;
    s.pair.rxBytes = 2 ** 40 + 1;
    s.pair.txPackets = 2 ** 33;
    for (let i = 0; i < 3; i++) {
      s.g.send(testFrame(100, i));
      s.g.postRx(1, 2048);
      expect(echoOne(s)).toBe(RX_DONE);
    }
    expect(s.pair.txBytes).toBe(2 ** 40 + 300);
    expect(s.pair.rxBytes).toBe(2 ** 40 + 301);
    expect(s.pair.txPackets).toBe(2 ** 33 + 3);
    expect(s.pair.counters({})).toMatchObject({ 'q0.txBytes': 2 ** 40 + 300, 'q0.rxPackets': 3 });
  });

  it('takes a header and frame split over two TX descriptors (any layout)', () => {
    const s = setup(V1);
    const frame = testFrame(300, 3);
    s.g.send(frame, { split: true });
    s.g.postRx(1, 2048);
    expect(echoOne(s)).toBe(RX_DONE);
    const [u] = s.g.rx.reap();
    expect(s.g.rxBytes(u!).subarray(12)).toEqual(frame);
  });
});

describe('mergeable RX buffers', () => {
  for (const kind of ['split', 'packed'] as const) {
    it(`spreads a frame over several RX chains with num_buffers and per-chain used lengths (${kind})`, () => {
      const s = setup(V1_MRG, kind);
      const frame = testFrame(1000, 9);
      s.g.send(frame);
      s.g.postRx(8, 256);
      expect(echoOne(s)).toBe(RX_DONE);
      const used = s.g.rx.reap();
      // 12 + 1000 = 1012 bytes over 256-byte buffers: 256, 256, 256, 244.
      expect(used.map((u) => u.len)).toEqual([256, 256, 256, 244]);
      const all = new Uint8Array(1012);
      let at = 0;
      for (const u of used) {
        all.set(s.g.rxBytes(u), at);
        at += u.len;
      }
      expect(parseHeader(all.subarray(0, 12)).numBuffers).toBe(4);
      expect(all.subarray(12)).toEqual(frame);
      expect(s.pair.rxMerged).toBe(1);
    });
  }

  it('uses one buffer when the frame fits', () => {
    const s = setup(V1_MRG);
    s.g.send(testFrame(200));
    s.g.postRx(4, 2048);
    expect(echoOne(s)).toBe(RX_DONE);
    const used = s.g.rx.reap();
    expect(used.map((u) => u.len)).toEqual([212]);
    expect(parseHeader(s.g.rxBytes(used[0]!)).numBuffers).toBe(1);
  });

  it('waits for more RX buffers in the middle of a frame, then completes it whole', () => {
    const s = setup(V1_MRG);
    const frame = testFrame(1000, 1);
    s.g.send(frame);
    s.g.postRx(2, 256);
    expect(echoOne(s)).toBe(RX_PENDING);
    expect(s.pair.rxBusy).toBe(true);
    // Nothing is visible to the guest yet, on either ring.
    expect(s.g.rx.reap()).toEqual([]);
    expect(s.g.tx.reap()).toEqual([]);
    s.g.postRx(2, 256);
    expect(s.pair.rxPump()).toBe(RX_DONE);
    s.ctx.flush();
    const used = s.g.rx.reap();
    expect(used.map((u) => u.len)).toEqual([256, 256, 256, 244]);
    expect(s.g.tx.reap()).toHaveLength(1);
    expect(s.pair.rxDropped).toBe(0);
  });

  it('abandons a pending frame when the RX ring is disabled: its chains come back with length 0', () => {
    const s = setup(V1_MRG);
    s.g.send(testFrame(1000));
    s.g.postRx(2, 256);
    expect(echoOne(s)).toBe(RX_PENDING);
    s.ctx.rings[0]!.active = false;
    expect(s.pair.rxPump()).toBe(RX_DROPPED);
    s.ctx.flush();
    expect(s.g.rx.reap().map((u) => u.len)).toEqual([0, 0]);
    expect(s.g.tx.reap()).toHaveLength(1);
    expect(s.pair.rxDropped).toBe(1);
    expect(s.pair.rxBusy).toBe(false);
  });
});

describe('no or too small RX buffers', () => {
  it('drops and counts a frame that cannot wait when the guest has no RX buffer', () => {
    const s = setup(V1);
    const buf = testFrame(60);
    expect(s.pair.rxTryBuffer(buf, 0, 60)).toBe(RX_DROPPED);
    expect(s.pair.rxDropped).toBe(1);
    expect(s.pair.rxBusy).toBe(false);
    s.g.postRx(1, 2048);
    expect(s.pair.rxTryBuffer(buf, 0, 60)).toBe(RX_DONE);
    s.ctx.flush();
    const [u] = s.g.rx.reap();
    expect(u!.len).toBe(72);
    expect(s.g.rxBytes(u!).subarray(12)).toEqual(buf);
  });

  it('without MRG_RXBUF drops a frame larger than the RX buffer (used length 0)', () => {
    const s = setup(V1);
    s.g.send(testFrame(500));
    s.g.postRx(1, 256);
    expect(echoOne(s)).toBe(RX_DROPPED);
    expect(s.g.rx.reap()).toEqual([{ token: 0, len: 0 }]);
    expect(s.g.tx.reap()).toHaveLength(1);
    expect(s.pair.rxDropped).toBe(1);
  });
});

describe('TX checks', () => {
  it('completes malformed TX chains (GSO never offered, too short, checksum outside) and counts them', () => {
    const s = setup(V1);
    const gso = new Uint8Array(12);
    gso[1] = 1; // VIRTIO_NET_HDR_GSO_TCPV4
    s.g.send(testFrame(100), { hdr: gso });
    s.g.send(new Uint8Array(10));
    const badCsum = new Uint8Array(12);
    badCsum[0] = VIRTIO_NET_HDR_F_NEEDS_CSUM;
    badCsum[6] = 90; // csum_start 90 + csum_offset 16 + 2 > 100
    badCsum[8] = 16;
    s.g.send(testFrame(100), { hdr: badCsum });
    s.g.send(testFrame(100, 5));
    expect(s.pair.popTx()).toBe(true);
    expect(s.pair.txFrameLen).toBe(100);
    s.pair.completeTx();
    s.ctx.flush();
    expect(s.pair.txErrors).toBe(3);
    expect(s.pair.txPackets).toBe(1);
    expect(s.g.tx.reap().map((u) => u.len)).toEqual([0, 0, 0, 0]);
    expect(s.pair.popTx()).toBe(false);
  });
});

/** A UDP/IPv4 frame whose UDP checksum field holds the pseudo-header sum (what a driver with CSUM sends). */
function partialUdp(): { frame: Uint8Array; hdr: Uint8Array; full: number } {
  const payload = 37;
  const f = new Uint8Array(14 + 20 + 8 + payload);
  f.set([2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00], 0);
  const udpLen = 8 + payload;
  f.set([0x45, 0, 0, 20 + udpLen, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2], 14);
  f.set([0x30, 0x39, 0x00, 0x35, 0, udpLen, 0, 0], 34);
  for (let i = 0; i < payload; i++) f[42 + i] = (i * 7) & 0xff;
  // Pseudo-header sum (not complemented), as Linux leaves it for CHECKSUM_PARTIAL.
  let sum = 0x0a00 + 0x0001 + 0x0a00 + 0x0002 + 17 + udpLen;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  f[40] = sum >> 8;
  f[41] = sum & 0xff;
  // The full checksum for comparison.
  const ref = f.slice();
  ref[40] = 0;
  ref[41] = 0;
  const pseudo = new Uint8Array(12 + udpLen);
  pseudo.set([10, 0, 0, 1, 10, 0, 0, 2, 0, 17, 0, udpLen], 0);
  pseudo.set(ref.subarray(34), 12);
  const full = internetChecksum(pseudo, 0, pseudo.length) || 0xffff;
  const hdr = new Uint8Array(12);
  hdr[0] = VIRTIO_NET_HDR_F_NEEDS_CSUM;
  hdr[6] = 34; // csum_start: the UDP header
  hdr[8] = 6; // csum_offset: the UDP checksum field
  return { frame: f, hdr, full };
}

describe('checksum offload metadata', () => {
  it('passes NEEDS_CSUM through to a guest with GUEST_CSUM', () => {
    const s = setup(V1 | featureMask(VIRTIO_NET_F_GUEST_CSUM));
    const { frame, hdr } = partialUdp();
    s.g.send(frame, { hdr });
    s.g.postRx(1, 2048);
    expect(echoOne(s)).toBe(RX_DONE);
    const [u] = s.g.rx.reap();
    const bytes = s.g.rxBytes(u!);
    const h = parseHeader(bytes);
    expect(h.flags).toBe(VIRTIO_NET_HDR_F_NEEDS_CSUM);
    expect([h.csumStart, h.csumOffset]).toEqual([34, 6]);
    expect(bytes.subarray(12)).toEqual(frame);
  });

  it('completes the checksum for a guest without GUEST_CSUM', () => {
    const s = setup(V1);
    const { frame, hdr, full } = partialUdp();
    s.g.send(frame, { hdr });
    s.g.postRx(1, 2048);
    expect(echoOne(s)).toBe(RX_DONE);
    const [u] = s.g.rx.reap();
    const bytes = s.g.rxBytes(u!);
    expect(parseHeader(bytes).flags).toBe(0);
    expect((bytes[12 + 40]! << 8) | bytes[12 + 41]!).toBe(full);
  });

  it('completeChecksum matches a checksum computed from scratch', () => {
    const { frame, full } = partialUdp();
    completeChecksum(frame, 0, frame.length, 34, 6);
    expect((frame[40]! << 8) | frame[41]!).toBe(full);
  });
});

describe('dirty logging', () => {
  it('marks the pages of the RX buffers written', () => {
    const s = setup(V1_MRG);
    const log = s.ctx.attachLog(((s.guest.gpa + s.guest.sab.byteLength) >> 12) / 8 + 1);
    s.g.send(testFrame(1000));
    s.g.postRx(4, 256);
    expect(echoOne(s)).toBe(RX_DONE);
    const used = s.g.rx.reap();
    for (const u of used) {
      const { gpa } = s.g.rx.buffers(u.token)[0]!;
      for (let page = gpa >> 12; page <= (gpa + u.len - 1) >> 12; page++) {
        expect((log[page >> 3]! >> (page & 7)) & 1).toBe(1);
      }
    }
    // A TX buffer page that nothing wrote stays clean.
    const txGpa = s.g.tx.buffers(0)[0]!.gpa;
    const page = txGpa >> 12;
    const rxPages = new Set(used.flatMap((u) => [s.g.rx.buffers(u.token)[0]!.gpa >> 12]));
    if (!rxPages.has(page)) expect((log[page >> 3]! >> (page & 7)) & 1).toBe(0);
  });
});
