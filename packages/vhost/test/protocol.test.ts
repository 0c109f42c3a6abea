import { describe, expect, it } from 'vitest';
import {
  BackendRequest,
  FLAG_NEED_REPLY,
  FrontendRequest,
  HEADER_SIZE,
  MAX_PAYLOAD_SIZE,
  ProtocolError,
  ProtocolFeature,
  REPLY_FLAGS,
  VHOST_USER_F_PROTOCOL_FEATURES,
  bit,
  checkFrontendRequest,
  decodeConfig,
  decodeHeader,
  decodeInflight,
  decodeLog,
  decodeMemoryTable,
  decodePackedBase,
  decodeRarp,
  decodeSingleRegion,
  decodeU64,
  decodeVringAddr,
  decodeVringFd,
  decodeVringState,
  encodeConfig,
  encodeHeader,
  encodeInflight,
  encodeLog,
  encodeMemoryTable,
  encodeMessage,
  encodePackedBase,
  encodeRarp,
  encodeSingleRegion,
  encodeU64,
  encodeVringAddr,
  encodeVringFd,
  encodeVringState,
  frontendRequestName,
  hasReplyBody,
  memoryTableSize,
  requestFlags,
  validateHeader,
} from '@vhost-ts/vhost/protocol';

describe('protocol constants', () => {
  it('uses the spec numbering', () => {
    expect(FrontendRequest.GET_FEATURES).toBe(1);
    expect(FrontendRequest.GET_VRING_BASE).toBe(11);
    expect(FrontendRequest.SET_BACKEND_REQ_FD).toBe(21);
    expect(FrontendRequest.GET_INFLIGHT_FD).toBe(31);
    expect(FrontendRequest.GET_STATUS).toBe(40);
    expect(FrontendRequest.CHECK_DEVICE_STATE).toBe(43);
    expect(BackendRequest.CONFIG_CHANGE_MSG).toBe(2);
    expect(ProtocolFeature.REPLY_ACK).toBe(3);
    expect(ProtocolFeature.CONFIGURE_MEM_SLOTS).toBe(15);
    expect(ProtocolFeature.STATUS).toBe(16);
    expect(bit(VHOST_USER_F_PROTOCOL_FEATURES)).toBe(0x4000_0000n);
    expect(frontendRequestName(12)).toBe('SET_VRING_KICK');
    expect(frontendRequestName(999)).toBe('UNKNOWN(999)');
    expect(MAX_PAYLOAD_SIZE).toBe(268);
  });
});

describe('header', () => {
  it('round-trips and reads the fields at 0, 4, 8', () => {
    const bytes = encodeHeader({ request: 5, flags: 0x9, size: 40 });
    expect(bytes.byteLength).toBe(HEADER_SIZE);
    expect(Array.from(bytes)).toEqual([5, 0, 0, 0, 9, 0, 0, 0, 40, 0, 0, 0]);
    expect(decodeHeader(bytes)).toEqual({ request: 5, flags: 9, size: 40 });
  });

  it('builds whole messages', () => {
    const msg = encodeMessage(FrontendRequest.SET_FEATURES, requestFlags(true), encodeU64(0x1_0000_0000n));
    expect(msg.byteLength).toBe(20);
    expect(decodeHeader(msg)).toEqual({ request: 2, flags: 1 | FLAG_NEED_REPLY, size: 8 });
    expect(decodeU64(msg.subarray(12))).toBe(0x1_0000_0000n);
    expect(REPLY_FLAGS).toBe(5);
  });

  it.each([
    ['bad version', { request: 1, flags: 0x2, size: 0 }, false, /version/],
    ['version 0', { request: 1, flags: 0x0, size: 0 }, false, /version/],
    ['undefined flag bits', { request: 1, flags: 0x11, size: 0 }, false, /undefined flag/],
    ['reply flag on a request', { request: 1, flags: 0x5, size: 0 }, false, /REPLY flag set on a request/],
    ['no reply flag on a reply', { request: 1, flags: 0x1, size: 8 }, true, /REPLY flag is clear/],
    ['size beyond the maximum', { request: 5, flags: 0x1, size: MAX_PAYLOAD_SIZE + 1 }, false, /exceeds/],
  ])('refuses %s', (_name, header, expectReply, message) => {
    expect(() => validateHeader(header, expectReply)).toThrow(message);
    expect(() => validateHeader(header, expectReply)).toThrow(ProtocolError);
  });
});

