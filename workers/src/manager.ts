/**
 * QueueWorkerManager: the main-thread side of the data plane. It starts one
 * worker thread per queue or per group of queues, forwards kicks from the kick
 * eventfds to the workers' doorbells, and drives the control handshakes
 * (pause / memory swap / resume, ring stop with indices returned, exit)
 * through each worker's control block. The main thread never blocks: every
 * acknowledgement is awaited with `Atomics.waitAsync` and a timeout.
 */
import { MessageChannel, Worker } from 'node:worker_threads';
import { availableParallelism } from 'node:os';
import { pathToFileURL } from 'node:url';
import { wrap, releaseProxy, type Endpoint, type Remote } from 'comlink';
import nodeEndpoint from 'comlink/dist/esm/node-adapter.mjs';
import {
  ACK_OK,
  BROKEN_REASON_NAMES,
  CB_ACK_SEQ,
  CB_ACK_STATUS,
  CB_APPLIED_SEQ,
  CB_DOORBELL,
  CB_SLEEPING,
  SLEEP_POLL,
  CB_REQ_ARG,
  CB_REQ_CODE,
  CB_REQ_SEQ,
  CB_SERVICE,
  CB_STATE,
  MAX_RINGS_PER_WORKER,
  RC_KICKS,
  REQ_APPLY,
  REQ_EXIT,
  REQ_NAMES,
  REQ_PAUSE,
  REQ_PAUSE_RINGS,
  REQ_RESUME,
  REQ_RESUME_RINGS,
  REQ_STOP_RINGS,
  RING_BROKEN_REASON,
  RING_INFLIGHT,
  RING_KICK_FD,
  RING_KICK_PENDING,
  RING_STATE,
  RING_STATE_NAMES,
  RING_VRING_INDEX,
  WORKER_STATE_NAMES,
  WORKER_STOPPED,
  createControlBlock,
  readIndices,
  readRingCounters,
  readWorkerCounters,
  ringCounter,
  ringWord,
  type ControlBlockViews,
  type PublishedIndices,
  type RingCounters,
  type WorkerCounters,
} from './control-block.js';
import { native, POLL_READABLE, type Poller } from '@vhost-ts/native';
import type {
  LogSpec,
  RegionSpec,
  RingConfig,
  RingSpec,
  UpdateMessage,
  WorkerInit,
  WorkerMessage,
  WorkerTuning,
} from './protocol.js';
import type { WorkerRpc } from './rpc.js';

export type { LogSpec, RegionSpec, RingSpec, RingKind, WorkerTuning } from './protocol.js';
export type { WorkerRpc } from './rpc.js';

/** What to start for one device. */
export interface DeviceSpec {
  /** Name used in errors and logs (default `dev<N>`). */
  id?: string;
  /** Processing module: a file path or a `file:` URL of compiled JavaScript with a default export. */
  module: string | URL;
  /** String options handed to the module (`ctx.options`). */
  moduleOptions?: Record<string, string>;
  /** Negotiated features (VIRTIO_F_EVENT_IDX, VIRTIO_F_RING_PACKED, VHOST_F_LOG_ALL, ...). */
  features: bigint;
  /** Guest memory regions. */
  regions: RegionSpec[];
  /** Dirty log (only when logging is on). */
  log?: LogSpec | null;
  /** Total vrings of the device (default: highest index in `rings` + 1). Decides the worker count. */
  numRings?: number;
  /** Rings to start now (others can be started later with startRings). */
  rings?: RingSpec[];
  /** Rings per worker (like rust-vmm's queues_per_thread; net uses 2 for a queue pair). Default 1. */
  queuesPerWorker?: number;
  /** CPUs to pin workers to, worker w on cpus[w % cpus.length]. Default: not pinned. */
  cpus?: number[];
  /** Busy-poll time after the last work, µs. Default: 20 when pinned or on more than 2 CPUs, else 0. */
  spinUs?: number;
  /** Burst size (chains per module call). Default 64. */
  burstSize?: number;
  /**
   * Sleeping workers also wait on their rings' kick fds themselves (poll(2) in the worker), so a
   * guest kick wakes the worker directly instead of through the main thread's poller and the
   * doorbell: one thread wake-up instead of two (bench/dist/dataplane.js). The main thread still
   * watches and drains the kick fds. Default true; false: Atomics.wait on the doorbell only.
   */
  kickWait?: boolean;
  /** Sleep timeout for polling-mode rings (no kick fd), ms. Default 1. */
  pollIntervalMs?: number;
  /** Event-loop mode: visit the event loop at least this often while busy, ms. Default 5. */
  yieldIntervalMs?: number;
  /** How long a pause/stop waits for a module's in-flight chains, ms. Default 1000. */
  drainTimeoutMs?: number;
  /** Timeout of every acknowledgement of a running worker (pause, stop, ...), ms. Default 5000. */
  ackTimeoutMs?: number;
  /**
   * How long a new worker may take to load its module and report ready, ms
   * (default: the larger of 10 s and twice `ackTimeoutMs`). Start-up compiles
   * and imports code, which on a busy machine takes far longer than a
   * control handshake with a running worker.
   */
  startTimeoutMs?: number;
  /** Receives the workers' log lines. Default: console.error for warn/error, nothing else. */
  logger?: (level: 'debug' | 'info' | 'warn' | 'error', message: string) => void;
}

