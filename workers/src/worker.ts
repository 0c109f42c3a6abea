/**
 * Queue worker entry point (started by the manager with `new Worker(url)`).
 *
 * One worker serves one queue group of one device. Its loop: poll the rings
 * while there is work (pop a burst, hand it to the module, publish the used
 * entries with one used-index store, at most one call per burst honouring
 * suppression), spin a bounded time, then re-enable guest notifications,
 * re-check, and sleep on the control block's doorbell. Control requests are
 * handled between bursts. The event loop is visited only when needed (pause,
 * updates, comlink service, or event-loop mode for modules with async work).
 */
import { parentPort, workerData } from 'node:worker_threads';
import { expose } from 'comlink';
import nodeEndpoint from 'comlink/dist/esm/node-adapter.mjs';
import { native } from '@vhost-ts/native';
import { Chain, isRingError, hasFeature, type DeviceRing, type DirtyLog, type GuestMemory } from '@vhost-ts/virtio';
import {
  ACK_FAILED,
  ACK_OK,
  BROKEN_MODULE,
  BROKEN_REASON_NAMES,
  BROKEN_RING,
  BROKEN_RUNTIME,
  CB_ACK_SEQ,
  CB_ACK_STATUS,
  CB_APPLIED_SEQ,
  CB_DOORBELL,
  CB_REQ_ARG,
  CB_REQ_CODE,
  CB_REQ_SEQ,
  CB_SERVICE,
  CB_SLEEPING,
  SLEEP_POLL,
  SLEEP_WAIT,
  CB_STATE,
  RC_BURSTS,
  RC_BYTES,
  RC_CALLS,
  RC_CHAINS,
  RC_COUNT,
  RC_DESCRIPTORS,
  RC_ERRORS,
  RC_SUPPRESSED,
  REQ_APPLY,
  REQ_EXIT,
  REQ_PAUSE,
  REQ_PAUSE_RINGS,
  REQ_RESUME,
  REQ_RESUME_RINGS,
  REQ_STOP_RINGS,
  RING_AVAIL_WRAP,
  RING_BROKEN,
  RING_BROKEN_REASON,
  RING_INFLIGHT,
  RING_KICK_FD,
  RING_KICK_PENDING,
  RING_LAST_AVAIL,
  RING_LAST_USED,
  RING_PAUSED,
  RING_RUNNING,
  RING_STATE,
  RING_STOPPED,
  RING_UNUSED,
  RING_USED_WRAP,
  RING_VRING_INDEX,
  WC_REQUESTS,
  WC_ROUNDS,
  WC_SLEEPS,
  WC_TIMEOUTS,
  WC_WAKEUPS,
  WC_YIELDS,
  WORKER_BROKEN,
  WORKER_PAUSED,
  WORKER_RUNNING,
  WORKER_STOPPED,
  controlBlockViews,
  ringCounter,
  ringWord,
} from './control-block.js';
import type { Burst, ModuleExport, PiscinaOptions, QueueContext, QueueModule, QueueRing } from './module-api.js';
import type { LogSpec, RegionSpec, RingConfig, RingKind, UpdateMessage, WorkerInit, WorkerMessage } from './protocol.js';
import { buildDeviceRing, buildLog, buildMemory, currentPosition, initialPosition, readPosition, type RingPosition } from './rings.js';
import type { WorkerRpc } from './rpc.js';

if (parentPort === null) throw new Error('@vhost-ts/workers/worker must run in a worker thread');
const port = parentPort;
const init = workerData as WorkerInit;
const { i32, f64, ringSlots } = controlBlockViews(init.control);
const tuning = init.tuning;
const burstSize = Math.max(1, tuning.burstSize | 0);
/**
 * The bounded spin is counted in empty rounds, not read from a clock: on
 * Node 20 `performance.now()` allocates (process.hrtime), and a clock read per
 * idle round would make the hot path produce garbage. Calibrated once at start
 * against the cost of an empty round (2 + 2 * rings atomic loads).
 */
const spinRounds = calibrateSpin(Math.max(0, tuning.spinUs));
/** In event-loop mode, the clock is read every this many rounds to decide a yield. */
const YIELD_CHECK_ROUNDS = 64;

function calibrateSpin(us: number): number {
  if (us <= 0) return 0;
  const probe = new Int32Array(new SharedArrayBuffer(64));
  const loads = 3 + 2 * ringSlots;
  let acc = 0;
  const run = (n: number): void => {
    for (let i = 0; i < n; i++) for (let k = 0; k < loads; k++) acc += Atomics.load(probe, k & 15);
  };
  run(20_000); // warm up (JIT)
  const n = 50_000;
  const t0 = performance.now();
  run(n);
  const nsPerRound = Math.max(5, ((performance.now() - t0) * 1e6) / n);
  if (acc < 0) throw new Error('unreachable'); // keeps the loads observable
  return Math.max(1, Math.round((us * 1000) / nsPerRound));
}

function post(m: WorkerMessage): void {
  port.postMessage(m);
}

// ---------------------------------------------------------------------------
// State.

