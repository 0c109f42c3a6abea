/**
 * Control-plane fuzzer: structure-aware mutation of valid vhost-user message
 * sequences, sent over real connections with real fds (memfds, eventfds, a
 * socket) to a vhost-ts back-end.
 *
 * Each connection is one plan built from `Prng(seed, connectionIndex)`, so a
 * finding is reproduced by its seed and connection index alone:
 * - a valid start sequence (negotiation, memory table, rings, DRIVER_OK: the
 *   back-end's data plane really starts workers on it), "running" operations
 *   (memory swaps, log base, enable/disable, GET_VRING_BASE, resets, config,
 *   inflight, ring scribbles and kicks) and sometimes the stop sequence;
 * - 0..3 semantic mutations (a field set to an interesting value, bit flips,
 *   a message dropped, duplicated, swapped or moved earlier, NEED_REPLY
 *   toggled, an fd replaced by one of another kind, a random message
 *   inserted): their validity is unknown, the oracle is "no crash, no hang,
 *   well-formed replies";
 * - sometimes a terminal message that is certainly invalid (bad version,
 *   REPLY flag, undefined flags, unknown request, size beyond the limit or
 *   not the request's size, wrong fd count, vring index out of range, zero or
 *   overflowing regions, a region beyond its file, the CVE-2020-10722 log
 *   shape, unoffered features, random bytes): the back-end must close the
 *   connection or answer a failure (REPLY_ACK u64 != 0, GET_CONFIG's empty
 *   payload) — never accept it;
 * - sometimes a truncated message after which the connection is closed.
 * After the plan a GET_FEATURES barrier must be answered (or the connection
 * closed) within the reply timeout, and every reply must be a well-formed
 * reply to a request that was sent, in order.
 */
import { openSync } from 'node:fs';
import { native } from '@vhost-ts/native';
import { VhostConnection } from '@vhost-ts/frontend';
import { IMPLEMENTED_PROTOCOL_FEATURES } from '@vhost-ts/vhost';
import {
  FLAG_KNOWN_MASK,
  FLAG_NEED_REPLY,
  FLAG_REPLY,
  FrontendRequest,
  HEADER_SIZE,
  MAX_PAYLOAD_SIZE,
  ProtocolFeature,
  VHOST_F_LOG_ALL,
  VHOST_USER_F_PROTOCOL_FEATURES,
  bit,
  encodeConfig,
  encodeInflight,
  encodeLog,
  encodeMemoryTable,
  encodeSingleRegion,
  encodeU64,
  encodeVringAddr,
  encodeVringState,
  frontendRequestName,
  frontendRequestRule,
  hasBit,
  type MemoryRegionDesc,
} from '@vhost-ts/vhost/protocol';
import { Prng } from './prng.js';

// ---- the fuzz target's shape (fixtures/backend.mjs driver "fuzz") ------------------------------------------

/** Virtio feature bits the fuzz driver offers on top of bit 30 and LOG_ALL. */
export const FUZZ_DRIVER_FEATURES = [32, 28, 29, 34];
/** Vrings of the fuzz driver (one queue pair for the loopback module). */
export const FUZZ_MAX_QUEUES = 2;
export const OFFERED_FEATURES = FUZZ_DRIVER_FEATURES.reduce((a, b) => a | bit(b), bit(VHOST_USER_F_PROTOCOL_FEATURES) | bit(VHOST_F_LOG_ALL));
/** The fuzz driver offers a config space and inflight: every implemented protocol feature. */
export const OFFERED_PROTOCOL = IMPLEMENTED_PROTOCOL_FEATURES;

// ---- guest memory of one lane -------------------------------------------------------------------------

export const PAGE = 4096;
export const GUEST_FILE_SIZE = 2 << 20;
export const LOG_FILE_SIZE = 64 << 10;
export const RING_SIZE = 64;

interface Region {
  gpa: number;
  size: number;
  uva: number;
  offset: number;
}
/** Two regions with a 1 MiB GPA hole between them, VAs unrelated to GPAs. */
export const REGIONS: readonly Region[] = [
  { gpa: 0, size: 1 << 20, uva: 0x7f12_0000_0000, offset: 0 },
  { gpa: 2 << 20, size: 1 << 20, uva: 0x7f12_4000_0000, offset: 1 << 20 },
];
/** A third region for ADD_MEM_REG (aliases the first MiB of the file). */
export const EXTRA_REGION: Region = { gpa: 16 << 20, size: 256 << 10, uva: 0x7f12_8000_0000, offset: 0 };

function desc(r: Region): MemoryRegionDesc {
  return { guestPhysAddr: BigInt(r.gpa), memorySize: BigInt(r.size), userspaceAddr: BigInt(r.uva), mmapOffset: BigInt(r.offset) };
}

/** GPAs of vring i's three areas (desc, driver/avail, device/used), one page each, in region 0. */
export function ringGpas(i: number): { desc: number; avail: number; used: number } {
  const base = 0x1000 + i * 0x4000;
  return { desc: base, avail: base + 0x1000, used: base + 0x2000 };
}
const uvaOf = (gpa: number): number => REGIONS[0]!.uva + gpa;
/** Buffers live in region 1. */
const BUFFER_GPA = REGIONS[1]!.gpa;

export type FdKind = 'guest' | 'log' | 'event' | 'event2' | 'socket' | 'null';

/**
 * The fds one lane sends: a guest memfd (mapped here too, to scribble rings),
 * a log memfd, two eventfds, one end of a socketpair (SET_BACKEND_REQ_FD) and
 * /dev/null (an fd of the wrong kind). Sent by reference: the kernel gives the
 * back-end its own copies, so nothing is created per message.
 */
export class FuzzLane {
  readonly guestFd: number;
  readonly logFd: number;
  readonly events: [number, number];
  readonly sockets: [number, number];
  readonly nullFd: number;
  readonly guest: SharedArrayBuffer;
  readonly u8: Uint8Array;
  readonly dv: DataView;

  constructor(readonly id: number) {
    this.guestFd = native.memfdCreate(`fuzz-guest-${id}`);
    native.ftruncate(this.guestFd, GUEST_FILE_SIZE);
    this.logFd = native.memfdCreate(`fuzz-log-${id}`);
    native.ftruncate(this.logFd, LOG_FILE_SIZE);
    this.events = [native.eventfdCreate(0), native.eventfdCreate(0)];
    this.sockets = native.socketpair();
    this.nullFd = openSync('/dev/null', 'r');
    this.guest = native.mmap(this.guestFd, 0, GUEST_FILE_SIZE);
    this.u8 = new Uint8Array(this.guest);
    this.dv = new DataView(this.guest);
  }

  fdOf(kind: FdKind): number {
    switch (kind) {
      case 'guest':
        return this.guestFd;
      case 'log':
        return this.logFd;
      case 'event':
        return this.events[0];
      case 'event2':
        return this.events[1];
      case 'socket':
        return this.sockets[0];
      case 'null':
        return this.nullFd;
    }
  }

