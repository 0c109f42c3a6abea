/**
 * The per-worker control block: one SharedArrayBuffer shared by the main
 * thread (control plane) and one queue worker. Every index used by either side
 * is named here, in the style of piscina's `symbols.ts`; no other file may use
 * a numeric offset into the block.
 *
 * Layout (`ringSlots` = rings this worker serves, at most {@link MAX_RINGS_PER_WORKER}):
 * ```
 * Int32 words
 *   [0 .. CB_HEADER_WORDS)                       header (doorbell, request/ack, state, ...)
 *   [CB_HEADER_WORDS + s*RING_WORDS ...)         ring slot s (state, kick pending, indices, ...)
 * Float64 counters, starting at byte counterByteOffset(ringSlots)
 *   [0 .. WC_COUNT)                              worker counters (wake-ups, sleeps, ...)
 *   [WC_COUNT + s*RC_COUNT ...)                  ring slot s counters (chains, bytes, kicks, ...)
 * ```
 * Ownership: each word has one writer. The main thread writes DOORBELL (add),
 * REQ_* , SERVICE (add), RING_KICK_PENDING (store 1), RING_KICK_FD and the KICKS counter;
 * the worker writes everything else. Counters are Float64 (exact to 2^53) and
 * are written with plain stores by their single writer; readers may see a
 * slightly stale value but never a torn one on the supported platforms
 * (aligned 8-byte stores), so the main thread reads them without stopping the
 * worker. Index/flag/control words are accessed only with `Atomics`.
 */

// ---------------------------------------------------------------------------
// Header words (Int32 indices).

/** Doorbell counter: main thread `Atomics.add(+1)` then `Atomics.notify`; the worker sleeps in `Atomics.wait` on it. */
export const CB_DOORBELL = 0;
/** Request sequence: the main thread writes CB_REQ_CODE/CB_REQ_ARG, then increments this word and rings the doorbell. */
export const CB_REQ_SEQ = 1;
/** Request code (`REQ_*`). */
export const CB_REQ_CODE = 2;
/** Request argument: a ring-slot bit mask for ring requests, an update sequence for REQ_APPLY. */
export const CB_REQ_ARG = 3;
/** Acknowledged request sequence: the worker stores the CB_REQ_SEQ it handled, then notifies on this word. */
export const CB_ACK_SEQ = 4;
/** Result of the acknowledged request (`ACK_*`). */
export const CB_ACK_STATUS = 5;
/** Worker state (`WORKER_*`), written by the worker, notified on change. */
export const CB_STATE = 6;
/**
 * How the worker sleeps: 0 awake, {@link SLEEP_WAIT} in `Atomics.wait` on the doorbell (the main
 * thread always notifies), {@link SLEEP_POLL} in `pollReadable` on its wake eventfd and its kick
 * fds (the main thread writes the wake eventfd after ringing the doorbell).
 */
export const CB_SLEEPING = 7;
export const SLEEP_WAIT = 1;
export const SLEEP_POLL = 2;
/** Service counter: the main thread adds 1 after posting a comlink message so the worker visits its event loop. */
export const CB_SERVICE = 8;
/** Highest update-message sequence the worker has applied (see REQ_APPLY). */
export const CB_APPLIED_SEQ = 9;
/** Number of ring slots in this block (written once at creation). */
export const CB_RING_SLOTS = 10;
/** Header size in Int32 words (room to grow; keeps ring sections on their own cache line). */
export const CB_HEADER_WORDS = 16;

// ---------------------------------------------------------------------------
// Ring slot words (Int32 indices relative to ringWord(slot, 0)).

/** Ring state (`RING_*`). */
export const RING_STATE = 0;
/** 1 when the main thread forwarded a kick the worker has not looked at yet. */
export const RING_KICK_PENDING = 1;
/** Published next avail index (split: 0..65535 free-running; packed: 0..size-1). */
export const RING_LAST_AVAIL = 2;
/** Published avail wrap counter (packed: 0/1; split: always 0). */
export const RING_AVAIL_WRAP = 3;
/** Published next used index (split: 0..65535 free-running; packed: 0..size-1). */
export const RING_LAST_USED = 4;
/** Published used wrap counter (packed: 0/1; split: always 0). */
export const RING_USED_WRAP = 5;
/** The vring index (in the device) this slot serves, or -1 when the slot is unused. */
export const RING_VRING_INDEX = 6;
/** Why the ring broke (`BROKEN_*`), 0 while healthy. */
export const RING_BROKEN_REASON = 7;
/** Chains popped and not yet completed (module work in flight). */
export const RING_INFLIGHT = 8;
/**
 * The kick fd the main thread watches for this ring, -1 when none. The worker may poll it for
 * readability while it sleeps (never reads it: the main thread's poller drains it); the main
 * thread closes a kick fd only after the worker acknowledged that the ring stopped.
 */
export const RING_KICK_FD = 9;
/** Ring slot size in Int32 words. */
export const RING_WORDS = 16;

