import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { F_SEAL_SHRINK, native } from '@vhost-ts/native';
import {
  FrontendRequest,
  ProtocolFeature,
  VHOST_F_LOG_ALL,
  VRING_F_LOG,
  bit,
  decodeInflight,
  decodeU64,
  encodeInflight,
  encodeLog,
  encodeSingleRegion,
} from '@vhost-ts/vhost/protocol';
import { MAX_VIEW_BYTES, inflightQueueRegionSize, type VhostDevice } from '@vhost-ts/vhost';
import { ScriptedFrontend, TEST_UVA, TestMemory, ringLayout } from './support/frontend.js';
import { expectBackToBaseline, settledBaseline, startHarness, type Harness } from './support/harness.js';
import { STATUS_DRIVER_OK, TEST_FEATURES, TEST_PROTOCOL, barrier, closeRingFds, configureRing, negotiate, sendMemTable, standardRegion, u64, type RingFds } from './support/scenario.js';

let h: Harness;
let fe: ScriptedFrontend;
let mem: TestMemory;
let rings: RingFds[];

beforeEach(async () => {
  h = await startHarness({ features: TEST_FEATURES, maxQueues: 2, inflight: true });
  fe = ScriptedFrontend.connect(h.socketPath);
  mem = new TestMemory(1 << 20);
  rings = [];
});

afterEach(async () => {
  fe.close();
  await h.stop();
  closeRingFds(rings);
  mem.release();
});

const PROTOCOL = TEST_PROTOCOL | bit(ProtocolFeature.CONFIGURE_MEM_SLOTS) | bit(ProtocolFeature.INFLIGHT_SHMFD);

function readGuestByte(dev: VhostDevice, gpa: number): number | undefined {
  const t = dev.translateGpa(gpa, 1);
  return t === null ? undefined : new Uint8Array(t.view.sab, t.view.sabOffset + t.offset, 1)[0];
}

async function bringUp(): Promise<VhostDevice> {
  await negotiate(fe, { protocol: PROTOCOL });
  await sendMemTable(fe, mem);
  rings.push(await configureRing(fe, 0, { enable: true }), await configureRing(fe, 1, { enable: true }));
  fe.setU64(FrontendRequest.SET_STATUS, BigInt(STATUS_DRIVER_OK));
  await barrier(fe);
  expect(h.count('newDevice')).toBe(1);
  return h.lastDevice();
}

describe('repeat SET_MEM_TABLE while running', () => {
  it('pauses (memoryChanging awaited), swaps, resumes; never destroys; the old mapping is released after the pause', async () => {
    const dev = await bringUp();
    mem.bytes[0x100] = 0xab;
    const oldRegion = dev.memory!.regions[0]!;
    expect(new Uint8Array(oldRegion.sab, oldRegion.sabOffset)[0x100]).toBe(0xab);
    let seenDuringPause = -1;
    h.hooks.memoryChanging = async () => {
      await new Promise((r) => setTimeout(r, 20));
      seenDuringPause = new Uint8Array(oldRegion.sab, oldRegion.sabOffset)[0x100]!; // still mapped while pausing
    };
    // The same guest RAM moved to another front-end address: rings must re-translate.
    const mem2 = new TestMemory(1 << 20, 'second');
    const liveBefore = native.liveMappings();
    try {
      mem2.bytes.set(mem.bytes);
      const fd = mem2.dupFd();
      fe.setMemTable([{ ...standardRegion(mem2), userspaceAddr: TEST_UVA }], [fd], true);
      native.close(fd);
      expect(decodeU64((await fe.recv()).payload)).toBe(0n);
      await barrier(fe);
      expect(seenDuringPause).toBe(0xab);
      expect(h.events.map((e) => e.name).filter((n) => n.startsWith('memory') || n.endsWith('Device'))).toEqual(['newDevice', 'memoryChanging', 'memoryChanged']);
      expect(h.count('destroyDevice')).toBe(0);
      expect(dev.running).toBe(true);
      expect(new Uint8Array(oldRegion.sab, oldRegion.sabOffset)[0x100]).toBe(0); // released: reads zeros
      expect(native.liveMappings()).toBe(liveBefore); // one released, one mapped
      expect(dev.memory!.regions[0]!.sab).not.toBe(oldRegion.sab);
      expect(dev.vring(0).descGpa).toBe(ringLayout(0).descOff);
    } finally {
      mem2.release();
    }
  });

  it('destroys the device instead of resuming when the rings no longer translate', async () => {
    await bringUp();
    const fd = mem.dupFd();
    fe.setMemTable([{ ...standardRegion(mem), userspaceAddr: 0x1000_0000n }], [fd], true);
    native.close(fd);
    expect(decodeU64((await fe.recv()).payload)).toBe(0n);
    await barrier(fe);
    expect(h.events.map((e) => e.name).slice(-2)).toEqual(['memoryChanging', 'destroyDevice']);
    expect(h.lastDevice().vring(0).descGpa).toBe(-1);
    expect(h.logger.has(/vring 0: addresses no longer translate/)).toBe(true);
  });
});