/** A data-plane failure reported to {@link DeviceWorkers.onError}. */
export interface DataPlaneError {
  deviceId: string;
  workerIndex: number;
  /** vring index, or null for a whole worker. */
  ringIndex: number | null;
  /** ring: the guest broke the ring (RingError); module: the module threw; runtime/exit/timeout: the runtime. */
  reason: 'ring' | 'module' | 'runtime' | 'exit' | 'timeout';
  /** RingError code, exception name, or exit code. */
  code: string;
  message: string;
}

/** Indices of a ring as published by its worker. */
export interface RingIndices extends PublishedIndices {
  index: number;
}

/** Stats of one ring. */
export interface RingStats extends RingCounters {
  index: number;
  state: string;
  brokenReason: string;
  inflight: number;
  kickPending: boolean;
  indices: PublishedIndices;
}

/** Stats of one worker (read from the control block without stopping it). */
export interface WorkerStats extends WorkerCounters {
  workerIndex: number;
  state: string;
  cpu: number | null;
  rings: RingStats[];
}

/** Stats of one device. */
export interface DeviceStats {
  deviceId: string;
  workers: WorkerStats[];
}

/** Thrown when a worker does not acknowledge a request in time, or died. */
export class DataPlaneTimeoutError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'DataPlaneTimeoutError';
  }
}

const WORKER_URL = new URL('./worker.js', import.meta.url);

let deviceCounter = 0;

/** Main-thread record of one vring. */
interface RingSlotMain {
  index: number;
  slot: number;
  kickFd: number | null;
  poller: Poller | null;
  /** Started and not stopped (the worker has a ring object for it). */
  started: boolean;
}

/** One worker thread and its control block. */
class WorkerHandle {
  readonly worker: Worker;
  readonly cb: ControlBlockViews;
  readonly slots: (RingSlotMain | null)[];
  readonly cpu: number | null;
  readonly exited: Promise<number>;
  exitCode: number | null = null;
  private queue: Promise<unknown> = Promise.resolve();
  private updateSeq = 0;
  private readonly rpcPort: import('node:worker_threads').MessagePort;
  rpc: Remote<WorkerRpc> | null = null;
  /** The worker's wake eventfd (tuning.kickWait), -1 without; closed once the thread has exited. */
  readonly wakeFd: number;

  constructor(
    readonly device: DeviceWorkers,
    readonly workerIndex: number,
    ringSlots: number,
    init: Omit<WorkerInit, 'control' | 'rpcPort' | 'workerIndex' | 'rings' | 'cpus' | 'wakeFd'>,
    cpu: number | null,
    rings: RingConfig[],
  ) {
    this.cb = createControlBlock(ringSlots);
    this.slots = new Array<RingSlotMain | null>(ringSlots).fill(null);
    this.cpu = cpu;
    const { port1, port2 } = new MessageChannel();
    this.rpcPort = port1;
    this.wakeFd = init.tuning.kickWait ? native.eventfdCreate(0) : -1;
    const data: WorkerInit = {
      ...init,
      wakeFd: this.wakeFd,
      workerIndex,
      control: this.cb.sab,
      rpcPort: port2,
      cpus: cpu === null ? null : [cpu],
      rings,
    };
    try {
      this.worker = new Worker(WORKER_URL, { workerData: data, transferList: [port2], name: `${init.deviceId}/q${workerIndex}` });
    } catch (e) {
      if (this.wakeFd >= 0) native.close(this.wakeFd);
      throw e;
    }
    this.exited = new Promise((resolve) => {
      this.worker.once('exit', (code) => {
        this.exitCode = code;
        // Only now: a live worker may be blocked in poll() on it.
        if (this.wakeFd >= 0) native.close(this.wakeFd);
        // Wake every waiter on the ack and state words: they re-check and see the exit.
        Atomics.notify(this.cb.i32, CB_ACK_SEQ);
        Atomics.notify(this.cb.i32, CB_STATE);
        resolve(code);
      });
    });
    this.worker.on('error', (err) => this.device.workerFailed(this, 'runtime', err.name, err.message));
    this.worker.on('message', (m: WorkerMessage) => this.device.workerMessage(this, m));
  }