// ---------------------------------------------------------------------------
// Worker counters (Float64 indices).

/** Times the worker returned from `Atomics.wait` (doorbell or timeout). */
export const WC_WAKEUPS = 0;
/** Times the worker went to sleep. */
export const WC_SLEEPS = 1;
/** Sleeps that ended by timeout (polling-mode rings). */
export const WC_TIMEOUTS = 2;
/** Passes over the rings (busy or spinning). */
export const WC_ROUNDS = 3;
/** Requests handled. */
export const WC_REQUESTS = 4;
/** Visits to the event loop (pauses, updates, comlink service, async modules). */
export const WC_YIELDS = 5;
/** Number of worker counters. */
export const WC_COUNT = 8;

// ---------------------------------------------------------------------------
// Ring counters (Float64 indices relative to ringCounter(slot, 0)).

/** Chains completed (used entries pushed). */
export const RC_CHAINS = 0;
/** Descriptors in the chains popped (indirect tables count their entries). */
export const RC_DESCRIPTORS = 1;
/** Bytes: device-readable bytes of popped chains plus bytes written back (used len). */
export const RC_BYTES = 2;
/** Kicks forwarded by the main thread (written by the main thread). */
export const RC_KICKS = 3;
/** Call eventfd writes. */
export const RC_CALLS = 4;
/** Calls skipped because the guest suppressed notifications. */
export const RC_SUPPRESSED = 5;
/** Bursts handed to the module. */
export const RC_BURSTS = 6;
/** Errors (ring errors and module exceptions). */
export const RC_ERRORS = 7;
/** Number of ring counters. */
export const RC_COUNT = 8;

// ---------------------------------------------------------------------------
// Values.

/** Requests (CB_REQ_CODE). */
export const REQ_NONE = 0;
/** Finish the burst in hand, publish every ring's indices, stop touching rings and visit the event loop until REQ_RESUME. */
export const REQ_PAUSE = 1;
/** Leave the paused state. */
export const REQ_RESUME = 2;
/** Apply update messages up to sequence CB_REQ_ARG (posted on the worker's port before the request). */
export const REQ_APPLY = 3;
/** Stop the rings in mask CB_REQ_ARG: publish their indices, forget them (a new ring config restarts the slot). */
export const REQ_STOP_RINGS = 4;
/** Pause the rings in mask CB_REQ_ARG (vring disabled): keep their state, do not process them. */
export const REQ_PAUSE_RINGS = 5;
/** Resume the rings in mask CB_REQ_ARG. */
export const REQ_RESUME_RINGS = 6;
/** Stop every ring, publish, close the module and exit the thread. */
export const REQ_EXIT = 7;

/** Request names for messages. */
export const REQ_NAMES: readonly string[] = ['NONE', 'PAUSE', 'RESUME', 'APPLY', 'STOP_RINGS', 'PAUSE_RINGS', 'RESUME_RINGS', 'EXIT'];

/** Acknowledgement status (CB_ACK_STATUS). */
export const ACK_OK = 0;
/** The request failed (details were posted as an `error` message). */
export const ACK_FAILED = 1;

/** Worker states (CB_STATE). */
export const WORKER_STARTING = 0;
export const WORKER_RUNNING = 1;
export const WORKER_PAUSED = 2;
export const WORKER_STOPPED = 3;
export const WORKER_BROKEN = 4;
export const WORKER_STATE_NAMES: readonly string[] = ['starting', 'running', 'paused', 'stopped', 'broken'];

/** Ring states (RING_STATE). */
export const RING_UNUSED = 0;
export const RING_RUNNING = 1;
export const RING_PAUSED = 2;
export const RING_STOPPED = 3;
export const RING_BROKEN = 4;
export const RING_STATE_NAMES: readonly string[] = ['unused', 'running', 'paused', 'stopped', 'broken'];

/** Broken reasons (RING_BROKEN_REASON). */
export const BROKEN_NONE = 0;
/** virtio reported a RingError (malformed ring from the guest). */
export const BROKEN_RING = 1;
/** The processing module threw. */
export const BROKEN_MODULE = 2;
/** The runtime failed (e.g. bad ring configuration). */
export const BROKEN_RUNTIME = 3;
export const BROKEN_REASON_NAMES: readonly string[] = ['none', 'ring', 'module', 'runtime'];

/** A ring-slot mask is one Int32 word. */
export const MAX_RINGS_PER_WORKER = 31;

// ---------------------------------------------------------------------------
// Layout helpers.

/** Int32 index of word `w` of ring slot `slot`. */
export function ringWord(slot: number, w: number): number {
  return CB_HEADER_WORDS + slot * RING_WORDS + w;
}

/** Float64 index of ring counter `c` of ring slot `slot`. */
export function ringCounter(slot: number, c: number): number {
  return WC_COUNT + slot * RC_COUNT + c;
}

