import { checkQueueSize, resolveArea } from './area.js';
import type { Chain } from './chain.js';
import {
  DESC_LEN,
  DESC_SIZE,
  MAX_ADDR_HI,
  PACKED_BASE_AVAIL_WRAP,
  PACKED_BASE_IDX_MASK,
  PACKED_BASE_USED_SHIFT,
  PACKED_DESC_ALIGN,
  PACKED_DESC_FLAGS,
  PACKED_DESC_ID,
  PACKED_EVENT_ALIGN,
  PACKED_EVENT_BYTES,
  PACKED_EVENT_FLAGS,
  PACKED_EVENT_OFF_WRAP,
  RING_EVENT_FLAGS_DESC,
  RING_EVENT_FLAGS_DISABLE,
  RING_EVENT_FLAGS_ENABLE,
  RING_EVENT_OFF_MASK,
  RING_EVENT_WRAP_SHIFT,
  TWO_POW_32,
  VIRTQ_DESC_F_AVAIL,
  VIRTQ_DESC_F_INDIRECT,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_USED,
  VIRTQ_DESC_F_WRITE,
  packedDescBytes,
} from './constants.js';
import { RingError, type RingErrorCode } from './errors.js';
import type { GuestMemory } from './memory.js';
import { vringNeedEvent, type DeviceRing } from './ring.js';

/** Where a packed ring lives (vhost-user SET_VRING_ADDR: desc, avail = driver area, used = device area). */
export interface PackedRingConfig {
  /** Queue size: 1..32768, not necessarily a power of 2. */
  size: number;
  /** Descriptor ring, 16-aligned, 16 * size bytes. */
  descGpa: number;
  /** Driver Event Suppression area (written by the driver), 4-aligned, 4 bytes. */
  driverEventGpa: number;
  /** Device Event Suppression area (written by the device), 4-aligned, 4 bytes. */
  deviceEventGpa: number;
  /** VIRTIO_F_EVENT_IDX negotiated (RING_EVENT_FLAGS_DESC allowed). */
  eventIdx?: boolean;
}

export interface PackedDeviceOptions {
  /**
   * SET_VRING_BASE value: bits 0-14 avail idx, bit 15 avail wrap, bits 16-30 used
   * idx, bit 31 used wrap. Default 1 << 15 (fresh ring: "wrap counters start at
   * 1"). When bits 16-31 are all zero (DPDK sends only the low 16 bits) the used
   * position is taken equal to the avail position.
   */
  vringBase?: number;
  /** Reject a readable descriptor after a writable one (default true). */
  strictOrder?: boolean;
  /** Longest list accepted, in descriptors (default: queue size). */
  maxChain?: number;
  /** Log used-descriptor writes at logGpa + slot * 16 (pass the descriptor ring's GPA). */
  usedLogGpa?: number | null;
}

/** Encodes packed ring positions as GET_VRING_BASE does. */
export function encodePackedBase(availIdx: number, availWrap: number, usedIdx: number, usedWrap: number): number {
  return (
    ((availIdx & PACKED_BASE_IDX_MASK) |
      (availWrap ? PACKED_BASE_AVAIL_WRAP : 0) |
      ((usedIdx & PACKED_BASE_IDX_MASK) << PACKED_BASE_USED_SHIFT) |
      (usedWrap ? 1 << 31 : 0)) >>>
    0
  );
}

/** Decodes a SET_VRING_BASE value for a packed ring (DPDK's 16-bit form: used = avail). */
export function decodePackedBase(base: number): { availIdx: number; availWrap: number; usedIdx: number; usedWrap: number } {
  const b = base >>> 0;
  const availIdx = b & PACKED_BASE_IDX_MASK;
  const availWrap = (b >>> 15) & 1;
  if (b >>> 16 === 0) return { availIdx, availWrap, usedIdx: availIdx, usedWrap: availWrap };
  return { availIdx, availWrap, usedIdx: (b >>> 16) & PACKED_BASE_IDX_MASK, usedWrap: (b >>> 31) & 1 };
}

/**
 * Device side of a packed virtqueue. A descriptor's flags word is read with
 * Atomics.load (acquire) before the rest of it; used descriptors are written
 * with plain writes and published by an Atomics.store of their flags (release),
 * the first descriptor of a flushed batch last.
 */
