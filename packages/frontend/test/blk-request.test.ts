import { describe, expect, it } from 'vitest';
import {
  BLK_HEADER_SIZE, checkPattern, decodeBlkConfig, decodeBlkHeader, encodeBlkHeader, encodeBlkSegment, fillPattern,
  planBlkRequest, SECTOR_SIZE, VIRTIO_BLK_T_OUT,
} from '@vhost-ts/frontend/blk/request';

describe('blk request encoding', () => {
  it('plans header / data / status with the right directions', () => {
    expect(planBlkRequest({ op: 'read', sector: 8, length: 4096 })).toEqual([
      { role: 'header', len: 16, writable: false },
      { role: 'data', len: 4096, writable: true },
      { role: 'status', len: 1, writable: true },
    ]);
    expect(planBlkRequest({ op: 'write', length: 512 })[1]).toEqual({ role: 'data', len: 512, writable: false });
    expect(planBlkRequest({ op: 'flush' }).map((s) => s.role)).toEqual(['header', 'status']);
    expect(planBlkRequest({ op: 'get-id' })[1]).toEqual({ role: 'data', len: 20, writable: true });
    expect(planBlkRequest({ op: 'discard', sectors: 8 })[1]).toEqual({ role: 'data', len: 16, writable: false });
    expect(planBlkRequest({ op: 'write-zeroes', sectors: 8, unmap: true })[1]!.writable).toBe(false);
  });

  it('rejects malformed requests', () => {
    expect(() => planBlkRequest({ op: 'read', length: 100 })).toThrow(RangeError);
    expect(() => planBlkRequest({ op: 'write', sector: -1 })).toThrow(RangeError);
    expect(() => planBlkRequest({ op: 'discard', sectors: 0 })).toThrow(RangeError);
    expect(() => planBlkRequest({ op: 'nope' as never })).toThrow(RangeError);
  });

  it('encodes the header little-endian with a 64-bit sector', () => {
    const dv = new DataView(new ArrayBuffer(BLK_HEADER_SIZE));
    encodeBlkHeader(dv, 0, VIRTIO_BLK_T_OUT, 2 ** 33 + 5);
    expect([...new Uint8Array(dv.buffer)]).toEqual([1, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 2, 0, 0, 0]);
    expect(decodeBlkHeader(dv, 0)).toEqual({ type: 1, ioprio: 0, sector: 2 ** 33 + 5 });
  });

  it('encodes discard / write-zeroes segments', () => {
    const dv = new DataView(new ArrayBuffer(16));
    encodeBlkSegment(dv, 0, 7, 16, 1);
    expect([...new Uint8Array(dv.buffer)]).toEqual([7, 0, 0, 0, 0, 0, 0, 0, 16, 0, 0, 0, 1, 0, 0, 0]);
  });
});

describe('blk data patterns', () => {
  it('verifies what it wrote and locates a wrong sector, a stale generation and zeros', () => {
    const dv = new DataView(new ArrayBuffer(8 * SECTOR_SIZE));
    fillPattern(dv, 0, 100, 8, 3);
    expect(checkPattern(dv, 0, 100, 8, 3)).toBe(-1);
    expect(checkPattern(dv, 0, 100, 8, 4)).toBe(0);
    expect(checkPattern(dv, 0, 101, 7, 3)).toBe(0); // shifted: another sector's data
    dv.setUint8(5 * SECTOR_SIZE + 77, dv.getUint8(5 * SECTOR_SIZE + 77) ^ 1);
    expect(checkPattern(dv, 0, 100, 8, 3)).toBe(5);
    const z = new DataView(new ArrayBuffer(2 * SECTOR_SIZE));
    expect(checkPattern(z, 0, 0, 2, -1)).toBe(-1);
    expect(checkPattern(z, 0, 0, 2, 0)).toBe(0);
  });

  it('decodes a blk config space, tolerating short ones', () => {
    const b = new Uint8Array(60);
    const dv = new DataView(b.buffer);
    dv.setUint32(0, 2048, true);
    dv.setUint32(20, 4096, true);
    dv.setUint16(34, 4, true);
    expect(decodeBlkConfig(b)).toMatchObject({ capacity: 2048, blkSize: 4096, numQueues: 4 });
    expect(decodeBlkConfig(b.subarray(0, 8)).numQueues).toBe(0);
  });
});
