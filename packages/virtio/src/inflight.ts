/**
 * vhost-user inflight tracking for split rings (INFLIGHT_SHMFD), pure layout:
 * per queue "ALIGN_UP(16 * queue_size + 16, 64) bytes; region header {features
 * u64, version u16 = 1, desc_num u16, last_batch_head u16, used_idx u16} then
 * desc[] of {inflight u8, padding[5], next u16, counter u64}".
 * "On pop: counter = ++global, inflight = 1. On push: update used->idx, clear
 * inflight, used_idx = used->idx. After reconnect ...: if used_idx != used->idx
 * the last batch completed; resubmit the entries still in flight in counter order."
 */
export const INFLIGHT_HDR_FEATURES = 0;
export const INFLIGHT_HDR_VERSION = 8;
export const INFLIGHT_HDR_DESC_NUM = 10;
export const INFLIGHT_HDR_LAST_BATCH_HEAD = 12;
export const INFLIGHT_HDR_USED_IDX = 14;
export const INFLIGHT_HDR_SIZE = 16;
export const INFLIGHT_DESC_INFLIGHT = 0;
export const INFLIGHT_DESC_NEXT = 6;
export const INFLIGHT_DESC_COUNTER = 8;
export const INFLIGHT_DESC_SIZE = 16;
export const INFLIGHT_VERSION = 1;
export const INFLIGHT_ALIGN = 64;

/** Bytes of one queue's inflight region: ALIGN_UP(16 * queue_size + 16, 64). */
export function inflightQueueBytes(queueSize: number): number {
  const raw = INFLIGHT_DESC_SIZE * queueSize + INFLIGHT_HDR_SIZE;
  return Math.ceil(raw / INFLIGHT_ALIGN) * INFLIGHT_ALIGN;
}

/** Bytes of the whole inflight area (GET_INFLIGHT_FD mmap_size). */
export function inflightTotalBytes(numQueues: number, queueSize: number): number {
  return numQueues * inflightQueueBytes(queueSize);
}

/** The outcome of recovering a queue's inflight state after a reconnect. */
export interface InflightRecovery {
  /** Heads to resubmit, in the order they were popped (counter order). */
  resubmit: number[];
  /** The next avail index to use: used_idx + number in flight. */
  lastAvailIdx: number;
}

/** One queue's inflight region (a view over the shared inflight area). */
export class InflightQueue {
  readonly queueSize: number;
  private readonly dv: DataView;
  private readonly u8: Uint8Array;
  private counter = 0;

  constructor(sab: SharedArrayBuffer | ArrayBuffer, offset: number, queueSize: number) {
    const bytes = inflightQueueBytes(queueSize);
    if (!Number.isInteger(offset) || offset < 0 || offset + bytes > sab.byteLength) {
      throw new RangeError(`inflight queue [${offset}, +${bytes}) outside an area of ${sab.byteLength} bytes`);
    }
    this.queueSize = queueSize;
    this.dv = new DataView(sab, offset, bytes);
    this.u8 = new Uint8Array(sab, offset, bytes);
  }

  /** True when the region was initialized (version != 0). */
  get initialized(): boolean {
    return this.dv.getUint16(INFLIGHT_HDR_VERSION, true) !== 0;
  }
  get version(): number {
    return this.dv.getUint16(INFLIGHT_HDR_VERSION, true);
  }
  get descNum(): number {
    return this.dv.getUint16(INFLIGHT_HDR_DESC_NUM, true);
  }
  get usedIdx(): number {
    return this.dv.getUint16(INFLIGHT_HDR_USED_IDX, true);
  }
  get lastBatchHead(): number {
    return this.dv.getUint16(INFLIGHT_HDR_LAST_BATCH_HEAD, true);
  }