export class PackedDeviceRing implements DeviceRing {
  readonly kind = 'packed' as const;
  readonly size: number;
  /** Guest memory the ring's views come from (replace with remap()). */
  mem: GuestMemory;
  readonly eventIdx: boolean;
  readonly strictOrder: boolean;
  readonly maxChain: number;
  readonly descGpa: number;
  readonly driverEventGpa: number;
  readonly deviceEventGpa: number;

  private descDv!: DataView;
  private descU16!: Uint16Array;
  private descOff!: number;
  /** Word index of slot 0's flags; slot i's is flagsW0 + 8 * i. */
  private flagsW0!: number;
  private drvU16!: Uint16Array;
  private drvOffWrapW!: number;
  private drvFlagsW!: number;
  private devU16!: Uint16Array;
  private devOffWrapW!: number;
  private devFlagsW!: number;

  private lastAvail = 0;
  private availWrap = 1;
  private usedIdx = 0;
  private usedWrap = 1;
  /** Ring slots of the outstanding list with buffer id i (to skip on push). */
  private readonly countById = new Uint16Array(65536);
  /** Position just after the list with buffer id i: slot | wrap << 15 (in-order pushes). */
  private readonly endById = new Uint16Array(65536);

  // Staged used descriptors: the first one's flags are stored last, by flush().
  private pending = 0;
  private firstSlot = 0;
  private firstFlags = 0;
  /** Descriptor slots used since the last needsNotify(). */
  private usedSinceCheck = 0;
  private signalled = 0;
  private signalledValid = false;
  private usedLogGpa: number | null;
  private error: RingError | null = null;

  constructor(mem: GuestMemory, cfg: PackedRingConfig, opts: PackedDeviceOptions = {}) {
    const size = cfg.size;
    checkQueueSize(size, false);
    this.size = size;
    this.mem = mem;
    this.eventIdx = cfg.eventIdx ?? false;
    this.strictOrder = opts.strictOrder ?? true;
    this.maxChain = opts.maxChain ?? size;
    this.descGpa = cfg.descGpa;
    this.driverEventGpa = cfg.driverEventGpa;
    this.deviceEventGpa = cfg.deviceEventGpa;
    this.bind(mem);
    this.vringBase = opts.vringBase ?? PACKED_BASE_AVAIL_WRAP;
    this.usedLogGpa = opts.usedLogGpa ?? null;
  }

  /** Resolves the three areas in `mem` and builds the word indices. */
  private bind(mem: GuestMemory): void {
    const d = resolveArea(mem, this.descGpa, packedDescBytes(this.size), PACKED_DESC_ALIGN, 'descriptor ring');
    const dr = resolveArea(mem, this.driverEventGpa, PACKED_EVENT_BYTES, PACKED_EVENT_ALIGN, 'driver event suppression area');
    const de = resolveArea(mem, this.deviceEventGpa, PACKED_EVENT_BYTES, PACKED_EVENT_ALIGN, 'device event suppression area');
    this.descDv = d.region.dv;
    this.descU16 = d.region.u16;
    this.descOff = d.offset;
    this.flagsW0 = (d.offset + PACKED_DESC_FLAGS) >> 1;
    this.drvU16 = dr.region.u16;
    this.drvOffWrapW = (dr.offset + PACKED_EVENT_OFF_WRAP) >> 1;
    this.drvFlagsW = (dr.offset + PACKED_EVENT_FLAGS) >> 1;
    this.devU16 = de.region.u16;
    this.devOffWrapW = (de.offset + PACKED_EVENT_OFF_WRAP) >> 1;
    this.devFlagsW = (de.offset + PACKED_EVENT_FLAGS) >> 1;
    this.mem = mem;
  }

  /**
   * Memory-table change: re-resolves the ring areas in the new memory, keeping
   * positions, wrap counters and the per-id list lengths of chains in flight.
   * Call it with the worker paused and no popped chain still in hand.
   */
  remap(mem: GuestMemory): void {
    this.bind(mem);
  }

  get broken(): boolean {
    return this.error !== null;
  }
  get lastError(): RingError | null {
    return this.error;
  }

  get lastAvailIdx(): number {
    return this.lastAvail;
  }
  set lastAvailIdx(v: number) {
    this.lastAvail = this.checkIdx(v);
  }
  get lastUsedIdx(): number {
    return this.usedIdx;
  }
  set lastUsedIdx(v: number) {
    this.usedIdx = this.checkIdx(v);
    this.resetUsedState();
  }
  /** Device-side Driver Ring Wrap Counter mirror for the next descriptor to read. */
  get availWrapCounter(): number {
    return this.availWrap;
  }
  /** Device Ring Wrap Counter for the next used descriptor. */
  get usedWrapCounter(): number {
    return this.usedWrap;
  }