  /** Reads and drops whatever the back-end wrote on the back-end request socket (closing fds). */
  drainBackendSocket(): void {
    const buf = new Uint8Array(4096);
    for (let i = 0; i < 64; i++) {
      let r;
      try {
        r = native.recvmsg(this.sockets[1], buf, 0, buf.byteLength);
      } catch {
        return;
      }
      for (const fd of r.fds) native.close(fd);
      if (r.bytes <= 0) return;
    }
  }

  /** Writes ring content for vring `ring`: valid split chains, or random garbage. */
  scribble(r: Prng, ring: number, packed: boolean): void {
    const g = ringGpas(ring % 4);
    if (packed || r.chance(0.3)) {
      // Garbage: random descriptors and a random index (packed: flags with random wrap bits).
      const n = r.range(1, RING_SIZE) * 16;
      this.u8.set(r.bytes(n), g.desc);
      this.dv.setUint16(g.avail + 2, r.u32() & 0xffff, true);
      if (packed) this.dv.setUint16(g.avail + 2, r.pick([0, 1, 2, 0xffff]), true);
      return;
    }
    // Valid chains: descriptor j -> a 256-byte buffer; TX (odd) readable, RX (even) writable.
    const count = r.range(1, 16);
    let idx = this.dv.getUint16(g.avail + 2, true);
    for (let k = 0; k < count; k++) {
      const j = (idx + k) % RING_SIZE;
      const d = g.desc + j * 16;
      this.dv.setBigUint64(d, BigInt(BUFFER_GPA + (ring % 4) * 0x4_0000 + j * 256), true);
      this.dv.setUint32(d + 8, r.pick([64, 256]), true);
      this.dv.setUint16(d + 12, ring % 2 === 0 ? 2 : 0, true);
      this.dv.setUint16(d + 14, 0, true);
      this.dv.setUint16(g.avail + 4 + 2 * ((idx + k) % RING_SIZE), j, true);
    }
    idx = (idx + count) & 0xffff;
    Atomics.store(new Uint16Array(this.guest, g.avail, 2), 1, idx);
  }

  /** Zeroes the ring pages (a fresh device). */
  resetRings(): void {
    this.u8.fill(0, 0, 0x1_0000 + 0x1000);
  }

  close(): void {
    native.release(this.guest);
    for (const fd of [this.guestFd, this.logFd, ...this.events, ...this.sockets, this.nullFd]) {
      try {
        native.close(fd);
      } catch {
        // already closed
      }
    }
  }
}

// ---- plans ---------------------------------------------------------------------------------------------

/** What a correct back-end must do with a message. */
export type Expectation =
  /** close the connection (a framing error, or a refusal without NEED_REPLY) */
  | 'close'
  /** close, or answer a failure (NEED_REPLY set) */
  | 'refuse'
  /** framing may be out of step after it: nothing to check but liveness */
  | 'desync';

export interface FuzzMsg {
  request: number;
  flags: number;
  payload: Uint8Array;
  /** The header's size field when it lies (default payload length). */
  size?: number;
  fds: FdKind[];
  /** Send only this many bytes of header + payload, then close the connection. */
  truncateTo?: number;
  /** Template step or mutation that produced it. */
  label: string;
  /** Set on a certainly invalid (terminal) message. */
  expect?: Expectation;
  /** Not a message: kick every eventfd, or scribble a ring. */
  action?: 'kick' | 'scribble' | 'reset-rings';
  ring?: number;
}

interface Negotiated {
  protocol: bigint;
  features: bigint;
  packed: boolean;
  replyAck: boolean;
}

const V1 = 0x1;

function msg(request: FrontendRequest, payload: Uint8Array, label: string, fds: FdKind[] = [], needReply = false): FuzzMsg {
  return { request, flags: V1 | (needReply ? FLAG_NEED_REPLY : 0), payload, fds, label };
}
const state = (index: number, num: number): Uint8Array => encodeVringState({ index, num });
const vringFd = (index: number, noFd = false): Uint8Array => encodeU64(BigInt(index | (noFd ? 0x100 : 0)));

function vringAddrPayload(i: number, logFlag = false): Uint8Array {
  const g = ringGpas(i);
  return encodeVringAddr({ index: i, flags: logFlag ? 1 : 0, desc: BigInt(uvaOf(g.desc)), avail: BigInt(uvaOf(g.avail)), used: BigInt(uvaOf(g.used)), log: logFlag ? BigInt(0x3000 + i * 0x1000) : 0n });
}

/** Picks a random subset of `mask`, each bit with probability p. */
function subset(r: Prng, mask: bigint, p: number): bigint {
  let out = 0n;
  for (let b = 0n; b < 64n; b++) if ((mask >> b) & 1n && r.chance(p)) out |= 1n << b;
  return out;
}

/** The valid start: negotiation, memory table, rings, DRIVER_OK (DPDK virtio-user's order, with variations). */
function startSequence(r: Prng, n: Negotiated, rings: number): FuzzMsg[] {
  const out: FuzzMsg[] = [];
  const nr = (): boolean => n.replyAck && r.chance(0.6);
  out.push(msg(FrontendRequest.SET_OWNER, new Uint8Array(0), 'start'));
  out.push(msg(FrontendRequest.GET_FEATURES, new Uint8Array(0), 'start'));
  out.push(msg(FrontendRequest.GET_PROTOCOL_FEATURES, new Uint8Array(0), 'start'));
  out.push(msg(FrontendRequest.SET_PROTOCOL_FEATURES, encodeU64(n.protocol), 'start'));
  if (hasBit(n.protocol, ProtocolFeature.MQ)) out.push(msg(FrontendRequest.GET_QUEUE_NUM, new Uint8Array(0), 'start'));
  if (hasBit(n.protocol, ProtocolFeature.CONFIG) && r.chance(0.5)) out.push(msg(FrontendRequest.GET_CONFIG, encodeConfig({ offset: 0, flags: 0, data: new Uint8Array(r.pick([6, 8, 12])) }), 'start'));
  out.push(msg(FrontendRequest.SET_FEATURES, encodeU64(n.features), 'start', [], nr()));
  const status = hasBit(n.protocol, ProtocolFeature.STATUS);
  if (status) {
    out.push(msg(FrontendRequest.SET_STATUS, encodeU64(0xbn), 'start', [], nr()));
    out.push(msg(FrontendRequest.GET_STATUS, new Uint8Array(0), 'start'));
  }
  out.push({ request: 0, flags: 0, payload: new Uint8Array(0), fds: [], label: 'start', action: 'reset-rings' });
  out.push(msg(FrontendRequest.SET_MEM_TABLE, encodeMemoryTable(REGIONS.map(desc)), 'start', ['guest', 'guest'], nr()));
  for (let i = 0; i < rings; i++) {
    out.push(msg(FrontendRequest.SET_VRING_CALL, vringFd(i), 'start', ['event2'], nr()));
  }
  for (let i = 0; i < rings; i++) {
    out.push(msg(FrontendRequest.SET_VRING_NUM, state(i, RING_SIZE), 'start', [], nr()));
    out.push(msg(FrontendRequest.SET_VRING_BASE, state(i, n.packed ? 0x8000 : 0), 'start', [], nr()));
    out.push(msg(FrontendRequest.SET_VRING_ADDR, vringAddrPayload(i), 'start', [], nr()));
    if (r.chance(0.3)) out.push(msg(FrontendRequest.SET_VRING_ERR, vringFd(i), 'start', ['event2'], nr()));
    out.push(msg(FrontendRequest.SET_VRING_KICK, vringFd(i), 'start', ['event'], nr()));
  }
  for (let i = 0; i < rings; i++) out.push(msg(FrontendRequest.SET_VRING_ENABLE, state(i, 1), 'start', [], nr()));
  if (status) out.push(msg(FrontendRequest.SET_STATUS, encodeU64(0xfn), 'start', [], nr()));
  return out;
}

