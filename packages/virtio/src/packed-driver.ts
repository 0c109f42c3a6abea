import { checkQueueSize, resolveArea } from './area.js';
import {
  DESC_LEN,
  DESC_SIZE,
  PACKED_BASE_AVAIL_WRAP,
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
import { RingError } from './errors.js';
import type { GuestMemory } from './memory.js';
import type { PackedRingConfig } from './packed-device.js';
import { vringNeedEvent, type DriverRing, type UsedBuffer } from './ring.js';
import { indirectPoolBytes, type IndirectPool } from './split-driver.js';

export interface PackedDriverOptions {
  /** Zero the descriptor ring and both event areas (a fresh ring; default true). */
  initialize?: boolean;
  /** Indirect tables for add(..., indirect = true), one per buffer id. */
  indirectPool?: IndirectPool | null;
  /** VIRTIO_F_IN_ORDER: one used descriptor may stand for a batch. */
  inOrder?: boolean;
}

/**
 * Driver side of a packed virtqueue. Buffer ids are 0..size-1 from a private
 * free stack. Chains added are published by publish(): head flags are stored
 * (Atomics.store, release) last-chain-first, so the device sees the batch at once.
 */
export class PackedDriverRing<T = unknown> implements DriverRing<T> {
  readonly kind = 'packed' as const;
  readonly size: number;
  readonly mem: GuestMemory;
  readonly eventIdx: boolean;
  readonly inOrder: boolean;

  private readonly descDv: DataView;
  private readonly descU16: Uint16Array;
  private readonly descOff: number;
  private readonly flagsW0: number;
  private readonly drvU16: Uint16Array;
  private readonly drvOffWrapW: number;
  private readonly drvFlagsW: number;
  private readonly devU16: Uint16Array;
  private readonly devOffWrapW: number;
  private readonly devFlagsW: number;

  private readonly indirectDv: DataView | null = null;
  private readonly indirectOff: number = 0;
  private readonly indirectGpa: number = 0;
  private readonly indirectMax: number = 0;

  private nextAvail = 0;
  private availWrap = 1;
  private nextUsed = 0;
  private usedWrap = 1;
  private free: number;
  private readonly freeIds: Uint16Array;
  private freeTop: number;
  private readonly idCount: Uint16Array;
  private readonly inBytes: Float64Array;
  private readonly tokens: (T | undefined)[];
  private outstanding = 0;

  // Heads added but not yet published (slot, flags), in add order.
  private readonly pendSlot: Uint16Array;
  private readonly pendFlags: Uint16Array;
  private pendCount = 0;
  /** Descriptors made available since the last needsKick(). */
  private addedDescs = 0;

  // In-order: ids in the order they were made available, and the current batch.
  private readonly order: Uint16Array;
  private orderHead = 0;
  private orderTail = 0;
  private batchId = -1;
  private batchLen = 0;

  constructor(mem: GuestMemory, cfg: PackedRingConfig, opts: PackedDriverOptions = {}) {
    const size = cfg.size;
    checkQueueSize(size, false);
    this.size = size;
    this.mem = mem;
    this.eventIdx = cfg.eventIdx ?? false;
    this.inOrder = opts.inOrder ?? false;
    const d = resolveArea(mem, cfg.descGpa, packedDescBytes(size), PACKED_DESC_ALIGN, 'descriptor ring');
    const dr = resolveArea(mem, cfg.driverEventGpa, PACKED_EVENT_BYTES, PACKED_EVENT_ALIGN, 'driver event suppression area');
    const de = resolveArea(mem, cfg.deviceEventGpa, PACKED_EVENT_BYTES, PACKED_EVENT_ALIGN, 'device event suppression area');
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
    if (opts.initialize ?? true) {
      // "The descriptor ring is zero-initialized."
      d.region.u8.fill(0, d.offset, d.offset + packedDescBytes(size));
      dr.region.u8.fill(0, dr.offset, dr.offset + PACKED_EVENT_BYTES);
      de.region.u8.fill(0, de.offset, de.offset + PACKED_EVENT_BYTES);
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
    this.free = size;
    this.freeIds = new Uint16Array(size);
    for (let i = 0; i < size; i++) this.freeIds[i] = size - 1 - i;
    this.freeTop = size;
    this.idCount = new Uint16Array(size);
    this.inBytes = new Float64Array(size);
    this.tokens = new Array<T | undefined>(size).fill(undefined);
    this.pendSlot = new Uint16Array(size);
    this.pendFlags = new Uint16Array(size);
    this.order = new Uint16Array(size);
  }

  get numFree(): number {
    return this.free;
  }
  get numOutstanding(): number {
    return this.outstanding;
  }

  /** SET_VRING_BASE for this ring: next avail slot | avail wrap << 15 (used position equal). */
  get vringBase(): number {
    return (this.nextAvail | (this.availWrap !== 0 ? PACKED_BASE_AVAIL_WRAP : 0)) >>> 0;
  }

  private availFlags(): number {
    // "set the VIRTQ_DESC_F_AVAIL bit to the current value of the Driver Ring Wrap
    // Counter; set the VIRTQ_DESC_F_USED bit to inverse value".
    return this.availWrap !== 0 ? VIRTQ_DESC_F_AVAIL : VIRTQ_DESC_F_USED;
  }

  add(addrs: ArrayLike<number>, lens: ArrayLike<number>, outCount: number, inCount: number, token: T, indirect = false): number {
    const total = outCount + inCount;
    if (total < 1) throw new RangeError('a chain needs at least one buffer');
    if (addrs.length < total || lens.length < total) throw new RangeError('addrs/lens shorter than outCount + inCount');
    const useIndirect = indirect && this.indirectDv !== null;
    if (indirect && !useIndirect) throw new RangeError('indirect requested but no indirect pool configured');
    if (useIndirect && total > this.indirectMax) throw new RangeError(`chain of ${total} > indirect table size ${this.indirectMax}`);
    if (!useIndirect && total > this.size) throw new RangeError(`chain of ${total} > queue size ${this.size}`);
    const slots = useIndirect ? 1 : total;
    if (this.free < slots || this.freeTop === 0) return -1;
    const id = this.freeIds[--this.freeTop]!;
    const dv = this.descDv;
    const headSlot = this.nextAvail;
    let headFlags = 0;
    let inBytes = 0;
    if (useIndirect) {
      const tdv = this.indirectDv!;
      const tOff = this.indirectOff + id * this.indirectMax * DESC_SIZE;
      for (let k = 0; k < total; k++) {
        const o = tOff + k * DESC_SIZE;
        const w = k >= outCount;
        // "The VIRTQ_DESC_F_WRITE flags bit is the only valid flag for descriptors in the indirect table."
        writeDesc(tdv, o, addrs[k]!, lens[k]!, 0, w ? VIRTQ_DESC_F_WRITE : 0);
        if (w) inBytes += lens[k]!;
      }
      const o = this.descOff + headSlot * DESC_SIZE;
      headFlags = VIRTQ_DESC_F_INDIRECT | this.availFlags();
      writeDesc(dv, o, this.indirectGpa + id * this.indirectMax * DESC_SIZE, total * DESC_SIZE, id, -1);
      this.advanceAvail();
    } else {
      for (let k = 0; k < total; k++) {
        const slot = this.nextAvail;
        const w = k >= outCount;
        const f = (w ? VIRTQ_DESC_F_WRITE : 0) | (k < total - 1 ? VIRTQ_DESC_F_NEXT : 0) | this.availFlags();
        const o = this.descOff + slot * DESC_SIZE;
        if (k === 0) {
          headFlags = f;
          writeDesc(dv, o, addrs[k]!, lens[k]!, id, -1);
        } else {
          writeDesc(dv, o, addrs[k]!, lens[k]!, id, -1);
          // Single 16-bit store; published by the head's release store later.
          this.descU16[this.flagsW0 + slot * 8] = f;
        }
        if (w) inBytes += lens[k]!;
        this.advanceAvail();
      }
    }
    this.free -= slots;
    this.idCount[id] = slots;
    this.inBytes[id] = inBytes;
    this.tokens[id] = token;
    this.outstanding++;
    this.addedDescs += slots;
    if (this.inOrder) {
      this.order[this.orderTail] = id;
      this.orderTail = this.orderTail + 1 === this.size ? 0 : this.orderTail + 1;
    }
    this.pendSlot[this.pendCount] = headSlot;
    this.pendFlags[this.pendCount] = headFlags;
    this.pendCount++;
    return id;
  }

  private advanceAvail(): void {
    // "If d is the last descriptor in the ring, toggle the Driver Ring Wrap Counter"
    if (++this.nextAvail === this.size) {
      this.nextAvail = 0;
      this.availWrap ^= 1;
    }
  }

  publish(): void {
    // "The driver always makes the first descriptor in the list available after the
    // rest of the list has been written out into the ring." Last chain first, so
    // the device, polling the first head, sees the whole batch.
    // Heads after the first are single 16-bit stores: the device polls the first
    // head and reaches the others only after its release store below.
    const n = this.pendCount;
    if (n === 0) return;
    for (let i = n - 1; i >= 1; i--) this.descU16[this.flagsW0 + this.pendSlot[i]! * 8] = this.pendFlags[i]!;
    Atomics.store(this.descU16, this.flagsW0 + this.pendSlot[0]! * 8, this.pendFlags[0]!);
    this.pendCount = 0;
  }

  needsKick(): boolean {
    this.publish();
    const added = this.addedDescs;
    this.addedDescs = 0;
    if (added === 0) return false;
    // "The driver MUST perform a suitable memory barrier before reading the Event
    // Suppression structure occupying the Device Area."
    const flags = Atomics.load(this.devU16, this.devFlagsW);
    if (flags !== RING_EVENT_FLAGS_DESC || !this.eventIdx) return flags !== RING_EVENT_FLAGS_DISABLE;
    const offWrap = Atomics.load(this.devU16, this.devOffWrapW);
    let event = offWrap & RING_EVENT_OFF_MASK;
    if (offWrap >> RING_EVENT_WRAP_SHIFT !== this.availWrap) event -= this.size;
    if (added >= this.size) return true;
    return vringNeedEvent(event, this.nextAvail, this.nextAvail - added);
  }

  /** Acquire load of a descriptor's flags word. */
  private flagsAt(slot: number): number {
    return Atomics.load(this.descU16, this.flagsW0 + slot * 8);
  }

  /** True when flags mark a used descriptor: AVAIL == USED == used wrap counter. */
  private isUsedFlags(f: number): boolean {
    const a = (f & VIRTQ_DESC_F_AVAIL) !== 0 ? 1 : 0;
    const u = (f & VIRTQ_DESC_F_USED) !== 0 ? 1 : 0;
    return a === u && u === this.usedWrap;
  }

  getUsed(out: UsedBuffer<T>): boolean {
    let id: number;
    let len: number;
    let usedLen = 0;
    if (this.inOrder && this.batchId >= 0) {
      id = this.order[this.orderHead]!;
    } else {
      if (this.outstanding === 0) return false;
      const f = this.flagsAt(this.nextUsed);
      if (!this.isUsedFlags(f)) return false;
      const o = this.descOff + this.nextUsed * DESC_SIZE;
      const uid = this.descDv.getUint16(o + PACKED_DESC_ID, true);
      // "Element Length is reserved for used descriptors without the VIRTQ_DESC_F_WRITE flag"
      const ulen = (f & VIRTQ_DESC_F_WRITE) !== 0 ? this.descDv.getUint32(o + DESC_LEN, true) : 0;
      if (uid >= this.size || this.idCount[uid] === 0) throw new RingError('USED_ID', `used buffer id ${uid} is not outstanding`);
      if (this.inOrder) {
        this.batchId = uid;
        this.batchLen = ulen;
        id = this.order[this.orderHead]!;
      } else {
        id = uid;
        usedLen = ulen;
      }
    }
    if (this.inOrder) {
      this.orderHead = this.orderHead + 1 === this.size ? 0 : this.orderHead + 1;
      if (id === this.batchId) {
        len = this.batchLen;
        this.batchId = -1;
      } else {
        len = this.inBytes[id]!;
      }
    } else {
      len = usedLen;
    }
    // "The driver needs to keep track of the size of the list corresponding to each
    // buffer ID, to be able to skip to where the next used descriptor is written".
    const n = this.idCount[id]!;
    this.nextUsed += n;
    if (this.nextUsed >= this.size) {
      this.nextUsed -= this.size;
      this.usedWrap ^= 1;
    }
    this.idCount[id] = 0;
    this.free += n;
    this.freeIds[this.freeTop++] = id;
    this.outstanding--;
    out.id = id;
    out.len = len;
    out.token = this.tokens[id];
    this.tokens[id] = undefined;
    return true;
  }

  enableCallbacks(): boolean {
    if (this.eventIdx) {
      Atomics.store(this.drvU16, this.drvOffWrapW, this.nextUsed | (this.usedWrap << RING_EVENT_WRAP_SHIFT));
      Atomics.store(this.drvU16, this.drvFlagsW, RING_EVENT_FLAGS_DESC);
    } else {
      Atomics.store(this.drvU16, this.drvFlagsW, RING_EVENT_FLAGS_ENABLE);
    }
    if (this.inOrder && this.batchId >= 0) return true;
    return this.outstanding !== 0 && this.isUsedFlags(this.flagsAt(this.nextUsed));
  }

  disableCallbacks(): void {
    Atomics.store(this.drvU16, this.drvFlagsW, RING_EVENT_FLAGS_DISABLE);
  }
}

/** Writes addr/len/id; flags only when `flags` >= 0 (else left for a later release store). */
function writeDesc(dv: DataView, o: number, addr: number, len: number, id: number, flags: number): void {
  dv.setUint32(o, addr % TWO_POW_32, true);
  dv.setUint32(o + 4, Math.floor(addr / TWO_POW_32), true);
  dv.setUint32(o + DESC_LEN, len, true);
  dv.setUint16(o + PACKED_DESC_ID, id, true);
  if (flags >= 0) dv.setUint16(o + PACKED_DESC_FLAGS, flags, true);
}