  /**
   * Rings the doorbell: the worker wakes from Atomics.wait, or from poll() through its wake
   * eventfd, or sees the change on its next round. The worker announces a poll() sleep in
   * CB_SLEEPING and then re-reads the doorbell: with both sides' sequentially consistent
   * accesses, either it sees this add or this load sees SLEEP_POLL.
   */
  doorbell(): void {
    const i32 = this.cb.i32;
    Atomics.add(i32, CB_DOORBELL, 1);
    Atomics.notify(i32, CB_DOORBELL);
    if (this.wakeFd >= 0 && this.exitCode === null && Atomics.load(i32, CB_SLEEPING) === SLEEP_POLL) native.eventfdWrite(this.wakeFd, 1);
  }

  /** The comlink proxy; every message pokes the worker so it visits its event loop. */
  remote(): Remote<WorkerRpc> {
    if (this.rpc === null) {
      const ep = nodeEndpoint(this.rpcPort);
      const poking: Endpoint = {
        postMessage: (msg: unknown, transfer?: unknown[]) => {
          ep.postMessage(msg, transfer as never);
          Atomics.add(this.cb.i32, CB_SERVICE, 1);
          this.doorbell();
        },
        addEventListener: ep.addEventListener.bind(ep),
        removeEventListener: ep.removeEventListener.bind(ep),
      };
      this.rpc = wrap<WorkerRpc>(poking);
    }
    return this.rpc;
  }

  /** Waits until `pred(word)` holds, with Atomics.waitAsync (never blocking the loop). */
  async waitWord(index: number, pred: (v: number) => boolean, timeoutMs: number, what: string): Promise<number> {
    const i32 = this.cb.i32;
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      const v = Atomics.load(i32, index);
      if (pred(v)) return v;
      if (this.exitCode !== null) {
        throw new DataPlaneTimeoutError(`${this.name}: worker exited (code ${this.exitCode}) while waiting for ${what}`);
      }
      const left = deadline - performance.now();
      if (left <= 0) throw new DataPlaneTimeoutError(`${this.name}: no acknowledgement of ${what} within ${timeoutMs} ms`);
      const r = Atomics.waitAsync(i32, index, v, left);
      if (r.async) {
        // A pending waitAsync does not keep Node's loop alive: hold it with a timer.
        const keep = setTimeout(() => {}, left + 5);
        try {
          await r.value;
        } finally {
          clearTimeout(keep);
        }
      }
    }
  }

  get name(): string {
    return `${this.device.id}/q${this.workerIndex}`;
  }

  /** Posts a request through the control block and awaits its acknowledgement. Requests are serialised per worker. */
  request(code: number, arg: number, timeoutMs: number): Promise<number> {
    const run = async (): Promise<number> => {
      if (this.exitCode !== null) throw new DataPlaneTimeoutError(`${this.name}: worker exited (code ${this.exitCode})`);
      const i32 = this.cb.i32;
      Atomics.store(i32, CB_REQ_CODE, code);
      Atomics.store(i32, CB_REQ_ARG, arg);
      const seq = (Atomics.add(i32, CB_REQ_SEQ, 1) + 1) | 0;
      this.doorbell();
      await this.waitWord(CB_ACK_SEQ, (v) => v === seq, timeoutMs, `${REQ_NAMES[code]} #${seq}`);
      return Atomics.load(i32, CB_ACK_STATUS);
    };
    const p = this.queue.then(run, run);
    this.queue = p.catch(() => undefined);
    return p;
  }

  /** Posts an update message and has the worker apply it (REQ_APPLY); resolves once applied. */
  async update(msg: Omit<UpdateMessage, 'type' | 'seq'>, timeoutMs: number): Promise<void> {
    const seq = ++this.updateSeq;
    this.worker.postMessage({ type: 'update', seq, ...msg } satisfies UpdateMessage);
    const status = await this.request(REQ_APPLY, seq, timeoutMs);
    if (status !== ACK_OK || Atomics.load(this.cb.i32, CB_APPLIED_SEQ) < seq) {
      throw new Error(`${this.name}: update #${seq} failed in the worker`);
    }
  }

  /** Starts forwarding kicks of a slot's kick fd to this worker. */
  watchKick(s: RingSlotMain): void {
    if (s.kickFd === null || s.poller !== null) return;
    const i32 = this.cb.i32;
    const f64 = this.cb.f64;
    const pendingWord = ringWord(s.slot, RING_KICK_PENDING);
    const kicks = ringCounter(s.slot, RC_KICKS);
    let poller: Poller;
    try {
      poller = new native.Poller(
        s.kickFd,
        (events: number, value: number) => {
          if (events < 0) {
            this.device.workerFailed(this, 'runtime', 'POLL', `kick fd ${s.kickFd} of vring ${s.index}: poll error ${events}`, s.index);
            s.poller?.close();
            s.poller = null;
            return;
          }
          if (value === 0) return;
          f64[kicks] = f64[kicks]! + 1;
          Atomics.store(i32, pendingWord, 1);
          this.doorbell();
        },
        true,
      );
    } catch (e) {
      throw new Error(`${this.name}: cannot watch kick fd ${s.kickFd} of vring ${s.index}: ${(e as Error).message}`, { cause: e });
    }
    s.poller = poller;
    try {
      poller.start(POLL_READABLE);
      Atomics.store(i32, ringWord(s.slot, RING_KICK_FD), s.kickFd);
    } catch (e) {
      poller.close();
      s.poller = null;
      throw new Error(`${this.name}: cannot watch kick fd ${s.kickFd} of vring ${s.index}: ${(e as Error).message}`, { cause: e });
    }
  }

  unwatchKick(s: RingSlotMain): void {
    Atomics.store(this.cb.i32, ringWord(s.slot, RING_KICK_FD), -1);
    if (s.poller !== null) {
      s.poller.close();
      s.poller = null;
    }
  }

  /** Closes the main-thread resources of this worker (pollers, comlink port). */
  closeLocal(): void {
    for (const s of this.slots) if (s !== null) this.unwatchKick(s);
    if (this.rpc !== null) {
      try {
        this.rpc[releaseProxy]();
      } catch {
        /* the port may be closed already */
      }
      this.rpc = null;
    }
    this.rpcPort.close();
  }
}