describe('a memory change that strands a non-required ring', () => {
  it('stops that ring during the pause (vringStateChanged false) and resumes the device', async () => {
    const h2 = await startHarness({ features: TEST_FEATURES, requiredQueues: 1 });
    const fe2 = ScriptedFrontend.connect(h2.socketPath);
    try {
      await negotiate(fe2, { protocol: PROTOCOL });
      await sendMemTable(fe2, mem);
      rings.push(await configureRing(fe2, 0, { enable: true }), await configureRing(fe2, 1, { enable: true }));
      fe2.setU64(FrontendRequest.SET_STATUS, BigInt(STATUS_DRIVER_OK));
      await barrier(fe2);
      expect(h2.count('newDevice')).toBe(1);
      // Ring 1 lives at 0x14000: a table of the first 0x14000 bytes no longer holds it.
      const fd = mem.dupFd();
      fe2.setMemTable([{ ...standardRegion(mem), memorySize: 0x14000n }], [fd], true);
      native.close(fd);
      expect(decodeU64((await fe2.recv()).payload)).toBe(0n);
      await barrier(fe2);
      const tail = h2.events.slice(-3).map((e) => [e.name, ...e.args]);
      expect(tail).toEqual([['memoryChanging'], ['vringStateChanged', 1, false], ['memoryChanged']]);
      expect(h2.lastDevice().running).toBe(true);
    } finally {
      fe2.close();
      await h2.stop();
    }
  });
});

describe('ADD_MEM_REG / REM_MEM_REG', () => {
  it('adds and removes regions, translating GPAs, refusing overlap and unknown regions', async () => {
    await negotiate(fe, { protocol: PROTOCOL });
    expect(await fe.getU64(FrontendRequest.GET_MAX_MEM_SLOTS)).toBe(8n);
    const base = await settledBaseline();
    const dev = h.lastDevice();
    const regionA = { guestPhysAddr: 0n, memorySize: 0x80000n, userspaceAddr: TEST_UVA, mmapOffset: 0n };
    const regionB = { guestPhysAddr: 0x100000n, memorySize: 0x40000n, userspaceAddr: TEST_UVA + 0x80000n, mmapOffset: 0x80000n };
    let fd = mem.dupFd();
    expect(await fe.ack(FrontendRequest.ADD_MEM_REG, encodeSingleRegion(regionA), { fds: [fd] })).toBe(0n);
    native.close(fd);
    fd = mem.dupFd();
    expect(await fe.ack(FrontendRequest.ADD_MEM_REG, encodeSingleRegion(regionB), { fds: [fd] })).toBe(0n);
    native.close(fd);
    expect(dev.memory!.regions.length).toBe(2);
    mem.bytes[0x80010] = 0x5a;
    expect(readGuestByte(dev, 0x100010)).toBe(0x5a); // (no SAB reference kept: the leak check below needs GC to unmap)
    expect(dev.translateGpa(0x90000, 1)).toBeNull(); // the hole between regions

    fd = mem.dupFd();
    expect(await fe.ack(FrontendRequest.ADD_MEM_REG, encodeSingleRegion({ ...regionB, guestPhysAddr: 0x120000n }), { fds: [fd] })).toBe(1n);
    native.close(fd);
    await h.logger.waitFor(/overlapping regions/);
    expect(await fe.ack(FrontendRequest.REM_MEM_REG, encodeSingleRegion({ ...regionB, memorySize: 0x1000n }))).toBe(1n);

    // REM_MEM_REG with an fd attached: "the back-end MUST close it".
    fd = mem.dupFd();
    expect(await fe.ack(FrontendRequest.REM_MEM_REG, encodeSingleRegion({ ...regionB, mmapOffset: 0n }), { fds: [fd] })).toBe(0n);
    native.close(fd);
    expect(dev.translateGpa(0x100010, 1)).toBeNull();
    expect(await fe.ack(FrontendRequest.REM_MEM_REG, encodeSingleRegion(regionA))).toBe(0n);
    expect(dev.memory).toBeNull();
    await expectBackToBaseline(base);
  });
});

