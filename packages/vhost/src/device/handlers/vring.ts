/**
 * Per-vring requests: size, addresses, base, stop (GET_VRING_BASE), kick /
 * call / err fds and enable.
 */
import { existsSync, readlinkSync } from 'node:fs';
import { VhostRequestError, check } from '../../errors.js';
import { safeNumber } from '../../memory/table.js';
import { MAX_VRING_SIZE, VHOST_USER_F_PROTOCOL_FEATURES, VRING_F_LOG, hasBit } from '../../protocol/constants.js';
import {
  decodePackedBase,
  decodeVringAddr,
  decodeVringFd,
  decodeVringState,
  encodePackedBase,
  encodeVringState,
  type VringFdPayload,
} from '../../protocol/payloads.js';
import { applyRingTranslation, computeRingTranslation, translateRingAddresses } from '../ring-translate.js';
import { takeFd, type Incoming, type Outcome, type Session } from '../session.js';
import type { Vring } from '../vring.js';

/** The vring a message names: index < maxQueues (CVE-2020-10723 was an unchecked index). */
function vringAt(s: Session, index: number, name: string): Vring {
  const v = s.state.vrings[index];
  check(v !== undefined, () => `${name}: vring index ${index} out of range (max ${s.state.vrings.length})`);
  v.touched = true;
  return v;
}

function isPowerOfTwo(n: number): boolean {
  return n > 0 && (n & (n - 1)) === 0;
}

/**
 * SET_VRING_NUM: 1..32768 entries; a power of two for split rings (packed
 * rings need not be).
 */
export async function setVringNum(s: Session, msg: Incoming): Promise<Outcome> {
  const { index, num } = decodeVringState(msg.payload);
  const v = vringAt(s, index, msg.name);
  check(num >= 1 && num <= MAX_VRING_SIZE, () => `vring ${index}: size ${num} must be 1..${MAX_VRING_SIZE}`);
  check(v.packed || isPowerOfTwo(num), () => `vring ${index}: split ring size ${num} is not a power of two`);
  await s.quiesceRing(index);
  v.size = num;
  if (v.addresses !== null) {
    try {
      translateRingAddresses(s, v, v.addresses);
    } catch (err) {
      v.invalidateAddresses();
      s.logger.warn(`vring ${index}: addresses do not fit the new size: ${(err as Error).message}`);
    }
  }
}

/** SET_VRING_ADDR: needs a memory table and the ring size; every area must translate. */
export async function setVringAddr(s: Session, msg: Incoming): Promise<Outcome> {
  const addr = decodeVringAddr(msg.payload);
  const v = vringAt(s, addr.index, msg.name);
  check(s.state.memory !== null, () => `vring ${addr.index}: SET_VRING_ADDR before any memory table`);
  check((addr.flags & ~VRING_F_LOG) === 0, () => `vring ${addr.index}: unknown address flags 0x${addr.flags.toString(16)}`);
  const addresses = {
    desc: safeNumber(addr.desc, `vring ${addr.index}: desc address`),
    avail: safeNumber(addr.avail, `vring ${addr.index}: avail address`),
    used: safeNumber(addr.used, `vring ${addr.index}: used address`),
  };
  const logGuestAddr = (addr.flags & VRING_F_LOG) !== 0 ? safeNumber(addr.log, `vring ${addr.index}: log address`) : 0;
  const translation = computeRingTranslation(s.state, v, addresses);
  await s.quiesceRing(addr.index);
  applyRingTranslation(v, translation);
  v.addresses = addresses;
  v.addrFlags = addr.flags;
  v.logGuestAddr = logGuestAddr;
}

/**
 * SET_VRING_BASE. Split: the next avail index (u16). Packed: bits 0-14 avail
 * index, 15 avail wrap, 16-30 used index, 31 used wrap (DPDK sends only the
 * low 16 bits: used then mirrors avail); indices must be below the ring size.
 */
export async function setVringBase(s: Session, msg: Incoming): Promise<Outcome> {
  const { index, num } = decodeVringState(msg.payload);
  const v = vringAt(s, index, msg.name);
  const limit = v.size > 0 ? v.size : MAX_VRING_SIZE;
  if (v.packed) {
    const b = decodePackedBase(num);
    check(b.availIdx < limit && b.usedIdx < limit, () => `vring ${index}: packed base avail ${b.availIdx} / used ${b.usedIdx} beyond the ring of ${limit}`);
    await s.quiesceRing(index);
    v.lastAvailIdx = b.availIdx;
    v.availWrapCounter = b.availWrap;
    v.lastUsedIdx = b.usedIdx;
    v.usedWrapCounter = b.usedWrap;
  } else {
    check(num <= 0xffff, () => `vring ${index}: base ${num} is beyond the 16-bit ring index`);
    await s.quiesceRing(index);
    v.lastAvailIdx = num;
    v.lastUsedIdx = num;
  }
}

/**
 * GET_VRING_BASE: stops the ring ("stop ring upon receiving
 * VHOST_USER_GET_VRING_BASE") without resetting it, and answers the next
 * avail index. The first stop of a running device calls destroyDevice, which
 * writes the data plane's indices back before this reply is built.
 */