/**
 * The workers of one device. Obtained from {@link QueueWorkerManager.startDevice}.
 * Every method is safe to call concurrently: requests to one worker are serialised.
 */
export class DeviceWorkers {
  readonly id: string;
  readonly queuesPerWorker: number;
  readonly numRings: number;
  private readonly workers: WorkerHandle[] = [];
  private readonly errorHandlers: ((e: DataPlaneError) => void)[] = [];
  private readonly ackTimeoutMs: number;
  private readonly startTimeoutMs: number;
  private readonly logger: NonNullable<DeviceSpec['logger']>;
  private stopped: Promise<RingIndices[]> | null = null;
  private readyWaiters = new Map<WorkerHandle, { resolve: () => void; reject: (e: Error) => void }>();

  /** @internal use QueueWorkerManager.startDevice */
  constructor(spec: DeviceSpec, private readonly onClosed: (d: DeviceWorkers) => void) {
    this.id = spec.id ?? `dev${deviceCounter++}`;
    const qpw = spec.queuesPerWorker ?? 1;
    if (!Number.isInteger(qpw) || qpw < 1 || qpw > MAX_RINGS_PER_WORKER) {
      throw new RangeError(`queuesPerWorker ${qpw} outside 1..${MAX_RINGS_PER_WORKER}`);
    }
    this.queuesPerWorker = qpw;
    const rings = spec.rings ?? [];
    const numRings = spec.numRings ?? rings.reduce((m, r) => Math.max(m, r.index + 1), 0);
    if (!Number.isInteger(numRings) || numRings < 1) throw new RangeError(`device ${this.id}: numRings ${numRings} must be >= 1`);
    for (const r of rings) {
      if (!Number.isInteger(r.index) || r.index < 0 || r.index >= numRings) {
        throw new RangeError(`device ${this.id}: vring index ${r.index} outside 0..${numRings - 1}`);
      }
    }
    this.numRings = numRings;
    this.ackTimeoutMs = spec.ackTimeoutMs ?? 5000;
    this.startTimeoutMs = spec.startTimeoutMs ?? Math.max(10_000, this.ackTimeoutMs * 2);
    this.logger =
      spec.logger ??
      ((level, message) => {
        if (level === 'warn' || level === 'error') console.error(`[${this.id}] ${level}: ${message}`);
      });
    const cpus = spec.cpus ?? [];
    const pinned = cpus.length > 0;
    const tuning: WorkerTuning = {
      burstSize: spec.burstSize ?? 64,
      spinUs: spec.spinUs ?? (pinned || availableParallelism() > 2 ? 20 : 0),
      pollIntervalMs: spec.pollIntervalMs ?? 1,
      yieldIntervalMs: spec.yieldIntervalMs ?? 5,
      drainTimeoutMs: spec.drainTimeoutMs ?? 1000,
      kickWait: spec.kickWait ?? true,
    };
    const moduleUrl = spec.module instanceof URL ? spec.module.href : spec.module.startsWith('file:') ? spec.module : pathToFileURL(spec.module).href;
    const nWorkers = Math.ceil(numRings / qpw);
    try {
      this.createWorkers(spec, nWorkers, moduleUrl, tuning, cpus, rings);
    } catch (e) {
      // A worker that could not be created (thread limit, ...): the ones already running go.
      for (const h of this.workers) {
        h.closeLocal();
        void h.worker.terminate().catch(() => undefined);
      }
      this.workers.length = 0;
      throw e;
    }
  }

