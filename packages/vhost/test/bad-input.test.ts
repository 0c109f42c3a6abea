/**
 * The bad-input table: each case sends something a back-end must refuse.
 * After each: a clear log line (and the failure reply or the close), the
 * process alive, another connection still served, and fds / mappings back to
 * the baseline taken before the case connected.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { native } from '@vhost-ts/native';
import {
  FrontendRequest,
  HEADER_SIZE,
  ProtocolFeature,
  bits,
  encodeConfig,
  encodeHeader,
  encodeInflight,
  encodeLog,
  encodeMemoryTable,
  encodeSingleRegion,
  encodeU64,
  encodeVringAddr,
  encodeVringState,
  memoryTableSize,
  type MemoryRegionDesc,
} from '@vhost-ts/vhost/protocol';
import { ScriptedFrontend, TEST_UVA, TestMemory, ringLayout } from './support/frontend.js';
import { expectBackToBaseline, settledBaseline, startHarness, type Harness } from './support/harness.js';
import { TEST_FEATURES, negotiate, sendMemTable, standardRegion } from './support/scenario.js';

let h: Harness;
let mem: TestMemory;
let witness: ScriptedFrontend;

beforeAll(async () => {
  h = await startHarness({ features: TEST_FEATURES, maxQueues: 4 });
  mem = new TestMemory(1 << 20);
  witness = ScriptedFrontend.connect(h.socketPath);
  await negotiate(witness);
});

afterAll(async () => {
  witness.close();
  await h.stop();
  mem.release();
});

/** How far a case's connection is set up before the bad message. */
type Stage = 'raw' | 'negotiated' | 'memory';

interface BadCase {
  name: string;
  stage: Stage;
  /** Sends the bad message(s). */
  send(fe: ScriptedFrontend): void | Promise<void>;
  /** Line the log must show. */
  log: RegExp;
  /**
   * close: the back-end closes; nack: a REPLY_ACK failure (u64 1), connection
   * kept; empty-reply: GET_CONFIG's own failure form; peer-closed: the test
   * closed the socket itself (truncated messages).
   */
  outcome: 'close' | 'nack' | 'empty-reply' | 'peer-closed';
}

const PROTOCOL = bits(ProtocolFeature.MQ, ProtocolFeature.REPLY_ACK, ProtocolFeature.LOG_SHMFD, ProtocolFeature.STATUS);

function region(gpa: bigint, size: bigint, uva = TEST_UVA + gpa, offset = gpa): MemoryRegionDesc {
  return { guestPhysAddr: gpa, memorySize: size, userspaceAddr: uva, mmapOffset: offset };
}

/** Sends a memory table with dups of the test memfd (closed again here). */
function memTable(fe: ScriptedFrontend, regions: MemoryRegionDesc[], fdCount = regions.length, needReply = false): void {
  const fds = Array.from({ length: fdCount }, () => mem.dupFd());
  fe.send(FrontendRequest.SET_MEM_TABLE, encodeMemoryTable(regions), { fds, needReply });
  for (const fd of fds) native.close(fd);
}

function withEventfd(fn: (fd: number) => void): void {
  const fd = native.eventfdCreate(0);
  try {
    fn(fd);
  } finally {
    native.close(fd);
  }
}

const state = (index: number, num: number) => encodeVringState({ index, num });

