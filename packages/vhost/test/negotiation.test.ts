import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { native } from '@vhost-ts/native';
import {
  FrontendRequest,
  ProtocolFeature,
  REPLY_FLAGS,
  VHOST_F_LOG_ALL,
  VHOST_USER_F_PROTOCOL_FEATURES,
  bit,
  bits,
  decodeU64,
  decodeVringState,
  encodeVringState,
} from '@vhost-ts/vhost/protocol';
import { DEFAULT_PROTOCOL_FEATURES, VIRTIO_F_RING_PACKED, type VhostDevice } from '@vhost-ts/vhost';
import { ScriptedFrontend, TestMemory, ringLayout } from './support/frontend.js';
import { startHarness, type Harness } from './support/harness.js';
import {
  STATUS_DRIVER_OK,
  TEST_FEATURES,
  TEST_PROTOCOL,
  barrier,
  closeRingFds,
  configureRing,
  negotiate,
  sendFd,
  sendMemTable,
  u64,
  type RingFds,
} from './support/scenario.js';

let h: Harness;
let fe: ScriptedFrontend;
let mem: TestMemory;
let rings: RingFds[];

beforeEach(async () => {
  h = await startHarness({ features: TEST_FEATURES, maxQueues: 4 });
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

/** Brings rings 0 and 1 up (STATUS negotiated, DRIVER_OK last). */
async function bringUp(options: { features?: bigint; protocol?: bigint } = {}): Promise<VhostDevice> {
  await negotiate(fe, options);
  await sendMemTable(fe, mem);
  rings.push(await configureRing(fe, 0, { enable: true }), await configureRing(fe, 1, { enable: true }));
  fe.setU64(FrontendRequest.SET_STATUS, BigInt(STATUS_DRIVER_OK));
  await barrier(fe);
  expect(h.count('newDevice')).toBe(1);
  return h.lastDevice();
}

describe('feature negotiation', () => {
  it('offers the driver features and refuses bits it did not offer', async () => {
    expect(await fe.getU64(FrontendRequest.GET_FEATURES)).toBe(TEST_FEATURES);
    const pf = await fe.getU64(FrontendRequest.GET_PROTOCOL_FEATURES);
    fe.setU64(FrontendRequest.SET_PROTOCOL_FEATURES, pf & bit(ProtocolFeature.REPLY_ACK));
    expect(await fe.ack(FrontendRequest.SET_FEATURES, u64(TEST_FEATURES | bit(40)))).toBe(1n);
    await h.logger.waitFor(/SET_FEATURES refused \(failure reply\): .*did not offer: 0x10000000000/);
    expect(await fe.ack(FrontendRequest.SET_FEATURES, u64(TEST_FEATURES))).toBe(0n);
    expect(h.lastDevice().features).toBe(TEST_FEATURES);
  });

  it('answers GET_FEATURES at any time (QEMU uses it as a sync)', async () => {
    await bringUp();
    expect(await fe.getU64(FrontendRequest.GET_FEATURES)).toBe(TEST_FEATURES);
  });
});

describe('protocol feature negotiation', () => {
  it('offers the default set without CONFIG and INFLIGHT_SHMFD unless configured', async () => {
    const pf = await fe.getU64(FrontendRequest.GET_PROTOCOL_FEATURES);
    expect(pf).toBe(DEFAULT_PROTOCOL_FEATURES & ~bits(ProtocolFeature.CONFIG, ProtocolFeature.INFLIGHT_SHMFD));
    for (const f of [ProtocolFeature.MQ, ProtocolFeature.LOG_SHMFD, ProtocolFeature.RARP, ProtocolFeature.REPLY_ACK, ProtocolFeature.NET_MTU, ProtocolFeature.BACKEND_REQ, ProtocolFeature.RESET_DEVICE, ProtocolFeature.CONFIGURE_MEM_SLOTS, ProtocolFeature.STATUS]) {
      expect(pf & bit(f)).not.toBe(0n);
    }
    expect(pf & bit(ProtocolFeature.INBAND_NOTIFICATIONS)).toBe(0n);
  });

  it('offers CONFIG with a config space and INFLIGHT_SHMFD when asked', async () => {
    const h2 = await startHarness({ features: TEST_FEATURES, config: { get: () => new Uint8Array(0) }, inflight: true });
    const fe2 = ScriptedFrontend.connect(h2.socketPath);
    try {
      const pf = await fe2.getU64(FrontendRequest.GET_PROTOCOL_FEATURES);
      expect(pf & bits(ProtocolFeature.CONFIG, ProtocolFeature.INFLIGHT_SHMFD)).toBe(bits(ProtocolFeature.CONFIG, ProtocolFeature.INFLIGHT_SHMFD));
    } finally {
      fe2.close();
      await h2.stop();
    }
  });

  it('refuses protocol features it did not offer', async () => {
    fe.setU64(FrontendRequest.SET_PROTOCOL_FEATURES, bit(ProtocolFeature.REPLY_ACK));
    expect(await fe.ack(FrontendRequest.SET_PROTOCOL_FEATURES, u64(bit(ProtocolFeature.INBAND_NOTIFICATIONS)))).toBe(1n);
    expect(h.logger.has(/did not offer/)).toBe(true);
  });

  it('answers GET_QUEUE_NUM with MQ', async () => {
    fe.setU64(FrontendRequest.SET_PROTOCOL_FEATURES, bit(ProtocolFeature.MQ));
    expect(await fe.getU64(FrontendRequest.GET_QUEUE_NUM)).toBe(4n);
  });
});

describe('REPLY_ACK', () => {
  it('acks every NEED_REPLY request with 0, and requests with a reply body get only that body', async () => {
    fe.setU64(FrontendRequest.SET_PROTOCOL_FEATURES, TEST_PROTOCOL);
    expect(await fe.ack(FrontendRequest.SET_OWNER)).toBe(0n);
    // GET_FEATURES with NEED_REPLY: one reply (the features), no extra ack.
    const r = await fe.request(FrontendRequest.GET_FEATURES, undefined, { needReply: true });
    expect(r.header.flags).toBe(REPLY_FLAGS);
    expect(decodeU64(r.payload)).toBe(TEST_FEATURES);
    const next = await fe.request(FrontendRequest.GET_PROTOCOL_FEATURES);
    expect(next.header.request).toBe(FrontendRequest.GET_PROTOCOL_FEATURES);
    // SET_VRING_NUM with a bad size and NEED_REPLY: failure, connection stays.
    expect(await fe.ack(FrontendRequest.SET_VRING_NUM, encodeVringState({ index: 0, num: 3 }))).toBe(1n);
    expect(await fe.ack(FrontendRequest.SET_VRING_NUM, encodeVringState({ index: 0, num: 256 }))).toBe(0n);
  });
});

describe('readiness rule', () => {
  it('fires newDevice exactly when every named ring is usable and DRIVER_OK is set', async () => {
    await negotiate(fe);
    await sendMemTable(fe, mem);
    rings.push(await configureRing(fe, 0));
    rings.push(await configureRing(fe, 1));
    expect(h.count('newDevice')).toBe(0); // not enabled yet
    fe.vringState(FrontendRequest.SET_VRING_ENABLE, 0, 1);
    fe.vringState(FrontendRequest.SET_VRING_ENABLE, 1, 1);
    await barrier(fe);
    expect(h.count('newDevice')).toBe(0); // STATUS negotiated: DRIVER_OK missing
    fe.setU64(FrontendRequest.SET_STATUS, 0xbn);
    await barrier(fe);
    expect(h.count('newDevice')).toBe(0);
    fe.setU64(FrontendRequest.SET_STATUS, BigInt(STATUS_DRIVER_OK));
    await barrier(fe);
    expect(h.count('newDevice')).toBe(1);
    const dev = h.lastDevice();
    expect(dev.running).toBe(true);
    expect(dev.vringCount).toBe(2);
    expect(dev.vring(0).usable && dev.vring(1).usable).toBe(true);
    expect(dev.vring(0).descGpa).toBe(ringLayout(0).descOff);
    expect(dev.status).toBe(STATUS_DRIVER_OK);
  });

  it('waits for a ring named only by SET_VRING_CALL (DPDK sends CALL for every ring first)', async () => {
    await negotiate(fe, { protocol: bits(ProtocolFeature.REPLY_ACK, ProtocolFeature.MQ) });
    const spareCall = native.eventfdCreate(0);
    sendFd(fe, FrontendRequest.SET_VRING_CALL, 2, spareCall);
    native.close(spareCall);
    await sendMemTable(fe, mem);
    rings.push(await configureRing(fe, 0, { enable: true }), await configureRing(fe, 1, { enable: true }));
    expect(h.count('newDevice')).toBe(0); // ring 2 named but not ready
    rings.push(await configureRing(fe, 2, { enable: true }));
    expect(h.count('newDevice')).toBe(1);
    expect(h.lastDevice().vringCount).toBe(3);
  });

  it('counts a ring with the no-fd bit on kick and call as ready (polling)', async () => {
    await negotiate(fe, { protocol: bit(ProtocolFeature.REPLY_ACK) });
    await sendMemTable(fe, mem);
    fe.vringState(FrontendRequest.SET_VRING_NUM, 0, 256);
    fe.vringAddr(0, ringLayout(0));
    fe.vringFd(FrontendRequest.SET_VRING_KICK, 0, null);
    fe.vringFd(FrontendRequest.SET_VRING_CALL, 0, null);
    fe.vringState(FrontendRequest.SET_VRING_ENABLE, 0, 1);
    await barrier(fe);
    expect(h.count('newDevice')).toBe(1);
    const v = h.lastDevice().vring(0);
    expect([v.kickFd, v.kickPolling, v.callFd, v.callPolling, v.started]).toEqual([-1, true, -1, true, true]);
  });

  it('with requiredQueues only those rings count', async () => {
    const h2 = await startHarness({ features: TEST_FEATURES, requiredQueues: 2 });
    const fe2 = ScriptedFrontend.connect(h2.socketPath);
    try {
      await negotiate(fe2, { protocol: bit(ProtocolFeature.REPLY_ACK) });
      await sendMemTable(fe2, mem);
      rings.push(await configureRing(fe2, 0, { enable: true }), await configureRing(fe2, 1, { enable: true }), await configureRing(fe2, 2));
      expect(h2.count('newDevice')).toBe(1); // ring 2 is not enabled, and not required
      fe2.vringState(FrontendRequest.SET_VRING_ENABLE, 2, 1);
      await barrier(fe2);
      expect(h2.events.filter((e) => e.name === 'vringStateChanged').map((e) => e.args)).toEqual([[2, true]]);
    } finally {
      fe2.close();
      await h2.stop();
    }
  });

  it('auto-enables rings when bit 30 is not negotiated, and SET_FEATURES never disables', async () => {
    fe.send(FrontendRequest.SET_OWNER);
    fe.setU64(FrontendRequest.SET_FEATURES, bit(32));
    const fd = mem.dupFd();
    fe.setMemTable([{ guestPhysAddr: 0n, memorySize: BigInt(mem.size), userspaceAddr: 0x7f00_0000_0000n, mmapOffset: 0n }], [fd]);
    native.close(fd);
    rings.push(await configureRing(fe, 0));
    expect(h.count('newDevice')).toBe(1);
    expect(h.lastDevice().vring(0).enabled).toBe(true);
  });
});

describe('stop and start', () => {
  it('GET_VRING_BASE destroys the running device first and answers the index the data plane wrote back', async () => {
    const dev = await bringUp();
    h.hooks.destroyDevice = async () => {
      await new Promise((r) => setTimeout(r, 30)); // the data plane takes a while to stop
      dev.setVringBase(0, { lastAvailIdx: 42, lastUsedIdx: 40 });
      dev.setVringBase(1, { lastAvailIdx: 7, lastUsedIdx: 7 });
    };
    const r0 = await fe.request(FrontendRequest.GET_VRING_BASE, encodeVringState({ index: 0, num: 0 }));
    expect(h.count('destroyDevice')).toBe(1);
    expect(decodeVringState(r0.payload)).toEqual({ index: 0, num: 42 });
    const r1 = await fe.request(FrontendRequest.GET_VRING_BASE, encodeVringState({ index: 1, num: 0 }));
    expect(decodeVringState(r1.payload)).toEqual({ index: 1, num: 7 });
    expect(h.count('destroyDevice')).toBe(1); // only the first stop
    expect(dev.vring(0).started).toBe(false);
    expect(dev.vring(0).kickFd).toBe(-1);
    expect(dev.running).toBe(false);

    // Restart: new base and kick.
    fe.vringState(FrontendRequest.SET_VRING_BASE, 0, 42);
    fe.vringState(FrontendRequest.SET_VRING_BASE, 1, 7);
    sendFd(fe, FrontendRequest.SET_VRING_KICK, 0, rings[0]!.kick);
    await barrier(fe);
    expect(h.count('newDevice')).toBe(1);
    sendFd(fe, FrontendRequest.SET_VRING_KICK, 1, rings[1]!.kick);
    await barrier(fe);
    expect(h.count('newDevice')).toBe(2);
    expect(dev.vring(0).lastAvailIdx).toBe(42);
  });

  it('takes the used index from the guest used ring on SET_VRING_ADDR (split)', async () => {
    await negotiate(fe);
    await sendMemTable(fe, mem);
    mem.view.setUint16(ringLayout(0).usedOff + 2, 9, true);
    fe.vringState(FrontendRequest.SET_VRING_NUM, 0, 256);
    fe.vringState(FrontendRequest.SET_VRING_BASE, 0, 11);
    fe.vringAddr(0, ringLayout(0));
    await barrier(fe);
    const dev = h.lastDevice();
    expect(dev.vring(0).lastAvailIdx).toBe(11);
    expect(dev.vring(0).lastUsedIdx).toBe(9);
    const r = await fe.request(FrontendRequest.GET_VRING_BASE, encodeVringState({ index: 0, num: 0 }));
    expect(decodeVringState(r.payload).num).toBe(11);
  });

  it('encodes packed ring bases (wrap counters, DPDK 16-bit form)', async () => {
    const h2 = await startHarness({ features: TEST_FEATURES | bit(VIRTIO_F_RING_PACKED) });
    const fe2 = ScriptedFrontend.connect(h2.socketPath);
    try {
      await negotiate(fe2, { protocol: bit(ProtocolFeature.REPLY_ACK) });
      // A packed ring need not be a power of two.
      expect(await fe2.ack(FrontendRequest.SET_VRING_NUM, encodeVringState({ index: 0, num: 100 }))).toBe(0n);
      // DPDK virtio-user: num = 0 | 1 << 15 for a fresh ring: used mirrors avail.
      fe2.vringState(FrontendRequest.SET_VRING_BASE, 0, 0x8000);
      let r = await fe2.request(FrontendRequest.GET_VRING_BASE, encodeVringState({ index: 0, num: 0 }));
      expect(decodeVringState(r.payload).num).toBe(0x8000_8000);
      const full = 5 | (3 << 16) | 0x8000_0000; // avail 5 wrap 0, used 3 wrap 1
      fe2.vringState(FrontendRequest.SET_VRING_BASE, 0, full >>> 0);
      r = await fe2.request(FrontendRequest.GET_VRING_BASE, encodeVringState({ index: 0, num: 0 }));
      expect(decodeVringState(r.payload).num).toBe(full >>> 0);
      const v = h2.lastDevice().vring(0);
      expect([v.lastAvailIdx, v.availWrapCounter, v.lastUsedIdx, v.usedWrapCounter]).toEqual([5, false, 3, true]);
      // Beyond the ring: avail index 100 of a 100-entry ring.
      expect(await fe2.ack(FrontendRequest.SET_VRING_BASE, encodeVringState({ index: 0, num: 100 }))).toBe(1n);
    } finally {
      fe2.close();
      await h2.stop();
    }
  });

  it('SET_FEATURES switching the ring layout resets a base set for the other layout (a split 0x8000 is no packed base)', async () => {
    const h2 = await startHarness({ features: TEST_FEATURES | bit(VIRTIO_F_RING_PACKED) });
    const fe2 = ScriptedFrontend.connect(h2.socketPath);
    try {
      const { offered } = await negotiate(fe2, { protocol: bit(ProtocolFeature.REPLY_ACK), features: TEST_FEATURES });
      expect(await fe2.ack(FrontendRequest.SET_VRING_NUM, encodeVringState({ index: 0, num: 64 }))).toBe(0n);
      expect(await fe2.ack(FrontendRequest.SET_VRING_BASE, encodeVringState({ index: 0, num: 0x8000 }))).toBe(0n);
      expect(await fe2.ack(FrontendRequest.SET_FEATURES, u64(offered))).toBe(0n); // RING_PACKED on
      const r = await fe2.request(FrontendRequest.GET_VRING_BASE, encodeVringState({ index: 0, num: 0 }));
      expect(decodeVringState(r.payload).num).toBe(0x8000_8000); // the initial packed base
      expect(h2.logger.has(/internal error/)).toBe(false);
    } finally {
      fe2.close();
      await h2.stop();
    }
  });
});

describe('while running', () => {
  it('reports enable/disable and a call fd switch through vringStateChanged', async () => {
    const dev = await bringUp();
    fe.vringState(FrontendRequest.SET_VRING_ENABLE, 1, 0);
    await barrier(fe);
    expect(h.events.filter((e) => e.name === 'vringStateChanged').map((e) => e.args)).toEqual([[1, false]]);
    expect(dev.running).toBe(true); // disabling a ring does not destroy the device
    fe.vringState(FrontendRequest.SET_VRING_ENABLE, 1, 1);
    const oldCall = dev.vring(0).callFd;
    const newCall = native.eventfdCreate(0);
    sendFd(fe, FrontendRequest.SET_VRING_CALL, 0, newCall);
    native.close(newCall);
    await barrier(fe);
    expect(h.events.filter((e) => e.name === 'vringStateChanged').map((e) => e.args)).toEqual([
      [1, false],
      [1, true],
      [0, false],
      [0, true],
    ]);
    expect(dev.vring(0).callFd).not.toBe(oldCall);
  });

  it('passes LOG_ALL toggling to featuresChanged and refuses other changes', async () => {
    const dev = await bringUp();
    expect(await fe.ack(FrontendRequest.SET_FEATURES, u64(TEST_FEATURES))).toBe(0n);
    expect(await fe.ack(FrontendRequest.SET_FEATURES, u64(TEST_FEATURES & ~bit(VHOST_F_LOG_ALL)))).toBe(0n);
    expect(h.events.filter((e) => e.name === 'featuresChanged').map((e) => e.args[0])).toEqual([TEST_FEATURES & ~bit(VHOST_F_LOG_ALL)]);
    expect(dev.logging).toBe(false);
    expect(await fe.ack(FrontendRequest.SET_FEATURES, u64(TEST_FEATURES & ~bit(32)))).toBe(1n);
    expect(dev.vring(0).enabled).toBe(true);
    expect(dev.features & bit(VHOST_USER_F_PROTOCOL_FEATURES)).not.toBe(0n);
  });

  it('destroys on DRIVER_OK cleared, RESET_DEVICE resets the rings', async () => {
    const dev = await bringUp({ protocol: TEST_PROTOCOL | bit(ProtocolFeature.RESET_DEVICE) });
    fe.setU64(FrontendRequest.SET_STATUS, 0n);
    await barrier(fe);
    expect(h.count('destroyDevice')).toBe(1);
    fe.setU64(FrontendRequest.SET_STATUS, BigInt(STATUS_DRIVER_OK));
    await barrier(fe);
    expect(h.count('newDevice')).toBe(2);
    expect(await fe.ack(FrontendRequest.RESET_DEVICE)).toBe(0n);
    expect(h.count('destroyDevice')).toBe(2);
    expect(dev.vring(0).size).toBe(0);
    expect(dev.vring(0).callFd).toBe(-1);
    expect(dev.features).toBe(0n);
  });

  it('setNeedsReset sets NEEDS_RESET in the status GET_STATUS reports', async () => {
    const dev = await bringUp();
    dev.setNeedsReset('vring 0: descriptor index 300 >= ring size 256');
    dev.setNeedsReset('again');
    expect(await fe.getU64(FrontendRequest.GET_STATUS)).toBe(BigInt(STATUS_DRIVER_OK | 0x40));
    expect(h.logger.lines.filter((l) => /needs a reset/.test(l))).toEqual([expect.stringMatching(/descriptor index 300/)]);
  });

  it('closes the connection when a callback hangs', async () => {
    await negotiate(fe);
    await sendMemTable(fe, mem);
    h.hooks.newDevice = () => new Promise(() => undefined);
    rings.push(await configureRing(fe, 0, { enable: true }));
    fe.setU64(FrontendRequest.SET_STATUS, BigInt(STATUS_DRIVER_OK));
    expect(await fe.waitClosed(5000)).toBe(true);
    await h.logger.waitFor(/connection closed: newDevice callback did not settle within 2000 ms/);
    await h.waitEvent('destroyConnection');
  });
});