let features = init.features;
let logSpec: LogSpec | null = init.log;
let regions: RegionSpec[] = init.regions;
let dirtyLog: DirtyLog | null = buildLog(logSpec, features);
let memory: GuestMemory = buildMemory(regions, dirtyLog);
let mod: QueueModule | null = null;
let processFn: ((b: Burst) => void) | null = null;
let pollFn: (() => number) | null = null;
/** True while the runtime is inside a module call (completions are flushed after it). */
let inModule = false;
let eventLoopMode = false;
let workerState = 0;
let handledSeq = Atomics.load(i32, CB_REQ_SEQ);
let serviceSeen = Atomics.load(i32, CB_SERVICE);
let appliedSeq = 0;
/** A REQ_APPLY waiting for its update message: [request seq, update seq]. */
let pendingApply: { reqSeq: number; upto: number } | null = null;
let drainDeadline = -1;
const pools: { destroy(): Promise<void> }[] = [];
let flushQueued = false;

function setWorkerState(s: number): void {
  workerState = s;
  Atomics.store(i32, CB_STATE, s);
  Atomics.notify(i32, CB_STATE);
}

// ---------------------------------------------------------------------------
// Rings.

class BurstImpl implements Burst {
  count = 0;
  constructor(
    readonly ring: QueueRing,
    readonly chains: readonly Chain[],
  ) {}
}

/** One vring slot of this worker: the module's QueueRing and the runtime's bookkeeping. */
class RingRuntime implements QueueRing {
  readonly slot: number;
  readonly index: number;
  kind: RingKind | null = null;
  size = 0;
  mode: 'burst' | 'manual' = 'burst';
  device: DeviceRing | null = null;
  config: RingConfig | null = null;
  state = RING_UNUSED;
  callFd = -1;
  errFd = -1;
  /** A kick fd forwards kicks; false = polling mode. */
  kicked = false;
  dirty = false;
  inflight = 0;
  readonly chains: Chain[];
  readonly burst: BurstImpl;
  private readonly scratch: Chain;
  /** Last position, kept when the device ring is dropped (stopped / broken). */
  position: RingPosition = { lastAvailIdx: 0, availWrap: false, lastUsedIdx: 0, usedWrap: false };
  /**
   * Cumulative counters in the control block's RC_* slots, copied there at publish(). A
   * Float64Array, not number fields: the byte counter passes 2^30 within seconds, and a field
   * that outgrows V8's small integers changes representation mid-run, deoptimising every
   * function that touched this object.
   */
  readonly cnt = new Float64Array(RC_COUNT);
  private readonly cBase: number;
  private droppedLate = 0;
  /** Completions that arrived while the worker was paused: [head, len, ...]. */
  private deferred: number[] | null = null;

  constructor(slot: number, index: number) {
    this.slot = slot;
    this.index = index;
    this.cBase = ringCounter(slot, 0);
    this.chains = [];
    for (let i = 0; i < burstSize; i++) this.chains.push(new Chain());
    this.burst = new BurstImpl(this, this.chains);
    this.scratch = new Chain();
  }

  get active(): boolean {
    return this.state === RING_RUNNING && workerState === WORKER_RUNNING;
  }

  pop(): Chain | null {
    return this.popInto(this.scratch) ? this.scratch : null;
  }

  popInto(chain: Chain): boolean {
    const dev = this.device;
    if (dev === null || this.state !== RING_RUNNING) return false;
    if (!dev.pop(chain)) return false;
    this.inflight++;
    this.cnt[RC_DESCRIPTORS]! += chain.count;
    this.cnt[RC_BYTES]! += chain.readableBytes;
    return true;
  }

  available(): number {
    const dev = this.device;
    if (dev === null || this.state !== RING_RUNNING) return 0;
    return availableOf(dev);
  }

  complete(chain: Chain, len: number): void {
    this.completeId(chain.head, len);
  }

  completeId(head: number, len: number): void {
    const dev = this.device;
    if (dev === null || (this.state !== RING_RUNNING && this.state !== RING_PAUSED)) {
      // The ring was stopped or broke while the chain was in flight: the entry is dropped.
      if (this.droppedLate++ === 0) logMsg('warn', `vring ${this.index}: completion after the ring stopped was dropped`);
      return;
    }
    if (workerState === WORKER_PAUSED) {
      // Paused (e.g. for a memory swap): guest memory is off limits until resume.
      (this.deferred ??= []).push(head, len);
      return;
    }
    dev.push(head, len);
    this.inflight--;
    this.cnt[RC_CHAINS]!++;
    this.cnt[RC_BYTES]! += len;
    if (!this.dirty) {
      this.dirty = true;
      if (!inModule) queueFlush();
    }
  }

  /** Pushes the completions deferred during a pause (on resume). */
  applyDeferred(): void {
    const d = this.deferred;
    if (d === null || d.length === 0) return;
    this.deferred = null;
    for (let i = 0; i < d.length; i += 2) this.completeId(d[i]!, d[i + 1]!);
  }