  get vringBase(): number {
    return encodePackedBase(this.lastAvail, this.availWrap, this.usedIdx, this.usedWrap);
  }
  set vringBase(v: number) {
    const b = decodePackedBase(v);
    this.lastAvail = this.checkIdx(b.availIdx);
    this.availWrap = b.availWrap;
    this.usedIdx = this.checkIdx(b.usedIdx);
    this.usedWrap = b.usedWrap;
    this.resetUsedState();
  }

  private checkIdx(v: number): number {
    if (!Number.isInteger(v) || v < 0 || v >= this.size) throw new RingError('RING_LAYOUT', `packed ring index ${v} outside queue size ${this.size}`);
    return v;
  }

  private resetUsedState(): void {
    this.pending = 0;
    this.usedSinceCheck = 0;
    this.signalled = this.usedIdx;
    this.signalledValid = false;
  }

  get pendingUsed(): number {
    return this.pending;
  }

  setUsedLog(logGpa: number | null): void {
    this.usedLogGpa = logGpa;
  }

  private fail(code: RingErrorCode, msg: string): never {
    const e = new RingError(code, msg);
    this.error = e;
    throw e;
  }

  /** Available iff AVAIL == wrap and USED != wrap. */
  private isAvail(flags: number, wrap: number): boolean {
    return ((flags & VIRTQ_DESC_F_AVAIL) !== 0 ? 1 : 0) === wrap && ((flags & VIRTQ_DESC_F_USED) !== 0 ? 1 : 0) !== wrap;
  }

  hasWork(): boolean {
    if (this.error !== null) throw new RingError('BROKEN', `ring is broken: ${this.error.message}`);
    return this.isAvail(Atomics.load(this.descU16, this.flagsW0 + this.lastAvail * 8), this.availWrap);
  }

  pop(chain: Chain): boolean {
    if (this.error !== null) throw new RingError('BROKEN', `ring is broken: ${this.error.message}`);
    // "A device MUST NOT use a descriptor unless it observes the VIRTQ_DESC_F_AVAIL
    // bit in its flags being changed": acquire load of the head's flags first.
    const flags = Atomics.load(this.descU16, this.flagsW0 + this.lastAvail * 8);
    if (!this.isAvail(flags, this.availWrap)) return false;
    try {
      this.walk(chain, flags);
    } catch (e) {
      if (e instanceof RingError) this.error = e;
      throw e;
    }
    return true;
  }

  popBurst(chains: readonly Chain[], max: number): number {
    const n = Math.min(max, chains.length);
    let i = 0;
    while (i < n && this.pop(chains[i]!)) i++;
    return i;
  }

  private walk(chain: Chain, headFlags: number): void {
    const mem = this.mem;
    const size = this.size;
    const dv = this.descDv;
    const strict = this.strictOrder;
    chain.reset(mem);
    let slot = this.lastAvail;
    let wrap = this.availWrap;
    let flags = headFlags;
    let n = 0;
    let id = 0;
    for (;;) {
      // "A driver MUST NOT create a descriptor list longer than the Queue Size.
      // This implies that loops in the descriptor list are forbidden!"
      if (++n > size) this.fail('CHAIN_LOOP', `descriptor list from slot ${this.lastAvail} longer than the ring (${size})`);
      if (n > this.maxChain) this.fail('CHAIN_LENGTH', `descriptor list from slot ${this.lastAvail} longer than ${this.maxChain}`);
      const o = this.descOff + slot * DESC_SIZE;
      if (n > 1) {
        // "all flags, including VIRTQ_DESC_F_AVAIL, VIRTQ_DESC_F_USED, VIRTQ_DESC_F_WRITE
        // must be set/cleared correctly in all descriptors in the list". Flag words are
        // always read as one 16-bit atomic access.
        flags = Atomics.load(this.descU16, this.flagsW0 + slot * 8);
        if (!this.isAvail(flags, wrap)) this.fail('PACKED_WRAP', `list descriptor at slot ${slot} is not available for wrap counter ${wrap} (flags 0x${flags.toString(16)})`);
      }
      const lo = dv.getUint32(o, true);
      const hi = dv.getUint32(o + 4, true);
      const len = dv.getUint32(o + DESC_LEN, true);
      if ((flags & VIRTQ_DESC_F_INDIRECT) !== 0) {
        // "A driver MUST NOT write direct descriptors with DESC_F_INDIRECT set in a
        // scatter-gather list linked by VIRTQ_DESC_F_NEXT."
        if (n > 1 || (flags & VIRTQ_DESC_F_NEXT) !== 0) this.fail('INDIRECT_NEXT', `indirect descriptor at slot ${slot} inside a NEXT list`);
        this.walkIndirect(chain, lo, hi, len, strict);
        id = dv.getUint16(o + PACKED_DESC_ID, true);
        slot++;
        if (slot === size) {
          slot = 0;
          wrap ^= 1;
        }
        break;
      }
      if (hi >= MAX_ADDR_HI) this.fail('ADDR_RANGE', `descriptor address beyond 2^53`);
      chain.addBuffer(mem, lo + hi * TWO_POW_32, len, (flags & VIRTQ_DESC_F_WRITE) !== 0, strict);
      slot++;
      if (slot === size) {
        slot = 0;
        wrap ^= 1;
      }
      if ((flags & VIRTQ_DESC_F_NEXT) === 0) {
        // "Buffer ID is included in the last descriptor in the list."
        id = dv.getUint16(o + PACKED_DESC_ID, true);
        break;
      }
    }
    chain.head = id;
    chain.descCount = n;
    this.countById[id] = n;
    this.endById[id] = slot | (wrap << 15);
    this.lastAvail = slot;
    this.availWrap = wrap;
  }

