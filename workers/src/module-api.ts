/**
 * The processing-module API: what a per-queue module sees and implements.
 *
 * A module is a compiled JavaScript file with a default export, loaded by a
 * queue worker with `import()`. The worker serves a *queue group* (one or
 * more vrings of one device, e.g. a net queue pair RX 2i + TX 2i+1). The
 * module gets the group's {@link QueueContext} once and is then called with
 * bursts of chains. The runtime owns everything else: waiting, kicks,
 * publishing used entries (one used-index store per burst), notification
 * suppression and the call eventfd, pause/stop/memory swaps, counters.
 *
 * A complete module (completes every chain, counting bytes):
 * ```ts
 * import { defineModule } from '@vhost-ts/workers/module-api';
 * export default defineModule((ctx) => {
 *   let bytes = 0;
 *   return {
 *     process(burst) {
 *       for (let i = 0; i < burst.count; i++) {
 *         const chain = burst.chains[i]!;
 *         bytes += chain.readableBytes;
 *         burst.ring.complete(chain, 0);
 *       }
 *     },
 *     stats: () => ({ bytes }),
 *   };
 * });
 * ```
 *
 * Rules for modules:
 * - No allocation per chain: chains are reusable objects owned by the ring;
 *   a chain is valid until the next pop into it (the next burst).
 * - Complete each chain exactly once: synchronously with `ring.complete(chain, len)`,
 *   or later (async work) with `ring.completeId(chain.head, len)`
 *   after saving `head` (the Chain object itself is reused).
 * - An exception puts the worker's rings in the BROKEN state (the device goes
 *   to NEEDS_RESET); it never crashes the process or affects other devices.
 * - Do not cache `ctx.memory`, `ring.device` or region views across calls:
 *   a memory-table swap replaces them (see {@link QueueModule.memoryChanged}).
 *
 * @module
 */
import type { Chain, DeviceRing, GuestMemory } from '@vhost-ts/virtio';
import type { RingKind } from './protocol.js';

export type { Chain, DeviceRing, GuestMemory } from '@vhost-ts/virtio';
export type { RingKind } from './protocol.js';

/** Options of a piscina pool (see {@link QueueContext.createPool}). */
export type PiscinaOptions = NonNullable<ConstructorParameters<typeof import('piscina').Piscina>[0]>;

/** One vring of the worker's queue group. The object is stable for the worker's life. */
export interface QueueRing {
  /** vring index in the device (net: RX 2i, TX 2i+1). */
  readonly index: number;
  /** Position in {@link QueueContext.rings}. */
  readonly slot: number;
  /** Ring layout; null while the ring was never started. */
  readonly kind: RingKind | null;
  /** Queue size (0 while not started). */
  readonly size: number;
  /** True while the runtime serves this ring (started, enabled, not broken, worker not paused). */
  readonly active: boolean;
  /**
   * 'burst' (default): the runtime pops bursts from this ring and calls
   * {@link QueueModule.process}. 'manual': the runtime never pops this ring;
   * the module pops it itself (e.g. a net RX ring filled from the TX ring).
   */
  mode: 'burst' | 'manual';
  /**
   * Pops the next available chain into the ring's scratch chain (one object,
   * overwritten by the next `pop()`); null when the ring is empty or inactive.
   * Throws RingError on a malformed ring (let it propagate: the runtime breaks the ring).
   */
  pop(): Chain | null;
  /** Pops into a chain the module owns (see {@link QueueContext.newChain}); false when empty or inactive. */
  popInto(chain: Chain): boolean;
  /** Available chains not yet popped (reads the ring's index); 0 when inactive. */
  available(): number;
  /**
   * Completes a popped chain: a used entry (chain.head, `len` bytes written).
   * Published and notified by the runtime after the current module call.
   */
  complete(chain: Chain, len: number): void;
  /**
   * Completes a chain by its head (split) / buffer id (packed), for
   * completions after the burst (async work). Outside a module call the
   * runtime publishes and notifies at the next microtask.
   */
  completeId(head: number, len: number): void;
  /** The virtio device ring (advanced use; replaced on memory swaps, do not cache). Null when not started. */
  readonly device: DeviceRing | null;
}