  /** Publishes used entries (one used-index store), notifies once if the guest wants it, publishes indices. */
  flush(): void {
    this.dirty = false;
    const dev = this.device;
    if (dev === null) return;
    if (dev.needsNotify()) {
      if (this.callFd >= 0) {
        native.eventfdWrite(this.callFd, 1);
        this.cnt[RC_CALLS]!++;
      }
    } else {
      this.cnt[RC_SUPPRESSED]!++;
    }
    this.publish();
  }

  /** Stores indices and counters into the control block. */
  publish(): void {
    const dev = this.device;
    const p = this.position;
    if (dev !== null) readPosition(dev, p);
    Atomics.store(i32, ringWord(this.slot, RING_LAST_AVAIL), p.lastAvailIdx);
    Atomics.store(i32, ringWord(this.slot, RING_AVAIL_WRAP), p.availWrap ? 1 : 0);
    Atomics.store(i32, ringWord(this.slot, RING_LAST_USED), p.lastUsedIdx ?? 0);
    Atomics.store(i32, ringWord(this.slot, RING_USED_WRAP), p.usedWrap ? 1 : 0);
    Atomics.store(i32, ringWord(this.slot, RING_INFLIGHT), this.inflight);
    const b = this.cBase;
    const c = this.cnt;
    f64[b + RC_CHAINS] = c[RC_CHAINS]!;
    f64[b + RC_DESCRIPTORS] = c[RC_DESCRIPTORS]!;
    f64[b + RC_BYTES] = c[RC_BYTES]!;
    f64[b + RC_CALLS] = c[RC_CALLS]!;
    f64[b + RC_SUPPRESSED] = c[RC_SUPPRESSED]!;
    f64[b + RC_BURSTS] = c[RC_BURSTS]!;
    f64[b + RC_ERRORS] = c[RC_ERRORS]!;
  }

  setState(s: number): void {
    this.state = s;
    Atomics.store(i32, ringWord(this.slot, RING_STATE), s);
  }
}

/** Chains available on a device ring (split rings expose available(); otherwise 1 when hasWork). */
function availableOf(dev: DeviceRing): number {
  const d = dev as DeviceRing & { available?: () => number };
  return typeof d.available === 'function' ? d.available() : dev.hasWork() ? 1 : 0;
}

const firstIndex = init.workerIndex * init.queuesPerWorker;
const rings: RingRuntime[] = [];
for (let s = 0; s < ringSlots; s++) {
  rings.push(new RingRuntime(s, firstIndex + s));
  Atomics.store(i32, ringWord(s, RING_VRING_INDEX), firstIndex + s);
}

function queueFlush(): void {
  if (flushQueued) return;
  flushQueued = true;
  queueMicrotask(() => {
    flushQueued = false;
    flushDirty();
  });
}

function flushDirty(): void {
  for (let s = 0; s < ringSlots; s++) {
    const r = rings[s]!;
    if (!r.dirty) continue;
    try {
      r.flush();
    } catch (e) {
      failure(r, e, BROKEN_RUNTIME);
    }
  }
}

function startRing(cfg: RingConfig): void {
  const r = rings[cfg.slot];
  if (r === undefined || r.index !== cfg.index) throw new RangeError(`vring ${cfg.index} does not belong in slot ${cfg.slot} of worker ${init.workerIndex}`);
  if (r.state === RING_RUNNING || r.state === RING_PAUSED) throw new Error(`vring ${cfg.index} is already started`);
  r.config = cfg;
  r.kind = cfg.kind ?? 'split';
  r.size = cfg.size;
  r.callFd = cfg.callFd ?? -1;
  r.errFd = cfg.errFd ?? -1;
  r.kicked = cfg.kicked;
  r.inflight = 0;
  r.dirty = false;
  Atomics.store(i32, ringWord(r.slot, RING_BROKEN_REASON), 0);
  r.position = { ...initialPosition(cfg), lastUsedIdx: cfg.lastUsedIdx ?? cfg.lastAvailIdx };
  if (workerState === WORKER_BROKEN) {
    // The module threw earlier: its state is unknown, so it serves no ring until the device restarts.
    r.setState(RING_STOPPED);
    breakRing(r, BROKEN_MODULE, new Error('the queue group is broken (its module threw); stop and restart the device'));
    return;
  }
  r.setState(cfg.disabled === true ? RING_PAUSED : RING_RUNNING);
  try {
    r.device = buildDeviceRing(memory, features, cfg, initialPosition(cfg));
  } catch (e) {
    r.device = null;
    failure(r, e, BROKEN_RING);
    return;
  }
  r.publish();
  if (mod?.ringStarted !== undefined) callModule(r, () => mod!.ringStarted!(r));
}

/** Rebuilds every live ring over the current memory/features, keeping positions. */
function rebuildRings(): void {
  for (const r of rings) {
    if (r.device === null || r.config === null) continue;
    if (r.state !== RING_RUNNING && r.state !== RING_PAUSED) continue;
    try {
      r.device.flush();
      const pos = currentPosition(r.device);
      r.device = buildDeviceRing(memory, features, r.config, pos);
    } catch (e) {
      failure(r, e, BROKEN_RING);
    }
  }
}