  private createWorkers(spec: DeviceSpec, nWorkers: number, moduleUrl: string, tuning: WorkerTuning, cpus: number[], rings: RingSpec[]): void {
    const qpw = this.queuesPerWorker;
    const numRings = this.numRings;
    const pinned = cpus.length > 0;
    for (let w = 0; w < nWorkers; w++) {
      const slotsHere = Math.min(qpw, numRings - w * qpw);
      const myRings = rings.filter((r) => Math.floor(r.index / qpw) === w);
      const configs = myRings.map((r) => this.ringConfig(r));
      const handle = new WorkerHandle(
        this,
        w,
        slotsHere,
        {
          deviceId: this.id,
          queuesPerWorker: qpw,
          moduleUrl,
          moduleOptions: { ...(spec.moduleOptions ?? {}) },
          features: spec.features,
          regions: spec.regions.map(cloneRegion),
          log: spec.log ?? null,
          tuning,
        },
        pinned ? cpus[w % cpus.length]! : null,
        configs,
      );
      this.workers.push(handle);
      for (const r of myRings) {
        const s: RingSlotMain = { index: r.index, slot: r.index % qpw, kickFd: r.kickFd ?? null, poller: null, started: true };
        handle.slots[s.slot] = s;
      }
    }
  }

  /** @internal */
  async start(): Promise<void> {
    const ready = this.workers.map(
      (h) =>
        new Promise<void>((resolve, reject) => {
          this.readyWaiters.set(h, { resolve, reject });
        }),
    );
    const timeout = this.startTimeoutMs;
    try {
      await Promise.all(
        ready.map((p, i) =>
          withTimeout(p, timeout, () => new DataPlaneTimeoutError(`${this.id}/q${i}: worker not ready within ${timeout} ms`)),
        ),
      );
    } catch (e) {
      await this.stop().catch(() => undefined);
      throw e;
    }
    // A kick fd epoll cannot watch (a regular file, /dev/null, a memfd: EPERM) makes the
    // Poller constructor throw: unwind everything (pollers already started, workers) so
    // the failed device leaves nothing behind, then report which fd failed.
    try {
      for (const h of this.workers) for (const s of h.slots) if (s !== null && s.started) h.watchKick(s);
    } catch (e) {
      await this.stop().catch(() => undefined);
      throw e;
    }
  }

  private ringConfig(r: RingSpec): RingConfig {
    const { kickFd, ...rest } = r;
    return { ...rest, slot: r.index % this.queuesPerWorker, kicked: kickFd !== undefined && kickFd !== null };
  }

  private locate(index: number): { h: WorkerHandle; slot: number } {
    if (!Number.isInteger(index) || index < 0 || index >= this.numRings) {
      throw new RangeError(`device ${this.id}: vring index ${index} outside 0..${this.numRings - 1}`);
    }
    const h = this.workers[Math.floor(index / this.queuesPerWorker)]!;
    return { h, slot: index % this.queuesPerWorker };
  }

  /** Number of worker threads. */
  get workerCount(): number {
    return this.workers.length;
  }

  /** Thread ids of the workers (Worker.threadId), in worker order. */
  get threadIds(): number[] {
    return this.workers.map((h) => h.worker.threadId);
  }

  /** Registers an error callback (ring broken, module threw, worker died, timeout). */
  onError(cb: (e: DataPlaneError) => void): () => void {
    this.errorHandlers.push(cb);
    return () => {
      const i = this.errorHandlers.indexOf(cb);
      if (i >= 0) this.errorHandlers.splice(i, 1);
    };
  }

  /**
   * Starts (or restarts after a stop) rings. Each ring's slot must not be
   * running. Resolves once the workers have the rings and kicks are forwarded.
   */
  async startRings(rings: RingSpec[]): Promise<void> {
    this.assertLive();
    const byWorker = new Map<WorkerHandle, RingSpec[]>();
    for (const r of rings) {
      const { h, slot } = this.locate(r.index);
      const cur = h.slots[slot];
      if (cur !== null && cur !== undefined && cur.started) throw new Error(`device ${this.id}: vring ${r.index} is already started`);
      const list = byWorker.get(h) ?? [];
      list.push(r);
      byWorker.set(h, list);
    }
    await Promise.all(
      [...byWorker].map(async ([h, list]) => {
        await h.update({ rings: list.map((r) => this.ringConfig(r)) }, this.ackTimeoutMs);
        let failure: unknown = null;
        for (const r of list) {
          const slot = r.index % this.queuesPerWorker;
          const s: RingSlotMain = { index: r.index, slot, kickFd: r.kickFd ?? null, poller: null, started: true };
          h.slots[slot] = s;
          // A kick that arrived before the poller existed is not lost: the worker polls a new ring once.
          try {
            h.watchKick(s);
          } catch (e) {
            // The ring stays started (stopRings / stop handle it); the caller learns it is not watched.
            failure ??= e;
          }
        }
        if (failure !== null) throw failure;
      }),
    );
  }

