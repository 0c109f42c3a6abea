/**
 * Replays of the DPDK vhost-user CVEs of May 2020 (fixed in DPDK 18.11.8 /
 * 19.11.2), each reproducing the original trigger shape against a vhost-ts
 * back-end (child process, data plane with the loopback module), plus shapes
 * of the same classes. After each: the back-end alive, a witness device in the
 * same process still moving traffic, and at the end fds and mappings back to
 * the baseline.
 *
 * Sources: NVD/OSV descriptions of each CVE and the DPDK 19.11.2 release notes
 * ("vhost: check log mmap offset and size overflow", "vhost: fix vring index
 * check", "vhost/crypto: validate keys lengths", "vhost: fix translated address
 * not checked", "vhost: fix potential memory space leak", "vhost: fix potential
 * fd leak").
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { native } from '@vhost-ts/native';
import { BackendRefusedError, FrontendDevice, FrontendMemory, VhostUserClient, type LayoutPlan } from '@vhost-ts/frontend';
import {
  DeviceStatus,
  FrontendRequest,
  ProtocolFeature,
  VHOST_F_LOG_ALL,
  VHOST_USER_F_PROTOCOL_FEATURES,
  bit,
  bits,
  encodeInflight,
  encodeLog,
  encodeMemoryTable,
  encodeSingleRegion,
  encodeU64,
  encodeVringAddr,
  encodeVringState,
  type MemoryRegionDesc,
} from '@vhost-ts/vhost/protocol';
import { VIRTQ_DESC_F_AVAIL as AV, VIRTQ_DESC_F_NEXT as NEXT, VIRTQ_DESC_F_WRITE as WRITE } from '@vhost-ts/virtio';
import { assertBackToBaseline, type ResourceSnapshot } from '../support/leaks.js';
import { ensureBuilt } from './lib/build.js';
import { BackendProcess } from './lib/backend-process.js';
import { HostileGuest } from './lib/hostile-guest.js';
import { startWitness, type Witness } from './lib/witness.js';

const RX = 0;
const TX = 1;
const U64_MAX = (1n << 64n) - 1n;

let be: BackendProcess;
let witness: Witness;
let baseline: ResourceSnapshot;

beforeAll(async () => {
  await ensureBuilt();
  be = await BackendProcess.start({
    drivers: [
      { name: 'dev', module: 'loopback', queuesPerWorker: 2, maxQueues: 2, features: [32, 28, 34], inflight: true, ackTimeoutMs: 2000 },
      { name: 'other', module: 'loopback', queuesPerWorker: 2, maxQueues: 2, features: [32] },
    ],
  });
  const g = await HostileGuest.open(be.sockets.dev!);
  await g.close();
  const w = await startWitness(be.sockets.other!);
  await w.flows(50);
  await w.close();
  baseline = await be.snapshot();
  witness = await startWitness(be.sockets.other!);
}, 200_000);

afterAll(async () => {
  await witness?.close().catch(() => undefined);
  await be?.stop();
});

/** A typed client after SET_OWNER, feature and protocol-feature negotiation. */
async function negotiated(protocol: bigint, features = bits(32, VHOST_USER_F_PROTOCOL_FEATURES)): Promise<VhostUserClient> {
  const c = await VhostUserClient.connect(be.sockets.dev!, { timeoutMs: 5000 });
  await c.setOwner();
  const offered = await c.getFeatures();
  const po = await c.getProtocolFeatures();
  await c.setProtocolFeatures(po & protocol);
  await c.setFeatures(offered & features);
  return c;
}

/** Resolves true when the back-end closed the connection within `ms`. */
async function closedWithin(c: VhostUserClient, ms = 3000): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const r = await Promise.race([c.closed.then(() => true), new Promise<boolean>((res) => (timer = setTimeout(() => res(false), ms)))]);
  clearTimeout(timer);
  return r;
}

/**
 * The request must be refused: a REPLY_ACK failure, or the connection closed. (A request
 * sent without NEED_REPLY resolves at once: then only a close counts as a refusal.)
 */
async function expectRefused(p: Promise<unknown>, c: VhostUserClient): Promise<'nack' | 'closed'> {
  try {
    await p;
  } catch (err) {
    if (err instanceof BackendRefusedError) return 'nack';
    if (await closedWithin(c, 3000)) return 'closed';
    throw err;
  }
  if (await closedWithin(c, 2000)) return 'closed';
  throw new Error('the request was accepted');
}