/** Operations on a running device. */
function runningOps(r: Prng, n: Negotiated, count: number): FuzzMsg[] {
  const out: FuzzMsg[] = [];
  const nr = (): boolean => n.replyAck && r.chance(0.6);
  const ops: Array<() => void> = [
    () => out.push({ request: 0, flags: 0, payload: new Uint8Array(0), fds: [], label: 'op', action: 'scribble', ring: r.int(FUZZ_MAX_QUEUES) }),
    () => out.push({ request: 0, flags: 0, payload: new Uint8Array(0), fds: [], label: 'op', action: 'kick' }),
    () => out.push(msg(FrontendRequest.SET_MEM_TABLE, encodeMemoryTable(REGIONS.map(desc)), 'op', ['guest', 'guest'], nr())),
    () => out.push(msg(FrontendRequest.SET_LOG_BASE, encodeLog({ mmapSize: BigInt(r.pick([4096, LOG_FILE_SIZE])), mmapOffset: 0n }), 'op', ['log'], nr())),
    () => out.push(msg(FrontendRequest.SET_FEATURES, encodeU64(n.features ^ bit(VHOST_F_LOG_ALL)), 'op', [], nr())),
    () => out.push(msg(FrontendRequest.SET_VRING_ENABLE, state(r.int(FUZZ_MAX_QUEUES), r.int(2)), 'op', [], nr())),
    () => out.push(msg(FrontendRequest.GET_VRING_BASE, state(r.int(FUZZ_MAX_QUEUES), 0), 'op')),
    () => out.push(msg(FrontendRequest.SET_VRING_CALL, vringFd(r.int(FUZZ_MAX_QUEUES), r.chance(0.2)), 'op', r.chance(0.2) ? [] : ['event2'], nr())),
    () => out.push(msg(FrontendRequest.SET_VRING_KICK, vringFd(r.int(FUZZ_MAX_QUEUES)), 'op', ['event'], nr())),
    () => out.push(msg(FrontendRequest.SET_VRING_ADDR, vringAddrPayload(r.int(FUZZ_MAX_QUEUES), r.chance(0.3)), 'op', [], nr())),
    () => out.push(msg(FrontendRequest.SET_VRING_NUM, state(r.int(FUZZ_MAX_QUEUES), r.pick([RING_SIZE, 16, 32])), 'op', [], nr())),
    () => out.push(msg(FrontendRequest.ADD_MEM_REG, encodeSingleRegion(desc(EXTRA_REGION)), 'op', ['guest'], nr())),
    () => out.push(msg(FrontendRequest.REM_MEM_REG, encodeSingleRegion(desc(r.pick([EXTRA_REGION, REGIONS[1]!]))), 'op', [], nr())),
    () => out.push(msg(FrontendRequest.GET_MAX_MEM_SLOTS, new Uint8Array(0), 'op')),
    () => out.push(msg(FrontendRequest.GET_STATUS, new Uint8Array(0), 'op')),
    () => out.push(msg(FrontendRequest.SET_STATUS, encodeU64(BigInt(r.pick([0, 0xb, 0xf, 0x4f]))), 'op', [], nr())),
    () => out.push(msg(FrontendRequest.RESET_DEVICE, new Uint8Array(0), 'op', [], nr())),
    () => out.push(msg(FrontendRequest.RESET_OWNER, new Uint8Array(0), 'op', [], nr())),
    () => out.push(msg(FrontendRequest.SEND_RARP, r.bytes(8), 'op', [], nr())),
    () => out.push(msg(FrontendRequest.NET_SET_MTU, encodeU64(BigInt(r.pick([68, 1500, 9000, 65535]))), 'op', [], nr())),
    () => out.push(msg(FrontendRequest.SET_BACKEND_REQ_FD, new Uint8Array(0), 'op', ['socket'], nr())),
    () => out.push(msg(FrontendRequest.GET_CONFIG, encodeConfig({ offset: r.int(16), flags: 0, data: new Uint8Array(r.range(1, 16)) }), 'op')),
    () => out.push(msg(FrontendRequest.SET_CONFIG, encodeConfig({ offset: r.int(16), flags: r.int(2), data: r.bytes(r.range(1, 8)) }), 'op', [], nr())),
    () => out.push(msg(FrontendRequest.GET_INFLIGHT_FD, encodeInflight({ mmapSize: 0n, mmapOffset: 0n, numQueues: r.range(1, 2), queueSize: RING_SIZE }), 'op')),
    () => out.push(msg(FrontendRequest.SET_INFLIGHT_FD, encodeInflight({ mmapSize: BigInt(r.pick([4096, 8192])), mmapOffset: 0n, numQueues: 1, queueSize: RING_SIZE }), 'op', ['log'], nr())),
    () => out.push(msg(FrontendRequest.SET_LOG_FD, new Uint8Array(0), 'op', ['event2'], nr())),
    () => out.push(msg(FrontendRequest.GET_FEATURES, new Uint8Array(0), 'op')),
  ];
  for (let k = 0; k < count; k++) r.pick(ops)();
  return out;
}

/** The stop sequence: disable, GET_VRING_BASE, status 0. */
function stopSequence(r: Prng, n: Negotiated, rings: number): FuzzMsg[] {
  const out: FuzzMsg[] = [];
  for (let i = 0; i < rings; i++) out.push(msg(FrontendRequest.SET_VRING_ENABLE, state(i, 0), 'stop', [], n.replyAck && r.chance(0.5)));
  for (let i = 0; i < rings; i++) out.push(msg(FrontendRequest.GET_VRING_BASE, state(i, 0), 'stop'));
  if (hasBit(n.protocol, ProtocolFeature.STATUS)) out.push(msg(FrontendRequest.SET_STATUS, encodeU64(0n), 'stop'));
  return out;
}

// ---- interesting values -----------------------------------------------------------------------------------

const U64_EDGES = [0n, 1n, 0x7fn, 0xffn, 0x100n, 0xffffn, 0x1_0000n, 0xffff_ffffn, 0x1_0000_0000n, 1n << 52n, (1n << 53n) - 1n, 1n << 53n, 1n << 63n, (1n << 64n) - 1n, (1n << 64n) - 0x1000n];