const CASES: BadCase[] = [
  { name: 'unknown request', stage: 'raw', send: (fe) => fe.send(99), log: /unknown request UNKNOWN\(99\)/, outcome: 'close' },
  { name: 'unknown request with NEED_REPLY', stage: 'negotiated', send: (fe) => fe.send(77, new Uint8Array(8), { needReply: true }), log: /UNKNOWN\(77\) refused \(failure reply\): unknown request/, outcome: 'nack' },
  { name: 'unsupported request (IOTLB_MSG)', stage: 'negotiated', send: (fe) => fe.send(FrontendRequest.IOTLB_MSG, new Uint8Array(32)), log: /IOTLB_MSG is not supported/, outcome: 'close' },
  {
    name: 'size larger than the payload limit',
    stage: 'raw',
    send: (fe) => fe.sendRaw(encodeHeader({ request: FrontendRequest.SET_MEM_TABLE, flags: 1, size: 4096 })),
    log: /payload size 4096 exceeds the maximum 268/,
    outcome: 'close',
  },
  { name: 'size mismatch (SET_FEATURES, 4 bytes)', stage: 'raw', send: (fe) => fe.send(FrontendRequest.SET_FEATURES, new Uint8Array(4)), log: /SET_FEATURES: payload size 4, expected 8/, outcome: 'close' },
  { name: 'size mismatch (SET_VRING_ADDR, 32 bytes)', stage: 'raw', send: (fe) => fe.send(FrontendRequest.SET_VRING_ADDR, new Uint8Array(32)), log: /SET_VRING_ADDR: payload size 32, expected 40/, outcome: 'close' },
  { name: 'size mismatch (GET_FEATURES with a payload)', stage: 'raw', send: (fe) => fe.send(FrontendRequest.GET_FEATURES, new Uint8Array(8)), log: /GET_FEATURES: payload size 8, expected 0/, outcome: 'close' },
  {
    name: 'nregions > 8',
    stage: 'negotiated',
    send: (fe) => {
      const payload = new Uint8Array(memoryTableSize(8));
      new DataView(payload.buffer).setUint32(0, 9, true);
      fe.send(FrontendRequest.SET_MEM_TABLE, payload);
    },
    log: /memory table has 9 regions, at most 8/,
    outcome: 'close',
  },
  { name: 'nregions != fds', stage: 'negotiated', send: (fe) => memTable(fe, [region(0n, 0x10000n), region(0x10000n, 0x10000n)], 1), log: /2 regions but 1 fds/, outcome: 'close' },
  { name: 'zero-length region', stage: 'negotiated', send: (fe) => memTable(fe, [region(0n, 0n)], 1, true), log: /region 0: zero-length region/, outcome: 'nack' },
  {
    name: 'overlapping regions',
    stage: 'negotiated',
    send: (fe) => memTable(fe, [region(0n, 0x20000n), region(0x10000n, 0x20000n)]),
    log: /overlapping regions: GPA \[0x0, \+0x20000\) and \[0x10000, \+0x20000\)/,
    outcome: 'close',
  },
  {
    name: 'region fd shorter than mmap_offset + size',
    stage: 'negotiated',
    send: (fe) => memTable(fe, [region(0n, 0x100000n, TEST_UVA, 0x1000n)], 1, true),
    log: /region 0: fd is 1048576 bytes, shorter than mmap_offset 4096 \+ size 1048576/,
    outcome: 'nack',
  },
  { name: 'region beyond 2^53', stage: 'negotiated', send: (fe) => memTable(fe, [region(1n << 60n, 0x1000n, TEST_UVA, 0n)]), log: /guest range .* is beyond 2\^53/, outcome: 'close' },
  { name: 'ring index out of range (SET_VRING_NUM)', stage: 'negotiated', send: (fe) => fe.send(FrontendRequest.SET_VRING_NUM, state(4, 256)), log: /vring index 4 out of range \(max 4\)/, outcome: 'close' },
  {
    name: 'ring index out of range with an fd (SET_VRING_CALL)',
    stage: 'negotiated',
    send: (fe) => withEventfd((fd) => fe.vringFd(FrontendRequest.SET_VRING_CALL, 200, fd, true)),
    log: /vring index 200 out of range/,
    outcome: 'nack',
  },
  { name: 'ring index out of range (GET_VRING_BASE)', stage: 'negotiated', send: (fe) => fe.send(FrontendRequest.GET_VRING_BASE, state(1000, 0)), log: /GET_VRING_BASE refused: .*vring index 1000 out of range/, outcome: 'close' },
  { name: 'ring size 0', stage: 'negotiated', send: (fe) => fe.send(FrontendRequest.SET_VRING_NUM, state(0, 0), { needReply: true }), log: /vring 0: size 0 must be 1..32768/, outcome: 'nack' },
  { name: 'ring size > 32768', stage: 'negotiated', send: (fe) => fe.send(FrontendRequest.SET_VRING_NUM, state(0, 65536)), log: /vring 0: size 65536 must be 1..32768/, outcome: 'close' },
  { name: 'split ring size not a power of two', stage: 'negotiated', send: (fe) => fe.send(FrontendRequest.SET_VRING_NUM, state(1, 100)), log: /split ring size 100 is not a power of two/, outcome: 'close' },
  {
    name: 'ring addresses outside every region',
    stage: 'memory',
    send: (fe) => {
      fe.vringState(FrontendRequest.SET_VRING_NUM, 0, 256);
      fe.vringAddr(0, { ...ringLayout(0), desc: 0x1000n }, true);
    },
    log: /vring 0: desc area \[0x1000, \+4096\) is outside every memory region/,
    outcome: 'nack',
  },
  {
    name: 'ring area crossing the region end',
    stage: 'memory',
    send: (fe) => {
      fe.vringState(FrontendRequest.SET_VRING_NUM, 0, 256);
      fe.vringAddr(0, { ...ringLayout(0), used: TEST_UVA + BigInt(mem.size - 0x400) });
    },
    log: /vring 0: used area .* is outside every memory region/,
    outcome: 'close',
  },
  {
    name: 'misaligned descriptor table',
    stage: 'memory',
    send: (fe) => {
      fe.vringState(FrontendRequest.SET_VRING_NUM, 0, 256);
      fe.vringAddr(0, { ...ringLayout(0), desc: ringLayout(0).desc + 8n });
    },
    log: /desc address .* is not 16-byte aligned/,
    outcome: 'close',
  },
  {
    name: 'SET_VRING_ADDR before any memory table',
    stage: 'negotiated',
    send: (fe) => {
      fe.vringState(FrontendRequest.SET_VRING_NUM, 0, 256);
      fe.send(FrontendRequest.SET_VRING_ADDR, encodeVringAddr({ index: 0, flags: 0, ...ringLayout(0), log: 0n }));
    },
    log: /vring 0: SET_VRING_ADDR before any memory table/,
    outcome: 'close',
  },
  { name: 'SET_VRING_BASE beyond the ring (split, > u16)', stage: 'negotiated', send: (fe) => fe.send(FrontendRequest.SET_VRING_BASE, state(0, 0x10000)), log: /base 65536 is beyond the 16-bit ring index/, outcome: 'close' },
  {
    name: 'kick before any memory table',
    stage: 'negotiated',
    send: (fe) => withEventfd((fd) => fe.vringFd(FrontendRequest.SET_VRING_KICK, 0, fd)),
    log: /vring 0: SET_VRING_KICK before any memory table/,
    outcome: 'close',
  },
  { name: 'reply flag set on a request', stage: 'raw', send: (fe) => fe.send(FrontendRequest.SET_OWNER, undefined, { flags: 0x5 }), log: /REPLY flag set on a request/, outcome: 'close' },
  { name: 'undefined flag bits', stage: 'raw', send: (fe) => fe.send(FrontendRequest.SET_OWNER, undefined, { flags: 0x41 }), log: /undefined flag bits set \(flags 0x41\)/, outcome: 'close' },
  { name: 'bad version', stage: 'raw', send: (fe) => fe.send(FrontendRequest.GET_FEATURES, undefined, { flags: 0x2 }), log: /bad protocol version 2/, outcome: 'close' },
  {
    name: 'fds on a message that takes none',
    stage: 'negotiated',
    send: (fe) => withEventfd((fd) => fe.send(FrontendRequest.SET_FEATURES, encodeU64(TEST_FEATURES), { fds: [fd, fd] })),
    log: /SET_FEATURES: 2 fd\(s\) attached, expected 0/,
    outcome: 'close',
  },
  {
    name: 'no-fd bit set but an fd attached',
    stage: 'memory',
    send: (fe) => withEventfd((fd) => fe.send(FrontendRequest.SET_VRING_CALL, encodeU64(0x100n), { fds: [fd], needReply: true })),
    log: /no-fd bit set but an fd is attached/,
    outcome: 'nack',
  },
  {
    name: 'a kick fd that is not an eventfd (a memfd)',
    stage: 'memory',
    send: (fe) => {
      const fd = mem.dupFd();
      try {
        fe.send(FrontendRequest.SET_VRING_KICK, encodeU64(0n), { fds: [fd], needReply: true });
      } finally {
        native.close(fd);
      }
    },
    log: /SET_VRING_KICK: vring 0: the fd is not an eventfd \(\/memfd:/,
    outcome: 'nack',
  },
  { name: 'no fd and the no-fd bit clear', stage: 'memory', send: (fe) => fe.send(FrontendRequest.SET_VRING_KICK, encodeU64(0n)), log: /SET_VRING_KICK: no fd attached and the no-fd bit is clear/, outcome: 'close' },
  { name: 'vring fd payload with bits above bit 8', stage: 'negotiated', send: (fe) => fe.send(FrontendRequest.SET_VRING_CALL, encodeU64(0x1_0000n)), log: /has bits set above bit 8/, outcome: 'close' },
  { name: 'SET_VRING_ENABLE with num 2', stage: 'negotiated', send: (fe) => fe.send(FrontendRequest.SET_VRING_ENABLE, state(0, 2)), log: /SET_VRING_ENABLE num 2 must be 0 or 1/, outcome: 'close' },
  {
    name: 'too many fds (9 across header and payload)',
    stage: 'negotiated',
    send: (fe) => {
      const fds = Array.from({ length: 9 }, () => mem.dupFd());
      const payload = encodeMemoryTable([region(0n, 0x1000n)]);
      const head = encodeHeader({ request: FrontendRequest.SET_MEM_TABLE, flags: 1, size: payload.byteLength });
      fe.sendRaw(head, fds.slice(0, 8));
      fe.sendRaw(payload, fds.slice(8));
      for (const fd of fds) native.close(fd);
    },
    log: /too many fds: 9 received with one message/,
    outcome: 'close',
  },
  {
    name: 'truncated header then close',
    stage: 'raw',
    send: (fe) => {
      fe.sendRaw(encodeHeader({ request: FrontendRequest.GET_FEATURES, flags: 1, size: 0 }).subarray(0, 6));
      fe.close();
    },
    log: /truncated message: peer closed after 6 of 12 header bytes/,
    outcome: 'peer-closed',
  },
  {
    name: 'truncated payload then close',
    stage: 'raw',
    send: (fe) => {
      const head = new Uint8Array(HEADER_SIZE + 10);
      encodeHeader({ request: FrontendRequest.SET_VRING_ADDR, flags: 1, size: 40 }, head);
      fe.sendRaw(head);
      fe.close();
    },
    log: /truncated message: peer closed after 10 of 40 payload bytes/,
    outcome: 'peer-closed',
  },
  {
    name: 'SET_LOG_BASE with a huge size (CVE-2020-10722 shape: size + offset wraps)',
    stage: 'memory',
    send: (fe) => {
      const fd = mem.dupFd();
      fe.send(FrontendRequest.SET_LOG_BASE, encodeLog({ mmapSize: 0xffff_ffff_ffff_f000n, mmapOffset: 0x2000n }), { fds: [fd] });
      native.close(fd);
    },
    log: /SET_LOG_BASE: mmap_size 0xfffffffffffff000 \+ mmap_offset 0x2000 overflows/,
    outcome: 'close',
  },
  {
    name: 'SET_LOG_BASE larger than its fd',
    stage: 'memory',
    send: (fe) => {
      const fd = mem.dupFd();
      fe.send(FrontendRequest.SET_LOG_BASE, encodeLog({ mmapSize: 1n << 40n, mmapOffset: 0n }), { fds: [fd] });
      native.close(fd);
    },
    log: /SET_LOG_BASE log area: fd is 1048576 bytes, shorter than mmap_offset 0 \+ size 1099511627776/,
    outcome: 'close',
  },
  {
    name: 'request needing a protocol feature that was not negotiated (SET_INFLIGHT_FD)',
    stage: 'negotiated',
    send: (fe) => {
      const fd = mem.dupFd();
      fe.send(FrontendRequest.SET_INFLIGHT_FD, encodeInflight({ mmapSize: 4096n, mmapOffset: 0n, numQueues: 1, queueSize: 64 }), { fds: [fd], needReply: true });
      native.close(fd);
    },
    log: /SET_INFLIGHT_FD needs protocol feature INFLIGHT_SHMFD, which was not negotiated/,
    outcome: 'nack',
  },
  { name: 'GET_CONFIG without a config space', stage: 'negotiated', send: (fe) => fe.send(FrontendRequest.GET_CONFIG, encodeConfig({ offset: 0, flags: 0, data: new Uint8Array(4) })), log: /GET_CONFIG refused: GET_CONFIG needs protocol feature CONFIG/, outcome: 'empty-reply' },
  { name: 'REM_MEM_REG without CONFIGURE_MEM_SLOTS', stage: 'memory', send: (fe) => fe.send(FrontendRequest.REM_MEM_REG, encodeSingleRegion(standardRegion(mem))), log: /REM_MEM_REG needs protocol feature CONFIGURE_MEM_SLOTS/, outcome: 'close' },
];

async function setUp(fe: ScriptedFrontend, stage: Stage): Promise<void> {
  if (stage === 'raw') return;
  await negotiate(fe, { protocol: PROTOCOL });
  if (stage === 'memory') await sendMemTable(fe, mem);
}

describe('bad input', () => {
  it('has at least 25 cases', () => {
    expect(CASES.length).toBeGreaterThanOrEqual(25);
  });

  it.each(CASES.map((c) => [c.name, c] as const))('%s', async (_name, c) => {
    const base = await settledBaseline();
    const closedBefore = h.count('destroyConnection');
    const linesBefore = h.logger.lines.length;
    const fe = ScriptedFrontend.connect(h.socketPath);
    try {
      await setUp(fe, c.stage);
      await c.send(fe);
      if (c.outcome === 'nack') {
        const reply = await fe.recv();
        expect(new DataView(reply.payload.buffer).getBigUint64(0, true)).toBe(1n);
        expect(await fe.getU64(FrontendRequest.GET_FEATURES)).toBe(TEST_FEATURES); // still served
      } else if (c.outcome === 'close') {
        expect(await fe.waitClosed()).toBe(true);
      } else if (c.outcome === 'empty-reply') {
        const reply = await fe.recv();
        expect(reply.header.size).toBe(0); // "zero length of payload to indicate an error"
        expect(await fe.getU64(FrontendRequest.GET_FEATURES)).toBe(TEST_FEATURES);
      }
      await h.logger.waitFor(c.log, 3000, linesBefore);
    } finally {
      fe.close();
    }
    await h.waitEvent('destroyConnection', closedBefore + 1);
    // Every closed connection logs its reason once.
    expect(h.logger.lines.slice(linesBefore).filter((l) => /connection closed:/.test(l)).length).toBe(1);
    // The process is alive and another connection is still served.
    expect(await witness.getU64(FrontendRequest.GET_FEATURES)).toBe(TEST_FEATURES);
    await expectBackToBaseline(base);
  });
});