export async function getVringBase(s: Session, msg: Incoming): Promise<Outcome> {
  const { index } = decodeVringState(msg.payload);
  const v = vringAt(s, index, msg.name);
  await s.destroyDevice(`GET_VRING_BASE stopped vring ${index}`);
  v.started = false;
  if (v.kickFd >= 0) s.closeFds([v.kickFd]);
  v.kickFd = -1;
  v.kickPolling = false;
  let num: number;
  if (v.packed) {
    // Packed indices are below 0x8000 by construction (SET_VRING_BASE checks them, SET_FEATURES
    // resets them when the layout changes); refuse rather than throw should one ever not be.
    check(
      v.lastAvailIdx >= 0 && v.lastAvailIdx <= 0x7fff && v.lastUsedIdx >= 0 && v.lastUsedIdx <= 0x7fff,
      () => `vring ${index}: indices avail ${v.lastAvailIdx} / used ${v.lastUsedIdx} cannot be encoded as a packed base`,
    );
    num = encodePackedBase({ availIdx: v.lastAvailIdx, availWrap: v.availWrapCounter, usedIdx: v.lastUsedIdx, usedWrap: v.usedWrapCounter });
  } else {
    num = v.lastAvailIdx;
  }
  return { reply: encodeVringState({ index, num }) };
}

/** Checks the no-fd bit against the fds that came: "This flag is set when there is no file descriptor in the ancillary data." */
function vringFdOf(s: Session, msg: Incoming, p: VringFdPayload): number {
  if (p.noFd) {
    check(msg.fds.length === 0, () => `${msg.name}: no-fd bit set but an fd is attached`);
    return -1;
  }
  check(msg.fds.length === 1, () => `${msg.name}: no fd attached and the no-fd bit is clear`);
  const fd = takeFd(msg);
  const kind = eventfdKind(fd);
  if (kind !== null) {
    s.closeFds([fd]);
    throw new VhostRequestError(`${msg.name}: vring ${p.index}: the fd is not an eventfd (${kind}); kick, call and err fds must be eventfds`);
  }
  return fd;
}

/** Whether /proc/self/fd can tell an fd's kind (not in every sandbox). */
const procFds = existsSync('/proc/self/fd');

/**
 * Null when `fd` is an eventfd (or /proc cannot tell), else what it is. A kick
 * fd of another kind (a regular file, /dev/null, a memfd) cannot be watched
 * with epoll, and a call/err fd of another kind is not a notification at all.
 */
function eventfdKind(fd: number): string | null {
  if (!procFds) return null;
  let target: string;
  try {
    target = readlinkSync(`/proc/self/fd/${fd}`);
  } catch (err) {
    return `unreadable: ${(err as Error).message}`;
  }
  return target === 'anon_inode:[eventfd]' ? null : target;
}

/** SET_VRING_KICK: starts the ring ("The back-end must start ring upon receiving a kick"). Needs a memory table. */
export async function setVringKick(s: Session, msg: Incoming): Promise<Outcome> {
  const p = decodeVringFd(msg.payload);
  const v = vringAt(s, p.index, msg.name);
  check(s.state.memory !== null, () => `vring ${p.index}: SET_VRING_KICK before any memory table`);
  const fd = vringFdOf(s, msg, p);
  try {
    await s.quiesceRing(p.index);
  } catch (err) {
    if (fd >= 0) s.closeFds([fd]);
    throw err;
  }
  if (v.kickFd >= 0) s.closeFds([v.kickFd]);
  v.kickFd = fd;
  v.kickPolling = p.noFd;
  v.started = true;
}

/**
 * The common part of SET_VRING_CALL/ERR: decode, take the fd (or the no-fd
 * bit), and quiesce the ring before the caller swaps the fd in; the new fd is
 * closed if quiescing fails.
 */
async function takeQuiescedVringFd(s: Session, msg: Incoming): Promise<{ v: ReturnType<typeof vringAt>; fd: number; noFd: boolean }> {
  const p = decodeVringFd(msg.payload);
  const v = vringAt(s, p.index, msg.name);
  const fd = vringFdOf(s, msg, p);
  try {
    await s.quiesceRing(p.index);
  } catch (err) {
    if (fd >= 0) s.closeFds([fd]);
    throw err;
  }
  return { v, fd, noFd: p.noFd };
}

/** SET_VRING_CALL: the fd the back-end writes to interrupt the guest (no-fd bit: the front-end polls). */
export async function setVringCall(s: Session, msg: Incoming): Promise<Outcome> {
  const { v, fd, noFd } = await takeQuiescedVringFd(s, msg);
  if (v.callFd >= 0) s.closeFds([v.callFd]);
  v.callFd = fd;
  v.callPolling = noFd;
}

/** SET_VRING_ERR: the fd to signal ring errors on. */
export async function setVringErr(s: Session, msg: Incoming): Promise<Outcome> {
  const { v, fd } = await takeQuiescedVringFd(s, msg);
  if (v.errFd >= 0) s.closeFds([v.errFd]);
  v.errFd = fd;
}

/**
 * SET_VRING_ENABLE: 1 enables, 0 disables; independent of started/stopped.
 * "This request should be sent only when VHOST_USER_F_PROTOCOL_FEATURES has
 * been negotiated": refused when SET_FEATURES came without bit 30.
 */
export function setVringEnable(s: Session, msg: Incoming): Outcome {
  const { index, num } = decodeVringState(msg.payload);
  const v = vringAt(s, index, msg.name);
  check(num === 0 || num === 1, () => `vring ${index}: SET_VRING_ENABLE num ${num} must be 0 or 1`);
  const st = s.state;
  check(!st.featuresSet || hasBit(st.features, VHOST_USER_F_PROTOCOL_FEATURES), `vring ${index}: SET_VRING_ENABLE without VHOST_USER_F_PROTOCOL_FEATURES negotiated`);
  v.enabled = num === 1;
}