function interestingU64(r: Prng): bigint {
  switch (r.int(5)) {
    case 0:
      return r.pick(U64_EDGES);
    case 1:
      return r.u64();
    case 2:
      return BigInt(r.u32());
    case 3:
      return OFFERED_FEATURES | bit(r.int(64));
    default:
      return BigInt.asUintN(64, r.pick(U64_EDGES) + BigInt(r.range(-8, 8)));
  }
}

function interestingIndex(r: Prng): number {
  return r.pick([0, 1, FUZZ_MAX_QUEUES - 1, FUZZ_MAX_QUEUES, FUZZ_MAX_QUEUES + 1, 7, 8, 127, 255, 256, 257, 0x7fff_ffff, 0xffff_ffff, r.u32()]);
}

function interestingNum(r: Prng): number {
  return r.pick([0, 1, 2, 3, 15, 16, 63, 64, 65, 255, 256, 1024, 32767, 32768, 32769, 0x8000, 0xffff, 0x1_0000, 0x8000_8000, 0xffff_ffff, r.u32(), r.u32() & 0xffff]);
}

/** Addresses around the layout's edges (front-end VAs and GPAs mixed on purpose). */
function interestingAddr(r: Prng): bigint {
  const reg = r.pick([...REGIONS, EXTRA_REGION]);
  const base = r.chance(0.5) ? reg.uva : reg.gpa;
  const cands = [base, base + reg.size, base + reg.size - 16, base + reg.size - 8, base + reg.size - 1, base - 16, base + 1, base + 2, base + 0x1000, base + reg.size / 2 + 3];
  if (r.chance(0.3)) return r.pick(U64_EDGES);
  return BigInt(Math.max(0, r.pick(cands)));
}

function interestingRegion(r: Prng): MemoryRegionDesc {
  const reg = r.pick([...REGIONS, EXTRA_REGION]);
  const d = desc(reg);
  switch (r.int(8)) {
    case 0:
      d.memorySize = r.pick([0n, 1n, 0xfffn, BigInt(GUEST_FILE_SIZE), BigInt(GUEST_FILE_SIZE) + 4096n, (1n << 64n) - d.guestPhysAddr, (1n << 64n) - 1n]);
      break;
    case 1:
      d.mmapOffset = r.pick([1n, 0x800n, BigInt(GUEST_FILE_SIZE), BigInt(GUEST_FILE_SIZE) - 4096n, (1n << 64n) - 4096n, 1n << 53n]);
      break;
    case 2:
      d.guestPhysAddr = r.pick([0n, 0x8_0000n, (1n << 64n) - 4096n, (1n << 53n) - 4096n, BigInt(REGIONS[1]!.gpa) - 4096n]);
      break;
    case 3:
      d.userspaceAddr = r.pick([0n, BigInt(REGIONS[0]!.uva) + 0x1000n, (1n << 64n) - 4096n, BigInt(REGIONS[1]!.uva)]);
      break;
    case 4:
      d.memorySize = interestingU64(r);
      d.mmapOffset = interestingU64(r);
      break;
    default:
      break;
  }
  // Edge arithmetic may leave 64 bits: wrap like a u64 on the wire would.
  d.guestPhysAddr = BigInt.asUintN(64, d.guestPhysAddr);
  d.memorySize = BigInt.asUintN(64, d.memorySize);
  d.userspaceAddr = BigInt.asUintN(64, d.userspaceAddr);
  d.mmapOffset = BigInt.asUintN(64, d.mmapOffset);
  return d;
}

// ---- semantic mutations ------------------------------------------------------------------------------------

/** Re-encodes a message's payload with one field set to an interesting value. */
function mutateField(r: Prng, m: FuzzMsg): FuzzMsg {
  const rule = frontendRequestRule(m.request);
  const out: FuzzMsg = { ...m, label: `${m.label}+field`, payload: m.payload.slice() };
  const dv = new DataView(out.payload.buffer);
  switch (rule?.payload) {
    case 'u64':
    case 'vring-fd':
      if (out.payload.byteLength >= 8) dv.setBigUint64(0, m.request === FrontendRequest.SET_VRING_KICK || m.request === FrontendRequest.SET_VRING_CALL || m.request === FrontendRequest.SET_VRING_ERR ? BigInt(r.pick([interestingIndex(r) & 0x1ff, 0x100 | r.int(4), r.u32()])) : interestingU64(r), true);
      if (rule.payload === 'vring-fd' && r.chance(0.3)) out.fds = r.chance(0.5) ? [] : [r.pick<FdKind>(['event', 'guest', 'socket', 'null'])];
      break;
    case 'vring-state':
      if (r.chance(0.5)) dv.setUint32(0, interestingIndex(r), true);
      else dv.setUint32(4, interestingNum(r), true);
      break;
    case 'vring-addr': {
      const field = r.int(6);
      if (field === 0) dv.setUint32(0, interestingIndex(r), true);
      else if (field === 1) dv.setUint32(4, r.pick([0, 1, 2, 3, 0xffff_ffff]), true);
      else dv.setBigUint64(8 + 8 * (field - 2), interestingAddr(r), true);
      break;
    }
    case 'memory-table': {
      const n = r.range(0, 8);
      const regions = Array.from({ length: n }, () => (r.chance(0.5) ? interestingRegion(r) : desc(r.pick([...REGIONS, EXTRA_REGION]))));
      out.payload = encodeMemoryTable(regions);
      out.fds = r.chance(0.8) ? regions.map(() => 'guest' as FdKind) : Array.from({ length: r.range(0, 8) }, () => r.pick<FdKind>(['guest', 'log', 'event', 'null']));
      break;
    }
    case 'single-region':
      out.payload = encodeSingleRegion(interestingRegion(r));
      break;
    case 'log':
      dv.setBigUint64(r.pick([0, 8]), interestingU64(r), true);
      if (r.chance(0.2)) out.fds = [r.pick<FdKind>(['guest', 'event', 'socket', 'null'])];
      break;
    case 'config':
      if (out.payload.byteLength >= 12) dv.setUint32(r.pick([0, 4, 8]), r.pick([0, 1, 255, 256, 257, 0xffff_ffff, r.u32()]), true);
      break;
    case 'inflight':
      if (r.chance(0.5)) dv.setBigUint64(r.pick([0, 8]), interestingU64(r), true);
      else dv.setUint16(r.pick([16, 18]), r.pick([0, 1, 2, 3, 64, 256, 32768, 32769, 0xffff]), true);
      break;
    default:
      if (out.payload.byteLength > 0) out.payload[r.int(out.payload.byteLength)] = r.u32() & 0xff;
  }
  return out;
}

function flipBits(r: Prng, m: FuzzMsg): FuzzMsg {
  const p = m.payload.slice();
  for (let k = r.range(1, 4); k > 0 && p.byteLength > 0; k--) p[r.int(p.byteLength)]! ^= 1 << r.int(8);
  return { ...m, payload: p, label: `${m.label}+flip` };
}