async function healthy(): Promise<void> {
  expect(be.alive, `the back-end died: ${JSON.stringify(be.exitInfo)}\n${be.stderr()}`).toBe(true);
  expect(await witness.flows(20, 5000), 'the witness device stopped moving traffic').toBe(true);
}

const ACK = bits(ProtocolFeature.REPLY_ACK, ProtocolFeature.MQ, ProtocolFeature.STATUS);

describe('CVE replays', () => {
  /**
   * CVE-2020-10722 (DPDK 18.05+, vhost_user_set_log_base): mmap_size + mmap_offset was not
   * checked for a 64-bit overflow, so the log was mapped with the wrapped (small) length
   * while log_size kept the huge value: dirty-page logging then wrote past the mapping
   * (host memory corruption). Fixed by "vhost: check log mmap offset and size overflow".
   */
  it('CVE-2020-10722: SET_LOG_BASE whose mmap_size + mmap_offset wraps 64 bits is refused, nothing mapped; a small log bounds dirty logging', async () => {
    const logFd = native.memfdCreate('cve-10722-log');
    native.ftruncate(logFd, 8192);
    try {
      const shapes: Array<{ mmapSize: bigint; mmapOffset: bigint }> = [
        { mmapSize: U64_MAX - 4095n, mmapOffset: 8192n }, // wraps to 4096: the original exploit shape
        { mmapSize: 4096n, mmapOffset: U64_MAX - 4095n }, // wraps to 0
        { mmapSize: 1n << 63n, mmapOffset: 1n << 63n }, // wraps to 0
        { mmapSize: U64_MAX, mmapOffset: 1n },
        { mmapSize: 0n, mmapOffset: 0n },
        { mmapSize: 8192n, mmapOffset: 4096n }, // no wrap, but beyond the fd
      ];
      const before = await be.nativeCounts();
      for (const s of shapes) {
        const c = await negotiated(ACK | bit(ProtocolFeature.LOG_SHMFD), bits(32, VHOST_USER_F_PROTOCOL_FEATURES, VHOST_F_LOG_ALL));
        try {
          // SET_LOG_BASE has a reply body with LOG_SHMFD, so a refusal closes the connection.
          const outcome = await expectRefused(c.request(FrontendRequest.SET_LOG_BASE, encodeLog(s), { fds: [logFd] }), c);
          expect(outcome, `mmap_size 0x${s.mmapSize.toString(16)} offset 0x${s.mmapOffset.toString(16)}`).toBe('closed');
        } finally {
          c.close();
        }
      }
      await new Promise((r) => setTimeout(r, 100));
      expect((await be.nativeCounts()).live).toBe(before.live);

      // The consequence the CVE had: logging past the log. A 64-byte log covers 2 MiB of GPA;
      // guest memory reaches further. Dirty logging with traffic must stay inside the 64 bytes.
      const client = await VhostUserClient.connect(be.sockets.dev!, { timeoutMs: 5000 });
      const fe = await FrontendDevice.start(client, {
        vrings: 2,
        queueSize: 64,
        deviceFeatures: bit(VHOST_F_LOG_ALL),
        protocolFeatures: ACK | bit(ProtocolFeature.LOG_SHMFD),
        memory: { kind: 'multi', size: 8 << 20, regions: 2 },
      });
      const log = native.mmap(logFd, 0, 8192);
      try {
        new Uint8Array(log).fill(0);
        expect((fe.features & bit(VHOST_F_LOG_ALL)) !== 0n).toBe(true);
        const reply = await client.request(FrontendRequest.SET_LOG_BASE, encodeLog({ mmapSize: 64n, mmapOffset: 0n }), { fds: [logFd] });
        expect(reply?.byteLength).toBe(8);
        // Frames through the loopback: RX buffers are written, so their pages are logged.
        const g = { fe };
        const txBufs: number[] = [];
        for (let k = 0; k < 16; k++) {
          const rxGpa = fe.memory.allocator.alloc(2048, 64).gpa;
          fe.vrings[RX]!.ring.add([rxGpa], [2048], 0, 1, k);
          const txGpa = fe.memory.allocator.alloc(64, 64).gpa;
          txBufs.push(txGpa);
          fe.vrings[TX]!.ring.add([txGpa], [64], 1, 0, k);
        }
        fe.vrings[RX]!.ring.publish();
        fe.vrings[TX]!.ring.publish();
        fe.kick(RX);
        fe.kick(TX);
        const used = { id: 0, len: 0, token: undefined as number | undefined };
        let got = 0;
        const end = Date.now() + 5000;
        while (got < 16 && Date.now() < end) {
          while (g.fe.vrings[RX]!.ring.getUsed(used)) got++;
          await new Promise((r) => setTimeout(r, 10));
        }
        expect(got).toBe(16);
        const bytes = new Uint8Array(log);
        expect(bytes.subarray(0, 64).some((b) => b !== 0), 'pages inside the log are marked').toBe(true);
        expect(bytes.subarray(64).every((b) => b === 0), 'nothing written past the 64-byte log').toBe(true);
      } finally {
        native.release(log);
        await fe.close();
      }
    } finally {
      native.close(logFd);
    }
    await healthy();
  });

  /**
   * CVE-2020-10723 (DPDK 17.05+): "integer truncation on the index of a payload": the u32
   * vring index of a message was copied into a uint16 and checked, then used untruncated
   * (or vice versa), so an index like 0x10001 passed the check and indexed past the
   * virtqueue array (memory corruption). Fixed by "vhost: fix vring index check".
   */
  it('CVE-2020-10723: vring indices that truncate to a valid one (0x10001, 0xffff0001, 0x80000001), the first invalid index and 257 are refused by every per-vring request, and no vring is touched', async () => {
    const mem = FrontendMemory.create({ kind: 'multi', size: 2 << 20, regions: 1 });
    const c = await negotiated(ACK);
    try {
      await c.setMemTable(mem.memoryTable(), mem.memoryTableFds());
      const ring = mem.allocator.alloc(0x3000, 4096).gpa;
      await c.setVringNum(1, 64);
      await c.setVringBase(1, 0);
      await c.setVringAddr({ index: 1, flags: 0, desc: BigInt(mem.gpaToVa(ring)), avail: BigInt(mem.gpaToVa(ring + 0x1000)), used: BigInt(mem.gpaToVa(ring + 0x2000)), log: 0n });
      const indices = [0x1_0001, 0xffff_0001, 0x8000_0001, 2, 257, 0xffff_ffff];
      for (const index of indices) {
        for (const [req, payload] of [
          [FrontendRequest.SET_VRING_NUM, encodeVringState({ index, num: 32 })],
          [FrontendRequest.SET_VRING_BASE, encodeVringState({ index, num: 1234 })],
          [FrontendRequest.SET_VRING_ENABLE, encodeVringState({ index, num: 1 })],
          [FrontendRequest.SET_VRING_ADDR, encodeVringAddr({ index, flags: 0, desc: BigInt(mem.gpaToVa(ring)), avail: BigInt(mem.gpaToVa(ring + 0x1000)), used: BigInt(mem.gpaToVa(ring + 0x2000)), log: 0n })],
        ] as const) {
          expect(await expectRefused(c.request(req, payload), c), `${FrontendRequest[req]} index 0x${index.toString(16)}`).toBe('nack');
        }
      }
      // KICK/CALL/ERR carry the index in bits 0-7 of a u64: higher bits must not be masked away.
      const efd = native.eventfdCreate(0);
      try {
        for (const value of [0x201n, 0x1_0000_0001n, 0x8000_0000_0000_0001n, 0x2n]) {
          for (const req of [FrontendRequest.SET_VRING_KICK, FrontendRequest.SET_VRING_CALL, FrontendRequest.SET_VRING_ERR]) {
            expect(await expectRefused(c.request(req, encodeU64(value), { fds: [efd] }), c), `${FrontendRequest[req]} 0x${value.toString(16)}`).toBe('nack');
          }
        }
      } finally {
        native.close(efd);
      }
      // Vring 1 (what the truncated indices alias) is untouched: its base is still 0.
      expect(await c.getVringBase(1)).toBe(0);
    } finally {
      c.close();
      mem.close();
    }
    // GET_VRING_BASE has a reply body: a bad index closes the connection.
    for (const index of [0x1_0001, 2]) {
      const c2 = await negotiated(ACK);
      try {
        expect(await expectRefused(c2.request(FrontendRequest.GET_VRING_BASE, encodeVringState({ index, num: 0 })), c2)).toBe('closed');
      } finally {
        c2.close();
      }
    }
    await healthy();
  });

  /**
   * CVE-2020-10724 (DPDK 18.11+, vhost-crypto): the session-creation message's key lengths
   * (cipher_key_len, auth_key_len) were not validated against the key buffers, so a
   * malicious front-end made the back-end read past them (information leak).
   * Fixed by "vhost/crypto: validate keys lengths". vhost-ts has no crypto device: the
   * messages must be refused without being parsed.
   */
  it('CVE-2020-10724: CREATE_CRYPTO_SESSION with key lengths beyond the key buffers is refused without being parsed', async () => {
    // DPDK's VhostUserCryptoSessionParam: session_id i64, op_code, cipher_algo, cipher_key_len,
    // auth_algo, auth_key_len, digest_len, aad_len u32, 4 bytes, cipher_key[64], auth_key[512].
    const param = new Uint8Array(8 + 7 * 4 + 4 + 64 + 512);
    const dv = new DataView(param.buffer);
    dv.setUint32(8 + 8, 0xffff_ffff, true); // cipher_key_len
    dv.setUint32(8 + 16, 0xffff_ffff, true); // auth_key_len
    for (const [payload, needReply, outcome] of [
      [param, true, 'closed'], // 616 bytes: beyond the largest payload, the header alone closes
      [param.subarray(0, 256), true, 'nack'], // unknown request with NEED_REPLY: a failure reply
      [param.subarray(0, 256), false, 'closed'],
    ] as const) {
      const c = await negotiated(ACK);
      try {
        expect(await expectRefused(c.request(FrontendRequest.CREATE_CRYPTO_SESSION, payload, { needReply }), c)).toBe(outcome);
      } finally {
        c.close();
      }
    }
    // CLOSE_CRYPTO_SESSION (a known u64 request vhost-ts does not implement) with a wild id.
    const c = await negotiated(ACK);
    try {
      expect(await expectRefused(c.request(FrontendRequest.CLOSE_CRYPTO_SESSION, encodeU64(U64_MAX)), c)).toBe('nack');
    } finally {
      c.close();
    }
    await healthy();
  });

  /**
   * CVE-2020-10725 (DPDK 19.11+, virtio_dev_rx_batch_packed): the batched packed-ring RX path
   * did not check that each descriptor's address translated (vhost_iova_to_vva returned 0 /
   * a short length) before copying into it: a malicious guest made the back-end segfault,
   * taking every other guest's connectivity with it. Fixed by "vhost: fix translated address
   * not checked".
   */
  it('CVE-2020-10725: a packed RX batch of 4 with an unmapped (and a region-crossing) descriptor breaks only that device: NEEDS_RESET, no stray write, no crash', async () => {
    for (const bad of ['hole', 'crossing'] as const) {
      const g = await HostileGuest.open(be.sockets.dev!, { packed: true });
      try {
        const d = g.fe.vrings[RX]!.descGpa;
        // Slots 0..3 form one aligned batch; slot 2 is the bad one. Flags stored last, 3 -> 0.
        const bufs = [g.alloc(2048), g.alloc(2048), 0, g.alloc(2048)];
        bufs[2] = bad === 'hole' ? g.regions[0]!.end + 0x4_0000 : g.regions[1]!.end - 16;
        for (let i = 3; i >= 0; i--) g.packedDesc(d, i, bufs[i]!, 2048, i, AV | WRITE);
        g.postReadable(TX, 4);
        g.kick(RX);
        g.kick(TX);
        expect(await g.waitNeedsReset(RX, 5000)).toMatchObject({ err: true, needsReset: true });
        expect(g.canaryDamage()).toEqual([]);
        expect((await g.close()).stopped).toBe(true);
      } finally {
        await g.close().catch(() => undefined);
      }
      await healthy();
    }
    // The split-ring equivalent: a chain whose second descriptor is unmapped.
    const g = await HostileGuest.open(be.sockets.dev!);
    try {
      const d = g.fe.vrings[RX]!.descGpa;
      g.splitDesc(d, 0, g.alloc(2048), 16, WRITE | NEXT, 1);
      g.splitDesc(d, 1, g.regions[0]!.end + 0x1000, 2048, WRITE, 0);
      g.publishSplit(RX, [0]);
      g.postReadable(TX, 1);
      g.kick(RX);
      g.kick(TX);
      expect(await g.waitNeedsReset(RX, 5000)).toMatchObject({ err: true, needsReset: true });
      expect(g.canaryDamage()).toEqual([]);
    } finally {
      await g.close();
    }
    await healthy();
  });

  /**
   * CVE-2020-10726 (DPDK 19.11+): every VHOST_USER_GET_INFLIGHT_FD allocated a new memfd and
   * mapping without releasing the previous one, so a front-end repeating it leaked fds and
   * virtual memory until the back-end ran out (denial of service). Fixed by "vhost: fix
   * potential memory space leak" / "vhost: fix potential fd leak".
   */
  it('CVE-2020-10726: 300 GET_INFLIGHT_FD and 300 SET_INFLIGHT_FD on one connection leave at most one inflight area behind', async () => {
    const c = await negotiated(ACK | bit(ProtocolFeature.INFLIGHT_SHMFD));
    const area = native.memfdCreate('cve-10726');
    native.ftruncate(area, 64 << 10);
    try {
      const first = await be.snapshot();
      for (let i = 0; i < 300; i++) {
        const payload = await c.request(FrontendRequest.GET_INFLIGHT_FD, encodeInflight({ mmapSize: 0n, mmapOffset: 0n, numQueues: 2, queueSize: 64 + (i % 4) }));
        expect(payload?.byteLength).toBe(24);
      }
      // (The client closes the fds that came with the replies.)
      const afterGet = await be.snapshot();
      for (let i = 0; i < 300; i++) {
        await c.request(FrontendRequest.SET_INFLIGHT_FD, encodeInflight({ mmapSize: 8192n, mmapOffset: 0n, numQueues: 1, queueSize: 64 }), { fds: [area] });
      }
      const afterSet = await be.snapshot();
      for (const s of [afterGet, afterSet]) {
        expect(s.fds.size, `fds grew: ${[...s.fds.values()].filter((t) => t.includes('memfd')).join(', ')}`).toBeLessThanOrEqual(first.fds.size + 1);
        expect(s.memfdMappings.length).toBeLessThanOrEqual(first.memfdMappings.length + 1);
        expect(s.native!.live).toBeLessThanOrEqual(first.native!.live + 1);
      }
    } finally {
      c.close();
      native.close(area);
    }
    await healthy();
  });
});