function stopRing(r: RingRuntime): void {
  if (r.state === RING_UNUSED) return;
  if (r.dirty) {
    try {
      r.flush();
    } catch (e) {
      failure(r, e, BROKEN_RUNTIME);
    }
  }
  r.publish();
  const wasLive = r.state === RING_RUNNING || r.state === RING_PAUSED;
  if (r.state !== RING_BROKEN) r.setState(RING_STOPPED);
  r.device = null;
  r.publish();
  if (wasLive && mod?.ringStopped !== undefined) callModule(r, () => mod!.ringStopped!(r));
}

// ---------------------------------------------------------------------------
// Failures: a ring error breaks its ring, a module exception breaks the group.

function failure(r: RingRuntime | null, e: unknown, fallbackReason: number): void {
  const err = e instanceof Error ? e : new Error(String(e));
  if (isRingError(err)) {
    // The guest broke a ring: the ring(s) whose device reports broken, else `r`.
    let any = false;
    for (const x of rings) {
      if (x.device !== null && x.device.broken && x.state !== RING_BROKEN) {
        breakRing(x, BROKEN_RING, err);
        any = true;
      }
    }
    if (!any && r !== null) breakRing(r, BROKEN_RING, err);
    return;
  }
  if (fallbackReason === BROKEN_MODULE) {
    // Module state is unknown after an exception: stop touching every ring of the group.
    // The worker state goes first, so whoever sees a ring's error sees the worker broken too.
    if (workerState !== WORKER_STOPPED) setWorkerState(WORKER_BROKEN);
    for (const x of rings) if (x.state === RING_RUNNING || x.state === RING_PAUSED) breakRing(x, BROKEN_MODULE, err, x === r);
    if (r !== null && r.state !== RING_BROKEN) breakRing(r, BROKEN_MODULE, err);
    return;
  }
  if (r !== null) breakRing(r, fallbackReason, err);
  else post({ type: 'error', slot: -1, vringIndex: -1, reason: 'runtime', code: err.name, message: err.message });
}

function breakRing(r: RingRuntime, reason: number, err: Error, report = true): void {
  if (r.state === RING_BROKEN) return;
  r.dirty = false;
  if (r.device !== null) readPosition(r.device, r.position);
  r.device = null;
  r.cnt[RC_ERRORS]!++;
  Atomics.store(i32, ringWord(r.slot, RING_BROKEN_REASON), reason);
  r.setState(RING_BROKEN);
  r.publish();
  if (r.errFd >= 0) {
    try {
      native.eventfdWrite(r.errFd, 1);
    } catch {
      /* the front-end closed it: nothing else to tell */
    }
  }
  if (!report) return;
  const code = isRingError(err) ? (err as Error & { code: string }).code : err.name;
  post({
    type: 'error',
    slot: r.slot,
    vringIndex: r.index,
    reason: reason === BROKEN_RING ? 'ring' : reason === BROKEN_MODULE ? 'module' : 'runtime',
    code,
    message: `vring ${r.index}: ${BROKEN_REASON_NAMES[reason]} error: ${err.message}`,
  });
}

/** Runs a module hook; an exception breaks the group. */
function callModule(r: RingRuntime | null, fn: () => void): void {
  inModule = true;
  try {
    fn();
  } catch (e) {
    inModule = false;
    failure(r, e, BROKEN_MODULE);
    return;
  }
  inModule = false;
}

// ---------------------------------------------------------------------------
// The data path.

/** One pass over the rings; returns the chains handled. */
function round(): number {
  let work = 0;
  const pfn = processFn;
  if (pfn !== null) {
    for (let s = 0; s < ringSlots; s++) {
      const r = rings[s]!;
      if (r.state !== RING_RUNNING || r.mode !== 'burst') continue;
      const dev = r.device!;
      const chains = r.chains;
      let n = 0;
      inModule = true;
      try {
        n = dev.popBurst(chains, burstSize);
        if (n === 0) {
          inModule = false;
          continue;
        }
        r.inflight += n;
        let descs = 0;
        let bytes = 0;
        for (let i = 0; i < n; i++) {
          const c = chains[i]!;
          descs += c.count;
          bytes += c.readableBytes;
        }
        r.cnt[RC_DESCRIPTORS]! += descs;
        r.cnt[RC_BYTES]! += bytes;
        r.cnt[RC_BURSTS]!++;
        r.burst.count = n;
        pfn(r.burst);
      } catch (e) {
        inModule = false;
        failure(r, e, isRingError(e) ? BROKEN_RING : BROKEN_MODULE);
        continue;
      }
      inModule = false;
      work += n;
      if (r.dirty) flushDirty();
      else r.publish();
    }
  }
  const poll = pollFn;
  if (poll !== null && workerState === WORKER_RUNNING) {
    inModule = true;
    try {
      work += poll();
    } catch (e) {
      inModule = false;
      failure(null, e, isRingError(e) ? BROKEN_RING : BROKEN_MODULE);
      return work;
    }
    inModule = false;
    flushDirty();
  }
  return work;
}