/** A random, well-framed message of a random known request. */
function randomMessage(r: Prng, n: Negotiated): FuzzMsg {
  const base = r.pick([...startSequence(r, n, FUZZ_MAX_QUEUES), ...runningOps(r, n, 4)].filter((m) => m.action === undefined));
  return mutateField(r, { ...base, label: 'random' });
}

function mutatePlan(r: Prng, plan: FuzzMsg[], n: Negotiated): string {
  const real = (): number[] => plan.map((m, i) => (m.action === undefined ? i : -1)).filter((i) => i >= 0);
  const idx = real();
  if (idx.length === 0) return 'none';
  const i = r.pick(idx);
  const kind = r.int(10);
  switch (kind) {
    case 0:
    case 1:
    case 2:
      plan[i] = mutateField(r, plan[i]!);
      return 'field';
    case 3:
      plan[i] = flipBits(r, plan[i]!);
      return 'flip';
    case 4:
      plan.splice(i, 1);
      return 'drop';
    case 5:
      plan.splice(i, 0, { ...plan[i]!, label: `${plan[i]!.label}+dup` });
      return 'dup';
    case 6: {
      const j = r.pick(idx);
      [plan[i], plan[j]] = [plan[j]!, plan[i]!];
      return 'swap';
    }
    case 7: {
      // Out of order: move a message earlier.
      const [m] = plan.splice(i, 1);
      plan.splice(r.int(i + 1), 0, { ...m!, label: `${m!.label}+early` });
      return 'reorder';
    }
    case 8:
      plan[i] = { ...plan[i]!, flags: plan[i]!.flags ^ FLAG_NEED_REPLY, label: `${plan[i]!.label}+needreply` };
      return 'needreply';
    default:
      plan.splice(r.int(plan.length + 1), 0, randomMessage(r, n));
      return 'insert';
  }
}

// ---- certainly invalid terminal messages ---------------------------------------------------------------------

const KNOWN_REQUESTS = Array.from({ length: 40 }, (_, i) => i + 1).filter((c) => frontendRequestRule(c) !== undefined);

/** Classifies a header the way any correct back-end must treat it. */
function classifyHeader(request: number, flags: number, size: number, payloadLen: number, fdCount: number): Expectation {
  if ((flags & 0x3) !== V1 || (flags & ~FLAG_KNOWN_MASK) !== 0 || (flags & FLAG_REPLY) !== 0 || size > MAX_PAYLOAD_SIZE) return 'close';
  if (size !== payloadLen) return 'desync';
  const rule = frontendRequestRule(request);
  if (rule === undefined) return 'refuse';
  const sizeOk = rule.range === true ? size >= rule.sizes[0]! && size <= rule.sizes[1]! : rule.sizes.includes(size);
  if (!sizeOk || fdCount > 8 || fdCount < rule.minFds || fdCount > rule.maxFds) return 'refuse';
  return 'desync';
}

function invalidMessage(r: Prng, n: Negotiated): FuzzMsg {
  const m = invalidMessageRaw(r, n);
  // A refusal without NEED_REPLY must close (a failure reply nobody asked for would put the
  // front-end out of step) — except GET_CONFIG, whose failure answer is an empty payload.
  if (m.expect === 'refuse' && (m.flags & FLAG_NEED_REPLY) === 0 && m.request !== FrontendRequest.GET_CONFIG) m.expect = 'close';
  if (m.expect === 'close' && m.request === FrontendRequest.GET_CONFIG && classifyHeader(m.request, m.flags, m.size ?? m.payload.byteLength, m.payload.byteLength, 0) !== 'close') m.expect = 'refuse';
  return m;
}