describe('shapes of the same classes (memory table and descriptor handling)', () => {
  function region(gpa: bigint, size: bigint, uva: bigint, off: bigint): MemoryRegionDesc {
    return { guestPhysAddr: gpa, memorySize: size, userspaceAddr: uva, mmapOffset: off };
  }

  it('region size/offset overflows and regions beyond their file are refused by SET_MEM_TABLE and ADD_MEM_REG, nothing mapped', async () => {
    const fd = native.memfdCreate('cve-class-mem');
    native.ftruncate(fd, 1 << 20);
    const before = await be.nativeCounts();
    try {
      const bad: MemoryRegionDesc[] = [
        region(U64_MAX - 4095n, 8192n, 0x7f00_0000_0000n, 0n), // gpa + size wraps
        region(0n, 8192n, U64_MAX - 4095n, 0n), // uva + size wraps
        region(0n, 8192n, 0x7f00_0000_0000n, U64_MAX - 4095n), // offset + size wraps
        region(0n, U64_MAX, 0x7f00_0000_0000n, 0n),
        region(0n, 2n << 20n, 0x7f00_0000_0000n, 0n), // beyond the 1 MiB file
        region(0n, 1n << 20n, 0x7f00_0000_0000n, 4096n), // offset + size beyond the file
        region(1n << 53n, 4096n, 0x7f00_0000_0000n, 0n),
      ];
      for (const r of bad) {
        const c = await negotiated(ACK | bit(ProtocolFeature.CONFIGURE_MEM_SLOTS));
        try {
          expect(await expectRefused(c.request(FrontendRequest.SET_MEM_TABLE, encodeMemoryTable([r]), { fds: [fd] }), c)).toBe('nack');
          expect(await expectRefused(c.request(FrontendRequest.ADD_MEM_REG, encodeSingleRegion(r), { fds: [fd] }), c)).toBe('nack');
        } finally {
          c.close();
        }
      }
    } finally {
      native.close(fd);
    }
    await new Promise((r) => setTimeout(r, 100));
    expect((await be.nativeCounts()).live).toBe(before.live);
    await healthy();
  });

  it('a descriptor spanning two GPA-contiguous regions backed by different memfds is split correctly (data intact) or refused, never read across a mapping end', async () => {
    // Two 2 MiB regions, GPA-contiguous, separate files, unrelated VAs.
    const plan: LayoutPlan = {
      kind: 'multi',
      files: [2 << 20, 2 << 20],
      regions: [
        { guestPhysAddr: 0x10_0000, size: 2 << 20, userspaceAddr: 0x7f40_0000_0000, mmapOffset: 0, file: 0 },
        { guestPhysAddr: 0x30_0000, size: 2 << 20, userspaceAddr: 0x7f10_0000_0000, mmapOffset: 0, file: 1 },
      ],
    };
    const client = await VhostUserClient.connect(be.sockets.dev!, { timeoutMs: 5000 });
    const fe = await FrontendDevice.start(client, { vrings: 2, queueSize: 64, memory: plan as never });
    try {
      const boundary = 0x30_0000;
      const frame = new Uint8Array(256);
      for (let i = 0; i < frame.length; i++) frame[i] = (i * 7 + 3) & 0xff;
      fe.memory.memory.write(boundary - 128, frame, 0, frame.length);
      const rxGpa = fe.memory.allocator.alloc(2048, 64).gpa;
      fe.vrings[RX]!.ring.add([rxGpa], [2048], 0, 1, 1);
      fe.vrings[TX]!.ring.add([boundary - 128], [256], 1, 0, 2);
      fe.vrings[RX]!.ring.publish();
      fe.vrings[TX]!.ring.publish();
      fe.kick(RX);
      fe.kick(TX);
      const used = { id: 0, len: 0, token: undefined as number | undefined };
      let rxLen = -1;
      const end = Date.now() + 5000;
      while (rxLen < 0 && Date.now() < end) {
        if (fe.vrings[RX]!.ring.getUsed(used)) rxLen = used.len;
        else if (((await client.getStatus()) & DeviceStatus.NEEDS_RESET) !== 0) break;
        await new Promise((r) => setTimeout(r, 10));
      }
      if (rxLen >= 0) {
        expect(rxLen).toBe(256);
        const got = new Uint8Array(256);
        fe.memory.memory.read(rxGpa, got, 0, 256);
        expect(Buffer.from(got).equals(Buffer.from(frame)), 'the frame crossing the region boundary arrived intact').toBe(true);
      } else {
        expect((await client.getStatus()) & DeviceStatus.NEEDS_RESET).not.toBe(0);
      }
    } finally {
      await fe.close();
    }
    await healthy();
  });

  it('a chain whose total length exceeds 2^32 (three 2 GiB descriptors over a sparse 3 GiB region) neither hangs nor crashes', async () => {
    const g = await HostileGuest.open(be.sockets.dev!, { memory: 3 * 1024 ** 3, regions: 1 });
    try {
      g.postWritable(RX, 4);
      const d = g.fe.vrings[TX]!.descGpa;
      const base = g.regions[0]!.gpa + 0x10_0000;
      g.splitDesc(d, 0, base, 0x8000_0000, NEXT, 1);
      g.splitDesc(d, 1, base, 0x8000_0000, NEXT, 2);
      g.splitDesc(d, 2, base, 0x7fff_0000, 0, 0);
      g.publishSplit(TX, [0]);
      const t0 = performance.now();
      g.kick(TX);
      const end = Date.now() + 10_000;
      let outcome: 'completed' | 'reset' | null = null;
      while (outcome === null && Date.now() < end) {
        if (g.usedIdx(TX) >= 1) outcome = 'completed';
        else if (((await g.status()) & DeviceStatus.NEEDS_RESET) !== 0) outcome = 'reset';
        else await new Promise((r) => setTimeout(r, 20));
      }
      expect(outcome, 'neither completed nor reset within 10 s').not.toBeNull();
      expect(performance.now() - t0).toBeLessThan(10_000);
      expect(g.canaryDamage()).toEqual([]);
    } finally {
      await g.close();
    }
    await healthy();
  });

  it('SET_MEM_TABLE while rings run: a table that no longer holds the rings stops them (no access to the released mapping), the connection stays answerable, the process alive', async () => {
    const client = await VhostUserClient.connect(be.sockets.dev!, { timeoutMs: 5000 });
    const fe = await FrontendDevice.start(client, { vrings: 2, queueSize: 64, memory: { kind: 'multi', size: 4 << 20, regions: 2 } });
    const other = FrontendMemory.create({ kind: 'multi', size: 2 << 20, regions: 1 });
    try {
      // Keep the rings busy: post RX and TX buffers and kick continuously.
      let stop = false;
      const used = { id: 0, len: 0, token: undefined as number | undefined };
      const rx = Array.from({ length: 32 }, () => fe.memory.allocator.alloc(2048, 64).gpa);
      const tx = Array.from({ length: 32 }, () => fe.memory.allocator.alloc(64, 64).gpa);
      let moved = 0;
      const pump = (async () => {
        let k = 0;
        while (!stop) {
          for (const v of fe.vrings) while (v.ring.getUsed(used)) moved++;
          for (let n = 0; n < 8; n++, k++) {
            if (fe.vrings[RX]!.ring.numFree > 0) fe.vrings[RX]!.ring.add([rx[k % 32]!], [2048], 0, 1, k);
            if (fe.vrings[TX]!.ring.numFree > 0) fe.vrings[TX]!.ring.add([tx[k % 32]!], [64], 1, 0, k);
          }
          fe.vrings[RX]!.ring.publish();
          fe.vrings[TX]!.ring.publish();
          fe.kick(RX);
          fe.kick(TX);
          await new Promise((r) => setTimeout(r, 2));
        }
      })();
      const t0 = Date.now();
      while (moved < 200 && Date.now() - t0 < 5000) await new Promise((r) => setTimeout(r, 10));
      expect(moved).toBeGreaterThanOrEqual(200);
      // Swap the memory under the running rings: the new table has other GPAs and VAs.
      await client.setMemTable(other.memoryTable(), other.memoryTableFds());
      const at = moved;
      await new Promise((r) => setTimeout(r, 300));
      // The rings no longer translate: nothing more may be consumed from the old memory.
      const after = moved;
      await new Promise((r) => setTimeout(r, 300));
      expect(moved - after, `used entries kept coming after the swap (${at} -> ${after} -> ${moved})`).toBe(0);
      stop = true;
      await pump;
      expect(await client.getFeatures()).toBeGreaterThan(0n); // still answering
    } finally {
      await fe.close({ graceful: false });
      other.close();
    }
    await healthy();
  });

  it('afterwards: back-end resources back to the baseline, no internal error logged', async () => {
    await witness.close();
    await assertBackToBaseline(baseline, { probe: () => be.snapshot(), timeoutMs: 15_000 });
    const logs = await be.logs();
    expect(logs.internal, `internal errors in the back-end log:\n${logs.internalLines.join('\n\n')}`).toBe(0);
    witness = await startWitness(be.sockets.other!);
  });
});