  /**
   * Stops rings (GET_VRING_BASE, destroy): each worker finishes the burst in
   * hand, publishes the ring's indices and forgets the ring. Resolves with the
   * indices once no worker touches those rings any more. Without `indices`,
   * every started ring is stopped.
   */
  async stopRings(indices?: number[]): Promise<RingIndices[]> {
    this.assertLive();
    const targets = this.selectStarted(indices);
    const out: RingIndices[] = [];
    await Promise.all(
      [...groupByWorker(targets)].map(async ([h, slots]) => {
        for (const s of slots) h.unwatchKick(s);
        let mask = 0;
        for (const s of slots) mask |= 1 << s.slot;
        await h.request(REQ_STOP_RINGS, mask, this.ackTimeoutMs);
        for (const s of slots) {
          s.started = false;
          out.push({ index: s.index, ...readIndices(h.cb.i32, s.slot) });
        }
      }),
    );
    return out.sort((a, b) => a.index - b.index);
  }

  /** Disables rings (SET_VRING_ENABLE 0): the workers stop processing them but keep their state. */
  async pauseRings(indices: number[]): Promise<RingIndices[]> {
    this.assertLive();
    const out: RingIndices[] = [];
    await Promise.all(
      [...groupByWorker(this.selectStarted(indices))].map(async ([h, slots]) => {
        let mask = 0;
        for (const s of slots) mask |= 1 << s.slot;
        await h.request(REQ_PAUSE_RINGS, mask, this.ackTimeoutMs);
        for (const s of slots) out.push({ index: s.index, ...readIndices(h.cb.i32, s.slot) });
      }),
    );
    return out.sort((a, b) => a.index - b.index);
  }

  /** Re-enables rings paused with {@link pauseRings}. */
  async resumeRings(indices: number[]): Promise<void> {
    this.assertLive();
    await Promise.all(
      [...groupByWorker(this.selectStarted(indices))].map(async ([h, slots]) => {
        let mask = 0;
        for (const s of slots) mask |= 1 << s.slot;
        await h.request(REQ_RESUME_RINGS, mask, this.ackTimeoutMs);
      }),
    );
  }

  /** Pauses every worker: bursts in hand finish, indices are published, no ring is touched until {@link resume}. */
  async pause(): Promise<void> {
    this.assertLive();
    await Promise.all(this.workers.map((h) => h.request(REQ_PAUSE, 0, this.ackTimeoutMs)));
  }

  /** Resumes every worker. */
  async resume(): Promise<void> {
    this.assertLive();
    await Promise.all(this.workers.map((h) => h.request(REQ_RESUME, 0, this.ackTimeoutMs)));
    // Rings may have been kicked while paused: the workers re-check on resume.
  }

  /**
   * Replaces the guest memory regions in every worker (after {@link pause};
   * running workers apply it between bursts, which is only safe for modules
   * without chains in flight). With `log` (null detaches) the dirty log is
   * replaced in the same step. Resolves once every worker uses the new views:
   * then the old mappings may be released.
   */
  async setMemory(regions: RegionSpec[], log?: LogSpec | null): Promise<void> {
    await this.update({ regions, ...(log !== undefined ? { log } : {}) });
  }

  /** Attaches (or with null detaches) the dirty log (active only with VHOST_F_LOG_ALL in the features). */
  async setLog(log: LogSpec | null): Promise<void> {
    await this.update({ log });
  }

  /** Changes the negotiated features (e.g. VHOST_F_LOG_ALL toggled during migration). */
  async setFeatures(features: bigint): Promise<void> {
    await this.update({ features });
  }

  /** Memory, log and features in one step (one message and acknowledgement per worker). */
  async update(u: { regions?: RegionSpec[]; log?: LogSpec | null; features?: bigint }): Promise<void> {
    this.assertLive();
    const msg: Omit<UpdateMessage, 'type' | 'seq'> = {};
    if (u.regions !== undefined) msg.regions = u.regions.map(cloneRegion);
    if (u.log !== undefined) msg.log = u.log;
    if (u.features !== undefined) msg.features = u.features;
    await Promise.all(this.workers.map((h) => h.update(msg, this.ackTimeoutMs)));
  }