  private walkIndirect(chain: Chain, lo: number, hi: number, len: number, strict: boolean): void {
    if (len === 0 || len % DESC_SIZE !== 0) this.fail('INDIRECT_LEN', `indirect table length ${len} is not a positive multiple of 16`);
    if (hi >= MAX_ADDR_HI) this.fail('ADDR_RANGE', `indirect table address beyond 2^53`);
    const mem = this.mem;
    const gpa = lo + hi * TWO_POW_32;
    const r = mem.translate(gpa, len);
    if (r < 0) this.fail('ADDR_RANGE', `indirect table [${gpa}, +${len}) not inside one guest memory region`);
    const entries = len / DESC_SIZE;
    if (entries > this.maxChain) this.fail('CHAIN_LENGTH', `indirect table of ${entries} descriptors > ${this.maxChain}`);
    const reg = mem.regions[r]!;
    const tdv = reg.dv;
    const base = gpa - reg.gpa;
    chain.indirect = true;
    // "The first descriptor is located at the start of the indirect descriptor table,
    // additional indirect descriptors come immediately afterwards. The
    // VIRTQ_DESC_F_WRITE flags bit is the only valid flag for descriptors in the
    // indirect table. Others are reserved and are ignored by the device." An
    // INDIRECT flag there is still refused: the driver "MUST NOT set any flags except DESC_F_WRITE".
    for (let k = 0; k < entries; k++) {
      const o = base + k * DESC_SIZE;
      const f = tdv.getUint16(o + PACKED_DESC_FLAGS, true);
      if ((f & VIRTQ_DESC_F_INDIRECT) !== 0) this.fail('NESTED_INDIRECT', `indirect descriptor ${k} inside an indirect table`);
      const h = tdv.getUint32(o + 4, true);
      if (h >= MAX_ADDR_HI) this.fail('ADDR_RANGE', `descriptor address beyond 2^53`);
      chain.addBuffer(mem, tdv.getUint32(o, true) + h * TWO_POW_32, tdv.getUint32(o + DESC_LEN, true), (f & VIRTQ_DESC_F_WRITE) !== 0, strict);
    }
  }