function invalidMessageRaw(r: Prng, n: Negotiated): FuzzMsg {
  const nrFlag = r.chance(0.5) ? FLAG_NEED_REPLY : 0;
  const pick = r.int(17);
  const known = r.pick(KNOWN_REQUESTS);
  const knownRule = frontendRequestRule(known)!;
  const okSize = knownRule.sizes[0]!;
  const payloadOf = (len: number): Uint8Array => r.bytes(len);
  const t = (m: Omit<FuzzMsg, 'fds'> & { fds?: FdKind[] }): FuzzMsg => ({ fds: [], ...m });
  switch (pick) {
    case 0:
      return t({ request: known, flags: r.pick([0, 2, 3]) | nrFlag, payload: payloadOf(okSize), label: 'bad-version', expect: 'close' });
    case 1:
      return t({ request: known, flags: V1 | FLAG_REPLY | nrFlag, payload: payloadOf(okSize), label: 'reply-flag', expect: 'close' });
    case 2:
      return t({ request: known, flags: V1 | (1 << r.range(4, 31)) | nrFlag, payload: payloadOf(okSize), label: 'undefined-flag', expect: 'close' });
    case 3: {
      const request = r.pick([0, 26, 41, 42, 43, 44, 99, 0xffff, 0x7fff_ffff, 0xffff_ffff, r.u32()]);
      return t({ request, flags: V1 | nrFlag, payload: payloadOf(r.pick([0, 8, 40])), label: 'unknown-request', expect: nrFlag ? 'refuse' : 'close' });
    }
    case 4: {
      // A size beyond the limit: the header alone must close the connection.
      const size = r.pick([MAX_PAYLOAD_SIZE + 1, 4096, 0x1_0000, 0x7fff_ffff, 0xffff_ffff]);
      return t({ request: known, flags: V1 | nrFlag, payload: payloadOf(r.int(64)), size, label: 'size-beyond-limit', expect: 'close' });
    }
    case 5: {
      // A size the request never has (framing stays in step: exactly that many bytes follow).
      let size = r.range(0, MAX_PAYLOAD_SIZE);
      const ok = (s: number): boolean => (knownRule.range === true ? s >= knownRule.sizes[0]! && s <= knownRule.sizes[1]! : knownRule.sizes.includes(s));
      if (ok(size)) size = knownRule.range === true ? knownRule.sizes[0]! - 1 : okSize + r.pick([1, 4, -1]);
      if (size < 0 || ok(size)) size = 3;
      return t({ request: known, flags: V1 | nrFlag, payload: payloadOf(size), label: 'wrong-size', expect: nrFlag && !ok(size) ? 'refuse' : 'close', fds: [] });
    }
    case 6: {
      // More fds than the request takes.
      const request = r.pick(KNOWN_REQUESTS.filter((c) => frontendRequestRule(c)!.maxFds < 8));
      const rule = frontendRequestRule(request)!;
      const fds = Array.from({ length: r.range(rule.maxFds + 1, 8) }, () => r.pick<FdKind>(['event', 'guest', 'null']));
      return t({ request, flags: V1 | nrFlag, payload: payloadOf(rule.sizes[0]!), fds, label: 'too-many-fds', expect: 'refuse' });
    }
    case 7: {
      const request = r.pick(KNOWN_REQUESTS.filter((c) => frontendRequestRule(c)!.minFds > 0));
      const rule = frontendRequestRule(request)!;
      return t({ request, flags: V1 | nrFlag, payload: payloadOf(rule.sizes[0]!), label: 'missing-fd', expect: 'refuse' });
    }
    case 8: {
      const index = r.pick([FUZZ_MAX_QUEUES, FUZZ_MAX_QUEUES + 1, 255, 256, 0xffff, 0xffff_ffff, r.u32() | 0x100]) >>> 0;
      const request = r.pick([FrontendRequest.SET_VRING_NUM, FrontendRequest.SET_VRING_BASE, FrontendRequest.GET_VRING_BASE, FrontendRequest.SET_VRING_ENABLE]);
      return t({ request, flags: V1 | nrFlag, payload: state(index, 1), label: 'vring-index-out-of-range', expect: 'refuse' });
    }
    case 9: {
      const index = r.pick([FUZZ_MAX_QUEUES, 7, 255]);
      return t({ request: r.pick([FrontendRequest.SET_VRING_KICK, FrontendRequest.SET_VRING_CALL, FrontendRequest.SET_VRING_ERR]), flags: V1 | nrFlag, payload: vringFd(index), fds: ['event'], label: 'vring-fd-index-out-of-range', expect: 'refuse' });
    }
    case 10:
      return t({ request: FrontendRequest.SET_VRING_NUM, flags: V1 | nrFlag, payload: state(r.int(FUZZ_MAX_QUEUES), r.pick([0, 32769, 0x1_0000, 0xffff_ffff])), label: 'vring-num-invalid', expect: 'refuse' });
    case 11: {
      const regions = [desc(REGIONS[0]!), { ...desc(REGIONS[1]!), memorySize: 0n }];
      return t({ request: FrontendRequest.SET_MEM_TABLE, flags: V1 | nrFlag, payload: encodeMemoryTable(regions), fds: ['guest', 'guest'], label: 'mem-zero-region', expect: 'refuse' });
    }
    case 12: {
      // A region reaching beyond its file (SIGBUS if mapped and touched).
      const big = { ...desc(REGIONS[1]!), memorySize: BigInt(GUEST_FILE_SIZE), mmapOffset: BigInt(r.pick([PAGE, GUEST_FILE_SIZE / 2, GUEST_FILE_SIZE])) };
      return t({ request: FrontendRequest.SET_MEM_TABLE, flags: V1 | nrFlag, payload: encodeMemoryTable([desc(REGIONS[0]!), big]), fds: ['guest', 'guest'], label: 'mem-beyond-file', expect: 'refuse' });
    }
    case 13: {
      // 64-bit wrap of gpa + size / offset + size (CVE-2020-10724/10725 shapes).
      const wrap = { ...desc(REGIONS[1]!), ...(r.chance(0.5) ? { memorySize: (1n << 64n) - BigInt(REGIONS[1]!.gpa) + 4096n } : { mmapOffset: (1n << 64n) - 4096n }) };
      return t({ request: r.chance(0.5) ? FrontendRequest.SET_MEM_TABLE : FrontendRequest.SET_MEM_TABLE, flags: V1 | nrFlag, payload: encodeMemoryTable([desc(REGIONS[0]!), wrap]), fds: ['guest', 'guest'], label: 'mem-overflow', expect: 'refuse' });
    }
    case 14: {
      // CVE-2020-10722: mmap_size + mmap_offset wraps; or zero; or beyond the file.
      const shape = r.int(3);
      const log = shape === 0 ? { mmapSize: (1n << 64n) - 4096n, mmapOffset: 8192n } : shape === 1 ? { mmapSize: 0n, mmapOffset: 0n } : { mmapSize: BigInt(LOG_FILE_SIZE), mmapOffset: 4096n };
      return t({ request: FrontendRequest.SET_LOG_BASE, flags: V1 | nrFlag, payload: encodeLog(log), fds: ['log'], label: 'log-base-invalid', expect: 'refuse' });
    }
    case 15:
      return t({ request: FrontendRequest.SET_FEATURES, flags: V1 | nrFlag, payload: encodeU64(n.features | bit(r.pick([0, 5, 31, 33, 63]))), label: 'unoffered-features', expect: 'refuse' });
    default: {
      // Random header fields and bytes, classified.
      const request = r.chance(0.7) ? r.pick(KNOWN_REQUESTS) : r.u32();
      const flags = r.chance(0.5) ? V1 | (r.u32() & FLAG_NEED_REPLY) : r.u32() & r.pick([0xf, 0xff, 0xffff_ffff]);
      const len = r.int(MAX_PAYLOAD_SIZE + 1);
      const size = r.chance(0.7) ? len : r.chance(0.5) ? r.int(MAX_PAYLOAD_SIZE + 1) : r.u32();
      const fds = Array.from({ length: r.chance(0.7) ? 0 : r.range(1, 8) }, () => r.pick<FdKind>(['event', 'guest', 'log', 'null', 'socket']));
      const expect = classifyHeader(request, flags, size, len, fds.length);
      const e: Expectation = expect === 'refuse' && (flags & FLAG_NEED_REPLY) === 0 ? 'close' : expect;
      return t({ request, flags, payload: payloadOf(len), size, fds, label: 'random-bytes', expect: e });
    }
  }
}

/** A message cut short; the connection is closed right after (mid-message close). */
function truncatedMessage(r: Prng, n: Negotiated): FuzzMsg {
  const base = randomMessage(r, n);
  const total = HEADER_SIZE + base.payload.byteLength;
  return { ...base, truncateTo: r.range(1, Math.max(1, total - 1)), label: 'truncated' };
}

/** One connection's plan: mutated valid sequence, maybe a terminal invalid or truncated message. */
export function buildPlan(seed: number, connection: number): { plan: FuzzMsg[]; mutations: string[]; terminal: string | null } {
  const r = new Prng(seed, connection);
  let protocol = subset(r, OFFERED_PROTOCOL, 0.6);
  if (r.chance(0.8)) protocol |= bit(ProtocolFeature.REPLY_ACK);
  const packed = r.chance(0.2);
  let features = bit(VHOST_USER_F_PROTOCOL_FEATURES) | bit(32) | subset(r, bit(28) | bit(29), 0.5);
  if (packed) features |= bit(34);
  if (r.chance(0.2)) features |= bit(VHOST_F_LOG_ALL);
  if (r.chance(0.05)) features &= ~bit(VHOST_USER_F_PROTOCOL_FEATURES);
  const n: Negotiated = { protocol, features, packed, replyAck: hasBit(protocol, ProtocolFeature.REPLY_ACK) };
  const rings = r.chance(0.9) ? FUZZ_MAX_QUEUES : 1;
  const plan: FuzzMsg[] = [];
  const depth = r.int(10);
  const start = startSequence(r, n, rings);
  // Sometimes only a prefix of the start (a device that never becomes ready).
  plan.push(...(depth < 2 ? start.slice(0, r.int(start.length + 1)) : start));
  if (depth >= 2) {
    plan.push(...runningOps(r, n, r.range(0, 8)));
    if (r.chance(0.4)) plan.push(...stopSequence(r, n, rings));
    if (r.chance(0.2)) plan.push(...runningOps(r, n, r.range(1, 4)));
  }
  const mutations: string[] = [];
  for (let k = r.pick([0, 0, 1, 1, 2, 3]); k > 0; k--) mutations.push(mutatePlan(r, plan, n));
  let terminal: string | null = null;
  const end = r.int(10);
  if (end < 4) {
    const m = invalidMessage(r, n);
    // Sometimes in the middle: the rest of the plan is dropped (a correct back-end stops there).
    if (r.chance(0.3)) plan.splice(r.int(plan.length + 1));
    plan.push(m);
    terminal = m.label;
  } else if (end < 5) {
    const m = truncatedMessage(r, n);
    plan.push(m);
    terminal = m.label;
  }
  return { plan, mutations, terminal };
}