  /**
   * Changes a ring's call fd (SET_VRING_CALL while running). Resolves once the
   * worker stopped using the old fd: only then may the caller close it.
   */
  async setCallFd(index: number, fd: number | null): Promise<void> {
    this.assertLive();
    const { h, slot } = this.locate(index);
    await h.update({ callFds: [{ slot, fd }] }, this.ackTimeoutMs);
  }

  /** Changes a ring's err fd (SET_VRING_ERR). Resolves once the worker stopped using the old fd. */
  async setErrFd(index: number, fd: number | null): Promise<void> {
    this.assertLive();
    const { h, slot } = this.locate(index);
    await h.update({ errFds: [{ slot, fd }] }, this.ackTimeoutMs);
  }

  /**
   * Changes a ring's kick fd (SET_VRING_KICK while running): main thread only.
   * The old fd is no longer watched when this returns (the caller closes it).
   * null switches the ring to polling mode only if it was started in polling mode.
   */
  setKickFd(index: number, fd: number | null): void {
    this.assertLive();
    const { h, slot } = this.locate(index);
    const s = h.slots[slot];
    if (s === null || s === undefined || !s.started) throw new Error(`device ${this.id}: vring ${index} is not started`);
    h.unwatchKick(s);
    s.kickFd = fd;
    h.watchKick(s);
    h.doorbell();
  }

  /** Rich control of one worker through comlink (module configuration, detailed stats). Never per packet. */
  remote(workerIndex: number): Remote<WorkerRpc> {
    this.assertLive();
    const h = this.workers[workerIndex];
    if (h === undefined) throw new RangeError(`device ${this.id}: no worker ${workerIndex}`);
    return h.remote();
  }

  /** The worker index serving a vring. */
  workerOf(index: number): number {
    return this.locate(index).h.workerIndex;
  }

  /** Counters and states read from the control blocks, without stopping the workers. */
  stats(): DeviceStats {
    return {
      deviceId: this.id,
      workers: this.workers.map((h) => {
        const { i32, f64, ringSlots } = h.cb;
        const rings: RingStats[] = [];
        for (let s = 0; s < ringSlots; s++) {
          const index = Atomics.load(i32, ringWord(s, RING_VRING_INDEX));
          if (index < 0) continue;
          rings.push({
            index,
            state: RING_STATE_NAMES[Atomics.load(i32, ringWord(s, RING_STATE))] ?? 'unknown',
            brokenReason: BROKEN_REASON_NAMES[Atomics.load(i32, ringWord(s, RING_BROKEN_REASON))] ?? 'unknown',
            inflight: Atomics.load(i32, ringWord(s, RING_INFLIGHT)),
            kickPending: Atomics.load(i32, ringWord(s, RING_KICK_PENDING)) !== 0,
            indices: readIndices(i32, s),
            ...readRingCounters(f64, s),
          });
        }
        return {
          workerIndex: h.workerIndex,
          state: h.exitCode !== null ? 'exited' : (WORKER_STATE_NAMES[Atomics.load(i32, CB_STATE)] ?? 'unknown'),
          cpu: h.cpu,
          ...readWorkerCounters(f64),
          rings,
        };
      }),
    };
  }

  /**
   * Stops the device: every worker publishes its rings' indices and exits.
   * A worker that does not acknowledge in time is terminated; a worker that
   * does not even terminate (stuck in a syscall) is unref'd and reported, so
   * this never hangs. Resolves with the indices of the rings that were started.
   * Idempotent.
   */
  stop(): Promise<RingIndices[]> {
    if (this.stopped === null) this.stopped = this.doStop();
    return this.stopped;
  }

  private async doStop(): Promise<RingIndices[]> {
    const out: RingIndices[] = [];
    await Promise.all(
      this.workers.map(async (h) => {
        for (const s of h.slots) if (s !== null) h.unwatchKick(s);
        let clean = false;
        if (h.exitCode === null) {
          try {
            await h.request(REQ_EXIT, 0, this.ackTimeoutMs);
            clean = (await withTimeout(h.exited, this.ackTimeoutMs, () => new DataPlaneTimeoutError('exit'))) === 0;
          } catch (e) {
            this.emit({ deviceId: this.id, workerIndex: h.workerIndex, ringIndex: null, reason: 'timeout', code: 'STOP', message: (e as Error).message });
          }
        }
        if (h.exitCode === null) {
          // terminate() interrupts JS and Atomics.wait, not a blocking syscall: bound it too.
          try {
            await withTimeout(h.worker.terminate(), this.ackTimeoutMs, () => new DataPlaneTimeoutError('terminate'));
          } catch {
            h.worker.unref();
            this.emit({
              deviceId: this.id,
              workerIndex: h.workerIndex,
              ringIndex: null,
              reason: 'timeout',
              code: 'TERMINATE',
              message: `${h.name}: worker did not terminate (blocked in a syscall?); abandoned`,
            });
          }
        }
        h.closeLocal();
        const stoppedCleanly = clean && Atomics.load(h.cb.i32, CB_STATE) === WORKER_STOPPED;
        for (const s of h.slots) {
          if (s === null || !s.started) continue;
          s.started = false;
          // When the worker did not stop cleanly the published indices are those of its last burst.
          out.push({ index: s.index, ...readIndices(h.cb.i32, s.slot) });
        }
        if (!stoppedCleanly) this.logger('warn', `${h.name}: indices are those of the last published burst`);
      }),
    );
    for (const w of this.readyWaiters.values()) w.reject(new Error(`device ${this.id} stopped`));
    this.readyWaiters.clear();
    this.onClosed(this);
    return out.sort((a, b) => a.index - b.index);
  }