  /** Fresh region: zeroes it and writes features, version 1, desc_num, used_idx. */
  init(features: bigint, usedIdx = 0): void {
    this.u8.fill(0);
    const f = BigInt.asUintN(64, features);
    this.dv.setUint32(INFLIGHT_HDR_FEATURES, Number(f & 0xffffffffn), true);
    this.dv.setUint32(INFLIGHT_HDR_FEATURES + 4, Number(f >> 32n), true);
    this.dv.setUint16(INFLIGHT_HDR_VERSION, INFLIGHT_VERSION, true);
    this.dv.setUint16(INFLIGHT_HDR_DESC_NUM, this.queueSize, true);
    this.dv.setUint16(INFLIGHT_HDR_USED_IDX, usedIdx & 0xffff, true);
    this.counter = 0;
  }

  isInflight(head: number): boolean {
    return this.u8[INFLIGHT_HDR_SIZE + head * INFLIGHT_DESC_SIZE + INFLIGHT_DESC_INFLIGHT] === 1;
  }

  counterOf(head: number): number {
    const o = INFLIGHT_HDR_SIZE + head * INFLIGHT_DESC_SIZE + INFLIGHT_DESC_COUNTER;
    return this.dv.getUint32(o, true) + this.dv.getUint32(o + 4, true) * 2 ** 32;
  }

  /** On pop: counter = ++global, inflight = 1. */
  markInflight(head: number): void {
    if (head < 0 || head >= this.queueSize) throw new RangeError(`head ${head} outside queue size ${this.queueSize}`);
    const o = INFLIGHT_HDR_SIZE + head * INFLIGHT_DESC_SIZE;
    const c = ++this.counter;
    this.dv.setUint32(o + INFLIGHT_DESC_COUNTER, c % 2 ** 32, true);
    this.dv.setUint32(o + INFLIGHT_DESC_COUNTER + 4, Math.floor(c / 2 ** 32), true);
    this.u8[o + INFLIGHT_DESC_INFLIGHT] = 1;
  }

  /** Before publishing used.idx for a batch whose last head is `head`. */
  prePush(head: number): void {
    this.dv.setUint16(INFLIGHT_HDR_LAST_BATCH_HEAD, head, true);
  }

  /** After publishing used.idx = `usedIdx`: clears `head` and records used_idx. */
  postPush(head: number, usedIdx: number): void {
    this.u8[INFLIGHT_HDR_SIZE + head * INFLIGHT_DESC_SIZE + INFLIGHT_DESC_INFLIGHT] = 0;
    this.dv.setUint16(INFLIGHT_HDR_USED_IDX, usedIdx & 0xffff, true);
  }

  /**
   * After SET_INFLIGHT_FD with a region from a previous back-end: reconciles
   * with used->idx read from the ring, and lists the heads to resubmit in counter
   * order. A region that was never initialized yields nothing to resubmit.
   */
  recover(ringUsedIdx: number): InflightRecovery {
    if (!this.initialized) return { resubmit: [], lastAvailIdx: ringUsedIdx & 0xffff };
    if (this.usedIdx !== (ringUsedIdx & 0xffff)) {
      // The last batch reached used->idx but its inflight flag was not cleared.
      const h = this.lastBatchHead;
      if (h < this.queueSize) this.u8[INFLIGHT_HDR_SIZE + h * INFLIGHT_DESC_SIZE + INFLIGHT_DESC_INFLIGHT] = 0;
      this.dv.setUint16(INFLIGHT_HDR_USED_IDX, ringUsedIdx & 0xffff, true);
    }
    const n = Math.min(this.descNum, this.queueSize);
    const heads: number[] = [];
    for (let i = 0; i < n; i++) if (this.isInflight(i)) heads.push(i);
    heads.sort((a, b) => this.counterOf(a) - this.counterOf(b));
    this.counter = heads.length > 0 ? this.counterOf(heads[heads.length - 1]!) : 0;
    return { resubmit: heads, lastAvailIdx: (ringUsedIdx + heads.length) & 0xffff };
  }
}