// ---- running a connection -------------------------------------------------------------------------------------

export interface Finding {
  seed: number;
  connection: number;
  kind: 'accepted-invalid' | 'hang' | 'bad-reply' | 'connect' | 'fuzzer-error';
  detail: string;
  plan: string;
}

export interface ConnectionOutcome {
  /** Messages actually sent (the barrier included). */
  sent: number;
  closedByBackend: boolean;
  failureReplies: number;
  replies: number;
  findings: Finding[];
}

/** Human-readable plan (for failure reports): one line per message, hex payloads. */
export function describePlan(plan: readonly FuzzMsg[], upTo = plan.length): string {
  return plan
    .slice(0, upTo)
    .map((m, i) => {
      if (m.action !== undefined) return `${i}: [${m.action}${m.ring !== undefined ? ` ring ${m.ring}` : ''}]`;
      const hex = Buffer.from(m.payload).toString('hex');
      return `${i}: ${frontendRequestName(m.request)} flags=0x${m.flags.toString(16)} size=${m.size ?? m.payload.byteLength} fds=[${m.fds.join(',')}]${m.truncateTo !== undefined ? ` truncated@${m.truncateTo}` : ''} ${m.label}${m.expect ? ` expect=${m.expect}` : ''} ${hex.length > 160 ? `${hex.slice(0, 160)}...` : hex}`;
    })
    .join('\n');
}

function encode(m: FuzzMsg): Uint8Array {
  const out = new Uint8Array(HEADER_SIZE + m.payload.byteLength);
  const dv = new DataView(out.buffer);
  dv.setUint32(0, m.request >>> 0, true);
  dv.setUint32(4, m.flags >>> 0, true);
  dv.setUint32(8, (m.size ?? m.payload.byteLength) >>> 0, true);
  out.set(m.payload, HEADER_SIZE);
  return m.truncateTo !== undefined ? out.subarray(0, m.truncateTo) : out;
}

/**
 * Rewrites the triggers of defects already reported and not fixed yet, so a long run keeps
 * exploring instead of finding them again (found.test.ts holds each as a regression test).
 * None is open now. Fixed, no longer rewritten: a kick fd epoll cannot watch (the control
 * plane refuses fds that are not eventfds; workers unwind a failed start), and an odd
 * mmap_offset acknowledged then unmappable by the data plane (refused up front).
 * To add one: match the message shape here and return a harmless variant.
 */
export function avoidKnownDefects(m: FuzzMsg): FuzzMsg {
  return m;
}

/** Messages answered by a reply (see runConnection). */
function expectsReply(request: number, flags: number): boolean {
  if ((flags & FLAG_NEED_REPLY) !== 0) return true;
  const rule = frontendRequestRule(request);
  return rule !== undefined && rule.reply !== 'none';
}

/** Requests whose u64 answer is an ack (0) or a failure (non-zero), not a value. */
function isAckable(request: number): boolean {
  const rule = frontendRequestRule(request);
  return rule === undefined || rule.reply === 'none' || request === FrontendRequest.SET_LOG_BASE;
}

const BARRIER: FuzzMsg = { request: FrontendRequest.GET_FEATURES, flags: V1, payload: new Uint8Array(0), fds: [], label: 'barrier' };

/**
 * Runs one plan on a new connection to `socketPath`. `replyTimeoutMs` bounds
 * the wait for the barrier's answer (or the close): longer is a hang.
 */
