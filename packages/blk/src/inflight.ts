/**
 * Inflight I/O tracking for one split vring (vhost-user INFLIGHT_SHMFD), the
 * bookkeeping that lets a restarted back-end resubmit what a dead one had in
 * flight.
 *
 * Queue region layout (QueueRegionSplit, shared with QEMU's libvhost-user
 * and DPDK): header {features u64 @0, version u16 @8, desc_num u16 @10,
 * last_batch_head u16 @12, used_idx u16 @14}, then desc_num DescStateSplit
 * of 16 bytes {inflight u8 @0, padding[5], next u16 @6, counter u64 @8}.
 * Only the back-end interprets it; the front-end keeps the memfd across
 * back-end restarts and hands it back with SET_INFLIGHT_FD.
 *
 * Protocol (per chain head h):
 * - pop: `counter = ++global`, then `inflight = 1`.
 * - completion: h is appended to the *pending list* (completed, used entry
 *   staged, not yet known to be published): the list starts at
 *   `last_batch_head` and follows `next`; `used_idx` is the guest's used->idx
 *   before the list's first entry.
 * - settle (whenever the published used->idx P is known): the first
 *   k = P - used_idx entries are published: clear their `inflight`, then
 *   `used_idx = P`, then `last_batch_head` = the first unpublished entry.
 *
 * The runtime publishes a whole burst of used entries with one used->idx
 * store, so the single `last_batch_head` of libvhost-user (one entry per
 * store) is generalised with the spec's `next` list ("Maintain a list for
 * the last batch of used descriptors"). A crash anywhere leaves a state that
 * {@link SplitInflightQueue.recover} turns into the exact set of requests the
 * guest has not seen completed:
 * - k = used->idx - used_idx entries of the list were published: clear them
 *   (idempotent if a settle had already cleared some);
 * - every desc still inflight is resubmitted in counter (pop) order;
 * - the next avail index is used->idx + (number resubmitted): chains are
 *   popped in avail order and marked before any later one, so exactly the
 *   first used->idx + inuse avail entries were consumed.
 * (virtio's `InflightQueue` keeps libvhost-user's one-entry model, prePush /
 * postPush around each used->idx store; it cannot describe a batch published
 * by one store, hence this class over the same layout constants.)
 * Field stores need no atomicity against a crash of this process (no torn
 * stores at instruction granularity); the order of the stores is what matters.
 */

import {
  INFLIGHT_DESC_COUNTER as D_COUNTER,
  INFLIGHT_DESC_INFLIGHT as D_INFLIGHT,
  INFLIGHT_DESC_NEXT as D_NEXT,
  INFLIGHT_DESC_SIZE,
  INFLIGHT_HDR_DESC_NUM as HDR_DESC_NUM,
  INFLIGHT_HDR_LAST_BATCH_HEAD as HDR_LAST_BATCH_HEAD,
  INFLIGHT_HDR_SIZE,
  INFLIGHT_HDR_USED_IDX as HDR_USED_IDX,
  INFLIGHT_HDR_VERSION as HDR_VERSION,
  INFLIGHT_VERSION,
  inflightQueueBytes,
} from '@vhost-ts/virtio';

const INFLIGHT_SPLIT_HEADER_SIZE = INFLIGHT_HDR_SIZE;
const INFLIGHT_SPLIT_DESC_SIZE = INFLIGHT_DESC_SIZE;

/** Where the inflight area is (the `InflightInfo` of @vhost-ts/vhost's VhostDevice; structured-cloneable). */
export interface InflightAreaSpec {
  sab: SharedArrayBuffer;
  /** Where queue 0's region starts in `sab`. */
  offset: number;
  /** Bytes per queue region; queue i starts at offset + i * queueRegionSize. */
  queueRegionSize: number;
  numQueues: number;
  queueSize: number;
  /** Packed-ring layout (not tracked by this module). */
  packed: boolean;
}

/** Outcome of {@link SplitInflightQueue.recover}. */
export interface InflightRecovery {
  /** The area was fresh (version 0) or unusable and was initialised: nothing to resubmit. */
  fresh: boolean;
  /** Heads to resubmit, in submission order. */
  heads: number[];
  /** Next avail index to pop: used->idx + heads.length (u16). */
  lastAvailIdx: number;
  /** Entries of the last batch found published and cleared. */
  clearedBatch: number;
  /** Why the area was reset, when it was. */
  reset?: string;
}

/** The tracking state of one split vring's inflight region. */
export class SplitInflightQueue {
  readonly queueSize: number;
  /** Byte offset of the region in the SAB. */
  readonly base: number;
  private readonly u8: Uint8Array;
  private readonly dv: DataView;
  /**
   * Last counter given (the region's u64 counters, kept < 2^53), in a float64 cell: it grows by
   * one per request and passes 2^30 in a long run, and a number field that outgrows V8's small
   * integers changes representation mid-run, deoptimising every function that touched this object.
   */
  private readonly counter = new Float64Array(1);
  // The pending list (completed, not known published).
  private pendHead = 0;
  private pendTail = 0;
  private pendCount = 0;
  /** Mirror of the header's used_idx. */
  private usedIdx = 0;

