import type { Chain } from './chain.js';
import type { GuestMemory } from './memory.js';

/**
 * EVENT_IDX rule, shared by both directions of the split ring and (with indices
 * adjusted for the wrap counter) by the packed ring: "EVENT_IDX notify iff
 * (u16)(new - event - 1) < (u16)(new - old)", i.e. the other side asked to be
 * told when index `event` was passed, and it lies in (old, new].
 */
export function vringNeedEvent(eventIdx: number, newIdx: number, oldIdx: number): boolean {
  return ((newIdx - eventIdx - 1) & 0xffff) < ((newIdx - oldIdx) & 0xffff);
}

/**
 * What a queue worker needs from a device-side ring, implemented by
 * SplitDeviceRing and PackedDeviceRing with the same method shapes, so a worker
 * holds one ring kind per loop (monomorphic call sites) and the code is the same.
 *
 * Errors: pop()/popBurst()/hasWork()/enableNotifications() throw RingError on a
 * malformed ring; the ring then stays broken (every later pop throws BROKEN)
 * until it is rebuilt.
 */
export interface DeviceRing {
  readonly kind: 'split' | 'packed';
  readonly size: number;
  readonly mem: GuestMemory;
  /** True after a RingError: the device must go to NEEDS_RESET. */
  readonly broken: boolean;

  /** Describes the next available chain into `chain`; false when none is available. */
  pop(chain: Chain): boolean;
  /** Pops up to `max` chains into chains[0..]; returns how many. */
  popBurst(chains: readonly Chain[], max: number): number;
  /** True when a chain is available (does not consume it). */
  hasWork(): boolean;

  /** Stages one used entry (id = chain.head, len = bytes written). Publish with flush(). */
  push(id: number, len: number): void;
  /** push(chain.head, len). */
  pushChain(chain: Chain, len: number): void;
  /** push(ids[i], lens[i]) for i < n, then flush(). */
  pushBatch(ids: ArrayLike<number>, lens: ArrayLike<number>, n: number): void;
  /** In-order completion (VIRTIO_F_IN_ORDER): one used entry for `count` buffers, the last being `lastId`. */
  pushInOrder(lastId: number, lastLen: number, count: number): void;
  /** Publishes staged used entries (one Atomics.store / release per burst). */
  flush(): void;
  /** flush(), then: must the driver be notified (call eventfd) for what was published since the last check? */
  needsNotify(): boolean;

  /** Asks the driver for kicks again; returns true when work is available (re-check after the store). */
  enableNotifications(): boolean;
  /** Asks the driver not to kick (best effort, the driver may still kick). */
  disableNotifications(): void;

  /** Split: next avail index (16 bits). Packed: next avail slot (15 bits). */
  lastAvailIdx: number;
  /** Split: used.idx shadow (16 bits). Packed: next used slot (15 bits). */
  lastUsedIdx: number;
  /** The value GET_VRING_BASE replies / SET_VRING_BASE carries (packed: wrap counters encoded). */
  vringBase: number;
  /** Dirty-logs used-area writes at `logGpa` (the vring addr's log_guest_addr) when memory has a log; null stops. */
  setUsedLog(logGpa: number | null): void;
}

/** One used buffer returned to a driver-side ring. */
export interface UsedBuffer<T> {
  id: number;
  len: number;
  token: T | undefined;
}

/** A reusable UsedBuffer (fill it with getUsed()). */
export function createUsedBuffer<T>(): UsedBuffer<T> {
  return { id: 0, len: 0, token: undefined };
}

/**
 * Driver side (front-end) ring, implemented by SplitDriverRing and
 * PackedDriverRing.
 */
export interface DriverRing<T> {
  readonly kind: 'split' | 'packed';
  readonly size: number;
  /** Free descriptor slots. */
  readonly numFree: number;
  /**
   * Adds a chain: `outCount` device-readable buffers then `inCount` device-writable
   * ones, addresses/lengths from addrs[0..n) / lens[0..n). With `indirect` and an
   * indirect pool, one ring slot holds the chain. Returns the buffer id, or -1
   * when the ring is full. Not visible to the device until publish().
   */
  add(addrs: ArrayLike<number>, lens: ArrayLike<number>, outCount: number, inCount: number, token: T, indirect?: boolean): number;
  /** Makes added chains visible to the device (release). */
  publish(): void;
  /** publish(), then: must the device be kicked? */
  needsKick(): boolean;
  /** Takes the next used buffer into `out`; false when none. */
  getUsed(out: UsedBuffer<T>): boolean;
  /** Asks for used-buffer notifications again; returns true when used buffers are already pending. */
  enableCallbacks(): boolean;
  disableCallbacks(): void;
  /** The SET_VRING_BASE value describing this ring's next avail position. */
  readonly vringBase: number;
}