describe('ADD_MEM_REG of a region already mapped (QEMU: one vhost device per net queue pair)', () => {
  it('counts identical adds as references and unmaps the region with its last REM_MEM_REG', async () => {
    await negotiate(fe, { protocol: PROTOCOL });
    const base = await settledBaseline();
    const dev = h.lastDevice();
    const region = { guestPhysAddr: 0n, memorySize: 0x80000n, userspaceAddr: TEST_UVA, mmapOffset: 0n };
    for (let i = 0; i < 2; i++) {
      const fd = mem.dupFd();
      expect(await fe.ack(FrontendRequest.ADD_MEM_REG, encodeSingleRegion(region), { fds: [fd] })).toBe(0n);
      native.close(fd);
    }
    expect(dev.memory!.regions.length).toBe(1);
    expect(await fe.ack(FrontendRequest.REM_MEM_REG, encodeSingleRegion(region))).toBe(0n);
    expect(dev.memory!.regions.length).toBe(1); // one reference left
    mem.bytes[0x10] = 0x7e;
    expect(readGuestByte(dev, 0x10)).toBe(0x7e);
    expect(await fe.ack(FrontendRequest.REM_MEM_REG, encodeSingleRegion(region))).toBe(0n);
    expect(dev.memory).toBeNull();
    expect(await fe.ack(FrontendRequest.REM_MEM_REG, encodeSingleRegion(region))).toBe(1n);
    await expectBackToBaseline(base);
  });
});

describe('mapping details', () => {
  it('seals sealable memfds against shrinking, maps from a page-aligned offset, splits big regions into views', async () => {
    await negotiate(fe, { protocol: PROTOCOL });
    const big = native.memfdCreate('big');
    native.ftruncate(big, 3 * 2 ** 30 + 0x2000); // sparse: nothing is touched
    mem.bytes[0x1800] = 0x77;
    const fdSmall = mem.dupFd();
    fe.setMemTable(
      [
        { guestPhysAddr: 0n, memorySize: 0x10000n, userspaceAddr: TEST_UVA, mmapOffset: 0x1800n },
        { guestPhysAddr: 0x1_0000_0000n, memorySize: BigInt(3 * 2 ** 30), userspaceAddr: 0x7e00_0000_0000n, mmapOffset: 0x2000n },
      ],
      [fdSmall, big],
      true,
    );
    native.close(fdSmall);
    expect(decodeU64((await fe.recv()).payload)).toBe(0n);
    const dev = h.lastDevice();
    const [small, large] = dev.memory!.regions;
    expect(small!.sabOffset).toBe(0x800);
    expect(new Uint8Array(small!.sab, small!.sabOffset, 1)[0]).toBe(0x77);
    expect(large!.views.map((v) => [v.gpa, v.size])).toEqual([
      [2 ** 32, MAX_VIEW_BYTES],
      [2 ** 32 + MAX_VIEW_BYTES, 3 * 2 ** 30 - MAX_VIEW_BYTES],
    ]);
    expect(dev.translateGpa(2 ** 32 + MAX_VIEW_BYTES + 8, 8)!.offset).toBe(8);
    expect(native.getSeals(mem.fd) & F_SEAL_SHRINK).toBe(F_SEAL_SHRINK);
    expect(() => native.ftruncate(mem.fd, 0x1000)).toThrow(/EPERM/);
    native.close(big);
  });

  it('logs a region it cannot seal and still maps it when the size check passes', async () => {
    const h2 = await startHarness({ features: TEST_FEATURES });
    const fe2 = ScriptedFrontend.connect(h2.socketPath);
    try {
      await negotiate(fe2);
      const fd = native.memfdCreate('sealed-already');
      native.ftruncate(fd, 0x10000);
      native.addSeals(fd, 0x1); // F_SEAL_SEAL: no more seals can be added
      fe2.setMemTable([{ guestPhysAddr: 0n, memorySize: 0x10000n, userspaceAddr: TEST_UVA, mmapOffset: 0n }], [fd], true);
      native.close(fd);
      expect(decodeU64((await fe2.recv()).payload)).toBe(0n);
      await h2.logger.waitFor(/region 0: fd cannot be sealed against shrinking/);
    } finally {
      fe2.close();
      await h2.stop();
    }
  });
});