/** Byte offset of the Float64 counter section (8-aligned). */
export function counterByteOffset(ringSlots: number): number {
  const bytes = (CB_HEADER_WORDS + ringSlots * RING_WORDS) * 4;
  return (bytes + 7) & ~7;
}

/** Total bytes of a control block for `ringSlots` rings. */
export function controlBlockBytes(ringSlots: number): number {
  return counterByteOffset(ringSlots) + (WC_COUNT + ringSlots * RC_COUNT) * 8;
}

/** The two views of a control block. Both threads build the same views over the same SAB. */
export interface ControlBlockViews {
  readonly sab: SharedArrayBuffer;
  readonly i32: Int32Array;
  readonly f64: Float64Array;
  readonly ringSlots: number;
}

/** Allocates and initialises a control block (main thread). */
export function createControlBlock(ringSlots: number): ControlBlockViews {
  if (!Number.isInteger(ringSlots) || ringSlots < 1 || ringSlots > MAX_RINGS_PER_WORKER) {
    throw new RangeError(`ring slots ${ringSlots} outside 1..${MAX_RINGS_PER_WORKER}`);
  }
  const sab = new SharedArrayBuffer(controlBlockBytes(ringSlots));
  const views = controlBlockViews(sab);
  Atomics.store(views.i32, CB_RING_SLOTS, ringSlots);
  for (let s = 0; s < ringSlots; s++) {
    Atomics.store(views.i32, ringWord(s, RING_VRING_INDEX), -1);
    Atomics.store(views.i32, ringWord(s, RING_KICK_FD), -1);
  }
  return views;
}

/** Builds the views over an existing control block (worker side). */
export function controlBlockViews(sab: SharedArrayBuffer): ControlBlockViews {
  const probe = new Int32Array(sab, 0, CB_HEADER_WORDS);
  let ringSlots = Atomics.load(probe, CB_RING_SLOTS);
  if (ringSlots === 0) {
    // Not yet initialised: infer from the size (createControlBlock stores it right after).
    for (let s = 1; s <= MAX_RINGS_PER_WORKER; s++) if (controlBlockBytes(s) === sab.byteLength) ringSlots = s;
  }
  if (controlBlockBytes(ringSlots) !== sab.byteLength) throw new RangeError('control block size does not match its ring slots');
  const i32 = new Int32Array(sab, 0, CB_HEADER_WORDS + ringSlots * RING_WORDS);
  const f64 = new Float64Array(sab, counterByteOffset(ringSlots), WC_COUNT + ringSlots * RC_COUNT);
  return { sab, i32, f64, ringSlots };
}

/** Counters of one ring, as read from the control block. */
export interface RingCounters {
  chains: number;
  descriptors: number;
  bytes: number;
  kicks: number;
  calls: number;
  suppressed: number;
  bursts: number;
  errors: number;
}

/** Worker-level counters. */
export interface WorkerCounters {
  wakeups: number;
  sleeps: number;
  timeouts: number;
  rounds: number;
  requests: number;
  yields: number;
}

/** Reads one ring slot's counters (plain reads; safe while the worker runs). */
export function readRingCounters(f64: Float64Array, slot: number): RingCounters {
  const b = ringCounter(slot, 0);
  return {
    chains: f64[b + RC_CHAINS]!,
    descriptors: f64[b + RC_DESCRIPTORS]!,
    bytes: f64[b + RC_BYTES]!,
    kicks: f64[b + RC_KICKS]!,
    calls: f64[b + RC_CALLS]!,
    suppressed: f64[b + RC_SUPPRESSED]!,
    bursts: f64[b + RC_BURSTS]!,
    errors: f64[b + RC_ERRORS]!,
  };
}

/** Reads the worker counters. */
export function readWorkerCounters(f64: Float64Array): WorkerCounters {
  return {
    wakeups: f64[WC_WAKEUPS]!,
    sleeps: f64[WC_SLEEPS]!,
    timeouts: f64[WC_TIMEOUTS]!,
    rounds: f64[WC_ROUNDS]!,
    requests: f64[WC_REQUESTS]!,
    yields: f64[WC_YIELDS]!,
  };
}

/** Published indices of a ring slot (valid once the worker acknowledged a stop/pause, or as of its last burst). */
export interface PublishedIndices {
  lastAvailIdx: number;
  availWrap: boolean;
  lastUsedIdx: number;
  usedWrap: boolean;
}

/** Reads the published indices of a ring slot (Atomics loads). */
export function readIndices(i32: Int32Array, slot: number): PublishedIndices {
  return {
    lastAvailIdx: Atomics.load(i32, ringWord(slot, RING_LAST_AVAIL)),
    availWrap: Atomics.load(i32, ringWord(slot, RING_AVAIL_WRAP)) !== 0,
    lastUsedIdx: Atomics.load(i32, ringWord(slot, RING_LAST_USED)),
    usedWrap: Atomics.load(i32, ringWord(slot, RING_USED_WRAP)) !== 0,
  };
}