/** A burst of chains popped from one ring, handed to {@link QueueModule.process}. Reused: do not keep it. */
export interface Burst {
  readonly ring: QueueRing;
  /** chains[0 .. count) are valid. */
  readonly chains: readonly Chain[];
  readonly count: number;
}

/** Log lines go to the main thread's logger (not for per-packet use). */
export interface ModuleLogger {
  debug(message: string): void;
  info(message: string): void;
  warn(message: string): void;
  error(message: string): void;
}

/** What a module gets once, for its queue group. */
export interface QueueContext {
  /** Device name given to the manager. */
  readonly deviceId: string;
  /** This worker's index in the device (queue group number). */
  readonly workerIndex: number;
  /** The rings of this group in slot order (vring indices workerIndex*qpw ...). */
  readonly rings: readonly QueueRing[];
  /** The ring with this vring index, if it belongs to the group. */
  ring(vringIndex: number): QueueRing | undefined;
  /** Guest memory (replaced on memory swaps: read it when needed, do not cache). */
  readonly memory: GuestMemory;
  /** Negotiated features. */
  readonly features: bigint;
  /** True when feature bit `bit` was negotiated. */
  hasFeature(bit: number): boolean;
  /** String options from the device spec (e.g. `--module-opt key=value`). */
  readonly options: Readonly<Record<string, string>>;
  /** Logger (forwarded to the main thread). */
  readonly log: ModuleLogger;
  /** True while dirty logging is active (VHOST_F_LOG_ALL and a log base). */
  readonly logging: boolean;
  /**
   * Marks guest memory written by means other than Chain.write/copyTo as dirty
   * (e.g. direct writes through a region view). No-op when logging is off.
   */
  logWrite(gpa: number, len: number): void;
  /** A new reusable chain (allocate at init, not per packet). */
  newChain(capacity?: number): Chain;
  /**
   * Creates a piscina pool for task-shaped work (e.g. blk file I/O off the
   * queue thread). The worker switches to event-loop mode (it sleeps with
   * Atomics.waitAsync so task results can arrive) and destroys the pool when
   * it exits. Complete chains from the task's resolution with `completeId`.
   */
  createPool(options: PiscinaOptions): Promise<import('piscina').Piscina>;
  /**
   * Event-loop mode on/off: the worker sleeps with Atomics.waitAsync and
   * visits its event loop regularly while busy, so promises, timers and
   * messages of the module make progress. Off (default) is faster.
   */
  setEventLoop(on: boolean): void;
  /** Wakes the worker's loop (e.g. after async work freed resources a poll() waits for). */
  wake(): void;
}

/** What a module implements. Every hook is optional except one of `process`/`poll`. */
export interface QueueModule {
  /**
   * Burst mode: called with each non-empty burst popped from a ring in mode
   * 'burst'. Complete the chains (now or later).
   */
  process?(burst: Burst): void;
  /**
   * Poll mode: called on every pass of the worker loop (after bursts of
   * 'burst' rings). Pop from any ring of the group, complete, and return how
   * many chains were handled; 0 means idle (the worker may then sleep).
   */
  poll?(): number;
  /** The memory table changed (the worker was paused; old views are gone). */
  memoryChanged?(memory: GuestMemory): void;
  /** The negotiated features changed (e.g. VHOST_F_LOG_ALL toggled). */
  featuresChanged?(features: bigint): void;
  /** A ring of the group was started (or restarted with a new layout/base). */
  ringStarted?(ring: QueueRing): void;
  /** A ring of the group was stopped (its indices are published). */
  ringStopped?(ring: QueueRing): void;
  /** Module configuration through the manager's comlink remote. */
  configure?(options: Record<string, string>): void | Promise<void>;
  /** Detailed module statistics through the manager's comlink remote. */
  stats?(): Record<string, number>;
  /** Named control methods callable through the manager's comlink remote (`call(name, ...args)`). */
  rpc?: Record<string, (...args: never[]) => unknown>;
  /** The worker is exiting: release resources (pools are destroyed by the runtime). */
  close?(): void | Promise<void>;
}

/** A module's default export: the module object, or a factory called once with the context. */
export type ModuleExport = QueueModule | ((ctx: QueueContext) => QueueModule | Promise<QueueModule>);

/** Identity helper that gives a module definition its types. */
export function defineModule<T extends ModuleExport>(m: T): T {
  return m;
}
