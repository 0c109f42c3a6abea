import { checkQueueSize, resolveArea } from './area.js';
import {
  AVAIL_FLAGS,
  AVAIL_IDX,
  AVAIL_RING,
  DESC_SIZE,
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
import { RingError } from './errors.js';
import type { GuestMemory } from './memory.js';
import { vringNeedEvent, type DriverRing, type UsedBuffer } from './ring.js';
import type { SplitRingConfig } from './split-device.js';

/** A pool of indirect tables in guest memory: one table of `maxEntries` descriptors per ring slot. */
export interface IndirectPool {
  /** GPA of slot 0's table; slot i's table is at gpa + i * maxEntries * 16 (16-aligned). */
  gpa: number;
  /** Descriptors per table. */
  maxEntries: number;
}

export interface SplitDriverOptions {
  /** Zero the three areas (a fresh ring; default true). */
  initialize?: boolean;
  /** Indirect tables for add(..., indirect = true). Needs size * maxEntries * 16 bytes in one region. */
  indirectPool?: IndirectPool | null;
  /** VIRTIO_F_IN_ORDER: accept one used entry per batch (the device's pushInOrder). */
  inOrder?: boolean;
  /**
   * With `initialize`: start avail.idx and used.idx at this value instead of 0
   * (the device must then be given the same SET_VRING_BASE). Tests wrap-around.
   */
  startIdx?: number;
}

/** Bytes an indirect pool needs for a queue. */
export function indirectPoolBytes(size: number, maxEntries: number): number {
  return size * maxEntries * DESC_SIZE;
}

/**
 * Driver side of a split virtqueue (our front-end, and tests). The free list is
 * private (never read back from guest memory); used entries from the device are
 * validated (RingError USED_ID / USED_IDX).
 */
export class SplitDriverRing<T = unknown> implements DriverRing<T> {
  readonly kind = 'split' as const;
  readonly size: number;
  readonly mem: GuestMemory;
  readonly eventIdx: boolean;
  readonly inOrder: boolean;
  private readonly mask: number;

  private readonly descDv: DataView;
  private readonly descOff: number;
  private readonly availU16: Uint16Array;
  private readonly availFlagsW: number;
  private readonly availIdxW: number;
  private readonly availRingW: number;
  private readonly usedEventW: number;
  private readonly usedU16: Uint16Array;
  private readonly usedDv: DataView;
  private readonly usedRingOff: number;
  private readonly usedFlagsW: number;
  private readonly usedIdxW: number;
  private readonly availEventW: number;

  private readonly indirectDv: DataView | null = null;
  private readonly indirectOff: number = 0;
  private readonly indirectGpa: number = 0;
  private readonly indirectMax: number = 0;

  /** Private free list: nextFree[i] follows descriptor i. */
  private readonly nextFree: Uint16Array;
  private freeHead = 0;
  private free: number;
  /** Ring slots held by the chain whose head is i (0 = not outstanding). */
  private readonly held: Uint16Array;
  /** Device-writable bytes of the chain whose head is i (in-order length of skipped buffers). */
  private readonly inBytes: Float64Array;
  private readonly tokens: (T | undefined)[];

  private availIdx: number;
  private added = 0;
  /** avail.idx at the last needsKick(). */
  private kicked: number;
  private lastUsed: number;
  private usedSeen: number;
  private outstanding = 0;

  // In-order: heads in the order they were made available, and the current batch.
  private readonly order: Uint16Array;
  private orderHead = 0;
  private orderTail = 0;
  private batchId = -1;
  private batchLen = 0;

  constructor(mem: GuestMemory, cfg: SplitRingConfig, opts: SplitDriverOptions = {}) {
    const size = cfg.size;
    checkQueueSize(size, true);
    this.size = size;
    this.mask = size - 1;
    this.mem = mem;
    this.eventIdx = cfg.eventIdx ?? false;
    this.inOrder = opts.inOrder ?? false;
    const d = resolveArea(mem, cfg.descGpa, splitDescBytes(size), SPLIT_DESC_ALIGN, 'descriptor table');
    const a = resolveArea(mem, cfg.availGpa, splitAvailBytes(size), SPLIT_AVAIL_ALIGN, 'available ring');
    const u = resolveArea(mem, cfg.usedGpa, splitUsedBytes(size), SPLIT_USED_ALIGN, 'used ring');
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
    if (opts.initialize ?? true) {
      d.region.u8.fill(0, d.offset, d.offset + splitDescBytes(size));
      a.region.u8.fill(0, a.offset, a.offset + splitAvailBytes(size));
      // "The driver MUST initialize flags in the used ring to 0 when allocating the used ring."
      u.region.u8.fill(0, u.offset, u.offset + splitUsedBytes(size));
      const start = (opts.startIdx ?? 0) & 0xffff;
      Atomics.store(this.availU16, this.availIdxW, start);
      Atomics.store(this.usedU16, this.usedIdxW, start);
    }
    const pool = opts.indirectPool ?? null;
    if (pool !== null) {
      if (!Number.isInteger(pool.maxEntries) || pool.maxEntries < 1) throw new RangeError(`indirect pool maxEntries ${pool.maxEntries}`);
      const p = resolveArea(mem, pool.gpa, indirectPoolBytes(size, pool.maxEntries), DESC_SIZE, 'indirect pool');
      this.indirectDv = p.region.dv;
      this.indirectOff = p.offset;
      this.indirectGpa = pool.gpa;
      this.indirectMax = pool.maxEntries;
    }
    this.nextFree = new Uint16Array(size);
    for (let i = 0; i < size; i++) this.nextFree[i] = (i + 1) & this.mask;
    this.free = size;
    this.held = new Uint16Array(size);
    this.inBytes = new Float64Array(size);
    this.tokens = new Array<T | undefined>(size).fill(undefined);
    this.order = new Uint16Array(size);
    this.availIdx = Atomics.load(this.availU16, this.availIdxW);
    this.kicked = this.availIdx;
    this.lastUsed = Atomics.load(this.usedU16, this.usedIdxW);
    this.usedSeen = this.lastUsed;
  }

  get numFree(): number {
    return this.free;
  }

  /** Chains handed to the device and not yet returned. */
  get numOutstanding(): number {
    return this.outstanding;
  }

  /** The next avail index (what SET_VRING_BASE carries for a fresh start of this ring). */
  get vringBase(): number {
    return this.availIdx;
  }

  get lastUsedIdx(): number {
    return this.lastUsed;
  }

  add(addrs: ArrayLike<number>, lens: ArrayLike<number>, outCount: number, inCount: number, token: T, indirect = false): number {
    const total = outCount + inCount;
    if (total < 1) throw new RangeError('a chain needs at least one buffer');
    if (addrs.length < total || lens.length < total) throw new RangeError('addrs/lens shorter than outCount + inCount');
    const useIndirect = indirect && this.indirectDv !== null;
    if (indirect && !useIndirect) throw new RangeError('indirect requested but no indirect pool configured');
    const slots = useIndirect ? 1 : total;
    if (useIndirect && total > this.indirectMax) throw new RangeError(`chain of ${total} > indirect table size ${this.indirectMax}`);
    if (!useIndirect && total > this.size) throw new RangeError(`chain of ${total} > queue size ${this.size}`);
    if (this.free < slots) return -1;
    const head = this.freeHead;
    const dv = this.descDv;
    let inBytes = 0;
    if (useIndirect) {
      const tdv = this.indirectDv!;
      const tOff = this.indirectOff + head * this.indirectMax * DESC_SIZE;
      for (let k = 0; k < total; k++) {
        const o = tOff + k * DESC_SIZE;
        const w = k >= outCount;
        writeDesc(tdv, o, addrs[k]!, lens[k]!, (w ? VIRTQ_DESC_F_WRITE : 0) | (k < total - 1 ? VIRTQ_DESC_F_NEXT : 0), k + 1 < total ? k + 1 : 0);
        if (w) inBytes += lens[k]!;
      }
      const o = this.descOff + head * DESC_SIZE;
      writeDesc(dv, o, this.indirectGpa + head * this.indirectMax * DESC_SIZE, total * DESC_SIZE, VIRTQ_DESC_F_INDIRECT, 0);
      this.freeHead = this.nextFree[head]!;
    } else {
      let i = head;
      for (let k = 0; k < total; k++) {
        const o = this.descOff + i * DESC_SIZE;
        const w = k >= outCount;
        const next = this.nextFree[i]!;
        writeDesc(dv, o, addrs[k]!, lens[k]!, (w ? VIRTQ_DESC_F_WRITE : 0) | (k < total - 1 ? VIRTQ_DESC_F_NEXT : 0), k < total - 1 ? next : 0);
        if (w) inBytes += lens[k]!;
        i = next;
      }
      this.freeHead = i;
    }
    this.free -= slots;
    this.held[head] = slots;
    this.inBytes[head] = inBytes;
    this.tokens[head] = token;
    this.outstanding++;
    if (this.inOrder) {
      this.order[this.orderTail] = head;
      this.orderTail = (this.orderTail + 1) & this.mask;
    }
    // avail->ring[(avail->idx + added++) % qsz] = head;
    this.availU16[this.availRingW + (this.availIdx & this.mask)] = head;
    this.availIdx = (this.availIdx + 1) & 0xffff;
    this.added++;
    return head;
  }

  publish(): void {
    if (this.added === 0) return;
    this.added = 0;
    // "The driver MUST perform a suitable memory barrier before the idx update": release store.
    Atomics.store(this.availU16, this.availIdxW, this.availIdx);
  }

  needsKick(): boolean {
    this.publish();
    const newIdx = this.availIdx;
    const old = this.kicked;
    this.kicked = newIdx;
    // "The driver MUST perform a suitable memory barrier before reading flags or
    // avail_event, to avoid missing a notification": seq-cst store above, load here.
    if (this.eventIdx) return vringNeedEvent(Atomics.load(this.usedU16, this.availEventW), newIdx, old);
    if (newIdx === old) return false;
    return (Atomics.load(this.usedU16, this.usedFlagsW) & VIRTQ_USED_F_NO_NOTIFY) === 0;
  }

  /** Used entries the device has published and we have not taken. */
  usedPending(): number {
    const u = Atomics.load(this.usedU16, this.usedIdxW);
    const n = (u - this.lastUsed) & 0xffff;
    if (n > this.outstanding) throw new RingError('USED_IDX', `used.idx ${u} is ${n} ahead of ${this.lastUsed} with ${this.outstanding} outstanding`);
    this.usedSeen = u;
    return n;
  }

  getUsed(out: UsedBuffer<T>): boolean {
    if (this.usedSeen === this.lastUsed && this.usedPending() === 0) return false;
    let id: number;
    let len: number;
    if (this.inOrder) {
      // A batch: one entry (at the batch's first slot) names its last buffer; the
      // buffers before it in ring order "are assumed to have been used ... completely".
      if (this.batchId < 0) {
        const o = this.usedRingOff + (this.lastUsed & this.mask) * USED_ELEM_SIZE;
        this.batchId = this.usedDv.getUint32(o, true);
        this.batchLen = this.usedDv.getUint32(o + 4, true);
        if (this.batchId >= this.size || this.held[this.batchId] === 0) {
          throw new RingError('USED_ID', `used id ${this.batchId} is not an outstanding buffer`);
        }
      }
      id = this.order[this.orderHead]!;
      this.orderHead = (this.orderHead + 1) & this.mask;
      if (id === this.batchId) {
        len = this.batchLen;
        this.batchId = -1;
      } else {
        len = this.inBytes[id]!;
      }
    } else {
      const o = this.usedRingOff + (this.lastUsed & this.mask) * USED_ELEM_SIZE;
      id = this.usedDv.getUint32(o, true);
      len = this.usedDv.getUint32(o + 4, true);
      if (id >= this.size || this.held[id] === 0) throw new RingError('USED_ID', `used id ${id} is not an outstanding buffer`);
    }
    this.lastUsed = (this.lastUsed + 1) & 0xffff;
    out.id = id;
    out.len = len;
    out.token = this.tokens[id];
    this.tokens[id] = undefined;
    this.release(id);
    return true;
  }

  /** Returns the chain at `head` to the free list. */
  private release(head: number): void {
    const n = this.held[head]!;
    this.held[head] = 0;
    this.outstanding--;
    let last = head;
    for (let k = 1; k < n; k++) last = this.nextFree[last]!;
    this.nextFree[last] = this.freeHead;
    this.freeHead = head;
    this.free += n;
  }

  enableCallbacks(): boolean {
    if (this.eventIdx) {
      // "The driver MAY use used_event to advise the device that notifications are
      // unnecessary until the device writes an entry with an index specified by used_event"
      Atomics.store(this.availU16, this.usedEventW, this.lastUsed);
    } else {
      Atomics.store(this.availU16, this.availFlagsW, 0);
    }
    return this.usedPending() !== 0;
  }

  disableCallbacks(): void {
    if (this.eventIdx) {
      // With EVENT_IDX "The driver MUST set flags to 0": push used_event half a ring away.
      Atomics.store(this.availU16, this.usedEventW, (this.lastUsed + 0x8000) & 0xffff);
    } else {
      Atomics.store(this.availU16, this.availFlagsW, VIRTQ_AVAIL_F_NO_INTERRUPT);
    }
  }
}

function writeDesc(dv: DataView, o: number, addr: number, len: number, flags: number, next: number): void {
  dv.setUint32(o, addr % TWO_POW_32, true);
  dv.setUint32(o + 4, Math.floor(addr / TWO_POW_32), true);
  dv.setUint32(o + 8, len, true);
  dv.setUint16(o + SPLIT_DESC_FLAGS, flags, true);
  dv.setUint16(o + SPLIT_DESC_NEXT, next, true);
}