describe('payloads', () => {
  it('vring state', () => {
    const bytes = encodeVringState({ index: 3, num: 256 });
    expect(bytes.byteLength).toBe(8);
    expect(decodeVringState(bytes)).toEqual({ index: 3, num: 256 });
    expect(() => decodeVringState(new Uint8Array(7))).toThrow(/8 bytes/);
  });

  it('vring addr: index, flags, desc, used, avail, log in that order', () => {
    const addr = { index: 1, flags: 1, desc: 0x1000n, used: 0x3000n, avail: 0x2000n, log: 0xdead_beef_0000n };
    const bytes = encodeVringAddr(addr);
    expect(bytes.byteLength).toBe(40);
    const v = new DataView(bytes.buffer);
    expect(v.getBigUint64(16, true)).toBe(0x3000n); // used before avail
    expect(v.getBigUint64(24, true)).toBe(0x2000n);
    expect(decodeVringAddr(bytes)).toEqual(addr);
  });

  it('memory table: size is 8 + 32 * nregions, at most 8 regions', () => {
    const regions = [
      { guestPhysAddr: 0n, memorySize: 0x10000n, userspaceAddr: 0x7f00_0000_0000n, mmapOffset: 0n },
      { guestPhysAddr: 0x100000n, memorySize: 0x20000n, userspaceAddr: 0x7f00_1000_0000n, mmapOffset: 0x1000n },
    ];
    const bytes = encodeMemoryTable(regions);
    expect(bytes.byteLength).toBe(memoryTableSize(2));
    expect(bytes.byteLength).toBe(72);
    expect(decodeMemoryTable(bytes)).toEqual(regions);
    expect(() => decodeMemoryTable(bytes.subarray(0, 40))).toThrow(/must be 72 bytes/);
    const nine = new Uint8Array(memoryTableSize(8));
    new DataView(nine.buffer).setUint32(0, 9, true);
    expect(() => decodeMemoryTable(nine)).toThrow(/9 regions/);
  });

  it('single region carries 8 bytes of padding first', () => {
    const region = { guestPhysAddr: 0x4000n, memorySize: 0x1000n, userspaceAddr: 0x9000n, mmapOffset: 0n };
    const bytes = encodeSingleRegion(region);
    expect(bytes.byteLength).toBe(40);
    expect(new DataView(bytes.buffer).getBigUint64(8, true)).toBe(0x4000n);
    expect(decodeSingleRegion(bytes)).toEqual(region);
  });

  it('log, inflight (24 or 20 bytes), config', () => {
    expect(decodeLog(encodeLog({ mmapSize: 4096n, mmapOffset: 8192n }))).toEqual({ mmapSize: 4096n, mmapOffset: 8192n });
    const inflight = { mmapSize: 0x1000n, mmapOffset: 0n, numQueues: 2, queueSize: 128 };
    const bytes = encodeInflight(inflight);
    expect(bytes.byteLength).toBe(24);
    expect(decodeInflight(bytes)).toEqual(inflight);
    expect(decodeInflight(bytes.subarray(0, 20))).toEqual(inflight);
    expect(() => decodeInflight(bytes.subarray(0, 16))).toThrow(/inflight/);

    const config = { offset: 4, flags: 0, data: new Uint8Array([1, 2, 3]) };
    const c = encodeConfig(config);
    expect(c.byteLength).toBe(15);
    expect(decodeConfig(c)).toEqual(config);
    const lying = new Uint8Array(c);
    new DataView(lying.buffer).setUint32(4, 4, true);
    expect(() => decodeConfig(lying)).toThrow(/size field 4/);
    const huge = new Uint8Array(12);
    new DataView(huge.buffer).setUint32(4, 257, true);
    expect(() => decodeConfig(huge)).toThrow(/exceeds 256/);
  });

  it('vring fd u64: index in bits 0-7, no-fd bit 8, nothing above', () => {
    expect(decodeU64(encodeVringFd({ index: 5, noFd: true }))).toBe(0x105n);
    expect(decodeVringFd(encodeU64(0x103n))).toEqual({ index: 3, noFd: true });
    expect(decodeVringFd(encodeU64(7n))).toEqual({ index: 7, noFd: false });
    expect(() => decodeVringFd(encodeU64(0x200n))).toThrow(/above bit 8/);
  });

  it('RARP carries the MAC in the first 6 bytes', () => {
    const mac = new Uint8Array([0x52, 0x54, 0, 0x12, 0x34, 0x56]);
    expect(decodeRarp(encodeRarp(mac))).toEqual(mac);
  });

  it('packed vring base encoding', () => {
    const b = { availIdx: 5, availWrap: true, usedIdx: 3, usedWrap: false };
    expect(encodePackedBase(b)).toBe(5 | 0x8000 | (3 << 16));
    expect(decodePackedBase(encodePackedBase(b))).toEqual(b);
    // DPDK virtio-user: num = 0 | 1 << 15 for a fresh packed ring; used mirrors avail.
    expect(decodePackedBase(0x8000)).toEqual({ availIdx: 0, availWrap: true, usedIdx: 0, usedWrap: true });
    expect(encodePackedBase({ availIdx: 1, availWrap: false, usedIdx: 2, usedWrap: true })).toBe(0x8002_0001);
  });
});

