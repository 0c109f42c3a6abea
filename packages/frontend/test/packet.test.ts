import { describe, expect, it } from 'vitest';
import {
  checkForeignIpv4, checkFrame, FILL_OFFSET, fletcher32, FRAME_BAD_CONTENT, FRAME_BAD_LENGTH, FRAME_FOREIGN, FRAME_OK,
  MIN_PROBE_FRAME, probeChecksum, probeQueue, probeSeq, stampProbe, swapMacs, verifyFrameSlow, writeProbeFrame, writeProbeTemplate,
} from '@vhost-ts/frontend/net/packet';

function frame(len: number, queue: number, seq: number, at = 26): { buf: Buffer; dv: DataView } {
  const sab = new SharedArrayBuffer(at + len + 64);
  const buf = Buffer.from(sab);
  const dv = new DataView(sab);
  writeProbeFrame(buf, dv, at, len, queue, seq);
  return { buf, dv };
}

describe('probe frame format', () => {
  it.each([MIN_PROBE_FRAME, 39, 60, 64, 65, 1500, 9000, 65535])('round-trips a %i-byte frame through both checkers', (len) => {
    const { buf, dv } = frame(len, 3, 2 ** 40 + 12345);
    expect(checkFrame(buf, dv, 26, len)).toBe(FRAME_OK);
    expect(verifyFrameSlow(buf, 26, len)).toBe(FRAME_OK);
    expect(probeSeq(dv, 26)).toBe(2 ** 40 + 12345);
    expect(probeQueue(dv, 26)).toBe(3);
    expect(dv.getUint32(26 + 34, true)).toBe(probeChecksum(3, 2 ** 40 + 12345, len));
  });

  it('the stored checksum is the Fletcher-32 of header bytes 0..20 and the fill', () => {
    const len = 101;
    const { buf, dv } = frame(len, 7, 99, 0);
    const cat = Buffer.concat([buf.subarray(14, 34), buf.subarray(FILL_OFFSET, len)]);
    expect(dv.getUint32(34, true)).toBe(fletcher32(cat, 0, cat.length));
  });

  it('detects every single-byte corruption of the payload, in both checkers', () => {
    const len = 128;
    const { buf, dv } = frame(len, 1, 77, 10);
    for (let i = 14; i < len; i++) {
      const old = buf[10 + i]!;
      buf[10 + i] = old ^ 0x10;
      const fast = checkFrame(buf, dv, 10, len);
      const slow = verifyFrameSlow(buf, 10, len);
      expect(fast, `byte ${i}`).not.toBe(FRAME_OK);
      expect(slow, `byte ${i}`).not.toBe(FRAME_OK);
      buf[10 + i] = old;
    }
    expect(checkFrame(buf, dv, 10, len)).toBe(FRAME_OK);
  });

  it('detects corruption in long fills (native compare path) too', () => {
    const len = 1500;
    const { buf, dv } = frame(len, 2, 5);
    for (const i of [38, 39, 100, 167, 777, 1498, 1499]) {
      const old = buf[26 + i]!;
      buf[26 + i] = old ^ 0x01;
      expect(checkFrame(buf, dv, 26, len), `byte ${i}`).toBe(FRAME_BAD_CONTENT);
      buf[26 + i] = old;
    }
    expect(checkFrame(buf, dv, 26, len)).toBe(FRAME_OK);
  });

  it('classifies length mismatches and foreign frames', () => {
    const { buf, dv } = frame(100, 0, 1);
    expect(checkFrame(buf, dv, 26, 99)).toBe(FRAME_BAD_LENGTH);
    expect(checkFrame(buf, dv, 26, 101)).toBe(FRAME_BAD_LENGTH);
    expect(checkFrame(buf, dv, 26, 10)).toBe(FRAME_FOREIGN);
    dv.setUint16(26 + 12, 0x0800, false);
    expect(checkFrame(buf, dv, 26, 100)).toBe(FRAME_FOREIGN);
  });

  it('stamping reuses a template: only seq and checksum change', () => {
    const sab = new SharedArrayBuffer(256);
    const buf = Buffer.from(sab);
    const dv = new DataView(sab);
    writeProbeTemplate(buf, dv, 0, 200, 5);
    for (const seq of [0, 1, 65535, 2 ** 32, 2 ** 53 - 1]) {
      stampProbe(dv, 0, seq, 200);
      expect(checkFrame(buf, dv, 0, 200)).toBe(FRAME_OK);
      expect(probeSeq(dv, 0)).toBe(seq);
    }
  });

  it('a MAC swap (DPDK macswap) keeps the frame valid', () => {
    const { buf, dv } = frame(64, 0, 9);
    const before = Buffer.from(buf.subarray(26, 38));
    swapMacs(buf, 26);
    expect(Buffer.from(buf.subarray(26, 32))).toEqual(before.subarray(6, 12));
    expect(checkFrame(buf, dv, 26, 64)).toBe(FRAME_OK);
  });

  it('checks a foreign IPv4 header checksum', () => {
    const b = new Uint8Array(64);
    const dv = new DataView(b.buffer);
    dv.setUint16(12, 0x0800, false);
    const ip = Uint8Array.from([0x45, 0, 0, 50, 0, 0, 0, 0, 64, 17, 0, 0, 198, 18, 0, 1, 198, 18, 0, 2]);
    b.set(ip, 14);
    let sum = 0;
    for (let o = 0; o < 20; o += 2) sum += dv.getUint16(14 + o, false);
    while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
    dv.setUint16(24, ~sum & 0xffff, false);
    expect(checkForeignIpv4(dv, 0, 64)).toBe(true);
    b[30] = b[30]! ^ 1;
    expect(checkForeignIpv4(dv, 0, 64)).toBe(false);
    dv.setUint16(12, 0x86dd, false);
    expect(checkForeignIpv4(dv, 0, 64)).toBe(null);
  });

  it('rejects frame sizes that cannot hold a probe header', () => {
    const sab = new SharedArrayBuffer(128);
    expect(() => writeProbeTemplate(Buffer.from(sab), new DataView(sab), 0, MIN_PROBE_FRAME - 1, 0)).toThrow(RangeError);
  });
});