/** Re-enables guest notifications; true when a burst ring has work (the re-check after the store). */
function enableNotifications(): boolean {
  let more = false;
  for (let s = 0; s < ringSlots; s++) {
    const r = rings[s]!;
    if (r.state !== RING_RUNNING) continue;
    try {
      if (r.device!.enableNotifications() && r.mode === 'burst') more = true;
    } catch (e) {
      failure(r, e, BROKEN_RING);
    }
  }
  if (!more && pollFn !== null && workerState === WORKER_RUNNING) {
    // Poll mode: the module's own re-check.
    more = round() > 0;
  }
  return more;
}

function disableNotifications(): void {
  for (let s = 0; s < ringSlots; s++) {
    const r = rings[s]!;
    if (r.state === RING_RUNNING) r.device!.disableNotifications();
    if (Atomics.load(i32, ringWord(s, RING_KICK_PENDING)) !== 0) Atomics.store(i32, ringWord(s, RING_KICK_PENDING), 0);
  }
}

/** Sleep timeout: finite when a running ring has no kick fd (polling mode). */
function sleepTimeout(): number {
  for (let s = 0; s < ringSlots; s++) {
    const r = rings[s]!;
    if (r.state === RING_RUNNING && !r.kicked) return tuning.pollIntervalMs;
  }
  return Infinity;
}

/** Sleeps in Atomics.wait until the doorbell moves from `db`; true when it timed out. */
function sleepOnDoorbell(db: number, timeoutMs: number): boolean {
  Atomics.store(i32, CB_SLEEPING, SLEEP_WAIT);
  const res = Atomics.wait(i32, CB_DOORBELL, db, timeoutMs);
  Atomics.store(i32, CB_SLEEPING, 0);
  return res === 'timed-out';
}

/**
 * poll(2) set of a kickWait sleep: the wake eventfd and the running rings' kick fds, then room
 * for their revents (see native.pollReadable). Built once.
 */
const pollSet = init.wakeFd >= 0 ? new Int32Array(new ArrayBuffer(8 * (1 + ringSlots))) : null;
/** Longest blocking poll(), ms: worker.terminate() interrupts Atomics.wait but not a syscall. */
const POLL_SLICE_MS = 250;

/**
 * Sleeps until a kick fd of a running ring or the wake eventfd is readable (or the sleep
 * timeout): a guest's kick wakes this thread directly, not through the main thread's poller and
 * the doorbell. The kick fds are only polled, never read: the main thread's poller drains them
 * and then rings the doorbell, so a kick fd that is still readable when this sleep starts is a
 * kick the main thread has not drained yet, and poll() would return at once; then this sleep
 * waits for that doorbell instead. The main thread closes a kick fd only after this worker
 * acknowledged its ring's stop, so the numbers read here stay valid while they are polled.
 * True when the sleep timed out.
 */
function sleepInPoll(db: number): boolean {
  const set = pollSet!;
  let n = 0;
  set[n++] = init.wakeFd;
  for (let s = 0; s < ringSlots; s++) {
    if (rings[s]!.state !== RING_RUNNING) continue;
    const fd = Atomics.load(i32, ringWord(s, RING_KICK_FD));
    if (fd >= 0) set[n++] = fd;
  }
  const timeout = sleepTimeout();
  // Announce the poll sleep, then look at the doorbell once more: the main thread rings the
  // doorbell and then reads CB_SLEEPING, so either it writes the wake eventfd or we see its ring.
  Atomics.store(i32, CB_SLEEPING, SLEEP_POLL);
  let ready = 0;
  let timedOut = false;
  if (Atomics.load(i32, CB_DOORBELL) === db) {
    ready = native.pollReadable(set, n, 0);
    if (ready === 0) {
      const bounded = timeout < POLL_SLICE_MS; // polling-mode rings: the poll interval
      ready = native.pollReadable(set, n, bounded ? Math.ceil(timeout) : POLL_SLICE_MS);
      timedOut = ready === 0 && bounded;
    } else if (set[n] === 0) {
      // Only kick fds: not drained by the main thread yet. Its doorbell follows the drain.
      return sleepOnDoorbell(db, timeout);
    }
  }
  Atomics.store(i32, CB_SLEEPING, 0);
  if (ready > 0 && set[n] !== 0) native.eventfdRead(init.wakeFd);
  return timedOut;
}

// What the synchronous loop asks its caller to do next.
const NEXT_CONTINUE = 0;
const NEXT_YIELD = 1;
const NEXT_PAUSED = 2;
const NEXT_APPLY_WAIT = 3;
const NEXT_SLEEP_ASYNC = 4;
const NEXT_EXIT = 5;
const NEXT_DRAIN = 6;

let asyncSleepDoorbell = 0;