describe('dirty log', () => {
  it('maps SET_LOG_BASE, answers u64 0, and logs writes and used-ring updates while LOG_ALL is on', async () => {
    const dev = await bringUp();
    expect(await fe.ack(FrontendRequest.SET_FEATURES, u64(TEST_FEATURES & ~bit(VHOST_F_LOG_ALL)))).toBe(0n);
    const logMem = new TestMemory(0x2000, 'log');
    try {
      const fd = logMem.dupFd();
      const r = await fe.request(FrontendRequest.SET_LOG_BASE, encodeLog({ mmapSize: 0x1000n, mmapOffset: 0x1000n }), { fds: [fd] });
      native.close(fd);
      expect(decodeU64(r.payload)).toBe(0n);
      expect(h.events.map((e) => e.name).slice(-2)).toEqual(['memoryChanging', 'memoryChanged']);
      expect(dev.log!.size).toBe(0x1000);
      expect(dev.logWrite(0x5000, 1)).toBe(true); // logging off: nothing
      expect(logMem.bytes[0x1000]).toBe(0);
      expect(await fe.ack(FrontendRequest.SET_FEATURES, u64(TEST_FEATURES | bit(VHOST_F_LOG_ALL)))).toBe(0n);
      expect(dev.logWrite(0x5000, 0x1001)).toBe(true); // pages 5 and 6
      expect(logMem.bytes[0x1000]).toBe(0b0110_0000);
      // Used-ring logging only with VHOST_VRING_F_LOG on the ring, at log_guest_addr + offset.
      expect(dev.logUsedVring(0, 0, 4)).toBe(true);
      expect(logMem.bytes[0x1000]).toBe(0b0110_0000);
      fe.vringAddr(0, { ...ringLayout(0), flags: VRING_F_LOG, log: 0x3000n });
      await barrier(fe);
      expect(dev.logUsedVring(0, 0x1000, 4)).toBe(true); // page 4
      expect(logMem.bytes[0x1000]).toBe(0b0111_0000);
      expect(dev.logWrite(0x1000 * 8 * 0x1000, 1)).toBe(false); // beyond the bitmap
    } finally {
      logMem.release();
    }
  });
});

describe('inflight fd', () => {
  it('GET_INFLIGHT_FD allocates a memfd of the right size; SET_INFLIGHT_FD maps it back after a reconnect', async () => {
    await negotiate(fe, { protocol: PROTOCOL });
    const r = await fe.request(FrontendRequest.GET_INFLIGHT_FD, encodeInflight({ mmapSize: 0n, mmapOffset: 0n, numQueues: 2, queueSize: 128 }));
    expect(r.fds.length).toBe(1);
    const info = decodeInflight(r.payload);
    const perQueue = inflightQueueRegionSize(128, false);
    expect(perQueue).toBe(Math.ceil((16 * 128 + 16) / 64) * 64);
    expect(info).toEqual({ mmapSize: BigInt(2 * perQueue), mmapOffset: 0n, numQueues: 2, queueSize: 128 });
    const fd = r.fds[0]!;
    expect(native.fstatSize(fd)).toBe(2 * perQueue);
    const dev = h.lastDevice();
    // The data plane writes through dev.inflight; the front-end sees it in the memfd.
    new Uint8Array(dev.inflight!.sab)[dev.inflight!.offset + perQueue + 16] = 1;
    const frontView = native.mmap(fd, 0, 2 * perQueue);
    expect(new Uint8Array(frontView)[perQueue + 16]).toBe(1);
    native.release(frontView);

    // Back-end restart: a new connection gets the same fd back.
    fe.close();
    await h.waitEvent('destroyConnection');
    fe = ScriptedFrontend.connect(h.socketPath);
    await negotiate(fe, { protocol: PROTOCOL });
    expect(await fe.ack(FrontendRequest.SET_INFLIGHT_FD, encodeInflight(info), { fds: [fd] })).toBe(0n);
    native.close(fd);
    const dev2 = h.lastDevice();
    expect(dev2).not.toBe(dev);
    expect(dev2.inflight!.numQueues).toBe(2);
    expect(new Uint8Array(dev2.inflight!.sab)[dev2.inflight!.offset + perQueue + 16]).toBe(1);
    // Too small for its geometry: refused.
    const small = native.memfdCreate('small-inflight');
    native.ftruncate(small, 64);
    expect(await fe.ack(FrontendRequest.SET_INFLIGHT_FD, encodeInflight({ ...info, mmapSize: 64n }), { fds: [small] })).toBe(1n);
    native.close(small);
  });

  it('uses the packed layout (free list, wrap counters) when RING_PACKED is negotiated', async () => {
    const h2 = await startHarness({ features: TEST_FEATURES | bit(34), inflight: true });
    const fe2 = ScriptedFrontend.connect(h2.socketPath);
    try {
      await negotiate(fe2, { protocol: PROTOCOL });
      const r = await fe2.request(FrontendRequest.GET_INFLIGHT_FD, encodeInflight({ mmapSize: 0n, mmapOffset: 0n, numQueues: 1, queueSize: 4 }));
      expect(decodeInflight(r.payload).mmapSize).toBe(BigInt(inflightQueueRegionSize(4, true)));
      expect(inflightQueueRegionSize(4, true)).toBe(192);
      const area = h2.lastDevice().inflight!;
      const dv = new DataView(area.sab, area.offset);
      expect(dv.getUint8(20)).toBe(1); // used_wrap_counter
      expect([0, 1, 2, 3].map((j) => dv.getUint16(32 + j * 32 + 2, true))).toEqual([1, 2, 3, 4]); // desc[j].next
      native.close(r.fds[0]!);
    } finally {
      fe2.close();
      await h2.stop();
    }
  });
});