/**
 * CVE-2024-11614 (DPDK vhost, checksum offload): a TX packet asking for checksum completion
 * (VIRTIO_NET_HDR_F_NEEDS_CSUM) with a csum_start/csum_offset beyond the packet made the
 * back-end read (and write the checksum) out of bounds: a guest crashed the vSwitch. Fixed by
 * "vhost: fix checksum offload" (validate csum_start). Replayed against the `vhost-ts net`
 * daemon (echo module, the front-end takes CSUM but not GUEST_CSUM, so the back-end must
 * complete checksums itself), with a witness on a second port of the same process.
 */
describe('CVE-2024-11614 against the vhost-ts net daemon', () => {
  it('NEEDS_CSUM with csum_start/csum_offset beyond the frame (and other hostile net headers): no crash, no stray write, the TX ring keeps completing, the other port keeps its traffic', async () => {
    const main = path.join(import.meta.dirname, '../../packages/cli/dist/main.js');
    expect(existsSync(main), 'packages/cli is not built').toBe(true);
    const dir = mkdtempSync(path.join(tmpdir(), 'vhost-ts-csum-'));
    const victim = path.join(dir, 'victim.sock');
    const other = path.join(dir, 'other.sock');
    const daemon = spawn(process.execPath, [main, 'net', `--socket-path=${victim}`, `--socket-path=${other}`, '--module=echo', '--stats-interval=0', '--quiet'], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    daemon.stderr.setEncoding('utf8');
    daemon.stderr.on('data', (d: string) => (stderr = (stderr + d).slice(-4000)));
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((res) => daemon.once('exit', (code, signal) => res({ code, signal })));
    let alive = true;
    void exited.then(() => (alive = false));
    let w: Witness | null = null;
    try {
      const end = Date.now() + 15_000;
      while (!(existsSync(victim) && existsSync(other)) && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
      w = await startWitness(other);
      const g = await HostileGuest.open(victim, { deviceFeatures: bit(0) }); // VIRTIO_NET_F_CSUM
      try {
        expect((g.fe.features & bit(0)) !== 0n, 'CSUM negotiated').toBe(true);
        expect((g.fe.features & bit(1)) === 0n, 'GUEST_CSUM not negotiated').toBe(true);
        g.postWritable(RX, 32);
        const frame = 64;
        // [flags, gso_type, hdr_len, gso_size, csum_start, csum_offset]
        const headers: Array<[number, number, number, number, number, number]> = [
          [1, 0, 0, 0, 0xffff, 0],
          [1, 0, 0, 0, 60, 10],
          [1, 0, 0, 0, 0, 0xffff],
          [1, 0, 0, 0, frame - 1, 0],
          [1, 0, 0, 0, frame - 2, 1],
          [1, 0xff, 0xffff, 0xffff, 34, 6],
          [0xff, 0, 0, 0, 0xfff0, 0xfff0],
          [1, 0, 0, 0, 34, 6], // valid: a UDP checksum at its place
        ];
        const v = g.fe.vrings[TX]!;
        headers.forEach(([flags, gso, hdrLen, gsoSize, start, offset], i) => {
          const gpa = g.alloc(12 + frame);
          g.fill(gpa, 12 + frame, 0x45);
          g.bytes(gpa, new Uint8Array([flags, gso, hdrLen & 0xff, hdrLen >> 8, gsoSize & 0xff, gsoSize >> 8, start & 0xff, start >> 8, offset & 0xff, offset >> 8, 0, 0]));
          g.splitDesc(v.descGpa, i, gpa, 12 + frame, 0, 0);
        });
        g.publishSplit(TX, headers.map((_, i) => i));
        g.kick(RX);
        g.kick(TX);
        const until = Date.now() + 5000;
        let needsReset = false;
        while (g.usedIdx(TX) < headers.length && Date.now() < until) {
          if (((await g.status()) & DeviceStatus.NEEDS_RESET) !== 0) {
            needsReset = true;
            break;
          }
          await new Promise((r) => setTimeout(r, 10));
        }
        expect(alive, `the daemon died: ${stderr}`).toBe(true);
        expect(needsReset || g.usedIdx(TX) === headers.length, `TX completed ${g.usedIdx(TX)} of ${headers.length}`).toBe(true);
        if (!needsReset) {
          // The valid frame (at least) came back: the completion path ran.
          const used = { id: 0, len: 0, token: undefined as number | undefined };
          let rx = 0;
          const rxUntil = Date.now() + 3000;
          while (rx === 0 && Date.now() < rxUntil) {
            while (g.fe.vrings[RX]!.ring.getUsed(used)) rx++;
            await new Promise((r) => setTimeout(r, 10));
          }
          console.log(`CVE-2024-11614 replay: ${headers.length} TX frames completed, ${rx} echoed`);
          expect(rx).toBeGreaterThanOrEqual(1);
        }
        expect(g.canaryDamage()).toEqual([]);
      } finally {
        await g.close();
      }
      expect(await w.flows(50, 5000), 'the other port stopped moving traffic').toBe(true);
      expect(alive, stderr).toBe(true);
    } finally {
      await w?.kill();
      if (alive) daemon.kill('SIGTERM');
      const t = setTimeout(() => daemon.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(t);
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
