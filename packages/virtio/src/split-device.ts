import { checkQueueSize, resolveArea } from './area.js';
import type { Chain } from './chain.js';
import {
  AVAIL_FLAGS,
  AVAIL_IDX,
  AVAIL_RING,
  DESC_SIZE,
  MAX_ADDR_HI,
  SPLIT_AVAIL_ALIGN,
  SPLIT_DESC_ALIGN,
  SPLIT_DESC_FLAGS,
  SPLIT_DESC_NEXT,
  SPLIT_USED_ALIGN,
  TWO_POW_32,
  USED_ELEM_SIZE,
  USED_FLAGS,
  USED_IDX,
  USED_RING,
  VIRTQ_AVAIL_F_NO_INTERRUPT,
  VIRTQ_DESC_F_INDIRECT,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_WRITE,
  VIRTQ_USED_F_NO_NOTIFY,
  splitAvailBytes,
  splitAvailEventOffset,
  splitDescBytes,
  splitUsedBytes,
  splitUsedEventOffset,
} from './constants.js';
import { RingError, type RingErrorCode } from './errors.js';
import type { GuestMemory } from './memory.js';
import { vringNeedEvent, type DeviceRing } from './ring.js';

/** Where a split ring lives and how it was negotiated. GPAs are guest-physical. */
export interface SplitRingConfig {
  /** Queue size (SET_VRING_NUM): a power of 2, 1..32768. */
  size: number;
  descGpa: number;
  availGpa: number;
  usedGpa: number;
  /** VIRTIO_F_EVENT_IDX negotiated. */
  eventIdx?: boolean;
}

export interface SplitDeviceOptions {
  /** SET_VRING_BASE: the next avail index to process (default 0). */
  lastAvailIdx?: number;
  /**
   * Reject a device-readable descriptor after a device-writable one (default true):
   * "The driver MUST place any device-writable descriptor elements after any
   * device-readable descriptor elements."
   */
  strictOrder?: boolean;
  /**
   * Longest chain accepted, in descriptors (default: queue size): "A driver MUST
   * NOT create a descriptor chain longer than the Queue Size of the device."
   */
  maxChain?: number;
  /** Log used-ring writes at this GPA (vring addr log_guest_addr, LOG flag set). */
  usedLogGpa?: number | null;
}

/**
 * Device side of a split virtqueue. Reads avail.idx with Atomics.load (acquire),
 * then the avail ring and descriptors with plain reads; writes used elements
 * with plain writes, then used.idx with one Atomics.store (release) per flush.
 */
export class SplitDeviceRing implements DeviceRing {
  readonly kind = 'split' as const;
  readonly size: number;
  /** Guest memory the ring's views come from (replace with remap()). */
  mem: GuestMemory;
  readonly eventIdx: boolean;
  readonly strictOrder: boolean;
  readonly maxChain: number;
  readonly descGpa: number;
  readonly availGpa: number;
  readonly usedGpa: number;

  private readonly mask: number;
  // Descriptor table.
  private descDv!: DataView;
  private descOff!: number;
  // Avail ring (driver area): word indices into its region's Uint16Array.
  private availU16!: Uint16Array;
  private availFlagsW!: number;
  private availIdxW!: number;
  private availRingW!: number;
  private usedEventW!: number;
  // Used ring (device area).
  private usedU16!: Uint16Array;
  private usedDv!: DataView;
  private usedRingOff!: number;
  private usedFlagsW!: number;
  private usedIdxW!: number;
  private availEventW!: number;

  private lastAvail: number;
  /** Last avail.idx read from the ring (saves an Atomics.load per chain within a burst). */
  private availSeen: number;
  /** used.idx including staged entries. */
  private usedIdx: number;
  private pending = 0;
  /** used.idx at the last needsNotify() ("signalled_used"). */
  private signalled = 0;
  private signalledValid = false;
  /** Whether the used.flags / avail_event currently ask for kicks. */
  private notifyOn = true;
  private usedLogGpa: number | null;
  private error: RingError | null = null;

  constructor(mem: GuestMemory, cfg: SplitRingConfig, opts: SplitDeviceOptions = {}) {
    const size = cfg.size;
    checkQueueSize(size, true);
    this.size = size;
    this.mask = size - 1;
    this.mem = mem;
    this.eventIdx = cfg.eventIdx ?? false;
    this.strictOrder = opts.strictOrder ?? true;
    this.maxChain = opts.maxChain ?? size;
    this.descGpa = cfg.descGpa;
    this.availGpa = cfg.availGpa;
    this.usedGpa = cfg.usedGpa;
    this.bind(mem);
    this.lastAvail = (opts.lastAvailIdx ?? 0) & 0xffff;
    this.availSeen = this.lastAvail;
    // "the used index is read from guest used->idx" (vhost-user, on SET_VRING_ADDR).
    this.usedIdx = Atomics.load(this.usedU16, this.usedIdxW);
    this.signalled = this.usedIdx;
    this.usedLogGpa = opts.usedLogGpa ?? null;
  }