  /** Writes one used descriptor at the used position; stages its flags if it is the batch's first. */
  private writeUsed(id: number, len: number, skipTo: number): void {
    const slot = this.usedIdx;
    const o = this.descOff + slot * DESC_SIZE;
    const dv = this.descDv;
    dv.setUint32(o + DESC_LEN, len, true);
    dv.setUint16(o + PACKED_DESC_ID, id, true);
    // "To mark a descriptor as used, the device sets the VIRTQ_DESC_F_USED bit in Flags to
    // match the internal Device Ring Wrap Counter. It also sets the VIRTQ_DESC_F_AVAIL bit
    // to match the same value." WRITE tells "whether any data has been written".
    const flags = (this.usedWrap !== 0 ? VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_USED : 0) | (len > 0 ? VIRTQ_DESC_F_WRITE : 0);
    if (this.pending === 0) {
      this.firstSlot = slot;
      this.firstFlags = flags;
    } else {
      // Inside a batch: a single 16-bit store (tear-free, no fence). The driver polls
      // the batch's first descriptor and reaches this one only after the release
      // store of the first flags in flush(), which orders this write before it.
      this.descU16[this.flagsW0 + slot * 8] = flags;
    }
    if (this.usedLogGpa !== null && this.mem.log !== null) this.mem.log.logRange(this.usedLogGpa + slot * DESC_SIZE, DESC_SIZE);
    // Skip forward: out of order by the list's own length, in order to the end of the batch.
    const before = this.usedIdx + this.usedWrap * this.size;
    if (skipTo >= 0) {
      this.usedIdx = skipTo & RING_EVENT_OFF_MASK;
      this.usedWrap = skipTo >> 15;
    } else {
      const c = this.countById[id] || 1;
      let u = slot + c;
      if (u >= this.size) {
        u -= this.size;
        this.usedWrap ^= 1;
      }
      this.usedIdx = u;
    }
    const after = this.usedIdx + this.usedWrap * this.size;
    this.usedSinceCheck += (after - before + 2 * this.size) % (2 * this.size);
  }

  push(id: number, len: number): void {
    this.writeUsed(id & 0xffff, len, -1);
    this.pending++;
  }

  pushChain(chain: Chain, len: number): void {
    this.push(chain.head, len);
  }

  pushBatch(ids: ArrayLike<number>, lens: ArrayLike<number>, n: number): void {
    for (let i = 0; i < n; i++) this.push(ids[i]!, lens[i]!);
    this.flush();
  }

  /**
   * VIRTIO_F_IN_ORDER: "devices [may] notify the use of a batch of buffers to the
   * driver by only writing out a single used descriptor with the Buffer ID
   * corresponding to the last descriptor in the batch. The device then skips
   * forward in the ring according to the size of the batch." `count` (buffers in
   * the batch) is not needed: the skip goes to the end of `lastId`'s list.
   */
  pushInOrder(lastId: number, lastLen: number, count: number): void {
    if (count <= 0) return;
    this.writeUsed(lastId & 0xffff, lastLen, this.endById[lastId & 0xffff]!);
    this.pending++;
  }

  flush(): void {
    if (this.pending === 0) return;
    this.pending = 0;
    // Release: every used descriptor written since the first becomes visible.
    Atomics.store(this.descU16, this.flagsW0 + this.firstSlot * 8, this.firstFlags);
  }

  needsNotify(): boolean {
    this.flush();
    const used = this.usedSinceCheck;
    this.usedSinceCheck = 0;
    const newIdx = this.usedIdx;
    let old = this.signalled;
    this.signalled = newIdx;
    const valid = this.signalledValid;
    this.signalledValid = true;
    if (used === 0) return false;
    // Seq-cst store of the flags (flush) then load of the driver's event area.
    const flags = Atomics.load(this.drvU16, this.drvFlagsW);
    if (flags !== RING_EVENT_FLAGS_DESC || !this.eventIdx) return flags !== RING_EVENT_FLAGS_DISABLE;
    if (!valid) return true;
    // "Event will only trigger when Ring Wrap Counter matches this value and a
    // descriptor is made ... used": positions are made linear around the wrap.
    const offWrap = Atomics.load(this.drvU16, this.drvOffWrapW);
    let off = offWrap & RING_EVENT_OFF_MASK;
    if (used >= this.size) return true;
    if (newIdx <= old) old -= this.size;
    if (offWrap >> RING_EVENT_WRAP_SHIFT !== this.usedWrap) off -= this.size;
    return vringNeedEvent(off, newIdx, old);
  }

  enableNotifications(): boolean {
    if (this.eventIdx) {
      Atomics.store(this.devU16, this.devOffWrapW, this.lastAvail | (this.availWrap << RING_EVENT_WRAP_SHIFT));
      Atomics.store(this.devU16, this.devFlagsW, RING_EVENT_FLAGS_DESC);
    } else {
      Atomics.store(this.devU16, this.devFlagsW, RING_EVENT_FLAGS_ENABLE);
    }
    this.logEventArea();
    // Store then load: either we see the next descriptor, or the driver sees our flags.
    return this.hasWork();
  }

  disableNotifications(): void {
    Atomics.store(this.devU16, this.devFlagsW, RING_EVENT_FLAGS_DISABLE);
    this.logEventArea();
  }

  private logEventArea(): void {
    if (this.usedLogGpa !== null && this.mem.log !== null) this.mem.log.logRange(this.deviceEventGpa, PACKED_EVENT_BYTES);
  }
}
