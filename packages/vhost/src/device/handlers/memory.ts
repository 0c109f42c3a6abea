/**
 * Memory table (SET_MEM_TABLE, ADD/REM_MEM_REG) and dirty log (SET_LOG_BASE,
 * SET_LOG_FD) handlers.
 */
import { check } from '../../errors.js';
import { mapDirtyLog, releaseDirtyLog } from '../../memory/dirty-log.js';
import { MemoryTable, checkNoOverlap, mapRegion, releaseRegion, validateRegionDesc, type MemoryRegion, type RegionRange } from '../../memory/table.js';
import { MAX_MEM_TABLE_REGIONS } from '../../protocol/constants.js';
import { decodeLog, decodeMemoryTable, decodeSingleRegion, encodeU64 } from '../../protocol/payloads.js';
import { takeFd, type Incoming, type Outcome, type Session } from '../session.js';

/** Maps `ranges[i]` from `fds[i]`; closes every fd; releases what was mapped if one fails. */
function mapAll(s: Session, ranges: readonly RegionRange[], fds: readonly number[], firstIndex: number): MemoryRegion[] {
  const regions: MemoryRegion[] = [];
  try {
    ranges.forEach((range, i) => {
      regions.push(mapRegion(s.native, range, fds[i]!, { sealShrink: s.config.sealRegions, requireSealed: s.config.requireSealedMemory, logger: s.logger, what: `region ${firstIndex + i}` }));
    });
    return regions;
  } catch (err) {
    for (const r of regions) releaseRegion(s.native, r);
    throw err;
  } finally {
    s.closeFds(fds);
  }
}

/**
 * SET_MEM_TABLE: "The size and ordering of the fds matches the number and
 * ordering of memory regions." Every region is validated (non-zero, no
 * overlap, fd long enough) and mapped before anything changes; a repeat table
 * while the device runs is swapped with the data plane paused, never by
 * destroying the device.
 */
export async function setMemTable(s: Session, msg: Incoming): Promise<Outcome> {
  const descs = decodeMemoryTable(msg.payload);
  check(descs.length > 0, 'SET_MEM_TABLE with no regions');
  check(descs.length === msg.fds.length, () => `SET_MEM_TABLE: ${descs.length} regions but ${msg.fds.length} fds`);
  const ranges = descs.map((d, i) => validateRegionDesc(d, `region ${i}`));
  checkNoOverlap(ranges);
  const fds = msg.fds.splice(0);
  const regions = mapAll(s, ranges, fds, 0);
  const old = s.state.memory;
  await s.replaceMemory(new MemoryTable(regions), old?.regions ?? []);
  s.logger.info(`memory table: ${regions.map((r) => `[gpa 0x${r.guestPhysAddr.toString(16)} +0x${r.size.toString(16)} uva 0x${r.userspaceAddr.toString(16)}]`).join(' ')}`);
}

/** GET_MAX_MEM_SLOTS: at most 8 regions, as SET_MEM_TABLE. */
export function getMaxMemSlots(): Outcome {
  return { reply: encodeU64(BigInt(MAX_MEM_TABLE_REGIONS)) };
}

/**
 * Extra ADD_MEM_REG references to a mapped region beyond the first. QEMU's
 * vhost-user-net with several queue pairs runs one vhost device per pair over
 * the same connection, and each sends ADD_MEM_REG (and later REM_MEM_REG) for
 * the same regions: an identical add is a new reference, not an overlap, and
 * the region goes away with its last reference. A new table (SET_MEM_TABLE)
 * makes new region objects, so stale counts vanish with the old ones.
 */
const extraRefs = new WeakMap<MemoryRegion, number>();

function sameRegion(r: MemoryRegion, range: RegionRange): boolean {
  return r.guestPhysAddr === range.guestPhysAddr && r.userspaceAddr === range.userspaceAddr && r.size === range.size;
}

/** ADD_MEM_REG: "Exactly one file descriptor from which the memory is mapped". */
export async function addMemReg(s: Session, msg: Incoming): Promise<Outcome> {
  const range = validateRegionDesc(decodeSingleRegion(msg.payload), 'ADD_MEM_REG region');
  const old = s.state.memory?.regions ?? [];
  const twin = old.find((r) => sameRegion(r, range) && r.mmapOffset === range.mmapOffset);
  if (twin !== undefined) {
    s.closeFds(msg.fds.splice(0));
    extraRefs.set(twin, (extraRefs.get(twin) ?? 0) + 1);
    s.logger.debug(`ADD_MEM_REG: region at gpa 0x${range.guestPhysAddr.toString(16)} already mapped: one more reference`);
    return;
  }
  check(old.length < MAX_MEM_TABLE_REGIONS, `ADD_MEM_REG: all ${MAX_MEM_TABLE_REGIONS} memory slots are in use`);
  checkNoOverlap([...old, range]);
  const fd = takeFd(msg);
  const [region] = mapAll(s, [range], [fd], old.length);
  await s.replaceMemory(new MemoryTable([...old, region!]), []);
}

/**
 * REM_MEM_REG: "The memory region to be removed is identified by its guest
 * address, user address and size. The mmap offset is ignored." and "If a file
 * descriptor is passed, the back-end MUST close it without using it".
 */
export async function remMemReg(s: Session, msg: Incoming): Promise<Outcome> {
  s.closeFds(msg.fds.splice(0));
  const range = validateRegionDesc(decodeSingleRegion(msg.payload), 'REM_MEM_REG region');
  const old = s.state.memory?.regions ?? [];
  const victim = old.find((r) => sameRegion(r, range));
  check(victim !== undefined, () => `REM_MEM_REG: no region at gpa 0x${range.guestPhysAddr.toString(16)} uva 0x${range.userspaceAddr.toString(16)} size 0x${range.size.toString(16)}`);
  const refs = extraRefs.get(victim) ?? 0;
  if (refs > 0) {
    extraRefs.set(victim, refs - 1);
    return;
  }
  const rest = old.filter((r) => r !== victim);
  await s.replaceMemory(rest.length > 0 ? new MemoryTable(rest) : null, [victim]);
}

/**
 * SET_LOG_BASE (LOG_SHMFD): maps the log bitmap (size checks first: the
 * CVE-2020-10722 shape is refused), swaps it in (paused when running) and
 * answers u64 0.
 */
export async function setLogBase(s: Session, msg: Incoming): Promise<Outcome> {
  const desc = decodeLog(msg.payload);
  const fd = takeFd(msg);
  let log;
  try {
    log = mapDirtyLog(s.native, fd, desc, { sealShrink: s.config.sealRegions, requireSealed: s.config.requireSealedMemory, logger: s.logger });
  } finally {
    s.closeFds([fd]);
  }
  const st = s.state;
  const old = st.log;
  await s.whilePaused(
    () => {
      st.log = log;
      if (old !== null) releaseDirtyLog(s.native, old);
    },
    () => releaseDirtyLog(s.native, log),
  );
  s.logger.info(`dirty log: ${log.size} bytes (covers ${log.coveredBytes} guest bytes)`);
  return { reply: encodeU64(0n) };
}

/** SET_LOG_FD: an eventfd to signal log changes; kept (vhost-ts does not use it) and closed at teardown. */
export function setLogFd(s: Session, msg: Incoming): Outcome {
  const fd = takeFd(msg);
  if (s.state.logFd >= 0) s.closeFds([s.state.logFd]);
  s.state.logFd = fd;
}