  private assertLive(): void {
    if (this.stopped !== null) throw new Error(`device ${this.id} is stopped`);
  }

  private selectStarted(indices: number[] | undefined): { h: WorkerHandle; s: RingSlotMain }[] {
    const out: { h: WorkerHandle; s: RingSlotMain }[] = [];
    if (indices === undefined) {
      for (const h of this.workers) for (const s of h.slots) if (s !== null && s.started) out.push({ h, s });
      return out;
    }
    for (const index of indices) {
      const { h, slot } = this.locate(index);
      const s = h.slots[slot];
      if (s !== null && s !== undefined && s.started) out.push({ h, s });
    }
    return out;
  }

  private emit(e: DataPlaneError): void {
    if (this.errorHandlers.length === 0) this.logger('error', `${e.reason} error on ${e.ringIndex ?? 'worker ' + e.workerIndex}: ${e.message}`);
    for (const cb of [...this.errorHandlers]) {
      try {
        cb(e);
      } catch (err) {
        this.logger('error', `onError callback threw: ${(err as Error).message}`);
      }
    }
  }

  /** @internal */
  workerFailed(h: WorkerHandle, reason: DataPlaneError['reason'], code: string, message: string, ringIndex: number | null = null): void {
    const w = this.readyWaiters.get(h);
    if (w !== undefined) {
      this.readyWaiters.delete(h);
      w.reject(new Error(`${h.name}: ${message}`));
    }
    this.emit({ deviceId: this.id, workerIndex: h.workerIndex, ringIndex, reason, code, message });
  }

  /** @internal */
  workerMessage(h: WorkerHandle, m: WorkerMessage): void {
    switch (m.type) {
      case 'ready': {
        const w = this.readyWaiters.get(h);
        this.readyWaiters.delete(h);
        w?.resolve();
        break;
      }
      case 'fatal':
        this.workerFailed(h, 'runtime', 'FATAL', m.message);
        break;
      case 'error':
        this.emit({
          deviceId: this.id,
          workerIndex: h.workerIndex,
          ringIndex: m.slot >= 0 ? m.vringIndex : null,
          reason: m.reason,
          code: m.code,
          message: m.message,
        });
        break;
      case 'log':
        this.logger(m.level, `${h.name}: ${m.message}`);
        break;
    }
  }

  /** @internal for tests: the raw control blocks. */
  controlBlocks(): ControlBlockViews[] {
    return this.workers.map((h) => h.cb);
  }
}

/** Starts and tracks the devices' workers. One manager per process is enough. */
export class QueueWorkerManager {
  private readonly devices = new Set<DeviceWorkers>();

  /** Starts the workers of a device; resolves once every worker loaded its module and runs. */
  async startDevice(spec: DeviceSpec): Promise<DeviceWorkers> {
    const d = new DeviceWorkers(spec, (dev) => this.devices.delete(dev));
    this.devices.add(d);
    await d.start();
    return d;
  }

  /** Devices currently started. */
  list(): DeviceWorkers[] {
    return [...this.devices];
  }

  /** Stops every device. */
  async stopAll(): Promise<void> {
    await Promise.all([...this.devices].map((d) => d.stop()));
  }
}

function groupByWorker(items: { h: WorkerHandle; s: RingSlotMain }[]): Map<WorkerHandle, RingSlotMain[]> {
  const m = new Map<WorkerHandle, RingSlotMain[]>();
  for (const { h, s } of items) {
    const l = m.get(h) ?? [];
    l.push(s);
    m.set(h, l);
  }
  return m;
}

function cloneRegion(r: RegionSpec): RegionSpec {
  return { gpa: r.gpa, size: r.size, sab: r.sab, sabOffset: r.sabOffset ?? 0 };
}

async function withTimeout<T>(p: Promise<T>, ms: number, err: () => Error): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(err()), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}