  constructor(sab: SharedArrayBuffer, base: number, queueSize: number) {
    if (!Number.isInteger(queueSize) || queueSize < 1 || queueSize > 32768) throw new RangeError(`queue size ${queueSize}`);
    const bytes = INFLIGHT_SPLIT_HEADER_SIZE + INFLIGHT_SPLIT_DESC_SIZE * queueSize;
    if (!Number.isInteger(base) || base < 0 || base + bytes > sab.byteLength) {
      throw new RangeError(`inflight region [${base}, +${bytes}) outside an area of ${sab.byteLength} bytes`);
    }
    this.queueSize = queueSize;
    this.base = base;
    this.u8 = new Uint8Array(sab, base, bytes);
    this.dv = new DataView(sab, base, bytes);
  }

  /** Region of vring `index` of an area, or null when the area cannot track it (packed, too small, other queue size). */
  static forVring(area: InflightAreaSpec, index: number, queueSize: number): SplitInflightQueue | string {
    if (area.packed) return 'packed-ring inflight areas are not tracked';
    if (index >= area.numQueues) return `vring ${index} beyond the area's ${area.numQueues} queues`;
    if (area.queueSize !== queueSize) return `area queue size ${area.queueSize} != vring size ${queueSize}`;
    if (area.queueRegionSize < inflightQueueBytes(queueSize)) return `area queue region of ${area.queueRegionSize} bytes too small`;
    return new SplitInflightQueue(area.sab, area.offset + index * area.queueRegionSize, queueSize);
  }

  get version(): number {
    return this.dv.getUint16(HDR_VERSION, true);
  }
  get descNum(): number {
    return this.dv.getUint16(HDR_DESC_NUM, true);
  }
  get lastBatchHead(): number {
    return this.dv.getUint16(HDR_LAST_BATCH_HEAD, true);
  }
  /** used_idx as stored in the region. */
  get storedUsedIdx(): number {
    return this.dv.getUint16(HDR_USED_IDX, true);
  }
  /** Requests completed whose used entries are not known to be published. */
  get pending(): number {
    return this.pendCount;
  }
  /** The last counter given. */
  get lastCounter(): number {
    return this.counter[0]!;
  }
  isInflight(head: number): boolean {
    return this.u8[INFLIGHT_SPLIT_HEADER_SIZE + head * INFLIGHT_SPLIT_DESC_SIZE + D_INFLIGHT] === 1;
  }
  counterOf(head: number): number {
    const o = INFLIGHT_SPLIT_HEADER_SIZE + head * INFLIGHT_SPLIT_DESC_SIZE + D_COUNTER;
    return this.dv.getUint32(o, true) + this.dv.getUint32(o + 4, true) * 2 ** 32;
  }
  /** Heads marked in flight, ascending index (diagnostics and tests). */
  inflightHeads(): number[] {
    const out: number[] = [];
    for (let i = 0; i < this.queueSize; i++) if (this.isInflight(i)) out.push(i);
    return out;
  }

  /** Initialises the region for a fresh ring whose used->idx is `usedIdx`. */
  reset(usedIdx: number): void {
    this.u8.fill(0);
    this.dv.setUint16(HDR_DESC_NUM, this.queueSize, true);
    this.dv.setUint16(HDR_USED_IDX, usedIdx & 0xffff, true);
    this.dv.setUint16(HDR_LAST_BATCH_HEAD, 0, true);
    this.dv.setUint16(HDR_VERSION, INFLIGHT_VERSION, true);
    this.counter[0] = 0;
    this.pendCount = 0;
    this.usedIdx = usedIdx & 0xffff;
  }