/** The worker loop: runs synchronously until it needs the event loop. */
function runLoop(): number {
  let idleRounds = 0;
  let sinceYieldCheck = 0;
  let lastYield = eventLoopMode ? performance.now() : 0;
  for (;;) {
    if (Atomics.load(i32, CB_REQ_SEQ) !== handledSeq) {
      const next = handleRequest();
      if (next !== NEXT_CONTINUE) return next;
    }
    if (Atomics.load(i32, CB_SERVICE) !== serviceSeen) {
      serviceSeen = Atomics.load(i32, CB_SERVICE);
      return NEXT_YIELD;
    }
    f64[WC_ROUNDS]!++;
    const work = round();
    if (eventLoopMode && ++sinceYieldCheck >= YIELD_CHECK_ROUNDS) {
      sinceYieldCheck = 0;
      const t = performance.now();
      if (t - lastYield >= tuning.yieldIntervalMs) return NEXT_YIELD;
    }
    if (work > 0) {
      idleRounds = 0;
      continue;
    }
    if (++idleRounds <= spinRounds) continue;
    // Sleep: read the doorbell first, then re-enable notifications and re-check,
    // so a kick after the re-check changes the doorbell and the wait returns at once.
    const db = Atomics.load(i32, CB_DOORBELL);
    // Requests and service pokes ring the doorbell after their own word: one that
    // landed between the checks at the top of the loop and the read above would
    // not wake the wait below, so look again.
    if (Atomics.load(i32, CB_REQ_SEQ) !== handledSeq || Atomics.load(i32, CB_SERVICE) !== serviceSeen) continue;
    if (enableNotifications()) {
      disableNotifications();
      idleRounds = 0;
      continue;
    }
    f64[WC_SLEEPS]!++;
    if (eventLoopMode) {
      asyncSleepDoorbell = db;
      return NEXT_SLEEP_ASYNC;
    }
    const timedOut = pollSet !== null ? sleepInPoll(db) : sleepOnDoorbell(db, sleepTimeout());
    f64[WC_WAKEUPS]!++;
    if (timedOut) f64[WC_TIMEOUTS]!++;
    disableNotifications();
    idleRounds = 0;
  }
}

// ---------------------------------------------------------------------------
// Control requests.

function ack(seq: number, status: number): void {
  Atomics.store(i32, CB_ACK_STATUS, status);
  Atomics.store(i32, CB_ACK_SEQ, seq);
  Atomics.notify(i32, CB_ACK_SEQ);
}

function maskRings(mask: number): RingRuntime[] {
  const out: RingRuntime[] = [];
  for (let s = 0; s < ringSlots; s++) if ((mask & (1 << s)) !== 0) out.push(rings[s]!);
  return out;
}

/** In event-loop mode, wait (bounded) for in-flight chains of these rings before stopping them. */
function mustDrain(rs: readonly RingRuntime[]): boolean {
  if (!eventLoopMode) return false;
  let inflight = 0;
  for (const r of rs) if (r.state === RING_RUNNING || r.state === RING_PAUSED) inflight += r.inflight;
  if (inflight === 0) {
    drainDeadline = -1;
    return false;
  }
  const now = performance.now();
  if (drainDeadline < 0) drainDeadline = now + tuning.drainTimeoutMs;
  if (now < drainDeadline) return true;
  logMsg('warn', `drain timed out with ${inflight} chains in flight`);
  drainDeadline = -1;
  return false;
}

/** Handles the pending request (between bursts). */
function handleRequest(): number {
  const seq = Atomics.load(i32, CB_REQ_SEQ);
  const code = Atomics.load(i32, CB_REQ_CODE);
  const arg = Atomics.load(i32, CB_REQ_ARG);
  flushDirty();
  switch (code) {
    case REQ_PAUSE: {
      if (mustDrain(rings)) return NEXT_DRAIN;
      for (const r of rings) r.publish();
      if (workerState === WORKER_RUNNING) setWorkerState(WORKER_PAUSED);
      done(seq, ACK_OK);
      return workerState === WORKER_PAUSED ? NEXT_PAUSED : NEXT_CONTINUE;
    }
    case REQ_RESUME: {
      if (workerState === WORKER_PAUSED) {
        setWorkerState(WORKER_RUNNING);
        inModule = true;
        for (const r of rings) r.applyDeferred();
        inModule = false;
        flushDirty();
      }
      done(seq, ACK_OK);
      return workerState === WORKER_PAUSED ? NEXT_PAUSED : NEXT_CONTINUE;
    }
    case REQ_APPLY: {
      if (appliedSeq >= arg) {
        done(seq, ACK_OK);
        return workerState === WORKER_PAUSED ? NEXT_PAUSED : NEXT_CONTINUE;
      }
      // The update message is on its way through the port: wait for it in the event loop.
      handledSeq = seq;
      pendingApply = { reqSeq: seq, upto: arg };
      return NEXT_APPLY_WAIT;
    }
    case REQ_STOP_RINGS: {
      const rs = maskRings(arg);
      if (mustDrain(rs)) return NEXT_DRAIN;
      for (const r of rs) stopRing(r);
      done(seq, ACK_OK);
      return workerState === WORKER_PAUSED ? NEXT_PAUSED : NEXT_CONTINUE;
    }
    case REQ_PAUSE_RINGS: {
      const rs = maskRings(arg);
      if (mustDrain(rs)) return NEXT_DRAIN;
      for (const r of rs) {
        if (r.state === RING_RUNNING) r.setState(RING_PAUSED);
        r.publish();
      }
      done(seq, ACK_OK);
      return workerState === WORKER_PAUSED ? NEXT_PAUSED : NEXT_CONTINUE;
    }
    case REQ_RESUME_RINGS: {
      for (const r of maskRings(arg)) if (r.state === RING_PAUSED) r.setState(RING_RUNNING);
      done(seq, ACK_OK);
      return workerState === WORKER_PAUSED ? NEXT_PAUSED : NEXT_CONTINUE;
    }
    case REQ_EXIT: {
      if (mustDrain(rings)) return NEXT_DRAIN;
      for (const r of rings) stopRing(r);
      setWorkerState(WORKER_STOPPED);
      done(seq, ACK_OK);
      return NEXT_EXIT;
    }
    default:
      logMsg('error', `unknown request ${code}`);
      done(seq, ACK_FAILED);
      return workerState === WORKER_PAUSED ? NEXT_PAUSED : NEXT_CONTINUE;
  }
}