  /** Resolves the three areas in `mem` and builds the word indices. */
  private bind(mem: GuestMemory): void {
    const size = this.size;
    const d = resolveArea(mem, this.descGpa, splitDescBytes(size), SPLIT_DESC_ALIGN, 'descriptor table');
    const a = resolveArea(mem, this.availGpa, splitAvailBytes(size), SPLIT_AVAIL_ALIGN, 'available ring');
    const u = resolveArea(mem, this.usedGpa, splitUsedBytes(size), SPLIT_USED_ALIGN, 'used ring');
    this.descDv = d.region.dv;
    this.descOff = d.offset;
    this.availU16 = a.region.u16;
    this.availFlagsW = (a.offset + AVAIL_FLAGS) >> 1;
    this.availIdxW = (a.offset + AVAIL_IDX) >> 1;
    this.availRingW = (a.offset + AVAIL_RING) >> 1;
    this.usedEventW = (a.offset + splitUsedEventOffset(size)) >> 1;
    this.usedU16 = u.region.u16;
    this.usedDv = u.region.dv;
    this.usedRingOff = u.offset + USED_RING;
    this.usedFlagsW = (u.offset + USED_FLAGS) >> 1;
    this.usedIdxW = (u.offset + USED_IDX) >> 1;
    this.availEventW = (u.offset + splitAvailEventOffset(size)) >> 1;
    this.mem = mem;
  }

  /**
   * Memory-table change (SET_MEM_TABLE / ADD_MEM_REG while running): re-resolves
   * the ring areas in the new memory, keeping every index and counter. Call it
   * with the worker paused and no popped chain still in hand (chains describe
   * regions of the old memory).
   */
  remap(mem: GuestMemory): void {
    this.bind(mem);
  }

  get broken(): boolean {
    return this.error !== null;
  }

  /** The RingError that broke the ring, or null. */
  get lastError(): RingError | null {
    return this.error;
  }

  get lastAvailIdx(): number {
    return this.lastAvail;
  }
  set lastAvailIdx(v: number) {
    this.lastAvail = v & 0xffff;
    this.availSeen = this.lastAvail;
  }

  get lastUsedIdx(): number {
    return this.usedIdx;
  }
  set lastUsedIdx(v: number) {
    this.usedIdx = v & 0xffff;
    this.pending = 0;
    this.signalled = this.usedIdx;
    this.signalledValid = false;
  }

  /** Split rings: GET/SET_VRING_BASE carry the next avail index. */
  get vringBase(): number {
    return this.lastAvail;
  }
  set vringBase(v: number) {
    this.lastAvailIdx = v;
  }

  /** Re-reads used.idx from guest memory (after SET_VRING_ADDR, or a reconnect). */
  syncUsedIdx(): number {
    this.lastUsedIdx = Atomics.load(this.usedU16, this.usedIdxW);
    return this.usedIdx;
  }

  /** Chains staged by push() and not yet flushed. */
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

  /** Chains available now (reads avail.idx). Throws RingError AVAIL_IDX on a jump beyond the queue size. */
  available(): number {
    if (this.error !== null) throw new RingError('BROKEN', `ring is broken: ${this.error.message}`);
    const a = Atomics.load(this.availU16, this.availIdxW);
    const n = (a - this.lastAvail) & 0xffff;
    if (n > this.size) this.fail('AVAIL_IDX', `avail.idx ${a} is ${n} ahead of last_avail ${this.lastAvail} (queue size ${this.size})`);
    this.availSeen = a;
    return n;
  }

  hasWork(): boolean {
    return this.available() !== 0;
  }

  pop(chain: Chain): boolean {
    if (this.availSeen === this.lastAvail && this.available() === 0) return false;
    if (this.error !== null) throw new RingError('BROKEN', `ring is broken: ${this.error.message}`);
    // avail.ring[last_avail % size]: plain read, ordered after the acquire load of avail.idx.
    const head = this.availU16[this.availRingW + (this.lastAvail & this.mask)]!;
    if (head < this.size) {
      // Fast path: one direct descriptor inside one region (the common net/blk case).
      const dv = this.descDv;
      const o = this.descOff + head * DESC_SIZE;
      const flags = dv.getUint16(o + SPLIT_DESC_FLAGS, true);
      if ((flags & (VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_INDIRECT)) === 0) {
        const hi = dv.getUint32(o + 4, true);
        const len = dv.getUint32(o + 8, true);
        if (hi < MAX_ADDR_HI && len !== 0 && chain.setSingle(this.mem, head, dv.getUint32(o, true) + hi * TWO_POW_32, len, (flags & VIRTQ_DESC_F_WRITE) !== 0)) {
          this.lastAvail = (this.lastAvail + 1) & 0xffff;
          return true;
        }
      }
    }
    try {
      this.walk(chain, head);
    } catch (e) {
      if (e instanceof RingError) this.error = e;
      throw e;
    }
    this.lastAvail = (this.lastAvail + 1) & 0xffff;
    return true;
  }