describe('per-request rules', () => {
  const h = (request: number, size: number) => ({ request, flags: 1, size });

  it('accepts what real front-ends send', () => {
    expect(() => checkFrontendRequest(h(FrontendRequest.GET_FEATURES, 0), 0)).not.toThrow();
    expect(() => checkFrontendRequest(h(FrontendRequest.SET_MEM_TABLE, memoryTableSize(1)), 1)).not.toThrow();
    expect(() => checkFrontendRequest(h(FrontendRequest.SET_VRING_KICK, 8), 1)).not.toThrow();
    expect(() => checkFrontendRequest(h(FrontendRequest.SET_VRING_KICK, 8), 0)).not.toThrow();
    expect(() => checkFrontendRequest(h(FrontendRequest.GET_CONFIG, 12 + 57), 0)).not.toThrow();
    expect(() => checkFrontendRequest(h(FrontendRequest.REM_MEM_REG, 40), 1)).not.toThrow();
  });

  it.each([
    ['unknown request', h(99, 0), 0, /unknown request/],
    ['size mismatch on SET_FEATURES', h(FrontendRequest.SET_FEATURES, 4), 0, /payload size 4/],
    ['size on GET_FEATURES', h(FrontendRequest.GET_FEATURES, 8), 0, /payload size 8/],
    ['vring addr too short', h(FrontendRequest.SET_VRING_ADDR, 32), 0, /expected 40/],
    ['fd on SET_FEATURES', h(FrontendRequest.SET_FEATURES, 8), 1, /1 fd\(s\) attached, expected 0/],
    ['no fd on SET_LOG_BASE', h(FrontendRequest.SET_LOG_BASE, 16), 0, /expected 1/],
    ['two fds on SET_VRING_CALL', h(FrontendRequest.SET_VRING_CALL, 8), 2, /expected 0..1/],
    ['nine fds', h(FrontendRequest.SET_MEM_TABLE, memoryTableSize(8)), 9, /at most 8/],
  ])('refuses %s', (_name, header, fds, message) => {
    expect(() => checkFrontendRequest(header, fds)).toThrow(message);
  });

  it('knows which requests have a reply body', () => {
    const logShm = bit(ProtocolFeature.LOG_SHMFD);
    expect(hasReplyBody(FrontendRequest.GET_FEATURES, 0n)).toBe(true);
    expect(hasReplyBody(FrontendRequest.GET_VRING_BASE, 0n)).toBe(true);
    expect(hasReplyBody(FrontendRequest.SET_LOG_BASE, 0n)).toBe(false);
    expect(hasReplyBody(FrontendRequest.SET_LOG_BASE, logShm)).toBe(true);
    expect(hasReplyBody(FrontendRequest.SET_MEM_TABLE, logShm)).toBe(false);
    expect(hasReplyBody(FrontendRequest.GET_INFLIGHT_FD, 0n)).toBe(true);
  });
});