function done(seq: number, status: number): void {
  handledSeq = seq;
  f64[WC_REQUESTS]!++;
  ack(seq, status);
}

// ---------------------------------------------------------------------------
// Scheduling between the synchronous loop and the event loop. Exactly one
// continuation is pending at any time: a setImmediate tick, a paused wait, an
// async sleep, a drain timer, or an update message (pendingApply).

let tickScheduled = false;
let exiting = false;

function schedule(): void {
  if (tickScheduled || exiting) return;
  tickScheduled = true;
  f64[WC_YIELDS]!++;
  setImmediate(tick);
}

function tick(): void {
  tickScheduled = false;
  if (exiting || pendingApply !== null) return;
  if (workerState === WORKER_PAUSED) {
    dispatch(Atomics.load(i32, CB_REQ_SEQ) !== handledSeq ? handleRequest() : NEXT_PAUSED);
    return;
  }
  dispatch(runLoop());
}

function dispatch(next: number): void {
  switch (next) {
    case NEXT_CONTINUE:
    case NEXT_YIELD:
      schedule();
      return;
    case NEXT_PAUSED:
      waitPaused();
      return;
    case NEXT_APPLY_WAIT:
      return;
    case NEXT_SLEEP_ASYNC:
      sleepAsync(asyncSleepDoorbell);
      return;
    case NEXT_DRAIN:
      setTimeout(() => dispatch(handleRequest()), 1);
      return;
    case NEXT_EXIT:
      void exit(0);
      return;
  }
}

/** Paused: the event loop runs (messages, comlink); a request rings the doorbell. */
function waitPaused(): void {
  if (exiting) return;
  if (Atomics.load(i32, CB_REQ_SEQ) !== handledSeq) {
    dispatch(handleRequest());
    return;
  }
  const db = Atomics.load(i32, CB_DOORBELL);
  if (Atomics.load(i32, CB_REQ_SEQ) !== handledSeq) {
    dispatch(handleRequest());
    return;
  }
  const w = Atomics.waitAsync(i32, CB_DOORBELL, db);
  if (w.async) void w.value.then(waitPaused);
  else setImmediate(waitPaused);
}

/** Event-loop mode sleep: the loop stays free for promises and messages. */
function sleepAsync(db: number): void {
  const w = Atomics.waitAsync(i32, CB_DOORBELL, db, sleepTimeout());
  const wake = (res: string): void => {
    f64[WC_WAKEUPS]!++;
    if (res === 'timed-out') f64[WC_TIMEOUTS]!++;
    disableNotifications();
    schedule();
  };
  if (w.async) void w.value.then(wake);
  else wake(w.value);
}

// ---------------------------------------------------------------------------
// Updates (SharedArrayBuffers and configuration through the port).

function applyUpdate(m: UpdateMessage): void {
  flushDirty();
  let ok = true;
  try {
    let memoryChanged = false;
    let featuresChanged = false;
    if (m.features !== undefined && m.features !== features) {
      features = m.features;
      featuresChanged = true;
    }
    if (m.log !== undefined) logSpec = m.log;
    if (m.regions !== undefined) {
      regions = m.regions;
      memoryChanged = true;
    }
    if (memoryChanged || featuresChanged || m.log !== undefined) {
      dirtyLog = buildLog(logSpec, features);
      if (memoryChanged) memory = buildMemory(regions, dirtyLog);
      else memory.setDirtyLog(dirtyLog);
      if (memoryChanged || featuresChanged) rebuildRings();
      if (memoryChanged && mod?.memoryChanged !== undefined) callModule(null, () => mod!.memoryChanged!(memory));
      if (featuresChanged && mod?.featuresChanged !== undefined) callModule(null, () => mod!.featuresChanged!(features));
    }
    for (const c of m.callFds ?? []) {
      const r = rings[c.slot];
      if (r !== undefined) r.callFd = c.fd ?? -1;
    }
    for (const c of m.errFds ?? []) {
      const r = rings[c.slot];
      if (r !== undefined) r.errFd = c.fd ?? -1;
    }
    for (const cfg of m.rings ?? []) startRing(cfg);
  } catch (e) {
    ok = false;
    failure(null, e, BROKEN_RUNTIME);
  }
  appliedSeq = m.seq;
  Atomics.store(i32, CB_APPLIED_SEQ, m.seq);
  const p = pendingApply;
  if (p !== null && appliedSeq >= p.upto) {
    pendingApply = null;
    f64[WC_REQUESTS]!++;
    ack(p.reqSeq, ok ? ACK_OK : ACK_FAILED);
    if (workerState === WORKER_PAUSED) waitPaused();
    else schedule();
  }
}