  /**
   * Describes the chain at descriptor `head` without consuming an avail entry:
   * resubmission of in-flight requests after a reconnect (inflight tracking).
   * Same checks and errors as pop().
   */
  describeHead(chain: Chain, head: number): void {
    if (this.error !== null) throw new RingError('BROKEN', `ring is broken: ${this.error.message}`);
    try {
      this.walk(chain, head);
    } catch (e) {
      if (e instanceof RingError) this.error = e;
      throw e;
    }
  }

  popBurst(chains: readonly Chain[], max: number): number {
    const n = Math.min(max, chains.length);
    let i = 0;
    while (i < n && this.pop(chains[i]!)) i++;
    return i;
  }

  /** Follows the chain from `head` through NEXT and at most one indirect table. */
  private walk(chain: Chain, head: number): void {
    const mem = this.mem;
    chain.reset(mem);
    chain.head = head;
    chain.descCount = 1;
    const size = this.size;
    if (head >= size) this.fail('DESC_INDEX', `head ${head} >= queue size ${size}`);
    let dv = this.descDv;
    let base = this.descOff;
    let tableSize = size;
    let inIndirect = false;
    let i = head;
    let visited = 0;
    let total = 0;
    const maxChain = this.maxChain;
    const strict = this.strictOrder;
    for (;;) {
      // Loop guard: a table of N descriptors cannot yield a chain longer than N
      // ("this implies that loops in the descriptor chain are forbidden!").
      if (++visited > tableSize) this.fail('CHAIN_LOOP', `chain from head ${head} visits more than ${tableSize} descriptors`);
      const o = base + i * DESC_SIZE;
      const lo = dv.getUint32(o, true);
      const hi = dv.getUint32(o + 4, true);
      const len = dv.getUint32(o + 8, true);
      const flags = dv.getUint16(o + SPLIT_DESC_FLAGS, true);
      if ((flags & VIRTQ_DESC_F_INDIRECT) !== 0) {
        // "The driver MUST NOT set the VIRTQ_DESC_F_INDIRECT flag within an indirect descriptor"
        if (inIndirect) this.fail('NESTED_INDIRECT', `indirect descriptor inside the indirect table of head ${head}`);
        // "A driver MUST NOT set both VIRTQ_DESC_F_INDIRECT and VIRTQ_DESC_F_NEXT in flags."
        if ((flags & VIRTQ_DESC_F_NEXT) !== 0) this.fail('INDIRECT_NEXT', `descriptor ${i} has both INDIRECT and NEXT`);
        // struct indirect_descriptor_table { struct virtq_desc desc[len / 16]; }
        if (len === 0 || len % DESC_SIZE !== 0) this.fail('INDIRECT_LEN', `indirect table length ${len} is not a positive multiple of 16`);
        if (hi >= MAX_ADDR_HI) this.fail('ADDR_RANGE', `indirect table address beyond 2^53`);
        const gpa = lo + hi * TWO_POW_32;
        const r = mem.translate(gpa, len);
        if (r < 0) this.fail('ADDR_RANGE', `indirect table [${gpa}, +${len}) not inside one guest memory region`);
        const reg = mem.regions[r]!;
        dv = reg.dv;
        base = gpa - reg.gpa;
        tableSize = len / DESC_SIZE;
        inIndirect = true;
        chain.indirect = true;
        i = 0;
        visited = 0;
        continue;
      }
      if (++total > maxChain) this.fail('CHAIN_LENGTH', `chain from head ${head} longer than ${maxChain} descriptors`);
      if (hi >= MAX_ADDR_HI) this.fail('ADDR_RANGE', `descriptor address beyond 2^53`);
      chain.addBuffer(mem, lo + hi * TWO_POW_32, len, (flags & VIRTQ_DESC_F_WRITE) !== 0, strict);
      if ((flags & VIRTQ_DESC_F_NEXT) === 0) return;
      i = dv.getUint16(o + SPLIT_DESC_NEXT, true);
      if (i >= tableSize) this.fail('DESC_INDEX', `next ${i} >= ${inIndirect ? 'indirect table size' : 'queue size'} ${tableSize}`);
    }
  }