  /**
   * At ring start, with the guest's used->idx: finishes the bookkeeping of a
   * back-end that died (or stopped) with requests in flight and returns what
   * to resubmit and where to resume popping. A fresh area (version 0) or one
   * that does not describe this ring is initialised instead.
   */
  recover(usedIdx: number): InflightRecovery {
    usedIdx &= 0xffff;
    const version = this.version;
    if (version === 0) {
      this.reset(usedIdx);
      return { fresh: true, heads: [], lastAvailIdx: usedIdx, clearedBatch: 0 };
    }
    let why: string | null = null;
    if (version !== INFLIGHT_VERSION) why = `version ${version}`;
    else if (this.descNum !== this.queueSize) why = `desc_num ${this.descNum} != queue size ${this.queueSize}`;
    if (why !== null) {
      this.reset(usedIdx);
      return { fresh: true, heads: [], lastAvailIdx: usedIdx, clearedBatch: 0, reset: why };
    }
    const size = this.queueSize;
    const stored = this.storedUsedIdx;
    // The last batch: k entries of the pending list reached the guest.
    let k = (usedIdx - stored) & 0xffff;
    let cleared = 0;
    if (k > size) k = size; // a guest that rewrote used->idx: bounded walk, its own loss
    let h = this.lastBatchHead;
    for (let i = 0; i < k && h < size; i++) {
      this.u8[INFLIGHT_SPLIT_HEADER_SIZE + h * INFLIGHT_SPLIT_DESC_SIZE + D_INFLIGHT] = 0;
      cleared++;
      h = this.dv.getUint16(INFLIGHT_SPLIT_HEADER_SIZE + h * INFLIGHT_SPLIT_DESC_SIZE + D_NEXT, true);
    }
    this.dv.setUint16(HDR_USED_IDX, usedIdx, true);
    this.usedIdx = usedIdx;
    this.pendCount = 0;
    // Everything still marked goes back in submission order.
    const heads: number[] = [];
    let max = 0;
    for (let i = 0; i < size; i++) {
      if (this.isInflight(i)) {
        heads.push(i);
        const c = this.counterOf(i);
        if (c > max) max = c;
      } else if (this.u8[INFLIGHT_SPLIT_HEADER_SIZE + i * INFLIGHT_SPLIT_DESC_SIZE + D_INFLIGHT] !== 0) {
        // Only 0 and 1 are meaningful; anything else is treated as not in flight and cleaned.
        this.u8[INFLIGHT_SPLIT_HEADER_SIZE + i * INFLIGHT_SPLIT_DESC_SIZE + D_INFLIGHT] = 0;
      }
    }
    heads.sort((a, b) => this.counterOf(a) - this.counterOf(b) || a - b);
    this.counter[0] = max;
    return { fresh: false, heads, lastAvailIdx: (usedIdx + heads.length) & 0xffff, clearedBatch: cleared };
  }

  /** A chain was popped: record it in flight with the next counter. */
  markPopped(head: number): void {
    const o = INFLIGHT_SPLIT_HEADER_SIZE + head * INFLIGHT_SPLIT_DESC_SIZE;
    const c = ++this.counter[0]!;
    this.dv.setUint32(o + D_COUNTER, c >>> 0, true);
    this.dv.setUint32(o + D_COUNTER + 4, Math.floor(c / 2 ** 32), true);
    this.u8[o + D_INFLIGHT] = 1;
  }

  /**
   * A chain's used entry is about to be staged (call right before
   * `completeId`): append it to the pending list. `publishedUsedIdx` is the
   * guest-visible used->idx now (settles what was published before).
   */
  markCompleting(head: number, publishedUsedIdx: number): void {
    this.settle(publishedUsedIdx);
    if (this.pendCount === 0) {
      // used_idx already equals the published index (everything before is settled).
      this.dv.setUint16(HDR_LAST_BATCH_HEAD, head, true);
      this.pendHead = head;
    } else {
      this.dv.setUint16(INFLIGHT_SPLIT_HEADER_SIZE + this.pendTail * INFLIGHT_SPLIT_DESC_SIZE + D_NEXT, head, true);
    }
    this.pendTail = head;
    this.pendCount++;
  }

  /**
   * The guest's used->idx is `publishedUsedIdx`: the entries of the pending
   * list it covers are complete. Cheap when nothing changed.
   */
  settle(publishedUsedIdx: number): void {
    if (this.pendCount === 0) return;
    let k = (publishedUsedIdx - this.usedIdx) & 0xffff;
    if (k === 0) return;
    if (k > this.pendCount) k = this.pendCount;
    const u8 = this.u8;
    const dv = this.dv;
    let h = this.pendHead;
    for (let i = 0; i < k; i++) {
      const o = INFLIGHT_SPLIT_HEADER_SIZE + h * INFLIGHT_SPLIT_DESC_SIZE;
      u8[o + D_INFLIGHT] = 0;
      if (i + 1 < this.pendCount) h = dv.getUint16(o + D_NEXT, true);
    }
    this.pendCount -= k;
    this.usedIdx = (this.usedIdx + k) & 0xffff;
    // used_idx first: a crash before last_batch_head is written then sees k = 0.
    dv.setUint16(HDR_USED_IDX, this.usedIdx, true);
    if (this.pendCount > 0) {
      this.pendHead = h;
      dv.setUint16(HDR_LAST_BATCH_HEAD, h, true);
    }
  }

  /** Everything staged was published (the ring stopped after a flush): settle all of it. */
  settleAll(): void {
    this.settle((this.usedIdx + this.pendCount) & 0xffff);
  }
}