export async function runConnection(
  socketPath: string,
  lane: FuzzLane,
  seed: number,
  connection: number,
  replyTimeoutMs: number,
  options: { avoidKnownDefects?: boolean } = {},
): Promise<ConnectionOutcome> {
  const built = buildPlan(seed, connection).plan;
  const plan = options.avoidKnownDefects === true ? built.map(avoidKnownDefects) : built;
  const r = new Prng(seed ^ 0x5bd1e995, connection);
  const findings: Finding[] = [];
  const finding = (kind: Finding['kind'], detail: string, upTo = plan.length): void => {
    findings.push({ seed, connection, kind, detail, plan: describePlan(plan, upTo) });
  };
  let fd: number;
  try {
    fd = native.unixConnect(socketPath);
  } catch (err) {
    finding('connect', `connect failed: ${(err as Error).message}`, 0);
    return { sent: 0, closedByBackend: false, failureReplies: 0, replies: 0, findings };
  }
  const conn = new VhostConnection(fd, { maxPayload: 1 << 16 });
  const sentCodes: number[] = [];
  const sentFlags: number[] = [];
  let sent = 0;
  let terminal: FuzzMsg | null = null;
  let packed = false;
  let truncated = false;
  try {
    for (const m of plan) {
      if (m.action === 'kick') {
        for (const e of lane.events) native.eventfdWrite(e, 1);
        continue;
      }
      if (m.action === 'scribble') {
        lane.scribble(r, m.ring ?? 0, packed);
        continue;
      }
      if (m.action === 'reset-rings') {
        lane.resetRings();
        continue;
      }
      if (m.request === FrontendRequest.SET_FEATURES && m.payload.byteLength === 8) packed = (new DataView(m.payload.buffer, m.payload.byteOffset).getBigUint64(0, true) & bit(34)) !== 0n;
      if (conn.isClosed) break;
      const bytes = encode(m);
      const fds = m.fds.map((k) => lane.fdOf(k));
      try {
        if (bytes.byteLength > 0) await conn.send(bytes, fds);
      } catch {
        break; // the back-end closed: the rest of the plan is moot
      }
      sent++;
      sentCodes.push(m.request >>> 0);
      sentFlags.push(m.flags >>> 0);
      if (m.truncateTo !== undefined) {
        truncated = true;
        break;
      }
      if (m.expect !== undefined) {
        terminal = m;
        break;
      }
    }
    if (truncated) {
      conn.close(); // close mid-message
      return { sent, closedByBackend: false, failureReplies: 0, replies: 0, findings };
    }
    let barrierSent = false;
    if (!conn.isClosed && terminal?.expect !== 'desync') {
      try {
        await conn.send(encode(BARRIER));
        sent++;
        sentCodes.push(BARRIER.request);
        sentFlags.push(BARRIER.flags);
        barrierSent = true;
      } catch {
        // closed meanwhile
      }
    }
    // Collect replies until the barrier's answer or the close. vhost-ts answers every message
    // with a reply body (GET_*, SET_LOG_BASE) and every other one with NEED_REPLY (an ack or a
    // failure); a refusal otherwise closes. So while the connection is open, the k-th reply
    // answers the k-th such message, with its request code.
    const expected = sentCodes.map((code, i) => ({ code, i })).filter((e) => expectsReply(e.code, sentFlags[e.i]!));
    let k = 0;
    let replies = 0;
    let failureReplies = 0;
    let terminalAnswer: 'failure' | 'success' | null = null;
    const terminalIndex = terminal !== null ? sentCodes.length - (barrierSent ? 2 : 1) : -1;
    const barrierIndex = barrierSent ? sentCodes.length - 1 : -1;
    const deadline = Date.now() + (terminal?.expect === 'desync' ? 300 : replyTimeoutMs);
    let gotBarrier = false;
    while (!gotBarrier) {
      const left = deadline - Date.now();
      if (left <= 0) break;
      let reply;
      try {
        reply = await conn.receive(left);
      } catch {
        break; // closed or timed out
      }
      replies++;
      for (const f of reply.fds) native.close(f);
      if (terminal?.expect === 'desync') continue; // framing out of step: anything goes
      if (reply.flags !== (V1 | FLAG_REPLY)) {
        finding('bad-reply', `reply to ${frontendRequestName(reply.request)} has flags 0x${reply.flags.toString(16)}`);
        break;
      }
      const e = expected[k++];
      if (e === undefined || e.code !== reply.request) {
        finding('bad-reply', `reply #${k - 1} is ${frontendRequestName(reply.request)} (size ${reply.size}), expected ${e === undefined ? 'none' : `the answer to message #${e.i} ${frontendRequestName(e.code)}`}`);
        break;
      }
      const isFailure = (reply.size === 8 && new DataView(reply.payload.buffer, reply.payload.byteOffset).getBigUint64(0, true) !== 0n && isAckable(reply.request)) || (reply.request === FrontendRequest.GET_CONFIG && reply.size <= 12);
      if (e.i === terminalIndex) terminalAnswer = isFailure ? 'failure' : 'success';
      if (isFailure) failureReplies++;
      if (e.i === barrierIndex) gotBarrier = true;
    }
    const closedByBackend = conn.isClosed || (await Promise.race([conn.closed.then(() => true), new Promise<boolean>((res) => setTimeout(() => res(false), gotBarrier ? 0 : 50))]));
    if (barrierSent && !gotBarrier && !closedByBackend) {
      finding('hang', `no answer to the GET_FEATURES barrier and no close within ${replyTimeoutMs} ms`);
    }
    if (terminal !== null && (terminal.expect === 'close' || terminal.expect === 'refuse') && !closedByBackend) {
      const refused = terminal.expect === 'refuse' && terminalAnswer === 'failure';
      // (GET_CONFIG's failure answer, an empty config, is its refusal: see invalidMessage.)
      if (!refused) {
        finding(
          'accepted-invalid',
          `${terminal.label} (${frontendRequestName(terminal.request)}, expect ${terminal.expect}) was ${terminalAnswer === 'success' ? 'acknowledged as a success' : 'neither refused nor answered by a close'}`,
        );
      }
    }
    return { sent, closedByBackend, failureReplies, replies, findings };
  } finally {
    conn.close();
    lane.drainBackendSocket();
  }
}

// ---- the loop ------------------------------------------------------------------------------------------

export interface FuzzOptions {
  socketPath: string;
  seed: number;
  /** Stop once this many messages were sent. */
  messages: number;
  /** Connections run concurrently (one lane each). */
  lanes?: number;
  replyTimeoutMs?: number;
  /** First connection index (to resume or replay). */
  firstConnection?: number;
  /** Called after each connection; return false to stop early. */
  onConnection?(index: number, outcome: ConnectionOutcome, stats: FuzzStats): boolean | void;
  /** Checked between connections: stop when it returns true. */
  shouldStop?(): boolean;
  /** Rewrite the triggers of reported defects (see avoidKnownDefects). */
  avoidKnownDefects?: boolean;
}

export interface FuzzStats {
  messages: number;
  connections: number;
  closedByBackend: number;
  failureReplies: number;
  findings: Finding[];
  terminals: Record<string, number>;
  mutations: Record<string, number>;
  /** Connections running right now. */
  inFlight: Set<number>;
  /** The last 16 connections started (when the back-end dies, the trigger is among them). */
  recent: number[];
}

/** Runs connections until `messages` were sent (or `shouldStop`). */
export async function fuzzControlPlane(o: FuzzOptions): Promise<FuzzStats> {
  const stats: FuzzStats = { messages: 0, connections: 0, closedByBackend: 0, failureReplies: 0, findings: [], terminals: {}, mutations: {}, inFlight: new Set(), recent: [] };
  let next = o.firstConnection ?? 0;
  const lanes = Array.from({ length: o.lanes ?? 3 }, (_, i) => new FuzzLane(i));
  const timeout = o.replyTimeoutMs ?? 8000;
  let stop = false;
  try {
    await Promise.all(
      lanes.map(async (lane) => {
        while (!stop && stats.messages < o.messages) {
          if (o.shouldStop?.() === true) {
            stop = true;
            break;
          }
          const index = next++;
          stats.inFlight.add(index);
          stats.recent.push(index);
          if (stats.recent.length > 16) stats.recent.shift();
          let mutations: string[];
          let terminal: string | null;
          let outcome: ConnectionOutcome;
          try {
            ({ mutations, terminal } = buildPlan(o.seed, index));
            outcome = await runConnection(o.socketPath, lane, o.seed, index, timeout, { avoidKnownDefects: o.avoidKnownDefects ?? false });
          } catch (err) {
            // A bug of the fuzzer itself: reported, the run goes on.
            stats.findings.push({ seed: o.seed, connection: index, kind: 'fuzzer-error', detail: String((err as Error).stack ?? err), plan: '' });
            stats.inFlight.delete(index);
            await new Promise((r) => setImmediate(r));
            continue;
          }
          stats.messages += outcome.sent;
          stats.connections++;
          if (outcome.closedByBackend) stats.closedByBackend++;
          stats.failureReplies += outcome.failureReplies;
          stats.findings.push(...outcome.findings);
          if (outcome.findings.some((f) => f.kind === 'connect')) stop = true; // the back-end is gone
          for (const m of mutations) stats.mutations[m] = (stats.mutations[m] ?? 0) + 1;
          if (terminal !== null) stats.terminals[terminal] = (stats.terminals[terminal] ?? 0) + 1;
          if (o.onConnection?.(index, outcome, stats) === false) stop = true;
          stats.inFlight.delete(index);
          // Let macrotasks run (child exit events, timers): a connection that fails at once
          // (connect refused) would otherwise spin this loop on microtasks forever.
          await new Promise((r) => setImmediate(r));
        }
      }),
    );
  } finally {
    for (const l of lanes) l.close();
  }
  return stats;
}