  push(id: number, len: number): void {
    const o = this.usedRingOff + (this.usedIdx & this.mask) * USED_ELEM_SIZE;
    const dv = this.usedDv;
    dv.setUint32(o, id, true);
    dv.setUint32(o + 4, len, true);
    this.usedIdx = (this.usedIdx + 1) & 0xffff;
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
   * driver by only writing out a single used ring entry with the id corresponding
   * to the head entry of the descriptor chain describing the last buffer in the
   * batch. The device then skips forward in the ring according to the size of the
   * batch. Accordingly, it increments the used idx by the size of the batch."
   * The entry goes in the batch's first slot.
   */
  pushInOrder(lastId: number, lastLen: number, count: number): void {
    if (count <= 0) return;
    const o = this.usedRingOff + (this.usedIdx & this.mask) * USED_ELEM_SIZE;
    const dv = this.usedDv;
    dv.setUint32(o, lastId, true);
    dv.setUint32(o + 4, lastLen, true);
    this.usedIdx = (this.usedIdx + count) & 0xffff;
    this.pending += count;
  }

  flush(): void {
    const n = this.pending;
    if (n === 0) return;
    this.pending = 0;
    const log = this.mem.log;
    if (log !== null && this.usedLogGpa !== null) this.logUsedElems(n);
    // Release: the used elements written above become visible with used.idx.
    Atomics.store(this.usedU16, this.usedIdxW, this.usedIdx);
    if (log !== null && this.usedLogGpa !== null) log.logRange(this.usedLogGpa + USED_IDX, 2);
  }

  private logUsedElems(n: number): void {
    const log = this.mem.log!;
    const base = this.usedLogGpa! + USED_RING;
    if (n > this.size) n = this.size;
    const first = (this.usedIdx - n) & this.mask;
    const tail = Math.min(n, this.size - first);
    log.logRange(base + first * USED_ELEM_SIZE, tail * USED_ELEM_SIZE);
    if (tail < n) log.logRange(base, (n - tail) * USED_ELEM_SIZE);
  }

  needsNotify(): boolean {
    this.flush();
    const newIdx = this.usedIdx;
    const old = this.signalled;
    this.signalled = newIdx;
    // Seq-cst store of used.idx (flush) then load: the Dekker pair with the driver's
    // store of used_event / flags followed by its load of used.idx.
    if (newIdx === old) return false; // nothing published since the last check
    if (this.eventIdx) {
      const valid = this.signalledValid;
      this.signalledValid = true;
      // No notification recorded yet: the driver's used_event may predate us.
      if (!valid) return true;
      // "If the idx field in the used ring (which determined where that descriptor
      // index was placed) was equal to used_event, the device MUST send a notification."
      return vringNeedEvent(Atomics.load(this.availU16, this.usedEventW), newIdx, old);
    }
    this.signalledValid = true;
    // "If flags is 1, the device SHOULD NOT send a notification. If flags is 0, the device MUST send a notification."
    return (Atomics.load(this.availU16, this.availFlagsW) & VIRTQ_AVAIL_F_NO_INTERRUPT) === 0;
  }

  enableNotifications(): boolean {
    if (this.eventIdx) {
      // "The device MAY use avail_event to advise the driver that notifications are
      // unnecessary until the driver writes entry with an index specified by avail_event"
      Atomics.store(this.usedU16, this.availEventW, this.lastAvail);
      this.logUsedWord(this.availEventW);
    } else if (!this.notifyOn) {
      Atomics.store(this.usedU16, this.usedFlagsW, 0);
      this.logUsedWord(this.usedFlagsW);
    }
    this.notifyOn = true;
    // Store then load (both seq-cst): either we see the driver's new avail.idx, or it sees our flags.
    return this.available() !== 0;
  }

  disableNotifications(): void {
    if (!this.notifyOn) return;
    this.notifyOn = false;
    // With EVENT_IDX "The device MUST set flags to 0": a stale avail_event already
    // limits the driver to one kick.
    if (this.eventIdx) return;
    Atomics.store(this.usedU16, this.usedFlagsW, VIRTQ_USED_F_NO_NOTIFY);
    this.logUsedWord(this.usedFlagsW);
  }

  private logUsedWord(wordIndex: number): void {
    const log = this.mem.log;
    if (log === null || this.usedLogGpa === null) return;
    // The used ring starts at word usedFlagsW.
    log.logRange(this.usedLogGpa + (wordIndex - this.usedFlagsW) * 2, 2);
  }
}