port.on('message', (m: UpdateMessage) => {
  if (m !== null && typeof m === 'object' && m.type === 'update') applyUpdate(m);
});

// ---------------------------------------------------------------------------
// Module context, comlink, start-up and exit.

function logMsg(level: 'debug' | 'info' | 'warn' | 'error', message: string): void {
  post({ type: 'log', level, message });
}

const ctx: QueueContext = {
  deviceId: init.deviceId,
  workerIndex: init.workerIndex,
  rings,
  ring(vringIndex: number): QueueRing | undefined {
    const s = vringIndex - firstIndex;
    return s >= 0 && s < ringSlots ? rings[s] : undefined;
  },
  get memory(): GuestMemory {
    return memory;
  },
  get features(): bigint {
    return features;
  },
  hasFeature(bit: number): boolean {
    return hasFeature(features, bit);
  },
  options: Object.freeze({ ...init.moduleOptions }),
  log: {
    debug: (m: string) => logMsg('debug', m),
    info: (m: string) => logMsg('info', m),
    warn: (m: string) => logMsg('warn', m),
    error: (m: string) => logMsg('error', m),
  },
  get logging(): boolean {
    return memory.log !== null;
  },
  logWrite(gpa: number, len: number): void {
    memory.logWrite(gpa, len);
  },
  newChain(capacity?: number): Chain {
    return new Chain(capacity);
  },
  async createPool(options: PiscinaOptions) {
    const { Piscina } = await import('piscina');
    const pool = new Piscina(options);
    pools.push(pool);
    eventLoopMode = true;
    return pool;
  },
  setEventLoop(on: boolean): void {
    eventLoopMode = on || pools.length > 0;
  },
  wake(): void {
    Atomics.add(i32, CB_DOORBELL, 1);
    Atomics.notify(i32, CB_DOORBELL);
  },
};

const rpc: WorkerRpc = {
  moduleStats: () => mod?.stats?.() ?? {},
  async configure(options: Record<string, string>): Promise<void> {
    if (mod?.configure === undefined) throw new Error('the module has no configure()');
    await mod.configure(options);
  },
  async call(name: string, ...args: unknown[]): Promise<unknown> {
    const fn = mod?.rpc?.[name] as ((...a: unknown[]) => unknown) | undefined;
    if (fn === undefined) throw new Error(`the module has no rpc method ${name}`);
    return await fn(...args);
  },
  affinity: () => native.getAffinity(),
  tid: () => native.gettid(),
};
expose(rpc, nodeEndpoint(init.rpcPort));

let exitStarted = false;
async function exit(code: number): Promise<void> {
  if (exitStarted) return;
  exitStarted = true;
  exiting = true;
  const closing = (async () => {
    try {
      await mod?.close?.();
    } catch (e) {
      logMsg('error', `module close() threw: ${(e as Error).message}`);
    }
    for (const p of pools) await p.destroy().catch(() => undefined);
  })();
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([closing, new Promise((r) => (timer = setTimeout(r, tuning.drainTimeoutMs)))]);
  clearTimeout(timer);
  process.exit(code);
}

async function start(): Promise<void> {
  if (init.cpus !== null && init.cpus.length > 0) native.setAffinity(init.cpus);
  const loaded = (await import(init.moduleUrl)) as { default?: ModuleExport };
  const exp = loaded.default;
  if (exp === undefined || exp === null) throw new Error(`module ${init.moduleUrl} has no default export`);
  const m = typeof exp === 'function' ? await exp(ctx) : exp;
  if (m === null || typeof m !== 'object') throw new Error(`module ${init.moduleUrl}: the default export did not give a module object`);
  if (typeof m.process !== 'function' && typeof m.poll !== 'function') {
    throw new Error(`module ${init.moduleUrl} implements neither process() nor poll()`);
  }
  mod = m;
  processFn = typeof m.process === 'function' ? m.process.bind(m) : null;
  pollFn = typeof m.poll === 'function' ? m.poll.bind(m) : null;
  for (const cfg of init.rings) startRing(cfg);
  if (workerState !== WORKER_BROKEN) setWorkerState(WORKER_RUNNING);
  post({ type: 'ready' });
  schedule();
}

start().catch((e: unknown) => {
  const err = e instanceof Error ? e : new Error(String(e));
  setWorkerState(WORKER_BROKEN);
  post({ type: 'fatal', message: err.message, ...(err.stack !== undefined ? { stack: err.stack } : {}) });
  // Stay alive to answer EXIT (the manager stops the device).
  waitPaused();
});
